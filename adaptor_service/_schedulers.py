"""Schedule generators: turn predictions for every candidate into one plan.

A generator is a small interface (Optuna's sampler shape): :meth:`ScheduleGenerator.choose`
takes the task and the scored candidates and returns a :class:`Plan`. Generators never
modify the candidates or the predictors; they are not thread safe (the adaptor calls them
under its lock).
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from adaptor_service._known_runs import run_key
from nasoa_contracts import Alternative, Candidate, Plan, Prediction, TaskSpec

__all__ = [
    "FixedDefaultGenerator",
    "OneShotGenerator",
    "RandomGenerator",
    "RunIndex",
    "ScheduleGenerator",
    "ScoredCandidate",
    "make_generator",
]


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    prediction: Prediction


@dataclass(frozen=True)
class RunIndex:
    """Which run each candidate is: one model and regime, planned for any number of epochs.

    One entry per candidate: ``run`` numbers the runs in order of first appearance,
    ``model`` the models, and ``epochs`` is the candidate's length.

    >>> index = RunIndex.of([Candidate("a", epochs=1), Candidate("b"), Candidate("a", epochs=3)])
    >>> index.run.tolist(), index.model.tolist(), index.epochs.tolist()
    ([0, 1, 0], [0, 1, 0], [1, 1, 3])
    """

    run: np.ndarray
    model: np.ndarray
    epochs: np.ndarray

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> RunIndex:
        runs: dict[object, int] = {}
        models: dict[str, int] = {}
        run = [runs.setdefault(run_key(c), len(runs)) for c in candidates]
        model = [models.setdefault(c.model, len(models)) for c in candidates]
        return cls(np.array(run, dtype=np.intp), np.array(model, dtype=np.intp),
                   np.array([c.epochs for c in candidates], dtype=np.int64))

    def take(self, rows: np.ndarray) -> RunIndex:
        """The index of the candidates at ``rows`` (run numbers kept as they are)."""
        return RunIndex(self.run[rows], self.model[rows], self.epochs[rows])

    def first_rows(self) -> np.ndarray:
        """Each run's first candidate, by run number.

        >>> RunIndex.of([Candidate("a", epochs=1), Candidate("b"), Candidate("a", epochs=3)]).first_rows().tolist()
        [0, 1]
        """
        return np.unique(self.run, return_index=True)[1]


class ScheduleGenerator(abc.ABC):
    """Chooses one candidate for a task.

    ``choose`` must not modify its arguments and must be deterministic for a given seed
    and sequence of calls.
    """

    name: str = "base"
    #: ``choose`` gives the same plan for the same arguments, whatever came before (no draw
    #: per call): the planner may then give a task the same plan while nothing is learned.
    repeatable: bool = False

    @abc.abstractmethod
    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        """Return the plan for ``task`` among ``scored`` (non-empty)."""

    # Optional shortlist hooks. A candidate space has thousands of candidates per task; a
    # generator that reads only a few of them may say which, and the planner then predicts the
    # accuracy of those rows only and builds objects for the shortlist only. ``choose`` over the
    # shortlist must give the very same plan as over all candidates (candidate keys unique).
    # ``runs`` says which candidates are the same run at other lengths (None: not known).

    def rows_to_score(self, task: TaskSpec, seconds: np.ndarray, time_margin: float, top_k: int) -> np.ndarray | None:
        """Indices of the candidates whose accuracy ``choose`` may read, by predicted time; None: all."""
        return None

    def shortlist(
        self,
        task: TaskSpec,
        accuracy: np.ndarray,
        accuracy_std: np.ndarray,
        seconds: np.ndarray,
        time_margin: float,
        top_k: int,
        runs: RunIndex | None = None,
    ) -> np.ndarray | None:
        """Indices (into these arrays) of the candidates ``choose`` can put in its plan; None: all."""
        return None


def _fits(item: ScoredCandidate, task: TaskSpec, time_margin: float) -> bool:
    return item.prediction.seconds * time_margin <= task.budget_seconds


def difference(candidate: Candidate, chosen: Candidate) -> str:
    """What sets ``candidate`` apart from ``chosen``, in the user's words.

    >>> a = Candidate("m", {"lr": 0.1}, epochs=5)
    >>> difference(Candidate("m", {"lr": 0.1}, epochs=2), a)
    'the same run with 2 epochs instead of 5'
    >>> difference(Candidate("n", {"lr": 0.01}, epochs=5), a)
    'model n, lr=0.01'
    """
    if candidate.model == chosen.model and dict(candidate.hparams) == dict(chosen.hparams):
        return f"the same run with {candidate.epochs} epochs instead of {chosen.epochs}"
    parts = [f"model {candidate.model}"] if candidate.model != chosen.model else []
    for key in sorted(set(candidate.hparams) | set(chosen.hparams)):
        if candidate.hparams.get(key) != chosen.hparams.get(key):
            parts.append(f"{key}={candidate.hparams.get(key, '-')}")
    if candidate.epochs != chosen.epochs:
        parts.append(f"{candidate.epochs} epochs")
    return ", ".join(parts)


def _plan(
    name: str,
    chosen: ScoredCandidate,
    ranked: Sequence[ScoredCandidate],
    task: TaskSpec,
    time_margin: float,
    top_k: int,
    why_lost: str | Callable[[ScoredCandidate], str],
) -> Plan:
    alternatives = []
    for item in ranked:
        if len(alternatives) >= top_k:
            break
        if item.candidate.key == chosen.candidate.key:
            continue
        if not _fits(item, task, time_margin):
            reason = (
                f"predicted {item.prediction.seconds:.1f}s x margin {time_margin:.2f} "
                f"exceeds the budget {task.budget_seconds:.1f}s"
            )
        else:
            reason = why_lost if isinstance(why_lost, str) else why_lost(item)
        reason = f"{difference(item.candidate, chosen.candidate)}: {reason}"
        alternatives.append(Alternative(item.candidate, item.prediction, reason))
    return Plan(
        candidate=chosen.candidate,
        prediction=chosen.prediction,
        policy=name,
        time_margin=time_margin,
        alternatives=tuple(alternatives),
        feasible=_fits(chosen, task, time_margin),
    )


class OneShotGenerator(ScheduleGenerator):
    """NASOA's one-shot policy: the best predicted accuracy whose predicted time fits.

    Parameters
    ----------
    risk_aversion
        Candidates are ranked by ``accuracy - risk_aversion x accuracy_std``: a one-shot
        pick cannot recover from a bad guess, so an uncertain prediction counts for less.
    exploration
        With probability ``exploration`` the ranking uses ``accuracy + accuracy_std``
        (optimism under uncertainty) instead, so uncertain regions get tried. 0 switches
        exploration off.
    seed
        Seeds the exploration coin.

    >>> from nasoa_contracts import Candidate, Prediction, TaskSpec
    >>> task = TaskSpec("builtin:digits", budget_seconds=10)
    >>> fast = ScoredCandidate(Candidate("small"), Prediction(80, 1, 5, 1))
    >>> slow = ScoredCandidate(Candidate("big"), Prediction(95, 1, 50, 5))
    >>> OneShotGenerator().choose(task, [fast, slow], time_margin=1.0).candidate.model
    'small'
    """

    name = "nasoa"

    def __init__(self, risk_aversion: float = 0.5, exploration: float = 0.0, seed: int = 0) -> None:
        self.risk_aversion = risk_aversion
        self.exploration = exploration
        self.seed = seed
        self._rng = random.Random(seed)

    @property
    def repeatable(self) -> bool:  # type: ignore[override]
        return self.exploration == 0  # the coin is drawn only when exploring

    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        optimistic = self.exploration > 0 and self._rng.random() < self.exploration
        weight = -1.0 if optimistic else self.risk_aversion

        def score(item: ScoredCandidate) -> float:
            return item.prediction.accuracy - weight * item.prediction.accuracy_std

        feasible = [s for s in scored if _fits(s, task, time_margin)]
        if feasible:
            ranked = sorted(feasible, key=score, reverse=True)
            rest = sorted((s for s in scored if not _fits(s, task, time_margin)), key=score, reverse=True)
            mode = "optimistic" if optimistic else "risk-adjusted"
            best = score(ranked[0])

            def why_lost(item: ScoredCandidate) -> str:
                lost = score(item)
                if lost == best:
                    return f"the same {mode} predicted accuracy ({lost:.1f}), ranked after the plan"
                return f"lower {mode} predicted accuracy ({lost:.1f} against {best:.1f})"

            return _plan(self.name, ranked[0], ranked + rest, task, time_margin, top_k, why_lost)
        # Nothing fits: run the fastest, so the job still finishes near its deadline.
        ranked = sorted(scored, key=lambda s: s.prediction.seconds)
        return _plan(self.name, ranked[0], ranked, task, time_margin, top_k,
                     lambda item: f"slower ({item.prediction.seconds:.1f}s predicted)")

    def rows_to_score(self, task: TaskSpec, seconds: np.ndarray, time_margin: float, top_k: int) -> np.ndarray | None:
        """When at least ``top_k + 1`` candidates fit, those that fit plus the fastest ``top_k + 1``.

        The others' accuracy is never read (half the prediction work or more under a tight budget).
        """
        n = top_k + 1
        fits = seconds * time_margin <= task.budget_seconds
        if not np.isfinite(seconds).all() or fits.sum() < n:
            return None
        return np.union1d(np.flatnonzero(fits), np.argsort(seconds, kind="stable")[:n])

    def shortlist(
        self,
        task: TaskSpec,
        accuracy: np.ndarray,
        accuracy_std: np.ndarray,
        seconds: np.ndarray,
        time_margin: float,
        top_k: int,
        runs: RunIndex | None = None,
    ) -> np.ndarray | None:
        """The best risk-adjusted candidate that fits plus the next ``top_k`` of its ranking.

        Or the fastest ones when none fits. Either ranking weight of the exploration coin is
        covered, so the coin's outcome does not matter.
        """
        if not (np.isfinite(accuracy).all() and np.isfinite(accuracy_std).all() and np.isfinite(seconds).all()):
            return None  # NaN orders differently in Python's sort
        n = top_k + 1
        fits = seconds * time_margin <= task.budget_seconds
        weights = [self.risk_aversion] + ([-1.0] if self.exploration > 0 else [])
        picked = [np.argsort(seconds, kind="stable")[:n]]  # nothing fits: the fastest
        for weight in weights:
            score = accuracy - weight * accuracy_std
            order = np.argsort(-score, kind="stable")  # stable, like sorted(..., reverse=True)
            feasible = order[fits[order]]
            picked.append(feasible[:n])
            if len(feasible) < n:
                picked.append(order[~fits[order]][: n - len(feasible)])
        return np.unique(np.concatenate(picked))


class RandomGenerator(ScheduleGenerator):
    """A random candidate among those predicted to fit (baseline)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        feasible = [s for s in scored if _fits(s, task, time_margin)] or list(scored)
        chosen = feasible[self._rng.randrange(len(feasible))]
        return _plan(self.name, chosen, feasible, task, time_margin, top_k, "not drawn")


