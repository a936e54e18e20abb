"""The learner: applies recorded results to the learned state, in log order.

One learner is the single writer of the River models. Inline, it learns a result before
``record`` returns; in the background, ``record`` returns once the result is in the log and a
thread learns it soon after, doing exactly what the inline learner would, so the state after
:meth:`Learner.flush` is the same either way. A restart loads the last snapshot and learns the
log's tail, reaching the very same state.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Literal

from river import metrics, stats

from adaptor_service._hedge import PolicyHedge
from adaptor_service._known_runs import (
    KnownRuns,
    Measured,
    RunKey,
    correct_accuracy,
    correct_seconds,
    measured_curve,
)
from adaptor_service._locks import FairRLock
from adaptor_service._predictors import (
    AccuracyPredictor,
    CandidateBlock,
    TimePredictor,
    fits_outside,
    make_features,
)
from adaptor_service._snapshots import Snapshots
from adaptor_service._stores import JobStore
from adaptor_service._validation import not_learned_reason
from nasoa_contracts import Candidate, CurvePoint, Job, Observation, Prediction, TaskSpec

__all__ = ["LearnedState", "Learner", "accuracy_at", "at_epochs", "learn_observation", "measured_runs", "predict_candidates"]

log = logging.getLogger("nasoa.adaptor")

# Results the time margin is measured over (the latest ones).
TIME_ERROR_WINDOW = 50

JobRef = Job | None | Literal["look up"]  # the job a result finishes, none (external run), or unknown yet


class LearnedState:
    """Everything learned from observations: what a snapshot holds."""

    def __init__(self, accuracy: AccuracyPredictor, time_model: TimePredictor) -> None:
        self.accuracy = accuracy
        self.time = time_model
        self.known_runs = KnownRuns()
        self.hedge = PolicyHedge()  # which policy plans better at each budget, learnt prequentially
        # The plan's time margin: the 90th percentile of log(actual / predicted) seconds over the
        # latest results, each predicted before it was learned, so it follows the current stream.
        self.time_log_error_q90 = stats.RollingQuantile(0.9, window_size=TIME_ERROR_WINDOW)
        self.accuracy_mae = metrics.MAE()
        self.time_rel_error = stats.Mean()
        self.last_seq = 0
        self.n_learned = 0


def at_epochs(candidate: Candidate, epochs: int) -> Candidate:
    """``candidate`` planned for ``epochs`` epochs (its physics prior scaled to match)."""
    if epochs == candidate.epochs or epochs < 1:
        return candidate
    prior = None
    if candidate.prior_seconds is not None:
        prior = candidate.prior_seconds * epochs / candidate.epochs
    return replace(candidate, epochs=epochs, prior_seconds=prior)


def predict_candidates(
    state: LearnedState,
    task: TaskSpec,
    candidates: Sequence[Candidate],
    curves: Sequence[Sequence[CurvePoint]] | None = None,
) -> list[Prediction]:
    """The state's predictions for ``candidates`` (one batch call per model), measured runs corrected.

    ``curves`` (one per candidate) are the runs' own measured curves; by default those the
    state has learned for this task.
    """
    rows = CandidateBlock(candidates).rows(task, [c.prior_seconds for c in candidates], candidates)
    acc, acc_std = state.accuracy.predict_arrays(rows, same_task=True)
    sec, sec_std = state.time.predict_arrays(rows)
    if curves is None:
        measured = measured_runs(state, task, candidates)
    else:
        own = [(i, c, measured_curve(curve)) for i, (c, curve) in enumerate(zip(candidates, curves, strict=True))]
        measured = [(i, c, curve) for i, c, curve in own if curve is not None]
    if measured:
        correct_seconds(measured, sec, sec_std)
        correct_accuracy(measured, acc, acc_std, accuracy_at(state, task))
    columns = (acc.tolist(), acc_std.tolist(), sec.tolist(), sec_std.tolist())
    return [Prediction(*p) for p in zip(*columns, strict=True)]


def measured_runs(
    state: LearnedState, task: TaskSpec, candidates: Sequence[Candidate], rows_of: dict[RunKey, list[int]] | None = None
) -> Measured:
    """(position, candidate, curve) of the candidates whose run was measured on ``task``."""
    return [(i, candidates[i], curve) for i, curve in state.known_runs.matches(task, candidates, rows_of)]


def accuracy_at(state: LearnedState, task: TaskSpec) -> Callable[[Candidate, int], float]:
    """The model's accuracy of a candidate at another number of epochs."""
    return lambda candidate, epochs: state.accuracy.predict_one(make_features(task, at_epochs(candidate, epochs)))


