"""Which runs of a stage continue: decided from the runs' predictions as their curves come in.

The service's staged plans (:mod:`adaptor_service._staging`) and the replay decide with these
same two rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nasoa_contracts import Prediction, Stage

__all__ = ["decide_continuing", "select_continuing"]


def select_continuing(stage: Stage, predictions: Sequence[Prediction]) -> list[int]:
    """Indices of the ``stage.keep`` runs that continue, best first.

    ``predictions`` are the stage's runs re-predicted at their full length once their probe
    curves were learned. The best predicted accuracy continues; ties go to the better
    predicted accuracy per second, then to the earlier run (the plan's own order).

    >>> from nasoa_contracts import Candidate
    >>> runs = (Candidate("a", epochs=9), Candidate("b", epochs=9), Candidate("c", epochs=9))
    >>> stage = Stage(runs, (Prediction(80, 5, 10, 1),) * 3, stop_after_epochs=1, keep=1)
    >>> select_continuing(stage, [Prediction(70, 1, 10, 1), Prediction(90, 1, 20, 1), Prediction(90, 1, 10, 1)])
    [2]
    """
    if len(predictions) != len(stage.runs):
        raise ValueError(f"one prediction per run of the stage: {len(stage.runs)} runs, {len(predictions)} predictions")

    def rank(i: int) -> tuple[float, float, int]:
        p = predictions[i]
        accuracy = p.accuracy if math.isfinite(p.accuracy) else -math.inf
        per_second = accuracy / p.seconds if p.seconds > 0 and math.isfinite(p.seconds) else -math.inf
        return -accuracy, -per_second, i

    return sorted(range(len(stage.runs)), key=rank)[: max(stage.keep, 0)]


def decide_continuing(
    stage: Stage, predictions: Sequence[Prediction], settled: Sequence[bool], confidence: float = 1.0
) -> list[int] | None:
    """The runs that continue, decided as the stage's runs settle; None while the open runs could still win.

    ``predictions`` are the stage's runs predicted again from the curves measured so far (a
    settled run's whole probe, an open run's epochs so far, or none), and ``settled`` says
    which runs have ended. Once all have, :func:`select_continuing` decides. Before that, the
    best settled runs continue when each beats every open run by ``confidence`` standard
    deviations of the difference: the open runs could change the order only if the
    predictions erred by more, so waiting for them would spend budget on runs that lose.

    >>> from nasoa_contracts import Candidate
    >>> runs = (Candidate("a", epochs=9), Candidate("b", epochs=9))
    >>> stage = Stage(runs, (Prediction(80, 5, 10, 1),) * 2, stop_after_epochs=1, keep=1)
    >>> decide_continuing(stage, [Prediction(95, 2, 10, 1), Prediction(80, 5, 10, 1)], [True, False])
    [0]
    >>> decide_continuing(stage, [Prediction(85, 2, 10, 1), Prediction(80, 5, 10, 1)], [True, False]) is None
    True
    """
    if len(settled) != len(stage.runs) or len(predictions) != len(stage.runs):
        raise ValueError(f"one prediction and one settled flag per run of the stage ({len(stage.runs)} runs)")
    if all(settled):
        return select_continuing(stage, predictions)
    done = [i for i, ended in enumerate(settled) if ended]
    still_open = [predictions[i] for i, ended in enumerate(settled) if not ended]
    if len(done) < max(stage.keep, 1) or not all(math.isfinite(p.accuracy) for p in still_open):
        return None
    ended = Stage(tuple(stage.runs[i] for i in done), tuple(stage.predictions[i] for i in done),
                  stage.stop_after_epochs, max(stage.keep, 1))
    kept = [done[j] for j in select_continuing(ended, [predictions[i] for i in done])]
    for i in kept:
        leader = predictions[i]
        for other in still_open:
            margin = confidence * math.hypot(leader.accuracy_std, other.accuracy_std)
            if not leader.accuracy - other.accuracy >= margin:
                return None
    return kept
