"""Conversions between domain dataclasses and the wire (protobuf) messages.

The proto is the single source of truth of the wire API; the stores keep jobs and
observations as the JSON of these same messages, so there is one encoding of each.
"""

from __future__ import annotations

from google.protobuf import json_format

from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_contracts._errors import InvalidArgument
from nasoa_contracts._types import (
    Alternative,
    Candidate,
    CurvePoint,
    Job,
    JobEvent,
    JobState,
    Observation,
    Plan,
    Prediction,
    Stage,
    TaskSpec,
)

MAX_LIST = 10_000


def task_to_pb(task: TaskSpec) -> pb.Task:
    return pb.Task(
        dataset_uri=task.dataset_uri,
        budget_seconds=task.budget_seconds,
        meta_features=dict(task.meta_features),
        task_id=task.task_id,
        device_class=task.device_class,
    )


def task_from_pb(msg: pb.Task) -> TaskSpec:
    return TaskSpec(
        dataset_uri=msg.dataset_uri,
        budget_seconds=msg.budget_seconds,
        meta_features=dict(msg.meta_features),
        task_id=msg.task_id,
        device_class=msg.device_class,
    )


def _hparam_from_pb(msg: pb.HParamValue) -> float | int | str:
    kind = msg.WhichOneof("kind")
    if kind == "text":
        return msg.text
    if kind == "number":
        number = msg.number
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    raise InvalidArgument("hyperparameter value must be a number or a text")


def candidate_to_pb(candidate: Candidate) -> pb.Candidate:
    msg = pb.Candidate(model=candidate.model, epochs=candidate.epochs, model_features=candidate.model_features)
    hparams = msg.hparams
    for key, value in candidate.hparams.items():  # set in place: half the time of building each value message
        if isinstance(value, str):
            hparams[key].text = value
        else:
            hparams[key].number = float(value)
    if candidate.prior_seconds is not None:
        msg.prior_seconds = candidate.prior_seconds
    return msg


def candidate_from_pb(msg: pb.Candidate) -> Candidate:
    return Candidate(
        model=msg.model,
        hparams={k: _hparam_from_pb(v) for k, v in msg.hparams.items()},
        epochs=msg.epochs,
        model_features=dict(msg.model_features),
        prior_seconds=msg.prior_seconds if msg.HasField("prior_seconds") else None,
    )


def prediction_to_pb(p: Prediction) -> pb.Prediction:
    return pb.Prediction(
        accuracy=p.accuracy, accuracy_std=p.accuracy_std, seconds=p.seconds, seconds_std=p.seconds_std
    )


def prediction_from_pb(msg: pb.Prediction) -> Prediction:
    return Prediction(msg.accuracy, msg.accuracy_std, msg.seconds, msg.seconds_std)


def plan_to_pb(plan: Plan) -> pb.Plan:
    return pb.Plan(
        candidate=candidate_to_pb(plan.candidate),
        prediction=prediction_to_pb(plan.prediction),
        policy=plan.policy,
        time_margin=plan.time_margin,
        alternatives=[
            pb.Alternative(
                candidate=candidate_to_pb(a.candidate),
                prediction=prediction_to_pb(a.prediction),
                reason=a.reason,
            )
            for a in plan.alternatives
        ],
        feasible=plan.feasible,
        stages=[
            pb.Stage(
                runs=[candidate_to_pb(c) for c in stage.runs],
                predictions=[prediction_to_pb(p) for p in stage.predictions],
                stop_after_epochs=stage.stop_after_epochs,
                keep=stage.keep,
            )
            for stage in plan.stages
        ],
        planned_seconds=plan.planned_seconds,
    )


def plan_from_pb(msg: pb.Plan) -> Plan:
    return Plan(
        candidate=candidate_from_pb(msg.candidate),
        prediction=prediction_from_pb(msg.prediction),
        policy=msg.policy,
        time_margin=msg.time_margin,
        alternatives=tuple(
            Alternative(candidate_from_pb(a.candidate), prediction_from_pb(a.prediction), a.reason)
            for a in msg.alternatives
        ),
        feasible=msg.feasible,
        stages=tuple(
            Stage(
                runs=tuple(candidate_from_pb(c) for c in stage.runs),
                predictions=tuple(prediction_from_pb(p) for p in stage.predictions),
                stop_after_epochs=stage.stop_after_epochs,
                keep=stage.keep,
            )
            for stage in msg.stages
        ),
        planned_seconds=msg.planned_seconds,
    )


