"""One logging setup for every NASOA process: JSON lines (python-json-logger) or plain text.

Each server passes its settings' ``log_level`` and ``log_format`` (``NASOA_LOG_LEVEL``,
``NASOA_LOG_FORMAT``). ``extra={...}`` fields of a log call become keys of the JSON object, so a line such as
``log.info("job submitted", extra={"job_id": ...})`` can be filtered by job id.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["setup_logging"]

_FIELDS = ("asctime", "levelname", "name", "message")
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
_HANDLER_NAME = "nasoa"


def setup_logging(level: str | int = "INFO", fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once (again replaces the handler); returns the handler.

    ``fmt`` is ``json`` (one JSON object a line) or ``text``; ``stream`` defaults to stderr.
    """
    fmt = fmt.lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"NASOA_LOG_FORMAT must be json or text, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                " ".join(f"%({f})s" for f in _FIELDS),
                rename_fields=_RENAMED,
                datefmt="%Y-%m-%dT%H:%M:%S%z",
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
