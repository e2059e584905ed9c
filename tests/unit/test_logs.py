"""logs: one JSON object per line (ts, level, msg + extras), or text with key=value extras; nothing else leaks."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki import logs

from .conftest import NOW


@pytest.fixture
def restore_vaultpki_logger() -> Iterator[None]:
    """setup() configures the shared 'vaultpki' logger: put it back as it was."""
    log = logging.getLogger("vaultpki")
    saved = (log.handlers[:], log.level, log.propagate)
    try:
        yield
    finally:
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


Setup = Callable[..., tuple[logging.Logger, io.StringIO]]


@pytest.fixture
def setup(restore_vaultpki_logger: None) -> Setup:
    def make(fmt: str, level: int = logging.INFO) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        return logs.setup(fmt, stream, level), stream
    return make


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def record(msg: str, *args: object, level: int = logging.INFO, exc: BaseException | None = None,
           **extra: object) -> logging.LogRecord:
    """A record as Logger.makeRecord builds it, created at a fixed time."""
    exc_info = (type(exc), exc, None) if exc is not None else None
    rec = logging.getLogger("vaultpki.test").makeRecord("vaultpki.test", level, __file__, 1, msg, args, exc_info,
                                                        extra=extra or None)
    rec.created = NOW.timestamp()
    return rec


# --- JSON ---------------------------------------------------------------------

def test_json_line_has_ts_level_msg_and_extras(setup: Setup) -> None:
    log, stream = setup("json")
    log.info("renewed", extra={"file": "node.crt", "serial": "0a:1b", "failures": 0, "verified": None})
    (line,) = lines(stream)
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "msg", "file", "serial", "failures", "verified"}
    assert entry["level"] == "info" and entry["msg"] == "renewed"
    assert entry["file"] == "node.crt" and entry["serial"] == "0a:1b"
    assert entry["failures"] == 0 and entry["verified"] is None
    ts = dt.datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - ts).total_seconds()) < 60


def test_json_without_extras_has_exactly_three_keys(setup: Setup) -> None:
    log, stream = setup("json")
    log.warning("stopped")
    assert json.loads(lines(stream)[0]).keys() == {"ts", "level", "msg"}


def test_json_is_one_object_per_line(setup: Setup) -> None:
    log, stream = setup("json")
    log.info("first\nsecond line of the same message", extra={"reason": "a\nb"})
    log.error("pass failed; retrying", extra={"attempt": 2})
    out = lines(stream)
    assert len(out) == 2
    first, second = (json.loads(line) for line in out)
    assert first["msg"] == "first\nsecond line of the same message" and first["reason"] == "a\nb"
    assert second == {"ts": second["ts"], "level": "error", "msg": "pass failed; retrying", "attempt": 2}


def test_json_formats_exact_timestamp_and_args() -> None:
    entry = json.loads(logs.JsonFormatter().format(record("due in %ds", 42, file="node.crt")))
    assert entry == {"ts": "2030-06-01T12:00:00.000+00:00", "level": "info", "msg": "due in 42s", "file": "node.crt"}


def test_json_stringifies_values_it_cannot_encode() -> None:
    when = dt.datetime(2030, 7, 1, tzinfo=dt.UTC)
    entry = json.loads(logs.JsonFormatter().format(record("x", not_after=when, path=Path("/certs"),
                                                          files=["node.crt"])))
    assert entry["not_after"] == str(when) and entry["path"] == "/certs" and entry["files"] == ["node.crt"]


def test_json_exception_becomes_error_field() -> None:
    entry = json.loads(logs.JsonFormatter().format(record("boom", level=logging.ERROR, exc=ValueError("bad thing"))))
    assert entry == {"ts": "2030-06-01T12:00:00.000+00:00", "level": "error", "msg": "boom", "error": "bad thing"}


def test_json_private_attributes_do_not_leak() -> None:
    rec = record("x", file="node.crt")
    rec._secret = "s.hvs.token"   # type: ignore[attr-defined]
    entry = json.loads(logs.JsonFormatter().format(rec))
    assert entry.keys() == {"ts", "level", "msg", "file"}
    assert "hvs" not in logs.JsonFormatter().format(rec)


# --- text ---------------------------------------------------------------------

TEXT_TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_text_has_key_value_extras(setup: Setup) -> None:
    log, stream = setup("text")
    log.info("renewed", extra={"file": "node.crt", "serial": "0a:1b"})
    (line,) = lines(stream)
    assert re.fullmatch(TEXT_TS + r" info    renewed  file=node\.crt serial=0a:1b", line), line


def test_text_without_extras_is_just_the_message(setup: Setup) -> None:
    log, stream = setup("text")
    log.warning("stopped")
    (line,) = lines(stream)
    assert re.fullmatch(TEXT_TS + r" warning stopped", line), line


def test_text_exact_format(setup: Setup) -> None:
    formatter = setup("text")[0].handlers[0].formatter
    assert formatter is not None
    assert formatter.format(record("due", file="ca.crt", reason="missing")) == \
        "2030-06-01T12:00:00Z info    due  file=ca.crt reason=missing"
    assert formatter.format(record("stopped", level=logging.ERROR)) == "2030-06-01T12:00:00Z error   stopped"


# --- setup --------------------------------------------------------------------

def test_setup_configures_one_handler_without_propagation(setup: Setup) -> None:
    setup("text")
    log, stream = setup("json")            # again: replaces the handler, never adds a second one
    assert log is logging.getLogger("vaultpki")
    assert len(log.handlers) == 1 and not log.propagate
    assert isinstance(log.handlers[0].formatter, logs.JsonFormatter)
    log.info("once")
    assert len(lines(stream)) == 1


def test_setup_level_filters(setup: Setup) -> None:
    log, stream = setup("json", logging.WARNING)
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["msg"] for line in lines(stream)] == ["loud"]


def test_child_loggers_use_the_same_format(setup: Setup) -> None:
    _, stream = setup("json")
    logging.getLogger("vaultpki.daemon.sync_pass").info("pass complete", extra={"renewed": ["node.crt"]})
    assert json.loads(lines(stream)[0])["renewed"] == ["node.crt"]
