"""Typed settings, one class per component, read from ``NASOA_*`` variables and a TOML file.

Every field ``name`` of a settings class is read from the environment variable
``NASOA_<NAME>``; a TOML file named by ``NASOA_CONFIG`` may set the same fields in a table per
component (``[adaptor]``, ``[worker]``, ``[zoo]``, ``[client]``, ``[data]``). The environment
wins over the file, and arguments given in code win over both. Addresses are always
``HOST:PORT``.

>>> AdaptorSettings(home="/tmp/nasoa").store_url
'sqlite:////tmp/nasoa/adaptor.db'
>>> ZooSettings(zoo_address="localhost")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ZooSettings
zoo_address
  Value error, address must be HOST:PORT, got 'localhost' ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from nasoa_contracts._broker import QueueTopology

__all__ = [
    "AdaptorSettings",
    "ClientSettings",
    "DataSettings",
    "SettingsError",
    "WorkerSettings",
    "ZooSettings",
    "load_settings",
    "settings_table",
]

CONFIG_ENV = "NASOA_CONFIG"
_S = TypeVar("_S", bound="_Settings")


class SettingsError(ValueError):
    """A setting has a value that cannot be used: the message names the variable."""


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address must be HOST:PORT, got {value!r}")
    return value


Address = Annotated[str, AfterValidator(_check_address)]


def _default_home() -> Path:
    return Path.home() / ".nasoa"


class _Settings(BaseSettings):
    """What every component's settings share: the prefix, the TOML file, frozen values."""

    model_config = SettingsConfigDict(env_prefix="NASOA_", extra="ignore", frozen=True, validate_default=True)
    #: The table of the TOML file these settings are read from.
    section: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get(CONFIG_ENV, "")
        if config:
            if not Path(config).is_file():
                raise SettingsError(f"{CONFIG_ENV}={config!r} is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config, toml_table_header=(cls.section,)))
        return tuple(sources)


class _Served(_Settings):
    """Settings of a gRPC server: auth, TLS, reflection, logs, shutdown."""

    home: Path = Field(default_factory=_default_home, description="state directory of the single-machine setup")
    token: str = Field("", description="bearer token every call must carry (unset: no auth)", repr=False)
    tls_cert: Path | None = Field(None, description="PEM certificate: serve TLS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    reflection: bool = Field(False, description="register gRPC server reflection (for grpcurl)")
    log_level: str = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log lines: JSON objects (python-json-logger) or text")
    grace_seconds: float = Field(10.0, gt=0, description="SIGTERM grace period for in-flight calls")

    def tls(self) -> tuple[bytes, bytes] | None:
        """(certificate, key) PEM bytes, or None for plaintext."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("set both NASOA_TLS_CERT and NASOA_TLS_KEY, or neither")
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.tls_cert.read_bytes(), self.tls_key.read_bytes()


class _Queues(_Settings):
    """The job queues, declared alike by the adaptor (publisher) and the workers (consumers)."""

    broker_url: str = Field("", description="Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672// (default: embedded)")
    queue_prefix: str = Field("nasoa", min_length=1, description="prefix of the per-device-class queues")
    device_classes: str = Field("cpu,cuda", min_length=1, description="device classes that have a job queue (comma-separated)")
    max_deliveries: int = Field(5, ge=1, description="deliveries of one job before RabbitMQ dead-letters it")
    max_budget_seconds: float = Field(86_400.0, gt=0, description="largest budget a task may have")
    adaptor_retry_seconds: float = Field(
        600.0, gt=0, description="how long a worker waits for an unreachable adaptor before the job goes back to the queue"
    )

    def topology(self) -> QueueTopology:
        classes = tuple(part.strip() for part in self.device_classes.split(",") if part.strip())
        # A job holds its message for its budget, the worker's wait for the adaptor, and slack.
        timeout_ms = int(1000 * (self.max_budget_seconds + self.adaptor_retry_seconds + 900))
        return QueueTopology(self.queue_prefix, classes, self.max_deliveries, timeout_ms)


class AdaptorSettings(_Served, _Queues):
    """``nasoa-adaptor``: the planning service."""

    section: ClassVar[str] = "adaptor"

    adaptor_address: Address = Field("127.0.0.1:50051", description="address to serve on")
    zoo_address: Address = Field("127.0.0.1:50052", description="zoo service whose models are the candidates")
    store_url: str = Field("", description="jobs and observations: sqlite:///PATH or postgresql://... (default: SQLite in home)")
    snapshot: Path | None = Field(None, description="file of the learned state (default: home/adaptor.snapshot)")
    snapshot_every: int = Field(20, ge=1, description="observations learned between snapshots")
    learn: Literal["background", "inline"] = Field(
        "background", description="background: Observe returns once results are recorded; inline: once learned"
    )
    candidates: Path | None = Field(None, description="regime grid TOML (default: the shipped candidates.toml)")
    policy: Literal["nasoa", "one-shot", "random", "fixed", "asha"] = Field(
        "nasoa", description="schedule generator: nasoa (probe-then-commit), one-shot, random, fixed or asha"
    )
    fixed_model: str = Field("", description="model of the fixed policy (default: the zoo's median by CPU step time)")
    seed: int = Field(0, ge=0, description="seed of the policy")
    risk_aversion: float = Field(0.5, ge=0, description="nasoa and one-shot rank by accuracy - k x its std: k")
    exploration: float = Field(0.0, ge=0, le=1, description="one-shot: probability of an optimistic (accuracy + std) pick")
    dispatch: Literal["celery", "none"] = Field("celery", description="hand jobs to Celery workers, or plan only")
    reconcile_seconds: float = Field(30.0, gt=0, description="period of the reconciler that re-queues lost jobs")
    requeue_after_seconds: float = Field(
        300.0, gt=0, description="a QUEUED job published this long ago while its queue is empty is published again"
    )
    data_root: Path | None = Field(None, description="dataset folders must lie inside it")
    max_meta_features: int = Field(64, gt=0, description="meta-feature keys per task")
    max_key_chars: int = Field(64, gt=0, description="characters of a meta-feature or hyperparameter key")
    max_candidates: int = Field(5_000, gt=0, description="candidates a Recommend may carry")
    max_hparams: int = Field(16, gt=0, description="hyperparameters per candidate")
    max_curve_points: int = Field(10_000, gt=0, description="curve points per result (one per epoch)")
    max_epochs: int = Field(10_000, gt=0, description="epochs of a candidate, and the longest schedule the policy plans")
    min_budget_seconds: float = Field(1.0, gt=0, description="smallest budget a task may have")
    max_message_bytes: int = Field(4 << 20, gt=0, description="one gRPC message, either way")
    max_text_chars: int = Field(4_096, gt=0, description="a result's message, a model name, a URI")
    max_watch_streams: int = Field(256, gt=0, description="WatchJob streams open at once; more get RESOURCE_EXHAUSTED")
    rpc_threads: int = Field(32, gt=0, description="server threads for unary calls and Observe streams")
    feature_cache_mb: int = Field(256, gt=0, description="memory of the tasks' cached feature rows, MB")
    max_snapshot_mb: int = Field(256, gt=0, description="a larger snapshot is logged as an error, MB")
    training_window: int = Field(
        1_000_000, gt=0, description="samples each predictor's training buffer keeps (the oldest are dropped)"
    )
    warm_start: str = Field(
        "", description="experience table (.jsonl/.csv) learned at start; empty: the shipped one; none: start cold"
    )

    def model_post_init(self, _context: Any) -> None:
        home = self.home.expanduser()
        object.__setattr__(self, "home", home)
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{home / 'adaptor.db'}")
        if self.snapshot is None:
            object.__setattr__(self, "snapshot", home / "adaptor.snapshot")


class WorkerSettings(_Queues):
    """``nasoa-worker``: the Celery workers that fine-tune."""

    section: ClassVar[str] = "worker"

    home: Path = Field(default_factory=_default_home, description="state directory of the single-machine setup")
    adaptor_address: Address = Field("127.0.0.1:50051", description="adaptor service to report to")
    zoo_address: Address = Field("127.0.0.1:50052", description="zoo service to fetch checkpoints from")
    cache_dir: Path | None = Field(None, description="verified checkpoint cache (default: home/cache)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="device to train on; picks the queue too")
    token: str = Field("", description="bearer token of the services", repr=False)
    tls_ca: Path | None = Field(None, description="PEM root certificates: talk TLS to the services")
    rpc_timeout: float = Field(30.0, gt=0, description="deadline of each call to the services, seconds")
    torch_threads: int = Field(0, ge=0, description="torch threads per job (0: torch's default)")
    data_root: Path | None = Field(None, description="dataset folders must lie inside it")
    log_level: str = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log lines: JSON objects (python-json-logger) or text")

    def model_post_init(self, _context: Any) -> None:
        home = self.home.expanduser()
        object.__setattr__(self, "home", home)
        if self.cache_dir is None:
            object.__setattr__(self, "cache_dir", home / "cache")


class ZooSettings(_Served):
    """``nasoa-zoo serve``: the model zoo service."""

    section: ClassVar[str] = "zoo"

    zoo_address: Address = Field("127.0.0.1:50052", description="address to serve on")
    zoo_dir: Path | None = Field(None, description="zoo store directory (default: the shipped default zoo)")
    zoo_admin_token: str = Field("", description="token that RegisterModel needs (unset: registering is off)", repr=False)
    grace_seconds: float = Field(5.0, gt=0, description="SIGTERM grace period for in-flight calls")
    artifact_dir: Path | None = Field(
        None, description="the fine-tuned models (default: zoo_dir/artifacts, or home/artifacts beside the packaged zoo)"
    )
    artifact_token: str = Field(
        "", description="token uploads need, and then reads too (default: NASOA_TOKEN, else a token file in home)", repr=False
    )
    artifact_max_upload_bytes: int = Field(2 << 30, ge=0, description="largest upload")
    artifact_max_count: int = Field(0, ge=0, description="artifacts kept at most, oldest deleted first (0: no cap)")
    artifact_max_bytes: int = Field(20 << 30, ge=0, description="bytes kept at most, oldest deleted first (0: no cap)")
    artifact_min_age: float = Field(86_400.0, ge=0, description="seconds a job's artifact is kept whatever the caps")
    artifact_min_free_bytes: int = Field(256 << 20, ge=0, description="free disk an upload must leave, else RESOURCE_EXHAUSTED")


class ClientSettings(_Settings):
    """``nasoa-submit`` and the Python clients."""

    section: ClassVar[str] = "client"

    home: Path = Field(default_factory=_default_home, description="state directory of the single-machine setup")
    adaptor_address: Address = Field("127.0.0.1:50051", description="adaptor service")
    zoo_address: Address = Field("127.0.0.1:50052", description="zoo service")
    token: str = Field("", description="bearer token of the services", repr=False)
    tls_ca: Path | None = Field(None, description="PEM root certificates: talk TLS to the services")
    broker_url: str = Field("", description="the workers' broker, asked whether a worker serves a queue (default: embedded)")
    queue_prefix: str = Field("nasoa", min_length=1, description="prefix of the per-device-class queues")

    def model_post_init(self, _context: Any) -> None:
        object.__setattr__(self, "home", self.home.expanduser())


class DataSettings(_Settings):
    """Where datasets come from (every component that reads data)."""

    section: ClassVar[str] = "data"

    data_root: Path | None = Field(None, description="dataset folders must lie inside it; relative paths start there")
    fashion_mnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"), description="Fashion-MNIST IDX files (Debian dataset-fashion-mnist)"
    )
    cache_dir: Path | None = Field(None, description="computed meta-features are cached in its meta/ (default: ~/.cache/nasoa)")


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """``cls(**overrides)``, with one-line errors naming the variable (no pydantic traceback)."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            problems.append(f"NASOA_{field.upper()}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("; ".join(problems)) from None


def settings_table(cls: type[_Settings], markdown: bool = False) -> str:
    """Each setting of ``cls``: variable, default and meaning (for ``--help`` and the docs)."""
    rows = []
    for name, field in cls.model_fields.items():
        if field.default_factory is not None:
            default = "see meaning" if name != "home" else "~/.nasoa"
        else:
            default = "" if field.default in (None, "") else str(field.default)
            if field.repr is False:
                default = ""
        rows.append((f"NASOA_{name.upper()}", default or "-", field.description or ""))
    if markdown:
        lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{var}` | `{default}` | {meaning} |" if default != "-" else f"| `{var}` | - | {meaning} |"
                  for var, default, meaning in rows]
        return "\n".join(lines)
    width = max(len(var) for var, _, _ in rows)
    return "\n".join(f"  {var:<{width}}  {meaning} [default: {default}]" for var, default, meaning in rows)

