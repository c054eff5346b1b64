from __future__ import annotations

import json
import logging

from meshkit.logs import JsonFormatter


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "t", "levelname": "WARNING", "msg": msg, "args": ()})
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_is_one_json_object_with_the_service_and_extras() -> None:
    line = JsonFormatter("optimizer").format(_record("solve %s", building_id="b1"))
    entry = json.loads(line)
    assert entry["service"] == "optimizer"
    assert entry["level"] == "warning"
    assert entry["msg"] == "solve %s"
    assert entry["building_id"] == "b1"
    assert entry["ts"].endswith("Z")
    assert "\n" not in line


def test_exceptions_are_kept_inside_the_json_object() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter("audit").format(record))
    assert "RuntimeError: boom" in entry["exc"]