def curve_to_pb(curve: tuple[CurvePoint, ...]) -> list[pb.CurvePoint]:
    return [pb.CurvePoint(epoch=p.epoch, accuracy=p.accuracy, seconds=p.seconds) for p in curve]


def curve_from_pb(points: object) -> tuple[CurvePoint, ...]:
    return tuple(CurvePoint(p.epoch, p.accuracy, p.seconds) for p in points)  # type: ignore[attr-defined]


def result_to_pb(obs: Observation) -> pb.Result:
    return pb.Result(
        accuracy=obs.accuracy,
        seconds=obs.seconds,
        curve=curve_to_pb(obs.curve),
        status=obs.status,
        message=obs.message,
        artifact_id=obs.artifact_id,
        artifact_sha256=obs.artifact_sha256,
    )


def observation_to_pb(obs: Observation) -> pb.ObserveRequest:
    return pb.ObserveRequest(
        job_id=obs.job_id,
        task=task_to_pb(obs.task),
        candidate=candidate_to_pb(obs.candidate),
        result=result_to_pb(obs),
    )


def observation_from_pb(msg: pb.ObserveRequest) -> Observation:
    result = msg.result
    return Observation(
        job_id=msg.job_id,
        task=task_from_pb(msg.task),
        candidate=candidate_from_pb(msg.candidate),
        accuracy=result.accuracy,
        seconds=result.seconds,
        curve=curve_from_pb(result.curve),
        status=result.status or "ok",
        message=result.message,
        artifact_id=result.artifact_id,
        artifact_sha256=result.artifact_sha256,
    )


def job_to_pb(job: Job) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id,
        task=task_to_pb(job.task),
        plan=plan_to_pb(job.plan),
        state=pb.JobState.Value(job.state.value),
        created_at=job.created_at,
        updated_at=job.updated_at,
        message=job.message,
        parent_job_id=job.parent_job_id,
        stage=job.stage,
        stop_after_epochs=job.stop_after_epochs,
        resume_from_job_id=job.resume_from_job_id,
        child_job_ids=list(job.child_job_ids),
    )
    if job.result is not None:
        msg.result.CopyFrom(result_to_pb(job.result))
    return msg


def job_from_pb(msg: pb.Job) -> Job:
    result = None
    if msg.HasField("result"):
        result = Observation(
            job_id=msg.job_id,
            task=task_from_pb(msg.task),
            candidate=candidate_from_pb(msg.plan.candidate),
            accuracy=msg.result.accuracy,
            seconds=msg.result.seconds,
            curve=curve_from_pb(msg.result.curve),
            status=msg.result.status or "ok",
            message=msg.result.message,
            artifact_id=msg.result.artifact_id,
            artifact_sha256=msg.result.artifact_sha256,
        )
    return Job(
        job_id=msg.job_id,
        task=task_from_pb(msg.task),
        plan=plan_from_pb(msg.plan),
        state=state_from_pb(msg.state),
        created_at=msg.created_at,
        updated_at=msg.updated_at,
        result=result,
        message=msg.message,
        parent_job_id=msg.parent_job_id,
        stage=msg.stage,
        stop_after_epochs=msg.stop_after_epochs,
        resume_from_job_id=msg.resume_from_job_id,
        child_job_ids=tuple(msg.child_job_ids),
    )


def state_from_pb(value: int) -> JobState:
    if value not in pb.JobState.values() or value == pb.JOB_STATE_UNSPECIFIED:
        names = ", ".join(s.value for s in JobState)
        raise InvalidArgument(f"unknown job state {value}: use one of {names}")
    return JobState(pb.JobState.Name(value))


def event_to_pb(event: JobEvent) -> pb.JobEvent:
    return pb.JobEvent(
        job_id=event.job_id,
        seq=event.seq,
        kind=event.kind,
        state=pb.JobState.Value(event.state.value),
        message=event.message,
        epoch=event.epoch,
        accuracy=event.accuracy,
        seconds=event.seconds,
        timestamp=event.timestamp,
    )


def event_from_pb(msg: pb.JobEvent) -> JobEvent:
    return JobEvent(
        job_id=msg.job_id,
        seq=msg.seq,
        kind=msg.kind,
        state=state_from_pb(msg.state),
        message=msg.message,
        epoch=msg.epoch,
        accuracy=msg.accuracy,
        seconds=msg.seconds,
        timestamp=msg.timestamp,
    )


def to_json(message: object) -> str:
    return json_format.MessageToJson(message, indent=None, sort_keys=True)  # type: ignore[arg-type]


def from_json(text: str, message_type: type) -> object:
    return json_format.Parse(text, message_type())
