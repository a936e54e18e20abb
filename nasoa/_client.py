"""``nasoa.Client``: the adaptor service from Python, in the user's terms.

Datasets are URIs or paths, budgets durations (``"90s"``, ``"2m"``, or seconds), results
plain values. Input is checked here before anything is sent: durations, dataset paths (made
absolute, kept inside ``NASOA_DATA_ROOT`` when set) and device classes; the service checks
it again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from nasoa_contracts import Job, JobEvent, Plan, TaskSpec

__all__ = [
    "DEFAULT_ADDRESS",
    "DEVICE_CLASSES",
    "BudgetTooSmall",
    "Client",
    "JobFailed",
    "ServiceUnreachable",
    "check_dataset",
    "parse_duration",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEVICE_CLASSES = ("cpu", "cuda")  # one worker queue each (nasoa_contracts.queue_for)
MAX_BUDGET_SECONDS = 30 * 24 * 3600
F = TypeVar("F", bound=Callable[..., Any])


class ServiceUnreachable(ConnectionError):
    """No service answers at the address; the message says how to start one."""


class JobFailed(RuntimeError):
    """A job ended FAILED or CANCELLED; ``job`` holds it, with its error."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} {job.state.value}: {job.message or 'no message'}")
        self.job = job


class BudgetTooSmall(ValueError):
    """The budget is below the quickest run the adaptor predicts for the task."""

    def __init__(self, budget_seconds: float, plan: Plan) -> None:
        p = plan.prediction
        need = p.seconds * plan.time_margin
        least = f"{need:.0f}s" if need >= 1 else f"{need:.1f}s"
        super().__init__(
            f"budget {budget_seconds:g}s is below the quickest predicted run: {plan.candidate.describe()} needs "
            f"{p.seconds:.1f}s (loading, one epoch or more, evaluation) x margin {plan.time_margin:.2f}; "
            f"give at least {least}"
        )
        self.plan = plan


def parse_duration(value: str | float | int) -> float:
    """Seconds from a duration (``30s``, ``2m``, ``1h30m``, ``1.5h``) or a number of seconds.

    >>> parse_duration("30s"), parse_duration("2m"), parse_duration("1h30m"), parse_duration(45)
    (30.0, 120.0, 5400.0, 45.0)
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    ValueError: budget 'soon' is not a duration: use e.g. 30s, 2m or 1h
    """
    import pytimeparse2

    seconds = float(value) if isinstance(value, int | float) else pytimeparse2.parse(str(value).strip())
    if seconds is None:
        raise ValueError(f"budget {value!r} is not a duration: use e.g. 30s, 2m or 1h")
    seconds = float(seconds)
    if not seconds > 0:  # also NaN
        raise ValueError(f"budget must be positive, got {value!r}")
    if seconds > MAX_BUDGET_SECONDS:
        raise ValueError(f"budget {value!r} is longer than 30 days")
    return seconds


def check_dataset(dataset: str | os.PathLike[str]) -> str:
    """The URI to send for ``dataset``: built-ins as given, folders as absolute real paths.

    A relative path is taken from the current directory (from ``NASOA_DATA_ROOT`` when that is
    set), so the workers, which run elsewhere, find the same folder; a path outside the data
    root is refused. Raises ``nasoa_data.DatasetError`` with the reason.
    """
    from nasoa_data import resolve

    text = os.fspath(dataset).strip()
    ref = resolve(text)  # checks the URI, the folder and the data root
    if ref.kind == "folder":
        return ref.uri if ref.seed else ref.name
    return text


def _check_device(device: str) -> str:
    if device not in DEVICE_CLASSES:
        raise ValueError(f"device class {device!r} is not served: choose one of {', '.join(DEVICE_CLASSES)}")
    return device


def _explained(method: F) -> F:
    """A connection failure becomes one line that names the address and how to start a server."""

    @functools.wraps(method)
    def wrapper(self: Client, *args: Any, **kwargs: Any) -> Any:
        from nasoa_contracts import ServiceTimeout, ServiceUnavailable

        try:
            return method(self, *args, **kwargs)
        except (ServiceUnavailable, ServiceTimeout) as exc:
            if self.reachable(timeout=1.0):
                raise  # the server answered: its own error (e.g. the broker is down)
            raise ServiceUnreachable(self.unreachable_message()) from exc

    return wrapper  # type: ignore[return-value]