def learn_observation(state: LearnedState, seq: int, obs: Observation) -> None:
    """Learn one recorded result: progressive validation first, then every curve point."""
    state.last_seq = seq
    if not_learned_reason(obs):
        return  # recorded (the log keeps it), never learned: it measured nothing real
    # A staged run's probe stopped as planned: it measured its schedule up to the last epoch it
    # reached. A continued run reports only its own seconds; its curve holds the whole run's.
    reached = obs.candidate
    if obs.status == "stopped" and obs.curve:
        reached = at_epochs(obs.candidate, obs.curve[-1].epoch)
    run_seconds = max(obs.seconds, obs.curve[-1].seconds if obs.curve else 0.0)
    x = make_features(obs.task, reached)
    accuracy, _ = state.accuracy.predict_dist(x)
    seconds, _ = state.time.predict_dist(x)
    state.accuracy_mae.update(obs.accuracy, accuracy)
    if run_seconds > 0:
        state.time_rel_error.update(abs(seconds - run_seconds) / run_seconds)
        state.time_log_error_q90.update(math.log(max(run_seconds, 1e-3) / max(seconds, 1e-3)))
    points = obs.curve or (CurvePoint(obs.candidate.epochs, obs.accuracy, obs.seconds),)
    points = state.known_runs.new_points(obs.task, obs.candidate, points)  # a continued run's probe epochs
    if points:  # the hedge scores both policies on this result before the models learn it (prequential)
        scored = predict_candidates(state, obs.task, [at_epochs(obs.candidate, p.epoch) for p in points])
        state.hedge.learn_one(obs.task.task_id or obs.task.dataset_uri, obs.candidate.model, obs.candidate.hparams,
                              points, [(p.accuracy, p.seconds) for p in scored], censored=obs.status == "stopped")
    for point in points:
        x = make_features(obs.task, at_epochs(obs.candidate, point.epoch))
        state.accuracy.learn_one(x, point.accuracy)
        if point.seconds > 0:
            state.time.learn_one(x, point.seconds)
    state.known_runs.learn_one(obs)
    state.n_learned += 1


