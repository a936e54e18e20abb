"""The plain-Python adaptor: plans tasks, keeps jobs, learns from observations.

The gRPC servicer is a thin layer over this class, and other schedulers can embed it directly
(see docs/EMBEDDING.md). It is a facade over four parts, each in its own module:

- :class:`~adaptor_service._planner.Planner`: predictions for every candidate, then the plan;
- :class:`~adaptor_service._jobs.JobLifecycle`: jobs, their states and events, dispatch;
- :class:`~adaptor_service._learner.Learner`: the single writer of the learned state, inline
  or on a background thread, in log order;
- :class:`~adaptor_service._snapshots.Snapshots`: the learned state on disk.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adaptor_service import _validation as validation
from adaptor_service._candidates import CandidateSpace
from adaptor_service._hedge import NASOA
from adaptor_service._jobs import Dispatcher, JobLifecycle
from adaptor_service._learner import LearnedState, Learner
from adaptor_service._limits import Limits
from adaptor_service._planner import Planner
from adaptor_service._predictors import AccuracyPredictor, TimePredictor
from adaptor_service._schedulers import OneShotGenerator, ScheduleGenerator
from adaptor_service._snapshots import Snapshots
from adaptor_service._staging import Schedules
from adaptor_service._stores import JobStore, MemoryStore
from nasoa_contracts import Candidate, CurvePoint, Job, JobEvent, JobState, Observation, Plan, Prediction, TaskSpec

__all__ = ["Adaptor", "AdaptorStats"]


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
    accuracy_predictor, time_predictor
        The online models (cloned state starts from them); the defaults otherwise.
    snapshot_path
        Where the learned state is snapshotted (atomically); ``None`` keeps it in memory.
    snapshot_every
        Observations between snapshots.
    default_margin
        Factor on predicted time until the stream has measured the time model's error.
    learn_in_background
        ``False`` (default): ``observe`` learns before it returns. ``True``: ``observe``
        records the result (the log makes it durable) and a background thread learns the
        log in order, doing exactly what ``observe`` would have done, so the state after
        :meth:`flush` is the same either way. The learner waits for a pause in the
        observations (``learn_pause_seconds``) unless ``max_backlog`` results wait.
    feature_cache_size
        Tasks (everything but the budget) whose candidates' feature matrix is kept; their
        total size is also bounded by ``limits.feature_cache_mb``.
    limits
        Bounds on requests and caches (:class:`~adaptor_service._limits.Limits`).
    validate_requests
        ``True`` (default): every task, candidate and result is checked as a server must
        (dataset URI, device class, known models, sizes and ranges). ``False`` for trusted
        embedding code that plans its own kinds of tasks (the replay benchmark).
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
        limits: Limits | None = None,
        validate_requests: bool = True,
    ) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.validate_requests = validate_requests
        state = LearnedState(accuracy_predictor or AccuracyPredictor(), time_predictor or TimePredictor())
        snapshots = Snapshots(snapshot_path, snapshot_every, self.limits.max_snapshot_mb)
        self.learner = Learner(state, snapshots, learn_in_background, max_backlog, learn_pause_seconds)
        self.planner = Planner(self.learner, candidate_space, generator or OneShotGenerator(), default_margin,
                               feature_cache_size, self.limits.feature_cache_mb << 20)
        self.jobs = JobLifecycle(store, dispatcher)
        self.jobs.schedules = Schedules(self.jobs, self.planner.predict, self.learner.lock)
        self.learner.restore(store)
        self.learner.start()

    @classmethod
    def in_memory(cls, **kwargs: object) -> Adaptor:
        """An adaptor with a MemoryStore and no dispatcher (embedding, replay)."""
        return cls(MemoryStore(), **kwargs)  # type: ignore[arg-type]

    @property
    def candidate_space(self) -> CandidateSpace | None:
        return self.planner.candidate_space

    @property
    def generator(self) -> ScheduleGenerator:
        return self.planner.generator

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self.jobs.dispatcher

    @dispatcher.setter
    def dispatcher(self, dispatcher: Dispatcher | None) -> None:
        self.jobs.dispatcher = dispatcher

    @property
    def state(self) -> LearnedState:
        """The learned state (read it under ``adaptor.learner.lock`` while results arrive)."""
        return self.learner.state

    # ---- planning -------------------------------------------------------------------
    @property
    def time_margin(self) -> float:
        """Safety factor on predicted time: the 90th percentile of past actual/predicted."""
        return self.planner.time_margin

    def predict(self, task: TaskSpec, candidates: Sequence[Candidate]) -> list[Prediction]:
        return self.planner.predict(task, candidates)

    def recommend(
        self, task: TaskSpec, candidates: Sequence[Candidate] | None = None, models: Sequence[str] = (), top_k: int = 5
    ) -> Plan:
        if self.validate_requests:
            validation.check_task(task, self.limits)
            validation.check_candidates(candidates or (), self.limits, self._known_models())
        return self.planner.recommend(task, candidates, models, top_k)

    def _known_models(self) -> Collection[str] | None:
        return self.candidate_space.models if self.candidate_space is not None else None

    def check_candidate_count(self, count: int) -> None:
        """Refuse a request with more candidates than the limit, before any is converted."""
        if self.validate_requests:
            validation.check_candidate_count(count, self.limits)

    def check_observation(self, obs: Observation) -> None:
        """Refuse a result the service must not record (InvalidArgument), before anything is stored."""
        if self.validate_requests:
            validation.check_observation(obs, self.limits, self._known_models())

    # ---- jobs -----------------------------------------------------------------------
    def submit(self, task: TaskSpec, job_id: str = "", models: Sequence[str] = ()) -> Job:
        """Plan ``task``, store it as a job and dispatch it. Idempotent by ``job_id``.

        A job that could not be queued stays QUEUED with a message saying why, and Submit
        raises DispatchError; Submit again with its id (or the reconciler) queues it then.
        """

        def plan_for(t: TaskSpec) -> Plan:
            plan = self.recommend(t, models=models)
            if self.validate_requests:
                validation.check_budget_covers(t, plan)
            return plan

        return self.jobs.submit(task, job_id, plan_for)

    def dispatch(self, job: Job) -> Job:
        """Hand ``job`` to the workers; on failure it stays QUEUED, marked not queued yet."""
        return self.jobs.dispatch(job)

    def requeue_job(self, job_id: str) -> Job | None:
        """Publish a QUEUED job again (its message was lost); None if it is no longer QUEUED."""
        return self.jobs.requeue_job(job_id)

    def fail_open_job(self, job_id: str, reason: str) -> Job | None:
        """Mark a job that is not finished FAILED with ``reason``; None if unknown or finished."""
        return self.jobs.fail_open_job(job_id, reason)

    def get_job(self, job_id: str) -> Job:
        return self.jobs.get_job(job_id)

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        return self.jobs.list_jobs(limit, state)

    def cancel_job(self, job_id: str) -> Job:
        return self.jobs.cancel_job(job_id)

    def watch_job(
        self, job_id: str, after_seq: int = 0, poll_seconds: float = 0.25, alive: object = None
    ) -> Iterator[JobEvent]:
        """Yield the job's events after ``after_seq`` until it finishes (or ``alive()`` is False)."""
        return self.jobs.watch_job(job_id, after_seq, poll_seconds, alive)  # type: ignore[arg-type]

    def job_started(self, job_id: str, worker: str = "") -> Job:
        return self.jobs.job_started(job_id, worker)

    def job_progress(self, job_id: str, point: CurvePoint) -> None:
        self.jobs.job_progress(job_id, point)

    # ---- observations ---------------------------------------------------------------
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
        for obs, _ in results:
            self.check_observation(obs)
        positions = self.learner.record(self.store, results, self.jobs.finish)
        self.jobs.finish_duplicates(results, positions)
        return [seq is not None for seq in positions]

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
            self.learner.refit()
            self.snapshot()
        return new

    def prepare(self) -> None:
        """Build the planner's shared structures before serving (see :meth:`Planner.prepare`)."""
        self.planner.prepare()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every recorded result is learned; False if ``timeout`` passed first."""
        return self.learner.flush(timeout)

    def close(self) -> None:
        """Stop the background learner after the result it is learning (the log keeps the rest)."""
        self.learner.close()

    # ---- stats & persistence --------------------------------------------------------
    def stats(self) -> AdaptorStats:
        by_state = self.store.count_jobs_by_state()
        with self.learner.lock:
            state = self.learner.state
            return AdaptorStats(
                observations=self.store.count_observations(),
                jobs=sum(by_state.values()),
                jobs_by_state=by_state,
                accuracy_mae=float(state.accuracy_mae.get()),
                time_relative_error=float(state.time_rel_error.get()),
                candidates=len(self.candidate_space) if self.candidate_space else 0,
                policy=self.generator.name,
                time_margin=self.time_margin,
                hedge_policy=state.hedge.describe()[0],
                hedge_reason=state.hedge.describe()[1],
            )

    def snapshot(self) -> None:
        """Write the learned state atomically: temp file, fsync, rename."""
        self.learner.snapshot()
