"""One logging setup: every line is JSON, whatever the message holds."""

from __future__ import annotations

import io
import json
import logging

import pytest

from nasoa_contracts import setup_logging


def test_json_lines_survive_quotes_newlines_and_tracebacks():
    stream = io.StringIO()
    handler = setup_logging("INFO", "json", stream)
    try:
        log = logging.getLogger("nasoa.test")
        log.info('dataset "a\\b"\nsecond line', extra={"job_id": "j1", "accuracy": 91.5})
        try:
            raise RuntimeError('bad "thing"')
        except RuntimeError:
            log.exception("job %s failed", "j1")
        log.debug("not shown at INFO")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "ERROR"]
    assert lines[0]["message"] == 'dataset "a\\b"\nsecond line' and lines[0]["job_id"] == "j1"
    assert lines[0]["accuracy"] == 91.5 and lines[0]["logger"] == "nasoa.test" and "T" in lines[0]["time"]
    assert 'RuntimeError: bad "thing"' in lines[1]["exc_info"]


def test_unknown_log_format_is_a_clear_error():
    with pytest.raises(ValueError, match="NASOA_LOG_FORMAT must be json or text, got 'xml'"):
        setup_logging(fmt="xml")
