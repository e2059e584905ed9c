"""What a reload may ask of a running process before signalling it: its name as the kernel and
its command line give it, and the users and groups it runs as (from /proc).

These answers decide whether a signal goes to the database or to nothing; they read, never signal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import psutil

__all__ = ["COMM_LEN", "ProcessHandle", "is_named", "process_ids"]


#: Linux keeps a process's name (``comm``) in 16 bytes including the NUL.
COMM_LEN = 15


class ProcessHandle(Protocol):
    """The part of ``psutil.Process`` we use, so tests can hand in look-alikes."""

    @property
    def pid(self) -> int: ...

    def name(self) -> str: ...

    def cmdline(self) -> list[str]: ...

    def exe(self) -> str: ...

    def status(self) -> str: ...

    def send_signal(self, sig: int) -> None: ...


def is_named(proc: ProcessHandle, name: str) -> bool:
    """Whether ``proc`` is the process called ``name`` (see SignalByName for the 15-character rule)."""
    current = proc.name()
    if current == name:
        return True
    if len(name) <= COMM_LEN or current[:COMM_LEN] != name[:COMM_LEN]:
        return False
    return name in (_basename(proc.cmdline), _basename(lambda: [proc.exe()]))


def _basename(read: Callable[[], list[str]]) -> str:
    """Basename of the first element *read* returns; '' when unreadable or empty."""
    try:
        values = read()
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return ""
    return os.path.basename(values[0]) if values and values[0] else ""


def process_ids(pid: int) -> tuple[tuple[int, ...], tuple[int, ...], frozenset[int]] | None:
    """(real, effective, saved, fs uids), (the same gids) and the supplementary groups of ``pid``, from
    /proc; None when it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None
    def numbers(key: str) -> tuple[int, ...]:
        return tuple(int(n) for n in fields.get(key, "").split())
    return numbers("Uid"), numbers("Gid"), frozenset(numbers("Groups"))

