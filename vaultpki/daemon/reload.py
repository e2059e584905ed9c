"""How the database is told to reload its certificates: the port every way of doing it fills, and
the choice of none. The ways: a signal by process name or pidfile (``vaultpki.daemon.reload_signal``),
and commands (``vaultpki.daemon.reload_command``), run in that order (``vaultpki.daemon.actions``).

CockroachDB re-reads its certs-dir on SIGHUP, and so does PostgreSQL (our test
stand-in). A signal is fire-and-forget: it proves nothing about what is served
afterwards, which is why the sync daemon probes the endpoint after reloading
(``vaultpki.daemon.probe``). Every failure of a reload is a ReloadError with one clear line.
"""

from __future__ import annotations

import signal
from typing import Protocol

import msgspec

from vaultpki.errors import ConfigError, ReloadError

__all__ = ["NoReload", "ReloadNotRunning", "ReloadOutcome", "Reloader", "parse_signal"]


class ReloadNotRunning(ReloadError):
    """Nobody to tell: no process of the name, no pidfile, or a stale one. Not a failure of the pass (at
    first boot, or after an outage, the database is not running yet and reads the new files when it starts),
    but the reload stays pending until a process gets it (``vaultpki.daemon.pending``)."""


class ReloadOutcome(msgspec.Struct, frozen=True):
    """What a reload did: the pids signalled (none for a command) and one line for logs."""

    signalled: tuple[int, ...]
    detail: str


class Reloader(Protocol):
    def reload(self) -> ReloadOutcome: ...

    def describe(self) -> str: ...


def parse_signal(name: str) -> signal.Signals:
    """``"SIGHUP"``, ``"HUP"``, ``"sighup"`` or ``"1"`` -> ``Signals.SIGHUP``; ConfigError otherwise."""
    text = name.strip()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        upper = text.upper()
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise ConfigError(f"{name!r} is not a signal name or number (e.g. 'SIGHUP', 'HUP' or '1')") from None


class NoReload(msgspec.Struct, frozen=True):
    """Reloading is switched off: the database picks up new files some other way."""

    def describe(self) -> str:
        return "no reload"

    def reload(self) -> ReloadOutcome:
        return ReloadOutcome((), "reload disabled")
