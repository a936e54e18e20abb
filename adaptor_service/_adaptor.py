"""The plain-Python adaptor: plans tasks, keeps jobs, learns from observations.

The gRPC servicer is a thin layer over this class, and other schedulers can embed it
directly (see docs/EMBEDDING.md). One lock makes the adaptor the single writer of its River
models, and observations are learned in log order, so a restart that replays the log tail
over the last snapshot reaches the very same state.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import pickle
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

import numpy as np
import river
from river import metrics, stats

from adaptor_service._candidates import CandidateSpace, CandidateTable
from adaptor_service._hedge import BEST_PRIOR, NASOA, PolicyHedge
from adaptor_service._known_runs import (
    KnownRuns,
    Measured,
    RunKey,
    correct_accuracy,
    correct_seconds,
    rows_by_run,
)
from adaptor_service._predictors import (
    AccuracyPredictor,
    CandidateBlock,
    FeatureRows,
    TimePredictor,
    fits_outside,
    make_features,
)
from adaptor_service._schedulers import OneShotGenerator, ScheduleGenerator, ScoredCandidate
from adaptor_service._stores import JobStore, MemoryStore
from adaptor_service._types import (
    Candidate,
    CurvePoint,
    FailedPrecondition,
    InvalidArgument,
    Job,
    JobEvent,
    JobState,
    NotFound,
    Observation,
    Plan,
    Prediction,
    TaskSpec,
)

log = logging.getLogger("nasoa.adaptor")
T = TypeVar("T")

__all__ = ["Adaptor", "AdaptorStats", "Dispatcher", "DispatchError"]

SNAPSHOT_FORMAT = 3  # 2: the state keeps the measured runs (KnownRuns); 3: and the policy hedge


class DispatchError(RuntimeError):
    """The job could not be handed to the workers (broker unreachable...)."""


class Dispatcher(Protocol):
    """Hands a planned job to the workers."""

    def dispatch(self, job: Job) -> None: ...


@dataclass(frozen=True)
class AdaptorStats:
    observations: int
    jobs: int
    jobs_by_state: dict[str, int]
    accuracy_mae: float
    time_relative_error: float
    candidates: int
    policy: str
    time_margin: float
    hedge_policy: str = NASOA  # the policy the last plan was made with: nasoa or best-prior
    hedge_reason: str = ""


class _LearnedState:
    """Everything learned from observations: what a snapshot holds."""

    def __init__(self, accuracy: AccuracyPredictor, time_model: TimePredictor) -> None:
        self.accuracy = accuracy
        self.time = time_model
        self.known_runs = KnownRuns()
        self.hedge = PolicyHedge()
        self.time_log_error_q90 = stats.Quantile(0.9)
        self.accuracy_mae = metrics.MAE()
        self.time_rel_error = stats.Mean()
        self.last_seq = 0
        self.n_learned = 0


class Adaptor:
    """Plans fine-tuning jobs with online predictors and learns from every result.

    Parameters
    ----------
    store
        Where jobs and observations are kept (MemoryStore, SQLStore).
    candidate_space
        The service's candidates; callers may also pass their own per call.
    generator
        The schedule generator (policy); NASOA's one-shot generator by default.
    dispatcher
        Hands submitted jobs to workers; ``None`` for recommend/observe-only use.
    snapshot_path
        Where the learned state is snapshotted (atomically); ``None`` keeps it in memory.
    snapshot_every
        Observations between snapshots.
    learn_in_background
        ``False`` (default): ``observe`` learns before it returns. ``True``: ``observe``
        records the result (the log makes it durable) and a background thread learns the
        log in order, doing exactly what ``observe`` would have done, so the state after
        :meth:`flush` is the same either way. The learner waits for a pause in the
        observations (``learn_pause_seconds``) unless ``max_backlog`` results wait.
    feature_cache_size
        Tasks (everything but the budget) whose candidates' feature matrix is kept.
    """

    def __init__(
        self,
        store: JobStore,
        candidate_space: CandidateSpace | None = None,
        generator: ScheduleGenerator | None = None,
        dispatcher: Dispatcher | None = None,
        accuracy_predictor: AccuracyPredictor | None = None,
        time_predictor: TimePredictor | None = None,
        snapshot_path: str | Path | None = None,
        snapshot_every: int = 20,
        default_margin: float = 1.2,
        learn_in_background: bool = False,
        feature_cache_size: int = 32,
        max_backlog: int = 10_000,
        learn_pause_seconds: float = 0.05,
    ) -> None:
        self.store = store
        self.candidate_space = candidate_space
        self.generator = generator or OneShotGenerator()
        self.dispatcher = dispatcher
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self.snapshot_every = snapshot_every
        self.default_margin = default_margin
        self._lock = threading.RLock()  # the learned state: readers and the learner
        self._learning = threading.RLock()  # held while one observation is learned: snapshots wait
        self._changed = threading.Condition(self._lock)
        self._state = _LearnedState(accuracy_predictor or AccuracyPredictor(), time_predictor or TimePredictor())
        self._features: _LRU[tuple[CandidateTable, FeatureRows]] = _LRU(feature_cache_size)
        self._blocks: _LRU[CandidateBlock] = _LRU(8)  # per (space, models): what every task shares
        self._run_rows: _LRU[dict[RunKey, list[int]]] = _LRU(8)  # per (space, models): rows of each run
        self._backlog = _Backlog(max_backlog, learn_pause_seconds) if learn_in_background else None
        self._restore()
        if self._backlog is not None:
            threading.Thread(target=self._learner, name="adaptor-learner", daemon=True).start()

    @classmethod
    def in_memory(cls, **kwargs: object) -> Adaptor:
        """An adaptor with a MemoryStore and no dispatcher (embedding, replay)."""
        return cls(MemoryStore(), **kwargs)  # type: ignore[arg-type]

    # ---- planning -------------------------------------------------------------------
    @property
    def time_margin(self) -> float:
        """Safety factor on predicted time: the 90th percentile of past actual/predicted."""
        q = self._state.time_log_error_q90
        if self._state.n_learned < 5:
            return self.default_margin
        return min(3.0, max(1.0, math.exp(q.get())))

    def predict(self, task: TaskSpec, candidates: Sequence[Candidate]) -> list[Prediction]:
        with self._lock:
            return self._predict_many(task, candidates)

    def _predict_many(self, task: TaskSpec, candidates: Sequence[Candidate]) -> list[Prediction]:
        # One batch call per predictor: the service scores thousands of candidates per request.
        rows = CandidateBlock(candidates).rows(task, [c.prior_seconds for c in candidates], candidates)
        acc, acc_std = self._state.accuracy.predict_arrays(rows, same_task=True)
        sec, sec_std = self._state.time.predict_arrays(rows)
        measured = self._measured(task, candidates)
        if measured:
            correct_seconds(measured, sec, sec_std)
            correct_accuracy(measured, acc, acc_std, self._accuracy_at(task))
        columns = (acc.tolist(), acc_std.tolist(), sec.tolist(), sec_std.tolist())
        return [Prediction(*p) for p in zip(*columns, strict=True)]

    def _measured(
        self, task: TaskSpec, candidates: Sequence[Candidate], rows_of: dict[RunKey, list[int]] | None = None
    ) -> Measured:
        """(position, candidate, curve) of the candidates whose run was measured on ``task``."""
        return [(i, candidates[i], curve) for i, curve in self._state.known_runs.matches(task, candidates, rows_of)]

    def _accuracy_at(self, task: TaskSpec) -> Callable[[Candidate, int], float]:
        """The model's accuracy of a candidate at another number of epochs."""
        return lambda candidate, epochs: self._state.accuracy.predict_one(
            make_features(task, _at_epochs(candidate, epochs))
        )

    def _predict_one(self, task: TaskSpec, candidate: Candidate) -> Prediction:
        x = make_features(task, candidate)
        acc, acc_std = self._state.accuracy.predict_dist(x)
        sec, sec_std = self._state.time.predict_dist(x)
        return Prediction(acc, acc_std, sec, sec_std)

    def recommend(
        self,
        task: TaskSpec,
        candidates: Sequence[Candidate] | None = None,
        models: Sequence[str] = (),
        top_k: int = 5,
    ) -> Plan:
        if top_k < 0 or top_k > 1000:
            raise InvalidArgument(f"top_k must be between 0 and 1000, got {top_k}")
        if candidates is None or len(candidates) == 0:
            if self.candidate_space is None:
                raise InvalidArgument("no candidates given and the adaptor has no candidate space")
            return self._recommend_from_space(task, tuple(models), top_k)
        if models:
            known = {c.model for c in candidates}
            unknown = [m for m in models if m not in known]
            if unknown:
                raise NotFound(f"unknown model {', '.join(map(repr, unknown))} among the given candidates")
            candidates = [c for c in candidates if c.model in models]
        if not candidates:
            raise InvalidArgument("there is no candidate to choose from")
        with self._lock:
            predictions = self._predict_many(task, candidates)
            scored = [ScoredCandidate(c, p) for c, p in zip(candidates, predictions, strict=True)]
            prior_rows = self._best_prior_rows(task, candidates, self.time_margin)
            if prior_rows is not None:
                scored = [scored[i] for i in prior_rows]
            return self.generator.choose(task, scored, self.time_margin, top_k or 5)

    def _best_prior_rows(self, task: TaskSpec, candidates: Sequence[Candidate], margin: float) -> np.ndarray | None:
        """Best-prior's candidates, when the hedge trusts it more than the predictors at this budget."""
        hedge = self._state.hedge
        if hedge.decide(task.budget_seconds, margin).policy != BEST_PRIOR:
            return None
        return hedge.best_prior_configs([(c.model, c.hparams) for c in candidates], task.budget_seconds)

    def _recommend_from_space(self, task: TaskSpec, models: tuple[str, ...], top_k: int) -> Plan:
        space = self.candidate_space
        assert space is not None
        key = (space, models, task.dataset_uri, task.task_id, task.device_class, tuple(task.meta_features.items()))
        entry = self._features.get(key)
        if entry is None:
            candidates = space.table(task, models)
            if not len(candidates):
                raise InvalidArgument("there is no candidate to choose from")
            # The candidates' own features are built once per space; a task adds its columns.
            block = self._blocks.get((space, models))
            if block is None:
                block = self._blocks.put((space, models), CandidateBlock(candidates.templates))
            # Features do not depend on the budget: a task asked for again reuses its matrix.
            rows = block.rows(task, candidates.priors, candidates)
            entry = self._features.put(key, (candidates, rows))
        candidates, rows = entry
        with self._lock:
            sec, sec_std = self._state.time.predict_arrays(rows)
            measured = []
            if self._state.known_runs.of_task(task):
                rows_of = self._run_rows.get((space, models))
                if rows_of is None:  # the same for every task of the space
                    rows_of = self._run_rows.put((space, models), rows_by_run(candidates.templates))
                measured = self._measured(task, candidates, rows_of)
                correct_seconds(measured, sec, sec_std)
            margin = self.time_margin
            shortlist = space.unique_keys and type(self.generator) is OneShotGenerator
            need = _one_shot_rows(task, sec, margin, top_k or 5) if shortlist else np.arange(len(rows))
            prior_rows = self._best_prior_rows(task, candidates.templates, margin)
            if prior_rows is not None:
                need, shortlist = prior_rows, False
            need, acc, acc_std = self._accuracy_of(task, candidates, rows, need)
            if measured:  # positions in the rows predicted
                position = {int(row): i for i, row in enumerate(need)}
                measured = [(position[i], c, curve) for i, c, curve in measured if i in position]
                correct_accuracy(measured, acc, acc_std, self._accuracy_at(task))
            picked = np.arange(len(need))
            if shortlist:
                picked = _one_shot_shortlist(self.generator, task, acc, acc_std, sec[need], margin, top_k or 5)
            index = need[picked]
            columns = (acc[picked].tolist(), acc_std[picked].tolist(), sec[index].tolist(), sec_std[index].tolist())
            scored = [
                ScoredCandidate(candidates[i], Prediction(*p))
                for i, p in zip(index.tolist(), zip(*columns, strict=True), strict=True)
            ]
            return self.generator.choose(task, scored, margin, top_k or 5)

    def _accuracy_of(
        self, task: TaskSpec, candidates: CandidateTable, rows: FeatureRows, need: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows predicted, accuracy, its std): the rows ``need`` unless a prediction is NaN."""
        if len(need) < len(rows):
            part = rows.take(need, make_features(task, candidates[int(need[0])]))
            acc, acc_std = self._state.accuracy.predict_arrays(part, same_task=True)
            if np.isfinite(acc).all() and np.isfinite(acc_std).all():
                return need, acc, acc_std
            need = np.arange(len(rows))  # NaN: the generator sees every candidate, as it orders NaN its own way
        acc, acc_std = self._state.accuracy.predict_arrays(rows, same_task=True)
        return need, acc, acc_std

    # ---- jobs -----------------------------------------------------------------------
    def submit(self, task: TaskSpec, job_id: str = "", models: Sequence[str] = ()) -> Job:
        """Plan ``task``, store it as a job and dispatch it. Idempotent by ``job_id``."""
        if job_id:
            _check_id(job_id)
            try:
                return self.store.get_job(job_id)
            except NotFound:
                pass
        plan = self.recommend(task, models=models)
        now = time.time()
        job = Job(job_id=job_id or uuid.uuid4().hex, task=task, plan=plan, created_at=now, updated_at=now)
        job, created = self.store.create_job(job)
        if not created:
            return job
        self._event(job, "state", "planned: " + plan.candidate.describe())
        if self.dispatcher is not None:
            try:
                self.dispatcher.dispatch(job)
            except Exception as exc:  # the broker's errors vary by transport
                job = self._set_state(job.job_id, JobState.FAILED, f"could not queue the job: {exc}")
                raise DispatchError(f"could not queue job {job.job_id}: {exc}") from exc
        return job

    def get_job(self, job_id: str) -> Job:
        _check_id(job_id)
        return self.store.get_job(job_id)

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        if not 0 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be between 0 and 10000, got {limit}")
        return self.store.list_jobs(limit or 100, state)

    def cancel_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job.state.finished:
            raise FailedPrecondition(f"job {job_id} is already {job.state.value}")
        return self._set_state(job_id, JobState.CANCELLED, "cancelled by the user")

    def _set_state(self, job_id: str, state: JobState, message: str = "") -> Job:
        with self._lock:
            job = self.store.get_job(job_id)
            job = replace(job, state=state, message=message or job.message, updated_at=time.time())
            self.store.update_job(job)
            self._event(job, "state", message)
            return job

    def _event(self, job: Job, kind: str, message: str = "", point: CurvePoint | None = None) -> None:
        event = JobEvent(
            job_id=job.job_id,
            seq=0,
            kind=kind,
            state=job.state,
            message=message,
            epoch=point.epoch if point else 0,
            accuracy=point.accuracy if point else 0.0,
            seconds=point.seconds if point else 0.0,
            timestamp=time.time(),
        )
        self.store.append_event(event)
        with self._changed:
            self._changed.notify_all()

    def watch_job(
        self, job_id: str, after_seq: int = 0, poll_seconds: float = 0.25, alive: object = None
    ) -> Iterator[JobEvent]:
        """Yield the job's events after ``after_seq`` until it finishes.

        ``alive`` is an optional callable; the stream ends when it returns False.
        """
        self.get_job(job_id)
        seq = after_seq
        while True:
            events = self.store.events_after(job_id, seq)
            for event in events:
                seq = event.seq
                yield event
            # One more read when finished: the finishing event may have landed after the last one.
            if not events and self.store.get_job(job_id).state.finished and not self.store.events_after(job_id, seq):
                return
            if alive is not None and not alive():  # type: ignore[operator]
                return
            with self._changed:
                self._changed.wait(poll_seconds)

    # ---- observations ---------------------------------------------------------------
    def job_started(self, job_id: str, worker: str = "") -> Job:
        job = self.get_job(job_id)
        if job.state == JobState.RUNNING:
            # At-least-once delivery: the broker handed the job to another worker.
            return self._set_state(job_id, JobState.RUNNING, f"running again on {worker or 'a worker'} (redelivered)")
        if job.state != JobState.QUEUED:
            return job
        return self._set_state(job_id, JobState.RUNNING, f"running on {worker or 'a worker'}")

    def job_progress(self, job_id: str, point: CurvePoint) -> None:
        job = self.get_job(job_id)
        if job.state.finished:
            return
        self._event(job, "progress", f"epoch {point.epoch}", point)

    def observe(self, obs: Observation, *, job: Job | None | Literal["look up"] = "look up") -> bool:
        """Record and learn a result. Returns False for a duplicate (nothing changes).

        ``job`` is the stored job the result finishes when the caller has just read it
        (``None``: an external run, no job), which saves reading it again.
        With ``learn_in_background`` it returns once the result is recorded; it is learned
        soon after, in log order (:meth:`flush` waits for that).
        """
        return self.observe_many([(obs, job)])[0]

    def observe_many(self, results: Sequence[tuple[Observation, Job | None | Literal["look up"]]]) -> list[bool]:
        """:meth:`observe` for several (result, job) pairs, recorded in one store transaction."""
        if not results:
            return []
        observations = [obs for obs, _ in results]
        if self._backlog is not None:
            self._backlog.wait_for_room()
            with self._backlog.order:  # log order is learning order
                positions = self.store.record_observations(observations)
                for obs, seq in zip(observations, positions, strict=True):
                    if seq is not None:
                        self._backlog.put(seq, obs)
            _each(self._finish_job, [(obs, job) for (obs, job), seq in zip(results, positions, strict=True) if seq is not None])
            return [seq is not None for seq in positions]
        with self._learning, self._lock:
            positions = self.store.record_observations(observations)
            # Every recorded result is learned and finishes its job, even if one of them fails.
            _each(self._learn_and_finish, [(seq, obs, job) for (obs, job), seq in zip(results, positions, strict=True) if seq is not None])
            return [seq is not None for seq in positions]

    def _learn_and_finish(self, seq: int, obs: Observation, job: Job | None | Literal["look up"]) -> None:
        self._learn(seq, obs)
        self._finish_job(obs, job)
        if self.snapshot_path and self._state.n_learned % self.snapshot_every == 0:
            self.snapshot()

    def warm_start(self, observations: Iterable[Observation]) -> int:
        """Learn from past results (an experience log); returns how many were new.

        The batch models are then refit on all of it (their geometric schedule would leave
        them fit on as little as half of a large log), and the state is snapshotted so a
        restart keeps that fit.
        """
        new = 0
        stream = iter(observations)
        while chunk := [(obs, "look up") for obs in itertools.islice(stream, 256)]:
            new += sum(self.observe_many(chunk))  # one store transaction per chunk
        self.flush()  # a background learner: the first plans after this start from all of it
        if new:
            with self._learning, self._lock:
                self._state.accuracy.refit()
                self._state.time.refit()
            self.snapshot()
        return new

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every recorded result is learned; False if ``timeout`` passed first."""
        return self._backlog is None or self._backlog.wait_learned(timeout)

    def close(self) -> None:
        """Stop the background learner after the result it is learning (the log keeps the rest)."""
        if self._backlog is not None:
            self._backlog.stop()

    def _learner(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        while (item := backlog.take()) is not None:
            seq, obs = item
            try:
                with self._learning:
                    with self._lock, fits_outside(self._lock):
                        self._learn(seq, obs)
                    if self.snapshot_path and self._state.n_learned % self.snapshot_every == 0:
                        self.snapshot()
            except Exception:  # the result stays in the log; the next ones must still be learned
                log.exception("learning observation %d (job %s) failed", seq, obs.job_id)
            finally:
                backlog.done()

    def _finish_job(self, obs: Observation, job: Job | None | Literal["look up"] = "look up") -> None:
        if isinstance(job, str):  # "look up"
            try:
                job = self.store.get_job(obs.job_id)
            except NotFound:
                job = None
        if job is None:
            return  # an external run (another scheduler, a log): nothing to finish
        if job.state == JobState.CANCELLED:
            return
        state = JobState.FAILED if obs.status == "failed" else JobState.DONE
        job = replace(job, state=state, result=obs, updated_at=time.time(), message=obs.message or job.message)
        self.store.update_job(job)
        point = CurvePoint(obs.curve[-1].epoch if obs.curve else 0, obs.accuracy, obs.seconds)
        self._event(job, "result", obs.message or f"{state.value.lower()}: {obs.accuracy:.1f}%", point)

    def _learn(self, seq: int, obs: Observation) -> None:
        state = self._state
        state.last_seq = seq
        if obs.status == "failed":
            return
        # Progressive validation: predict the final outcome before learning it.
        before = self._predict_one(obs.task, obs.candidate)
        state.accuracy_mae.update(obs.accuracy, before.accuracy)
        if obs.seconds > 0:
            state.time_rel_error.update(abs(before.seconds - obs.seconds) / obs.seconds)
            state.time_log_error_q90.update(math.log(max(obs.seconds, 1e-3) / max(before.seconds, 1e-3)))
        points = obs.curve or (CurvePoint(obs.candidate.epochs, obs.accuracy, obs.seconds),)
        scored = self._predict_many(obs.task, [_at_epochs(obs.candidate, p.epoch) for p in points])
        state.hedge.learn_one(obs.task.task_id or obs.task.dataset_uri, obs.candidate.model, obs.candidate.hparams,
                              points, [(p.accuracy, p.seconds) for p in scored])
        for point in points:
            candidate = _at_epochs(obs.candidate, point.epoch)
            x = make_features(obs.task, candidate)
            state.accuracy.learn_one(x, point.accuracy)
            if point.seconds > 0:
                state.time.learn_one(x, point.seconds)
        state.known_runs.learn_one(obs)
        state.n_learned += 1

    # ---- stats & persistence --------------------------------------------------------
    def stats(self) -> AdaptorStats:
        by_state = self.store.count_jobs_by_state()
        with self._lock:
            return AdaptorStats(
                observations=self.store.count_observations(),
                jobs=sum(by_state.values()),
                jobs_by_state=by_state,
                accuracy_mae=float(self._state.accuracy_mae.get()),
                time_relative_error=float(self._state.time_rel_error.get()),
                candidates=len(self.candidate_space) if self.candidate_space else 0,
                policy=self.generator.name,
                time_margin=self.time_margin,
                hedge_policy=self._state.hedge.describe()[0],
                hedge_reason=self._state.hedge.describe()[1],
            )

    def snapshot(self) -> None:
        """Write the learned state atomically: temp file, fsync, rename."""
        if self.snapshot_path is None:
            return
        with self._learning, self._lock:  # never half an observation
            payload = {"format": SNAPSHOT_FORMAT, "river": river.__version__, "state": self._state}
            self.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=self.snapshot_path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.snapshot_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def _restore(self) -> None:
        """Load the last snapshot (our own file only), then learn the log's tail."""
        if self.snapshot_path and self.snapshot_path.exists():
            try:
                with open(self.snapshot_path, "rb") as fh:
                    payload = pickle.load(fh)  # noqa: S301 - our own atomically written file
                if payload.get("format") != SNAPSHOT_FORMAT or payload.get("river") != river.__version__:
                    log.warning("snapshot %s is from another version: relearning from the log", self.snapshot_path)
                else:
                    self._state = payload["state"]
            except Exception as exc:  # a damaged snapshot must not stop the service
                log.warning("snapshot %s unreadable (%s): relearning from the log", self.snapshot_path, exc)
        replayed = 0
        with self._lock:
            for seq, obs in self.store.observations_after(self._state.last_seq):
                self._learn(seq, obs)
                replayed += 1
        if replayed:
            log.info("restored: learned %d observations from the log tail", replayed)


def _one_shot_rows(task: TaskSpec, sec: np.ndarray, margin: float, top_k: int) -> np.ndarray:
    """The candidates whose accuracy :func:`_one_shot_shortlist` reads, in order.

    When at least ``top_k + 1`` candidates fit, the shortlist ranks only those that fit, plus
    the fastest ``top_k + 1``: the others' accuracy is never read, so it is not predicted
    (half the prediction work or more under a tight budget).
    """
    n = top_k + 1
    fits = sec * margin <= task.budget_seconds
    if not np.isfinite(sec).all() or fits.sum() < n:
        return np.arange(len(sec))
    return np.union1d(np.flatnonzero(fits), np.argsort(sec, kind="stable")[:n])


def _one_shot_shortlist(
    generator: OneShotGenerator,
    task: TaskSpec,
    acc: np.ndarray,
    acc_std: np.ndarray,
    sec: np.ndarray,
    margin: float,
    top_k: int,
) -> np.ndarray:
    """Indices (in order) of the candidates that OneShotGenerator.choose can put in its plan.

    The plan is the best risk-adjusted candidate that fits plus the next ``top_k`` of its
    ranking (or the fastest ones when none fits); choosing among these gives the very same
    plan as choosing among all, without making thousands of objects. Candidate keys must be
    unique. Either ranking weight of the exploration coin is covered.
    """
    if not (np.isfinite(acc).all() and np.isfinite(acc_std).all() and np.isfinite(sec).all()):
        return np.arange(len(acc))  # NaN orders differently in Python's sort
    n = top_k + 1
    fits = sec * margin <= task.budget_seconds
    weights = [generator.risk_aversion] + ([-1.0] if generator.exploration > 0 else [])
    picked = [np.argsort(sec, kind="stable")[:n]]  # nothing fits: the fastest
    for weight in weights:
        score = acc - weight * acc_std
        order = np.argsort(-score, kind="stable")  # stable, like sorted(..., reverse=True)
        feasible = order[fits[order]]
        picked.append(feasible[:n])
        if len(feasible) < n:
            picked.append(order[~fits[order]][: n - len(feasible)])
    return np.unique(np.concatenate(picked))


class _LRU(Generic[T]):
    """A small thread-safe LRU cache (tasks' feature rows, candidate blocks)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[object, T] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> T | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: object, value: T) -> T:
        with self._lock:
            if self.size > 0:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value


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


def _at_epochs(candidate: Candidate, epochs: int) -> Candidate:
    if epochs == candidate.epochs or epochs < 1:
        return candidate
    prior = None
    if candidate.prior_seconds is not None:
        prior = candidate.prior_seconds * epochs / candidate.epochs
    return replace(candidate, epochs=epochs, prior_seconds=prior)


def _check_id(job_id: str) -> None:
    if not job_id or len(job_id) > 128 or not job_id.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument(
            f"job id must be 1-128 letters, digits, '-' or '_', got {job_id[:40]!r}"
        )
