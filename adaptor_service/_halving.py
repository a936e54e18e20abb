"""Successive halving (ASHA's rungs) as a schedule generator: the multi-fidelity baseline.

Random configurations (model and regime) from the candidate space start together; after each
rung the adaptor keeps the best third by their curves, which train three times longer, until
one run continues to the end of its schedule. The generator sizes the search so that the
predicted worker-seconds of every stage, times the margin, fit the budget. It reads the
predicted seconds only: which runs continue is decided by the runs' measured curves, never by
predicted accuracy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from adaptor_service._schedulers import ScheduleGenerator, ScoredCandidate, difference
from nasoa_contracts import Alternative, Candidate, Plan, Stage, TaskSpec

__all__ = ["SuccessiveHalvingGenerator"]


@dataclass(frozen=True)
class _Configuration:
    """One model and regime, with the scored candidate of each schedule length."""

    by_epochs: dict[int, ScoredCandidate]
    fixed_seconds: float  # per job: loading, evaluation
    seconds_per_epoch: float

    @classmethod
    def of(cls, items: Sequence[ScoredCandidate]) -> _Configuration:
        by_epochs = {s.candidate.epochs: s for s in sorted(items, key=lambda s: s.candidate.epochs)}
        epochs = list(by_epochs)
        seconds = [by_epochs[e].prediction.seconds for e in epochs]
        if len(epochs) < 2:
            return cls(by_epochs, 0.0, max(seconds[0], 0.0) / epochs[0])
        # seconds = fixed + per_epoch x epochs, least squares over the schedule lengths
        mean_e, mean_s = sum(epochs) / len(epochs), sum(seconds) / len(seconds)
        var = sum((e - mean_e) ** 2 for e in epochs)
        slope = max(0.0, sum((e - mean_e) * (s - mean_s) for e, s in zip(epochs, seconds, strict=True)) / var)
        fixed = max(0.0, mean_s - slope * mean_e)
        return cls(by_epochs, fixed, slope)

    def job_seconds(self, start: int, stop: int) -> float:
        """Predicted seconds of one job that trains epochs ``start + 1 .. stop`` of a schedule."""
        return self.fixed_seconds + self.seconds_per_epoch * (stop - start)


class SuccessiveHalvingGenerator(ScheduleGenerator):
    """Successive halving over random configurations, sized to the budget (baseline).

    ``n = reduction_factor ** s`` configurations train ``min_epochs`` epochs of their schedule;
    the best ``n / reduction_factor`` by their curves continue to ``reduction_factor`` times as
    many epochs, and so on until one run trains to the end of its schedule. The generator tries
    the most configurations first (at most ``max_configurations``), and for each the longest
    schedule of the candidate space, and takes the first search whose predicted worker-seconds
    times the margin fit the budget. As the runs that continue are only known from their
    curves, each later stage is charged with the ones whose continuation is predicted slowest:
    ``planned_seconds`` bounds the search. A later stage's ``runs`` list the first drawn
    configurations, as placeholders: the adaptor continues the ones whose curves rank best.
    Each run's prediction is for its whole schedule, as in every staged plan.
    When only one run fits, the plan is one-shot: one random configuration with the longest
    schedule that fits; when none fits, the fastest candidate.

    Parameters
    ----------
    reduction_factor
        ``eta``: a third of the runs continue at each rung, for three times as many epochs.
    max_configurations
        The most configurations to start.
    min_epochs
        Epochs of the first rung.
    seed
        Seeds the draw of configurations.

    >>> from nasoa_contracts import Candidate, Prediction, TaskSpec
    >>> scored = [ScoredCandidate(Candidate(m, {"lr": lr}, epochs=e), Prediction(50, 1, 1.0 + e, 0.1))
    ...           for m in "abc" for lr in (0.01, 0.1, 0.3) for e in (1, 3, 9)]
    >>> plan = SuccessiveHalvingGenerator(seed=0).choose(TaskSpec("builtin:digits", 60), scored, 1.0)
    >>> [(len(s.runs), s.stop_after_epochs, s.keep) for s in plan.stages], plan.candidate.epochs
    ([(9, 1, 3), (3, 3, 1), (1, 0, 0)], 9)
    >>> round(plan.planned_seconds, 1)  # 9 x (1 + 1) + 3 x (1 + 2) + (1 + 6)
    34.0
    """

    name = "asha"

    def __init__(self, reduction_factor: int = 3, max_configurations: int = 27, min_epochs: int = 1,
                 seed: int = 0) -> None:
        self.reduction_factor = reduction_factor
        self.max_configurations = max_configurations
        self.min_epochs = min_epochs
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        groups: dict[str, list[ScoredCandidate]] = {}
        for item in scored:
            groups.setdefault(_configuration_key(item.candidate), []).append(item)
        keys = sorted(groups)
        self._rng.shuffle(keys)  # the draw: one per call, so a seed gives the same sequence of plans
        configurations = [_Configuration.of(groups[k]) for k in keys]
        lengths = sorted({item.candidate.epochs for item in scored}, reverse=True)
        eta = max(2, self.reduction_factor)
        rungs = 0
        while eta ** (rungs + 1) <= self.max_configurations:
            rungs += 1
        budget = task.budget_seconds / time_margin
        for s in range(rungs, 0, -1):
            stops = [self.min_epochs * eta**k for k in range(s)]
            for length in lengths:
                if stops[-1] >= length:
                    continue
                pool = [c for c in configurations if length in c.by_epochs][: eta**s]
                if len(pool) < eta**s:
                    continue
                total = _bounded_seconds(pool, [*stops, length], eta)
                if total <= budget:
                    return self._staged(pool, [*stops, length], eta, total, time_margin, top_k)
        for length in lengths:  # one run: a random configuration, the longest schedule that fits
            for configuration in configurations:
                item = configuration.by_epochs.get(length)
                if item is not None and item.prediction.seconds <= budget:
                    return self._one_run(item, scored, time_margin, top_k, feasible=True)
        fastest = min(scored, key=lambda s: s.prediction.seconds)
        return self._one_run(fastest, scored, time_margin, top_k, feasible=False)

    def _staged(self, pool: list[_Configuration], stops: list[int], eta: int, total: float,
                time_margin: float, top_k: int) -> Plan:
        length = stops[-1]
        stages = []
        for k, stop in enumerate(stops):
            runs = pool[: eta ** (len(stops) - 1 - k)]
            last = k == len(stops) - 1
            stages.append(Stage(
                runs=tuple(c.by_epochs[length].candidate for c in runs),
                predictions=tuple(c.by_epochs[length].prediction for c in runs),  # at the whole schedule
                stop_after_epochs=0 if last else stop,
                keep=0 if last else len(runs) // eta,
            ))
        winner = pool[0].by_epochs[length]
        alternatives = tuple(
            Alternative(c.by_epochs[length].candidate, c.by_epochs[length].prediction,
                        f"{difference(c.by_epochs[length].candidate, winner.candidate)}: started too; "
                        f"continues while its curve ranks in the best 1/{eta}")
            for c in pool[1 : 1 + top_k]
        )
        return Plan(winner.candidate, winner.prediction, self.name, time_margin, alternatives,
                    feasible=True, stages=tuple(stages), planned_seconds=total)

    def _one_run(self, chosen: ScoredCandidate, scored: Sequence[ScoredCandidate], time_margin: float,
                 top_k: int, feasible: bool) -> Plan:
        reason = "not drawn" if feasible else f"slower than the fastest ({chosen.prediction.seconds:.1f}s predicted)"
        alternatives = tuple(
            Alternative(s.candidate, s.prediction, f"{difference(s.candidate, chosen.candidate)}: {reason}")
            for s in sorted(scored, key=lambda s: s.prediction.seconds)
            if s.candidate.key != chosen.candidate.key
        )[:top_k]
        return Plan(chosen.candidate, chosen.prediction, self.name, time_margin, alternatives, feasible=feasible,
                    planned_seconds=chosen.prediction.seconds)


def _configuration_key(candidate: Candidate) -> str:
    return Candidate(candidate.model, candidate.hparams, epochs=1).key


def _bounded_seconds(pool: list[_Configuration], stops: list[int], eta: int) -> float:
    """Predicted worker-seconds of the search when the slowest runs are the ones that continue."""
    total = sum(c.job_seconds(0, stops[0]) for c in pool)
    for k in range(1, len(stops)):
        count = eta ** (len(stops) - 1 - k)
        costs = sorted((c.job_seconds(stops[k - 1], stops[k]) for c in pool), reverse=True)
        total += sum(costs[:count])
    return total