class Learner:
    """Owns the learned state and learns recorded results into it.

    ``lock`` guards the state for readers (the planner) and the learner; ``learning`` is held
    while one result is learned, so a snapshot never holds half of one. ``generation`` counts
    the state's changes: it is odd while one is under way, and a plan made at an even
    generation that has not moved since is the plan the state gives.
    """

    def __init__(
        self,
        state: LearnedState,
        snapshots: Snapshots,
        background: bool = False,
        max_backlog: int = 10_000,
        pause_seconds: float = 0.05,
    ) -> None:
        self.state = state
        self.snapshots = snapshots
        self.lock = FairRLock()  # first come, first served: no request waits behind others many times
        self.learning = threading.RLock()
        self._backlog = _Backlog(max_backlog, pause_seconds) if background else None
        self.generation = 0

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around every change of the state, under ``lock``."""
        self.generation += 1
        try:
            yield
        finally:
            self.generation += 1

    @property
    def background(self) -> bool:
        return self._backlog is not None

    def start(self) -> None:
        if self._backlog is not None:
            threading.Thread(target=self._run, name="adaptor-learner", daemon=True).start()

    def restore(self, store: JobStore) -> None:
        """Load the last snapshot (our own file only), then learn the log's tail."""
        saved = self.snapshots.read(LearnedState)
        replayed = 0
        with self.lock, self._changing():
            if saved is not None:
                self.state = saved  # type: ignore[assignment]
            for seq, obs in store.observations_after(self.state.last_seq):
                learn_observation(self.state, seq, obs)
                replayed += 1
        if replayed:
            log.info("restored: learned %d observations from the log tail", replayed)

    def record(
        self, store: JobStore, results: Sequence[tuple[Observation, JobRef]], finish: Callable[[Observation, JobRef], None]
    ) -> list[int | None]:
        """Record results in one store transaction, finish their jobs, learn them.

        Returns each result's log position, None for a duplicate.
        """
        observations = [obs for obs, _ in results]
        if self._backlog is not None:
            self._backlog.wait_for_room()
            with self._backlog.order:  # log order is learning order
                positions = store.record_observations(observations)
                for obs, seq in zip(observations, positions, strict=True):
                    if seq is not None:
                        self._backlog.put(seq, obs)
            _each(finish, [(obs, job) for (obs, job), seq in zip(results, positions, strict=True) if seq is not None])
            return positions
        with self.learning, self.lock:
            positions = store.record_observations(observations)

            def learn_and_finish(seq: int, obs: Observation, job: JobRef) -> None:
                with self._changing():
                    learn_observation(self.state, seq, obs)
                finish(obs, job)
                if self.snapshots.due(self.state.n_learned):
                    self.snapshot()

            # Every recorded result is learned and finishes its job, even if one of them fails.
            _each(learn_and_finish,
                  [(seq, obs, job) for (obs, job), seq in zip(results, positions, strict=True) if seq is not None])
            return positions

    def refit(self) -> None:
        """Refit the batch models on everything learnt (after a warm start)."""
        with self.learning, self.lock, self._changing():
            self.state.accuracy.refit()
            self.state.time.refit()

    def snapshot(self) -> None:
        with self.learning, self.lock:  # never half an observation
            self.snapshots.write(self.state)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every recorded result is learned; False if ``timeout`` passed first."""
        return self._backlog is None or self._backlog.wait_learned(timeout)

    def close(self) -> None:
        """Stop the background learner after the result it is learning (the log keeps the rest)."""
        if self._backlog is not None:
            self._backlog.stop()

    def _run(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        while (item := backlog.take()) is not None:
            seq, obs = item
            try:
                with self.learning:
                    with self.lock, self._changing(), fits_outside(self.lock):
                        learn_observation(self.state, seq, obs)
                    if self.snapshots.due(self.state.n_learned):
                        self.snapshot()
            except Exception:  # the result stays in the log; the next ones must still be learned
                log.exception("learning observation %d (job %s) failed", seq, obs.job_id)
            finally:
                backlog.done()


class _Backlog:
    """Recorded results waiting for the background learner, in log order."""

    def __init__(self, max_size: int, pause: float) -> None:
        self.max_size = max_size
        self.pause = pause
        self.order = threading.Lock()  # held from recording a result to queueing it
        self._items: collections.deque[tuple[int, Observation]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._waiting_flush = 0
        self._stopped = False
        self._last_put = 0.0

    def put(self, seq: int, obs: Observation) -> None:
        with self._cond:
            self._items.append((seq, obs))
            self._last_put = time.monotonic()
            self._cond.notify_all()

    def wait_for_room(self) -> None:
        with self._cond:
            while len(self._items) >= self.max_size and not self._stopped:
                self._cond.wait(0.1)

    def take(self) -> tuple[int, Observation] | None:
        """The next result to learn; waits for a pause in the stream unless it is urgent."""
        with self._cond:
            while not self._stopped:
                if self._items:
                    quiet = time.monotonic() - self._last_put
                    urgent = self._waiting_flush or len(self._items) >= self.max_size // 2
                    # Learning competes with the request threads for the CPU and the GIL:
                    # it waits for a pause in the observations, unless results pile up.
                    if urgent or quiet >= self.pause:
                        self._busy = True
                        return self._items.popleft()
                    self._cond.wait(self.pause - quiet)
                else:
                    self._cond.wait()
            return None

    def done(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def wait_learned(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting_flush += 1
            self._cond.notify_all()
            try:
                while self._items or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or self._stopped:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._waiting_flush -= 1

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def _each(fn: Callable[..., None], calls: Sequence[tuple[object, ...]]) -> None:
    """``fn(*args)`` for every args, then the first exception any of them raised."""
    failure: Exception | None = None
    for args in calls:
        try:
            fn(*args)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
