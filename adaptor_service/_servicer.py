"""The gRPC servicer: proto <-> domain objects, domain errors -> status codes. Nothing else."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import grpc

from adaptor_service._adaptor import Adaptor
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc
from nasoa_contracts import (
    CurvePoint,
    InvalidArgument,
    Job,
    NotFound,
    Observation,
    ResourceExhausted,
    convert,
    status_of,
)

log = logging.getLogger("nasoa.adaptor.grpc")
F = TypeVar("F", bound=Callable[..., Any])


def _maps_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            code = status_of(exc)
            if code is None:
                log.exception("%s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            context.abort(code, str(exc))

    return wrapper  # type: ignore[return-value]


def _maps_errors_stream(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            code = status_of(exc)
            if code is None:
                log.exception("%s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            context.abort(code, str(exc))

    return wrapper  # type: ignore[return-value]


def _task(msg: pb.Task) -> Any:
    if not msg.dataset_uri:
        raise InvalidArgument("task.dataset_uri is required")
    return convert.task_from_pb(msg)


class AdaptorServicer(pb_grpc.AdaptorServiceServicer):
    """Wraps an :class:`Adaptor`; every method is a translation, no logic of its own."""

    def __init__(self, adaptor: Adaptor) -> None:
        self.adaptor = adaptor
        # Each open WatchJob stream holds a server thread: they get their own bounded share,
        # so streams can never take the threads that unary calls and Observe need.
        self.max_watch_streams = adaptor.limits.max_watch_streams
        self._watch_slots = threading.BoundedSemaphore(self.max_watch_streams)

    @_maps_errors
    def Submit(self, request: pb.SubmitRequest, context: grpc.ServicerContext) -> pb.Job:
        job = self.adaptor.submit(_task(request.task), job_id=request.job_id, models=list(request.models))
        prediction = job.plan.prediction
        log.info("job %s submitted: %s, budget %.0fs, plan %s", job.job_id, job.task.dataset_uri,
                 job.task.budget_seconds, job.plan.candidate.describe(),
                 extra={"event": "submit", "job_id": job.job_id, "dataset": job.task.dataset_uri,
                        "budget_seconds": job.task.budget_seconds, "device_class": job.task.device_class,
                        "state": job.state.value, "predicted_accuracy": prediction.accuracy,
                        "predicted_seconds": prediction.seconds})
        return convert.job_to_pb(job)

    @_maps_errors
    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.Plan:
        self.adaptor.check_candidate_count(len(request.candidates))
        candidates = [convert.candidate_from_pb(c) for c in request.candidates]
        plan = self.adaptor.recommend(
            _task(request.task), candidates or None, models=list(request.models), top_k=request.top_k
        )
        return convert.plan_to_pb(plan)

    @_maps_errors
    def Observe(self, request_iterator: Iterator[pb.ObserveRequest], context: grpc.ServicerContext) -> pb.ObserveSummary:
        received = 0
        results = _ResultGroups(self.adaptor, context)
        try:
            for request in request_iterator:
                received += 1
                if not request.job_id:
                    raise InvalidArgument(f"observe message {received}: job_id is required")
                kind = request.WhichOneof("event")
                if kind == "result":
                    obs, job = self._observation(request)
                    try:
                        self.adaptor.check_observation(obs)
                    except InvalidArgument as exc:
                        raise InvalidArgument(f"observe message {received}: {exc}") from None
                    # The job is read again when its group is committed: it may be cancelled by then.
                    results.add(obs, None if job is None else "look up")
                    continue
                results.commit()  # a job's events stay in order with its result
                if kind == "started":
                    self.adaptor.job_started(request.job_id, request.started.worker)
                    log.info("job %s started on %s", request.job_id, request.started.worker,
                             extra={"event": "start", "job_id": request.job_id, "worker": request.started.worker})
                elif kind == "progress":
                    p = request.progress
                    self.adaptor.job_progress(request.job_id, CurvePoint(p.epoch, p.accuracy, p.seconds))
                else:
                    raise InvalidArgument(f"observe message {received}: one of started, progress, result is required")
        except Exception:
            try:
                results.commit()  # what came before a bad message is kept, as if sent alone
            except Exception:
                log.exception("recording the results before a failed Observe message")
            raise
        results.commit()
        return pb.ObserveSummary(received=received, learned=results.learned, duplicates=results.duplicates)

    def _observation(self, request: pb.ObserveRequest) -> tuple[Observation, Job | None]:
        """The result as an Observation, and the stored job it finishes (None: an external run)."""
        try:
            job = self.adaptor.get_job(request.job_id)
        except NotFound:
            job = None
        if job is not None:
            # A planned job: task and candidate are the ones the service stored.
            return Observation(
                job_id=request.job_id,
                task=job.task,
                candidate=job.plan.candidate,
                accuracy=request.result.accuracy,
                seconds=request.result.seconds,
                curve=convert.curve_from_pb(request.result.curve),
                status=request.result.status or "ok",
                message=request.result.message,
                artifact_id=request.result.artifact_id,
                artifact_sha256=request.result.artifact_sha256,
            ), job
        if not request.HasField("task") or not request.HasField("candidate"):
            raise NotFound(
                f"no job with id {request.job_id!r}: a result for a run the service did not plan "
                "must carry its task and candidate"
            )
        return convert.observation_from_pb(request), None

    @_maps_errors_stream
    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        if request.after_seq < 0:
            raise InvalidArgument(f"after_seq must be >= 0, got {request.after_seq}")
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self.max_watch_streams} WatchJob streams are open (NASOA_MAX_WATCH_STREAMS): "
                "retry later, or poll GetJob"
            )
        try:
            for event in self.adaptor.watch_job(request.job_id, request.after_seq, alive=context.is_active):
                yield convert.event_to_pb(event)
        finally:
            self._watch_slots.release()

    @_maps_errors
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return convert.job_to_pb(self.adaptor.get_job(request.job_id))

    @_maps_errors
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        state = convert.state_from_pb(request.state) if request.state else None
        jobs = self.adaptor.list_jobs(limit=request.limit, state=state)
        return pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs])

    @_maps_errors
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return convert.job_to_pb(self.adaptor.cancel_job(request.job_id))

    @_maps_errors
    def GetStats(self, request: pb.GetStatsRequest, context: grpc.ServicerContext) -> pb.Stats:
        s = self.adaptor.stats()
        return pb.Stats(
            observations=s.observations,
            jobs=s.jobs,
            jobs_by_state=s.jobs_by_state,
            accuracy_mae=s.accuracy_mae,
            time_relative_error=s.time_relative_error,
            candidates=s.candidates,
            policy=s.policy,
            time_margin=s.time_margin,
            hedge_policy=s.hedge_policy,
            hedge_reason=s.hedge_reason,
        )


class _ResultGroups:
    """The results of one Observe stream, recorded in groups: one store transaction each.

    A group is committed when it holds ``max_size`` results, when ``max_wait`` seconds have
    passed since its first one (a timer, so a result on a long-lived stream is not held
    back), before any other kind of message, and at the end of the stream; the summary is
    sent only after the last commit. A caller that gave up (deadline passed, cancelled)
    gets nothing more recorded.
    """

    def __init__(
        self, adaptor: Adaptor, context: grpc.ServicerContext, max_size: int = 64, max_wait: float = 0.05
    ) -> None:
        self.adaptor = adaptor
        self.context = context
        self.max_size = max_size
        self.max_wait = max_wait
        self.learned = 0
        self.duplicates = 0
        self._items: list[tuple[Observation, Job | None | Literal["look up"]]] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._failed: Exception | None = None  # a commit by the timer that failed: raised in the stream

    def add(self, obs: Observation, job: Job | None | Literal["look up"]) -> None:
        with self._lock:
            self._raise_failure()
            self._items.append((obs, job))
            if len(self._items) >= self.max_size:
                self._commit()
            elif self._timer is None:
                self._timer = threading.Timer(self.max_wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def commit(self) -> None:
        with self._lock:
            self._raise_failure()
            self._commit()

    def _on_timer(self) -> None:
        with self._lock:
            try:
                self._commit()
            except Exception as exc:
                self._failed = exc

    def _raise_failure(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    def _commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if not items or not self.context.is_active():
            return
        recorded = self.adaptor.observe_many(items)
        for (obs, _), new in zip(items, recorded, strict=True):
            if new:
                log.info("job %s result: %s, %.1f%% in %.1fs", obs.job_id, obs.status, obs.accuracy, obs.seconds,
                         extra={"event": "result", "job_id": obs.job_id, "status": obs.status,
                                "accuracy": obs.accuracy, "seconds": obs.seconds})
        self.learned += sum(recorded)
        self.duplicates += len(recorded) - sum(recorded)
