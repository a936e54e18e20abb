"""Probe-then-commit: a few short probes, then the predicted winner for the rest of the budget.

The first epochs of a run say more about a new task than its meta-features do. When the
predictors cannot tell the best runs apart, :class:`ProbeThenCommitGenerator` plans two
stages: K probe runs, each with its full planned schedule, stopped after p epochs; their
curves are learned (the known-runs correction re-predicts each probe at its full length), and
:func:`select_continuing` picks the one that continues to the end of its schedule. When the
predictors are confident, or the budget holds too few runs, it plans one run, as the one-shot
generator does.

The budget is the task's total worker-seconds, probes included, over the time margin. A run
may be planned beyond the longest length of the candidate space: its time is scaled linearly
per epoch and its accuracy is held at the prediction of its longest predicted length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from adaptor_service._continuing import select_continuing
from adaptor_service._known_runs import RunKey, run_key
from adaptor_service._learner import at_epochs
from adaptor_service._schedulers import RunIndex, ScheduleGenerator, ScoredCandidate, _plan
from nasoa_contracts import Candidate, Plan, Prediction, Stage, TaskSpec

__all__ = ["ProbeThenCommitGenerator"]


class _Extension:
    """A run planned beyond its longest length ``last``; its candidate is made only when read.

    Every run gets one per budget tried, and few of them end in a plan: making (and
    validating) a candidate for each costed more than the rest of the plan.
    """

    __slots__ = ("_candidate", "_last", "epochs", "prediction")

    def __init__(self, last: ScoredCandidate, epochs: int, prediction: Prediction) -> None:
        self._last = last
        self._candidate: Candidate | None = None
        self.epochs = epochs
        self.prediction = prediction

    @property
    def candidate(self) -> Candidate:
        if self._candidate is None:
            self._candidate = at_epochs(self._last.candidate, self.epochs)
        return self._candidate


_Length = ScoredCandidate | _Extension


def _epochs(item: _Length) -> int:
    return item.epochs if isinstance(item, _Extension) else item.candidate.epochs


def _scored(item: _Length) -> ScoredCandidate:
    return ScoredCandidate(item.candidate, item.prediction) if isinstance(item, _Extension) else item


@dataclass(frozen=True)
class _Run:
    """One run (model and regime) with its predicted lengths, shortest first."""

    key: RunKey
    lengths: tuple[ScoredCandidate, ...]

    def at(self, epochs: int) -> ScoredCandidate | None:
        return next((s for s in self.lengths if s.candidate.epochs == epochs), None)


class ProbeThenCommitGenerator(ScheduleGenerator):
    """Probe a few runs for a few epochs, then continue the one predicted best from its curve.

    Parameters
    ----------
    max_probes
        The most runs probed (K); at least 2 are, or the plan is one-shot.
    probe_epochs
        The probe lengths p tried, shortest first; the longest whose probes fit
        ``probe_share`` of the budget is used.
    probe_share
        The share of the budget the probes may take together.
    confidence
        One-shot when the best run's predicted accuracy beats the runner-up's by this many
        standard deviations (of the difference) or more.
    risk_aversion
        Runs and lengths are ranked by ``accuracy - risk_aversion x accuracy_std``.
    optimism
        Probes are the runs of best ``accuracy + optimism x accuracy_std`` (optimism under
        uncertainty: the probes check it).
    per_model
        The most probes of one model, so that probes cover several models.
    max_loss
        The most predicted accuracy (points) that probing may cost the winner by shortening
        its schedule; K and p shrink until it holds.
    max_epochs
        The longest schedule planned, beyond the candidates' lengths (time scaled linearly
        per epoch, accuracy held at the longest predicted length). 0: no extension.
    tie_points
        Runs within this many points of the best are tied: the one predicted to fill the
        budget (``fill`` of it) wins, among those the best accuracy per second.
    fill
        The share of the budget a plan should use before accuracy per second breaks ties.
    seed
        Unused (the generator is deterministic); kept for the common constructor.

    Its shortlist keeps whole runs: those its plan can read (see :meth:`shortlist`).
    """

    name = "probe-then-commit"
    repeatable = True

    def __init__(
        self,
        max_probes: int = 10,
        probe_epochs: tuple[int, ...] = (1, 2, 3),
        probe_share: float = 0.5,
        confidence: float = 1.0,
        risk_aversion: float = 0.5,
        optimism: float = 1.0,
        per_model: int = 3,
        max_loss: float = 1.0,
        max_epochs: int = 10_000,
        tie_points: float = 0.25,
        fill: float = 0.8,
        seed: int = 0,
    ) -> None:
        self.max_probes = max_probes
        self.probe_epochs = probe_epochs
        self.probe_share = probe_share
        self.confidence = confidence
        self.risk_aversion = risk_aversion
        self.optimism = optimism
        self.per_model = per_model
        self.max_loss = max_loss
        self.max_epochs = max_epochs
        self.tie_points = tie_points
        self.fill = fill
        self.seed = seed

    # ------------------------------------------------------------------ scoring

    def _score(self, item: _Length) -> float:
        p = item.prediction
        return p.accuracy - self.risk_aversion * p.accuracy_std

    def _runs(self, scored: Sequence[ScoredCandidate]) -> list[_Run]:
        grouped: dict[RunKey, dict[int, ScoredCandidate]] = {}
        for item in scored:
            if math.isfinite(item.prediction.accuracy) and math.isfinite(item.prediction.seconds):
                grouped.setdefault(run_key(item.candidate), {}).setdefault(item.candidate.epochs, item)
        return [_Run(key, tuple(lengths[e] for e in sorted(lengths))) for key, lengths in grouped.items()]

    def _extended(self, run: _Run, available: float, ceiling: float) -> _Extension | None:
        """The run at the most epochs that fit ``available`` seconds beyond its longest length."""
        last = run.lengths[-1]
        epochs, p = last.candidate.epochs, last.prediction
        if self.max_epochs <= epochs or p.seconds <= 0:
            return None
        longest = min(self.max_epochs, int(available * epochs / p.seconds))
        if longest <= epochs:
            return None
        scale = longest / epochs
        prediction = Prediction(min(p.accuracy, ceiling), p.accuracy_std, p.seconds * scale, p.seconds_std * scale)
        return _Extension(last, longest, prediction)

    def _length(self, run: _Run, available: float, ceiling: float) -> _Length | None:
        """The run's longest length that fits ``available`` seconds among its best-scoring ones."""
        fitting: list[_Length] = [s for s in run.lengths if s.prediction.seconds <= available]
        extended = self._extended(run, available, ceiling)
        if extended is not None:
            fitting.append(extended)
        if not fitting:
            return None
        best = max(map(self._score, fitting))
        return max((s for s in fitting if self._score(s) >= best - self.tie_points), key=_epochs)

    def _pick(self, options: Sequence[_Length], budget: float) -> _Length:
        """The best-scoring option; among ties, one that fills the budget, then accuracy per second."""
        best = max(map(self._score, options))
        tied = [s for s in options if self._score(s) >= best - self.tie_points]
        filling = [s for s in tied if s.prediction.seconds >= self.fill * budget]
        if not filling:
            return max(tied, key=lambda s: (s.prediction.seconds, self._score(s)))
        return max(filling, key=lambda s: (s.prediction.accuracy / max(s.prediction.seconds, 1e-9), self._score(s)))

    # ------------------------------------------------------------------ shortlist

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
        """Every length of the runs ``choose`` can read; None (all) when ``runs`` is not known.

        Those are the runs of the ``top_k + 1`` best-scoring candidates (the alternatives),
        the runs tied with the best full-budget length (the one-shot pick), the two of best
        accuracy at that length (the confidence test), and for each probe length the first
        ``max_probes`` runs that the probe selection counts. Each run's full-budget length is
        computed here as :meth:`_length` computes it, on arrays. The extensions' ceiling needs
        no run: it is at least each run's own accuracy, so only its cap at 100 ever binds.
        """
        arrays = (accuracy, accuracy_std, seconds)
        if runs is None or not len(accuracy) or not all(np.isfinite(a).all() for a in arrays):
            return None  # NaN orders differently in Python's sort
        budget = task.budget_seconds / time_margin
        ceiling = min(100.0, float(accuracy.max()))
        score = accuracy - self.risk_aversion * accuracy_std
        option = self._full_lengths(runs, accuracy, accuracy_std, seconds, score, budget, ceiling)
        if option is None:  # nothing fits: the plan is the fastest candidate
            return None
        o_acc, o_std, o_sec, o_score, o_epochs, has = option
        keep = set(runs.run[np.argsort(-score, kind="stable")[: top_k + 1]].tolist())
        candidates = np.flatnonzero(has)
        tied = candidates[o_score[candidates] >= o_score[candidates].max() - self.tie_points]
        keep.update(tied.tolist())
        keep.update(candidates[np.argsort(-o_acc[candidates], kind="stable")[:2]].tolist())
        first = self._pick_run(tied.tolist(), o_acc.tolist(), o_sec.tolist(), o_score.tolist(), budget)
        plausible = o_acc[first] - o_std[first]
        optimistic = o_acc + self.optimism * o_std
        run_model = np.empty(len(has), dtype=np.intp)
        run_model[runs.run] = runs.model
        for p in self.probe_epochs:
            head = np.zeros(len(has), dtype=bool)
            at_p = runs.epochs == p
            head[runs.run[at_p & (seconds > 0)]] = True
            eligible = head & has & (o_epochs > p) & (optimistic > plausible)
            eligible[first] = head[first] and has[first] and o_epochs[first] > p
            order = np.flatnonzero(eligible)
            key = optimistic[order]
            key[order == first] = math.inf
            walked, per_model = 0, {}
            for r in order[np.argsort(-key, kind="stable")].tolist():
                model = int(run_model[r])
                if per_model.get(model, 0) >= self.per_model:
                    continue
                keep.add(r)
                per_model[model] = per_model.get(model, 0) + 1
                walked += 1
                if walked == self.max_probes:
                    break
        return np.flatnonzero(np.isin(runs.run, np.fromiter(keep, dtype=np.intp)))

    def _full_lengths(
        self, runs: RunIndex, accuracy: np.ndarray, accuracy_std: np.ndarray, seconds: np.ndarray,
        score: np.ndarray, budget: float, ceiling: float,
    ) -> tuple[np.ndarray, ...] | None:
        """Each run's :meth:`_length` over the whole budget, as arrays by run number; None: none fits.

        (accuracy, std, seconds, score, epochs, whether the run has one), the same floats
        as the objects' arithmetic gives.
        """
        n_runs = int(runs.run.max()) + 1
        fits = seconds <= budget
        if not fits.any():
            return None
        # Each run's longest length ("last"), whatever its time: the one extended.
        order = np.lexsort((runs.epochs, runs.run))
        is_last = np.ones(len(order), dtype=bool)
        is_last[:-1] = runs.run[order][1:] != runs.run[order][:-1]
        last = np.empty(n_runs, dtype=np.intp)
        last[runs.run[order[is_last]]] = order[is_last]
        l_epochs, l_sec = runs.epochs[last].astype(float), seconds[last]
        positive = l_sec > 0
        longest = np.zeros(n_runs)
        longest[positive] = np.floor(budget * l_epochs[positive] / l_sec[positive])
        longest = np.minimum(longest, float(self.max_epochs))
        extends = positive & (l_epochs < self.max_epochs) & (longest > l_epochs)
        x_acc = np.minimum(accuracy[last], ceiling)
        x_std = accuracy_std[last]
        x_sec = l_sec * (longest / l_epochs)
        x_score = x_acc - self.risk_aversion * x_std
        best = np.full(n_runs, -math.inf)
        np.maximum.at(best, runs.run[fits], score[fits])
        best = np.where(extends, np.maximum(best, x_score), best)
        has = np.isfinite(best)
        # The longest length within tie_points of the best: the extension when it is tied.
        tied = fits & (score >= (best - self.tie_points)[runs.run])
        pick = np.full(n_runs, -1, dtype=np.intp)
        rows = np.flatnonzero(tied)
        rows = rows[np.lexsort((runs.epochs[rows], runs.run[rows]))]  # per run, the longest last
        longest_tied = np.ones(len(rows), dtype=bool)
        longest_tied[:-1] = runs.run[rows][1:] != runs.run[rows][:-1]
        pick[runs.run[rows[longest_tied]]] = rows[longest_tied]
        use_x = extends & (x_score >= best - self.tie_points)
        pick_rows = np.where(pick >= 0, pick, 0)
        o_acc = np.where(use_x, x_acc, accuracy[pick_rows])
        o_std = np.where(use_x, x_std, accuracy_std[pick_rows])
        o_sec = np.where(use_x, x_sec, seconds[pick_rows])
        o_score = np.where(use_x, x_score, score[pick_rows])
        o_epochs = np.where(use_x, longest, runs.epochs[pick_rows].astype(float))
        return o_acc, o_std, o_sec, o_score, o_epochs, has

    def _pick_run(self, tied: list[int], acc: list[float], sec: list[float], score: list[float], budget: float) -> int:
        """:meth:`_pick` over runs by number: among the tied, the one filling the budget, then per second."""
        filling = [r for r in tied if sec[r] >= self.fill * budget]
        if not filling:
            return max(tied, key=lambda r: (sec[r], score[r]))
        return max(filling, key=lambda r: (acc[r] / max(sec[r], 1e-9), score[r]))

    # ------------------------------------------------------------------ planning

    def choose(
        self, task: TaskSpec, scored: Sequence[ScoredCandidate], time_margin: float, top_k: int = 5
    ) -> Plan:
        budget = task.budget_seconds / time_margin  # predicted seconds the plan may use
        runs = self._runs(scored)
        finite = [s.prediction.accuracy for s in scored if math.isfinite(s.prediction.accuracy)]
        ceiling = min(100.0, max(finite, default=100.0))  # no extension predicts above the task's best
        best_lengths = {run.key: self._length(run, budget, ceiling) for run in runs}
        options = [s for s in best_lengths.values() if s is not None]
        ranked = sorted(scored, key=self._score, reverse=True)
        if not options:  # nothing fits: the fastest, so the job still ends near its deadline
            fastest = sorted(scored, key=lambda s: s.prediction.seconds)
            return _plan(self.name, fastest[0], fastest, task, time_margin, top_k,
                         lambda item: f"slower ({item.prediction.seconds:.1f}s predicted)")
        one_shot = self._pick(options, budget)
        staged = None if self._confident(options) else self._probe_plan(
            task, runs, best_lengths, one_shot, budget, ceiling, time_margin, top_k, ranked)
        if staged is not None:
            return staged
        return _plan(self.name, _scored(one_shot), ranked, task, time_margin, top_k, self._why_lost(one_shot))

    def _why_lost(self, chosen: _Length) -> Callable[[ScoredCandidate], str]:
        best = self._score(chosen)

        def why(item: ScoredCandidate) -> str:
            lost = self._score(item)
            if lost >= best - self.tie_points:
                return f"about the same risk-adjusted predicted accuracy ({lost:.1f}), ranked after the plan"
            return f"lower risk-adjusted predicted accuracy ({lost:.1f} against {best:.1f})"

        return why

    def _confident(self, options: Sequence[_Length]) -> bool:
        """Whether the best run clearly beats the runner-up, given the predictions' spread."""
        if len(options) < 2:
            return True
        first, second = sorted((s.prediction for s in options), key=lambda p: p.accuracy, reverse=True)[:2]
        spread = math.hypot(first.accuracy_std, second.accuracy_std)
        return first.accuracy - second.accuracy >= self.confidence * spread

    def _probe_plan(
        self, task: TaskSpec, runs: Sequence[_Run], full_lengths: dict[RunKey, _Length | None], one_shot: _Length,
        budget: float, ceiling: float, time_margin: float, top_k: int, ranked: Sequence[ScoredCandidate],
    ) -> Plan | None:
        """A two-stage plan, or None when probing does not pay (too few runs fit).

        ``full_lengths``: each run's length over the whole budget (None: none fits).
        """
        for p in sorted(self.probe_epochs, reverse=True):  # the longest probes that fit first
            eligible = self._probe_candidates(runs, full_lengths, one_shot, p)
            for k in range(self.max_probes, 1, -1):
                probes = self._probes(eligible, one_shot, p, k, budget, ceiling)
                if probes is None:
                    continue
                # Probing shortens the one-shot pick (the first probe): worth it only if it loses little.
                if self._score(probes[0][0]) < self._score(one_shot) - self.max_loss:
                    continue
                winner = select_continuing(Stage([s.candidate for s, _ in probes], [s.prediction for s, _ in probes],
                                                 p, 1), [s.prediction for s, _ in probes])[0]
                return self._staged(task, probes, p, winner, time_margin, top_k, ranked)
        return None

    def _probe_candidates(
        self, runs: Sequence[_Run], full_lengths: dict[RunKey, _Length | None], one_shot: _Length, p: int
    ) -> list[tuple[_Run, float]]:
        """The runs worth probing for ``p`` epochs with their probes' predicted seconds, best first.

        The one-shot pick comes first; the others are the runs of best optimistic accuracy
        among those whose optimistic accuracy beats the pick's pessimistic one (so the
        uncertainty sets how many runs are worth probing).
        """
        first = run_key(one_shot.candidate)
        plausible = one_shot.prediction.accuracy - one_shot.prediction.accuracy_std
        candidates = []
        for run in runs:
            head = run.at(p)
            if head is None or head.prediction.seconds <= 0:
                continue
            full = full_lengths[run.key]
            if full is None or _epochs(full) <= p:
                continue
            optimistic = full.prediction.accuracy + self.optimism * full.prediction.accuracy_std
            if optimistic <= plausible and run.key != first:
                continue  # could not beat the one-shot pick even if the predictions erred by a std
            candidates.append((math.inf if run.key == first else optimistic, run, head.prediction.seconds))
        candidates.sort(key=lambda c: c[0], reverse=True)
        return [(run, cost) for _, run, cost in candidates]

    def _probes(
        self, eligible: Sequence[tuple[_Run, float]], one_shot: _Length, p: int, k: int, budget: float, ceiling: float
    ) -> list[tuple[_Length, float]] | None:
        """``k`` probes of ``p`` epochs among ``eligible``, each at its longest length that fits after the others.

        Each probe is (the run at its full length, its predicted seconds for ``p`` epochs).
        """
        first = run_key(one_shot.candidate)
        chosen: list[tuple[_Run, float]] = []
        per_model: dict[str, int] = {}
        for run, cost in eligible:
            model = run.key[0]
            if per_model.get(model, 0) >= self.per_model:
                continue
            chosen.append((run, cost))
            per_model[model] = per_model.get(model, 0) + 1
            if len(chosen) == k:
                break
        total = sum(cost for _, cost in chosen)
        if len(chosen) < k or chosen[0][0].key != first or total > self.probe_share * budget:
            return None
        probes = []
        for run, cost in chosen:
            full = self._length(run, budget - (total - cost), ceiling)  # what the other probes leave
            if full is None or _epochs(full) <= p:
                return None
            probes.append((full, cost))
        return probes

    def _staged(
        self, task: TaskSpec, probes: Sequence[tuple[_Length, float]], p: int, winner: int,
        time_margin: float, top_k: int, ranked: Sequence[ScoredCandidate],
    ) -> Plan:
        chosen = _scored(probes[winner][0])
        probe_stage = Stage([s.candidate for s, _ in probes], [s.prediction for s, _ in probes],
                            stop_after_epochs=p, keep=1)
        commit = Stage([chosen.candidate], [chosen.prediction], stop_after_epochs=0, keep=0)
        planned = sum(cost for _, cost in probes) + chosen.prediction.seconds - probes[winner][1]
        probed = {run_key(s.candidate) for s, _ in probes}
        why_lost = self._why_lost(chosen)

        def why(item: ScoredCandidate) -> str:
            if run_key(item.candidate) in probed:
                return f"probed for {p} epochs; its curve may still win"
            return why_lost(item)

        plan = _plan(self.name, chosen, ranked, task, time_margin, top_k, why)
        return replace(plan, stages=(probe_stage, commit), planned_seconds=planned,
                       feasible=planned * time_margin <= task.budget_seconds)