class Client:
    """The adaptor service at ``address`` (``NASOA_ADAPTOR_ADDRESS``, default 127.0.0.1:50051).

    >>> with Client() as client:                                   # doctest: +SKIP
    ...     job = client.wait(client.submit("builtin:digits", "1m").job_id)
    ...     client.leaderboard()
    """

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        from clients import AdaptorClient
        from nasoa_contracts import ClientSettings, load_settings

        self.address = address or load_settings(ClientSettings).adaptor_address
        self.rpc = AdaptorClient(self.address, token=token, timeout=timeout)

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reachable(self, timeout: float = 1.0) -> bool:
        import grpc

        try:
            grpc.channel_ready_future(self.rpc._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def unreachable_message(self) -> str:
        return (f"no adaptor service answers at {self.address}: start one with `nasoa-adaptor` "
                f"(see `nasoa-adaptor --help`), or point --address / NASOA_ADAPTOR_ADDRESS at a running one")

    def task(self, dataset: str | os.PathLike[str], budget: str | float, device: str = "cpu") -> TaskSpec:
        """The checked task: duration parsed, dataset resolved, meta-features computed here."""
        from nasoa_contracts import TaskSpec
        from nasoa_data import compute_meta_features

        seconds = parse_duration(budget)
        device = _check_device(device)
        uri = check_dataset(dataset)
        meta = compute_meta_features(uri).as_dict()
        return TaskSpec(dataset_uri=uri, budget_seconds=seconds, meta_features=meta, device_class=device)

    @_explained
    def submit(self, dataset: str | os.PathLike[str], budget: str | float, *, models: Sequence[str] = (),
               device: str = "cpu", job_id: str = "", check_budget: bool = True) -> Job:
        """Plan and queue a fine-tuning job; ``job_id`` makes a repeated call return the same job.

        With ``check_budget``, a budget below the quickest predicted run (loading the model,
        one epoch and the evaluation) is refused with ``BudgetTooSmall`` before anything is
        queued.
        """
        task = self.task(dataset, budget, device)
        if check_budget:
            quickest = self.rpc.recommend(task, models=models, top_k=0)
            if not quickest.feasible:
                raise BudgetTooSmall(task.budget_seconds, quickest)
        return self.rpc.submit(task, job_id=job_id, models=models)

    @_explained
    def plan(self, dataset: str | os.PathLike[str], budget: str | float, *, models: Sequence[str] = (),
             device: str = "cpu", top_k: int = 5) -> Plan:
        """What the service would run for the task, and the runners-up; nothing runs."""
        return self.rpc.recommend(self.task(dataset, budget, device), models=models, top_k=top_k)

    @_explained
    def job(self, job_id: str) -> Job:
        return self.rpc.get_job(job_id)

    @_explained
    def children(self, job: Job | str) -> list[Job]:
        """The child jobs of a staged job (one per run and stage), in the order they were created."""
        parent = self.job(job) if isinstance(job, str) else job
        return [self.rpc.get_job(child_id) for child_id in parent.child_job_ids]

    @_explained
    def jobs(self, limit: int = 100, state: str | None = None) -> list[Job]:
        """The latest jobs, newest first (``state``: QUEUED, RUNNING, DONE, FAILED, CANCELLED)."""
        from nasoa_contracts import JobState

        return self.rpc.list_jobs(limit=limit, state=JobState(state.upper()) if state else None)

    @_explained
    def cancel(self, job_id: str) -> Job:
        return self.rpc.cancel_job(job_id)

    @_explained
    def stats(self) -> dict[str, Any]:
        from nasoa._records import stats_record

        return stats_record(self.rpc.get_stats())

    def events(self, job_id: str, timeout: float = 3600.0) -> Iterator[JobEvent]:
        """The job's events (state changes, epochs, result) until it finishes."""
        from nasoa_contracts import ServiceTimeout, ServiceUnavailable

        try:
            yield from self.rpc.watch_job(job_id, timeout=timeout)
        except (ServiceUnavailable, ServiceTimeout) as exc:
            if self.reachable(timeout=1.0):
                raise
            raise ServiceUnreachable(self.unreachable_message()) from exc

    def wait(self, job_id: str, timeout: float = 3600.0, on_event: Callable[[JobEvent], None] | None = None,
             raise_on_failure: bool = True) -> Job:
        """Follow the job until it finishes; raises :class:`JobFailed` unless it is DONE."""
        for event in self.events(job_id, timeout=timeout):
            if on_event is not None:
                on_event(event)
        job = self.job(job_id)
        if raise_on_failure and job.state.value != "DONE":
            raise JobFailed(job)
        return job

    def leaderboard(self, limit: int = 1000) -> pd.DataFrame:
        """Finished jobs as a pandas DataFrame, best accuracy first."""
        import pandas as pd

        from nasoa._records import leaderboard_rows

        return pd.DataFrame(leaderboard_rows(self.jobs(limit=limit)))

    def write_report(self, path: str | os.PathLike[str], limit: int = 1000) -> Path:
        """One self-contained HTML page of the finished jobs (see :func:`nasoa.write_report`)."""
        from nasoa._report import write_report

        return write_report(self.jobs(limit=limit), path, stats=self.stats())
