"""Logging for the daemon: plain text for people, one JSON object per line for machines.

Fields passed with ``extra=`` (file, serial, not_after, ...) become JSON keys. Nothing
secret is ever passed: tokens and keys never reach a log call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TextIO

__all__ = ["JsonFormatter", "setup"]

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = str(record.exc_info[1])
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{when} {record.levelname.lower():7} {record.getMessage()}" + (f"  {extras}" if extras else "")


def setup(fmt: str, stream: TextIO | None = None, level: int = logging.INFO) -> logging.Logger:
    """The ``vaultpki`` logger, writing to stderr in ``text`` or ``json``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    log = logging.getLogger("vaultpki")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return log
