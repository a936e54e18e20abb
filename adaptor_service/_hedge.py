"""Which policy to plan with: NASOA's learned pick or best-prior, judged by prequential regret.

Every result the adaptor learns is first scored by both policies, before either learns it
(progressive validation): NASOA's predicted accuracy and seconds at each point of its curve,
and best-prior's neighbours among the earlier runs of *other* tasks. At a budget, each
policy's pick on a task is the task's run it scores best (NASOA: best predicted accuracy among
the points predicted to fit with the current time margin; best-prior: the best mean
percentile); its regret is the best outcome within the budget among the task's runs minus the
outcome of its pick. The hedge averages these regrets over the tasks of the recent window (the
runs learned since the stream was half as long, so that early predictions of half-trained
models do not count) and plans with the policy of lower regret, per budget band; NASOA until
``min_tasks`` tasks give evidence.

A probe's result and its continuation are one run. A probe never continued is censored: at
a budget beyond its last measured second its outcome is unknown, so neither policy is scored
on it there (probes are the runs NASOA predicts best: scoring their truncated curves as
outcomes would charge NASOA for the probing itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from adaptor_service._best_prior import BestPriorRanker, neighbour_means, outcome_within
from nasoa_contracts import CurvePoint, HParamValue

__all__ = ["BEST_PRIOR", "NASOA", "HedgeDecision", "PolicyHedge"]

NASOA = "nasoa"
BEST_PRIOR = "best-prior"


@dataclass(frozen=True)
class HedgeDecision:
    """The policy in use at a budget, and the prequential regrets it was chosen on."""

    budget_seconds: float
    policy: str
    nasoa_regret: float
    best_prior_regret: float
    tasks: int

    def reason(self) -> str:
        if self.tasks == 0 or math.isnan(self.nasoa_regret):
            return f"{self.policy} at {self.budget_seconds:g}s: no task with two results yet"
        return (
            f"{self.policy} at {self.budget_seconds:g}s: prequential regret nasoa {self.nasoa_regret:.1f}"
            f" vs best-prior {self.best_prior_regret:.1f} points over {self.tasks} tasks"
        )


class PolicyHedge:
    """Prequential regret of NASOA's pick and of best-prior's, per budget band.

    Parameters
    ----------
    k
        Neighbours of best-prior's score.
    min_tasks
        Tasks with two results or more needed before best-prior can be chosen.
    band_ratio
        Budgets within this factor of each other share a decision (a budget band).
    refresh
        A band's decision is recomputed once the results learned grew by this fraction.
    max_runs
        The most results kept (both policies' evidence and best-prior's runs): past it, the
        older half is dropped, so memory stays bounded.
    """

    def __init__(
        self, k: int = 5, min_tasks: int = 3, band_ratio: float = 2.0, refresh: float = 0.1, max_runs: int = 200_000
    ) -> None:
        if max_runs < 2:
            raise ValueError(f"max_runs must be >= 2, got {max_runs}")
        self.k = k
        self.min_tasks = min_tasks
        self.band_ratio = band_ratio
        self.refresh = refresh
        self.max_runs = max_runs
        self.ranker = BestPriorRanker(k)
        self._tasks: list[str] = []
        self._curves: list[tuple[CurvePoint, ...]] = []
        self._predicted: list[np.ndarray] = []  # per run: (points, 2) predicted accuracy and seconds
        self._neighbours: list[np.ndarray] = []
        self._censored: list[bool] = []
        self._latest: dict[tuple[str, str, tuple[tuple[str, object], ...]], int] = {}  # (task, run): its newest result
        self._decisions: dict[int, tuple[int, HedgeDecision]] = {}
        self.last: HedgeDecision | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def learn_one(
        self, task_id: str, model: str, hparams: Mapping[str, HParamValue], curve: Sequence[CurvePoint],
        predicted: Sequence[tuple[float, float]], censored: bool = False,
    ) -> None:
        """Score a result with both policies (NASOA's ``predicted`` (accuracy, seconds) per curve point), then keep it.

        ``censored``: the run stopped before its end (a probe). A result whose points follow a
        censored result of the same run on the task continues it: they become one run.
        """
        key = (task_id, model, tuple(sorted(hparams.items())))
        j = self._latest.get(key)
        if j is not None and self._censored[j] and curve and curve[0].epoch > self._curves[j][-1].epoch:
            self._curves[j] = (*self._curves[j], *curve)
            self._predicted[j] = np.vstack([self._predicted[j], np.asarray(predicted, dtype=float).reshape(len(curve), 2)])
            self._censored[j] = censored
            self.ranker.extend_run(j, curve, censored)
            return
        self._latest[key] = len(self._tasks)
        if len(self.ranker):
            others = np.array(self._tasks) != task_id
            if others.any():
                vector = self.ranker.encode([(model, hparams)])
                nearest = self.ranker.neighbours(vector, others[None, :])[0]
                self._neighbours.append(nearest[others[nearest]])
            else:
                self._neighbours.append(np.zeros(0, dtype=int))
        else:
            self._neighbours.append(np.zeros(0, dtype=int))
        self._tasks.append(task_id)
        self._curves.append(tuple(curve))
        self._predicted.append(np.asarray(predicted, dtype=float).reshape(len(curve), 2))
        self._censored.append(censored)
        self.ranker.learn_run(task_id, model, hparams, curve, censored)
        if len(self) > self.max_runs:
            self._drop_oldest(len(self) - self.max_runs // 2)

    def _drop_oldest(self, n: int) -> None:
        configs = self.ranker._configs[n:]
        del self._tasks[:n], self._curves[:n], self._predicted[:n], self._neighbours[:n], self._censored[:n]
        self._neighbours = [nb[nb >= n] - n for nb in self._neighbours]
        self._latest = {key: j - n for key, j in self._latest.items() if j >= n}
        self.ranker = BestPriorRanker(self.k)
        for task, (model, hparams), curve, censored in zip(
            self._tasks, configs, self._curves, self._censored, strict=True
        ):
            self.ranker.learn_run(task, model, hparams, curve, censored)
        self._decisions.clear()

    def band(self, budget_seconds: float) -> int:
        return math.floor(math.log(max(budget_seconds, 1e-9)) / math.log(self.band_ratio))

    def decide(self, budget_seconds: float, time_margin: float) -> HedgeDecision:
        """The policy to plan with at this budget (cached per band until ``refresh`` more results)."""
        band = self.band(budget_seconds)
        cached = self._decisions.get(band)
        if cached is None or len(self) >= cached[0] * (1 + self.refresh) + 1:
            cached = (len(self), self._evaluate(budget_seconds, time_margin))
            self._decisions[band] = cached
        self.last = cached[1]
        return cached[1]

    def _evaluate(self, budget: float, margin: float) -> HedgeDecision:
        start = len(self) // 2  # the recent window: scored by models trained on half of what is known now
        by_task: dict[str, list[int]] = {}
        for j in range(start, len(self)):
            by_task.setdefault(self._tasks[j], []).append(j)
        percentiles = self.ranker.percentiles(budget) if len(self) else np.zeros(0)
        nasoa, best_prior = [], []
        for runs in by_task.values():
            runs = [j for j in runs if not self._censored[j] or self._curves[j][-1].seconds >= budget]
            if len(runs) < 2:
                continue
            outcomes = np.array([outcome_within(self._curves[j], budget) for j in runs])
            bp = np.array([neighbour_means(percentiles[self._neighbours[j]]) for j in runs])
            ns = np.array([_nasoa_score(self._predicted[j], budget, margin) for j in runs])
            best = outcomes.max()
            nasoa.append(best - outcomes[int(np.argmax(ns))])
            best_prior.append(best - outcomes[int(np.argmax(bp))])
        n_regret = float(np.mean(nasoa)) if nasoa else math.nan
        b_regret = float(np.mean(best_prior)) if best_prior else math.nan
        use_best_prior = len(nasoa) >= self.min_tasks and b_regret < n_regret
        return HedgeDecision(budget, BEST_PRIOR if use_best_prior else NASOA, n_regret, b_regret, len(nasoa))

    def best_prior_configs(
        self, configs: Sequence[tuple[str, Mapping[str, HParamValue]]], budget_seconds: float,
        vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Positions of the configurations best-prior scores highest (every epoch count of the winner).

        ``vectors``: the configurations as ``self.ranker.encode`` encodes them, when known.
        """
        scores = self.ranker.score(configs, budget_seconds, vectors)
        return np.flatnonzero(scores >= scores.max() - 1e-12)

    def describe(self) -> tuple[str, str]:
        """(policy in use at the last budget planned, why); ``nasoa`` before any decision."""
        if self.last is None:
            return NASOA, "no plan made yet"
        return self.last.policy, self.last.reason()


def _nasoa_score(predicted: np.ndarray, budget: float, margin: float) -> float:
    """What NASOA's one-shot rule makes of a run: its best predicted accuracy among the points
    predicted to fit; when none fits, minus its fastest predicted seconds (it plans the fastest)."""
    fits = predicted[:, 1] * margin <= budget
    if fits.any():
        return float(predicted[fits, 0].max())
    return -1e9 - float(predicted[:, 1].min())
