"""Snapshots of the learned state: written atomically, read back only from our own file.

The observation log is the source of truth; a snapshot only saves relearning it. A snapshot
that is torn, from another version, or of the wrong shape is ignored with a warning, and the
adaptor relearns the log.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path

import river

__all__ = ["SNAPSHOT_FORMAT", "Snapshots"]

log = logging.getLogger("nasoa.adaptor")

# 2: the state keeps the measured runs (KnownRuns); 3: the policy hedge; 4: rolling time error;
# 5: the time predictor's learned per-model prior; 6: the hedge keeps which runs are censored probes
SNAPSHOT_FORMAT = 6


class Snapshots:
    """Where and how often the learned state is snapshotted (``path=None``: never)."""

    def __init__(self, path: str | os.PathLike[str] | None, every: int = 20, max_mb: int = 256) -> None:
        self.path = Path(path) if path else None
        self.every = every
        self.max_mb = max_mb

    def due(self, n_learned: int) -> bool:
        return self.path is not None and n_learned % self.every == 0

    def write(self, state: object) -> None:
        """Temp file, fsync, rename: a reader sees the old snapshot or the new one."""
        if self.path is None:
            return
        payload = {"format": SNAPSHOT_FORMAT, "river": river.__version__, "state": state}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
                fh.flush()
                os.fsync(fh.fileno())
            size = os.path.getsize(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if size > self.max_mb << 20:
            log.error("snapshot %s is %.0f MB, above NASOA_MAX_SNAPSHOT_MB=%d: restarts slow down",
                      self.path, size / 2**20, self.max_mb)

    def read(self, expected: type) -> object | None:
        """The snapshotted state if it is a usable ``expected``; None (with a warning) otherwise."""
        if self.path is None or not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as fh:
                payload = pickle.load(fh)  # noqa: S301 - our own atomically written file
        except Exception as exc:  # a damaged snapshot must not stop the service
            log.warning("snapshot %s unreadable (%s): relearning from the log", self.path, exc)
            return None
        if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
            log.warning("snapshot %s is not of format %d: relearning from the log", self.path, SNAPSHOT_FORMAT)
            return None
        if payload.get("river") != river.__version__:
            log.warning("snapshot %s is from another River version: relearning from the log", self.path)
            return None
        state = payload.get("state")
        if not isinstance(state, expected):
            log.warning("snapshot %s holds no learned state (a %s): relearning from the log",
                        self.path, type(state).__name__)
            return None
        return state