class FixedDefaultGenerator(ScheduleGenerator):
    """Always the same model with a default regime (the practice NASOA improves on).

    The regime's epochs are the most that are predicted to fit the budget.
    """

    name = "fixed"
    repeatable = True

    def __init__(self, model: str = "", hparams: dict[str, float | str] | None = None) -> None:
        self.model = model
        self.hparams = hparams

    def _matches(self, candidate: Candidate) -> bool:
        if self.model and candidate.model != self.model:
            return False
        wanted = self.hparams or {}
        return all(candidate.hparams.get(k) == v for k, v in wanted.items())

    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        pool = [s for s in scored if self._matches(s.candidate)]
        if not pool:
            # The default model is not among the candidates: fall back to the first one's.
            first = scored[0].candidate
            pool = [s for s in scored if s.candidate.model == first.model] or list(scored)
        fitting = [s for s in pool if _fits(s, task, time_margin)]
        if fitting:
            chosen = max(fitting, key=lambda s: (s.candidate.epochs, -s.prediction.seconds))
        else:
            chosen = min(pool, key=lambda s: s.prediction.seconds)
        return _plan(self.name, chosen, pool, task, time_margin, top_k, "not the default regime")


def make_generator(name: str, seed: int = 0, **options: object) -> ScheduleGenerator:
    """Build a generator by policy name.

    ``nasoa`` (the default): probe-then-commit (``probe-then-commit`` names it too);
    ``one-shot``: NASOA's one-shot pick; ``random``; ``fixed``; ``asha``: successive halving.
    """
    if name in ("nasoa", "probe-then-commit"):
        from adaptor_service._probing import ProbeThenCommitGenerator  # it builds on this module

        return ProbeThenCommitGenerator(seed=seed, **options)  # type: ignore[arg-type]
    if name == "one-shot":
        return OneShotGenerator(seed=seed, **options)  # type: ignore[arg-type]
    if name == "random":
        return RandomGenerator(seed=seed)
    if name == "fixed":
        return FixedDefaultGenerator(**options)  # type: ignore[arg-type]
    if name == "asha":
        from adaptor_service._halving import SuccessiveHalvingGenerator  # it builds on this module

        return SuccessiveHalvingGenerator(seed=seed, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown policy {name!r}: choose nasoa, probe-then-commit, one-shot, random, fixed or asha")

