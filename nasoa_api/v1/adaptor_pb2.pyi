from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    DONE: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
QUEUED: JobState
RUNNING: JobState
DONE: JobState
FAILED: JobState
CANCELLED: JobState

class Task(_message.Message):
    __slots__ = ("dataset_uri", "budget_seconds", "meta_features", "task_id", "device_class")
    class MetaFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_URI_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    META_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    dataset_uri: str
    budget_seconds: float
    meta_features: _containers.ScalarMap[str, float]
    task_id: str
    device_class: str
    def __init__(self, dataset_uri: _Optional[str] = ..., budget_seconds: _Optional[float] = ..., meta_features: _Optional[_Mapping[str, float]] = ..., task_id: _Optional[str] = ..., device_class: _Optional[str] = ...) -> None: ...

class HParamValue(_message.Message):
    __slots__ = ("number", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: float
    text: str
    def __init__(self, number: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("model", "hparams", "epochs", "model_features", "prior_seconds")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HParamValue, _Mapping]] = ...) -> None: ...
    class ModelFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    hparams: _containers.MessageMap[str, HParamValue]
    epochs: int
    model_features: _containers.ScalarMap[str, float]
    prior_seconds: float
    def __init__(self, model: _Optional[str] = ..., hparams: _Optional[_Mapping[str, HParamValue]] = ..., epochs: _Optional[int] = ..., model_features: _Optional[_Mapping[str, float]] = ..., prior_seconds: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("accuracy", "accuracy_std", "seconds", "seconds_std")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_STD_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_STD_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    accuracy_std: float
    seconds: float
    seconds_std: float
    def __init__(self, accuracy: _Optional[float] = ..., accuracy_std: _Optional[float] = ..., seconds: _Optional[float] = ..., seconds_std: _Optional[float] = ...) -> None: ...

class Alternative(_message.Message):
    __slots__ = ("candidate", "prediction", "reason")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    candidate: Candidate
    prediction: Prediction
    reason: str
    def __init__(self, candidate: _Optional[_Union[Candidate, _Mapping]] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("runs", "predictions", "stop_after_epochs", "keep")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    STOP_AFTER_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Candidate]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    stop_after_epochs: int
    keep: int
    def __init__(self, runs: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., stop_after_epochs: _Optional[int] = ..., keep: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("candidate", "prediction", "policy", "time_margin", "alternatives", "feasible", "stages", "planned_seconds")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TIME_MARGIN_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    candidate: Candidate
    prediction: Prediction
    policy: str
    time_margin: float
    alternatives: _containers.RepeatedCompositeFieldContainer[Alternative]
    feasible: bool
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    planned_seconds: float
    def __init__(self, candidate: _Optional[_Union[Candidate, _Mapping]] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., policy: _Optional[str] = ..., time_margin: _Optional[float] = ..., alternatives: _Optional[_Iterable[_Union[Alternative, _Mapping]]] = ..., feasible: _Optional[bool] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., planned_seconds: _Optional[float] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("task", "job_id", "models")
    TASK_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    task: Task
    job_id: str
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., job_id: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("task", "candidates", "models", "top_k")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    task: Task
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    models: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., models: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class CurvePoint(_message.Message):
    __slots__ = ("epoch", "accuracy", "seconds")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    accuracy: float
    seconds: float
    def __init__(self, epoch: _Optional[int] = ..., accuracy: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("accuracy", "seconds", "curve", "status", "message", "artifact_id", "artifact_sha256")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    seconds: float
    curve: _containers.RepeatedCompositeFieldContainer[CurvePoint]
    status: str
    message: str
    artifact_id: str
    artifact_sha256: str
    def __init__(self, accuracy: _Optional[float] = ..., seconds: _Optional[float] = ..., curve: _Optional[_Iterable[_Union[CurvePoint, _Mapping]]] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., artifact_id: _Optional[str] = ..., artifact_sha256: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "task", "plan", "state", "created_at", "updated_at", "result", "message", "parent_job_id", "stage", "stop_after_epochs", "resume_from_job_id", "child_job_ids")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STOP_AFTER_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task: Task
    plan: Plan
    state: JobState
    created_at: float
    updated_at: float
    result: Result
    message: str
    parent_job_id: str
    stage: int
    stop_after_epochs: int
    resume_from_job_id: str
    child_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., message: _Optional[str] = ..., parent_job_id: _Optional[str] = ..., stage: _Optional[int] = ..., stop_after_epochs: _Optional[int] = ..., resume_from_job_id: _Optional[str] = ..., child_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: str
    def __init__(self, worker: _Optional[str] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("job_id", "task", "candidate", "started", "progress", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task: Task
    candidate: Candidate
    started: Started
    progress: CurvePoint
    result: Result
    def __init__(self, job_id: _Optional[str] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., candidate: _Optional[_Union[Candidate, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[CurvePoint, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class ObserveSummary(_message.Message):
    __slots__ = ("received", "learned", "duplicates")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    received: int
    learned: int
    duplicates: int
    def __init__(self, received: _Optional[int] = ..., learned: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "kind", "state", "message", "epoch", "accuracy", "seconds", "timestamp")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    kind: str
    state: JobState
    message: str
    epoch: int
    accuracy: float
    seconds: float
    timestamp: float
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., epoch: _Optional[int] = ..., accuracy: _Optional[float] = ..., seconds: _Optional[float] = ..., timestamp: _Optional[float] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit", "state")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    state: JobState
    def __init__(self, limit: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stats(_message.Message):
    __slots__ = ("observations", "jobs", "jobs_by_state", "accuracy_mae", "time_relative_error", "candidates", "policy", "time_margin", "hedge_policy", "hedge_reason")
    class JobsByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    JOBS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_MAE_FIELD_NUMBER: _ClassVar[int]
    TIME_RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TIME_MARGIN_FIELD_NUMBER: _ClassVar[int]
    HEDGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    HEDGE_REASON_FIELD_NUMBER: _ClassVar[int]
    observations: int
    jobs: int
    jobs_by_state: _containers.ScalarMap[str, int]
    accuracy_mae: float
    time_relative_error: float
    candidates: int
    policy: str
    time_margin: float
    hedge_policy: str
    hedge_reason: str
    def __init__(self, observations: _Optional[int] = ..., jobs: _Optional[int] = ..., jobs_by_state: _Optional[_Mapping[str, int]] = ..., accuracy_mae: _Optional[float] = ..., time_relative_error: _Optional[float] = ..., candidates: _Optional[int] = ..., policy: _Optional[str] = ..., time_margin: _Optional[float] = ..., hedge_policy: _Optional[str] = ..., hedge_reason: _Optional[str] = ...) -> None: ...
