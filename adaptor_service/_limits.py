"""The service's resource limits: every request is checked against these at the boundary.

Each limit is a setting of the adaptor (``NASOA_*``, see :class:`nasoa_contracts.AdaptorSettings`),
so an operator can tighten or widen it without code. The defaults keep the adaptor well under
1 GiB of memory whatever a caller sends (docs/RELIABILITY.md, "Bounded resources").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nasoa_contracts import AdaptorSettings

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request (or the whole service) may hold.

    ========================== ================================ =========================================
    field                      environment variable             meaning
    ========================== ================================ =========================================
    max_meta_features          NASOA_MAX_META_FEATURES          meta-feature keys per task
    max_key_chars              NASOA_MAX_KEY_CHARS              characters of a meta-feature or hparam key
    max_candidates             NASOA_MAX_CANDIDATES             candidates a Recommend may carry
    max_hparams                NASOA_MAX_HPARAMS                hyperparameters per candidate
    max_curve_points           NASOA_MAX_CURVE_POINTS           curve points per result
    max_epochs                 NASOA_MAX_EPOCHS                 epochs of a candidate
    min_budget_seconds         NASOA_MIN_BUDGET_SECONDS         smallest budget a task may have
    max_budget_seconds         NASOA_MAX_BUDGET_SECONDS         largest budget (the broker's consumer
                                                                timeout must be above it)
    max_message_bytes          NASOA_MAX_MESSAGE_BYTES          one gRPC message, either way
    max_text_chars             NASOA_MAX_TEXT_CHARS             a result's message, a model name, a URI
    max_watch_streams          NASOA_MAX_WATCH_STREAMS          WatchJob streams open at once; more get
                                                                RESOURCE_EXHAUSTED
    rpc_threads                NASOA_RPC_THREADS                server threads for unary calls and
                                                                Observe streams
    feature_cache_mb           NASOA_FEATURE_CACHE_MB           memory of the tasks' cached feature rows
    max_snapshot_mb            NASOA_MAX_SNAPSHOT_MB            a larger snapshot is logged as an error
    device_classes             NASOA_DEVICE_CLASSES             device classes workers serve (queues)
    ========================== ================================ =========================================
    """

    max_meta_features: int = 64
    max_key_chars: int = 64
    max_candidates: int = 5_000
    max_hparams: int = 16
    max_curve_points: int = 10_000
    max_epochs: int = 10_000
    min_budget_seconds: float = 1.0
    max_budget_seconds: float = 86_400.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_text_chars: int = 4_096
    max_watch_streams: int = 256
    rpc_threads: int = 32
    feature_cache_mb: int = 256
    max_snapshot_mb: int = 256
    device_classes: tuple[str, ...] = ("cpu", "cuda")
    data_root: str | None = None  # dataset folders must lie inside it

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not value > 0:
                raise ValueError(f"{_env_name(f.name)} must be positive, got {value!r}")
        if self.min_budget_seconds > self.max_budget_seconds:
            raise ValueError("NASOA_MIN_BUDGET_SECONDS must not exceed NASOA_MAX_BUDGET_SECONDS")
        if not self.device_classes:
            raise ValueError("NASOA_DEVICE_CLASSES must name at least one device class")

    @classmethod
    def from_settings(cls, settings: AdaptorSettings) -> Limits:
        """The limits an :class:`~nasoa_contracts.AdaptorSettings` states (the same names)."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name not in ("device_classes", "data_root")}
        root = str(settings.data_root) if settings.data_root else None
        return cls(device_classes=settings.topology().device_classes, data_root=root, **values)  # type: ignore[arg-type]


def _env_name(field_name: str) -> str:
    return "NASOA_" + field_name.upper()
