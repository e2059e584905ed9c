"""Telling the database that ``vaultpki rollback`` made the previous set current again: the post-renewal
actions for the restored files, then the verify probe, as a pass runs them after a write.

A rollback changes the files and nothing else: CockroachDB (and PostgreSQL) go on serving what they
loaded until they reload. Whatever the database could not be told is remembered as a pending reload
(``vaultpki.daemon.pending``), exactly as a pass remembers it: ``status`` shows it, and ``vaultpki sync``
finishes the job (a daemon reads the record when it starts and when a SIGHUP rebuilds it; ``--once`` at every
run). A reload that did happen (and was verified, with ``reload.verify``) clears a pending one, since the
database now serves what is on disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from vaultpki.core import crypto
from vaultpki.core.report import PendingReload
from vaultpki.daemon.actions import Renewed, run_actions
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.pending import PendingReloads
from vaultpki.daemon.probe import Prober
from vaultpki.daemon.reload import Reloader
from vaultpki.errors import ReloadError, VaultpkiError
from vaultpki.store.certs_dir import CertsDir

__all__ = ["POLL", "Told", "tell_restored"]

POLL = 0.25          # between two looks at the endpoint, as the daemon's verify polls


class Told(msgspec.Struct, frozen=True):
    """What telling the database did."""

    reloaded: bool                       # every action ran
    verified: bool | None                # None: no verify endpoint, or not reloaded
    failure: str | None = None           # one line: the action that failed, or what the endpoint serves
    pending: PendingReload | None = None  # what is still owed (a running daemon retries it), as status shows it


def tell_restored(actions: Sequence[Reloader], prober: Prober | None, endpoint: str | None, timeout: float,
                  store: CertsDir, files: Sequence[str], now: Callable[[], dt.datetime],
                  sleep: Callable[[float], object] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> Told:
    """Run ``actions`` for the restored ``files`` (in order, every one: none of them ran for these files),
    then poll ``prober`` for up to ``timeout`` seconds until it serves a leaf that is on disk now."""
    log = logging.Logger("vaultpki.rollback")      # the command prints what happened: the daemon's log lines
    log.addHandler(logging.NullHandler())           # are not for it (a logger of its own, outside the tree)
    pending = PendingReloads(store, Metrics(), log, now)
    result = run_actions(actions, Renewed(str(store.path), tuple(files)), (), log)
    if not result.complete:
        failures = pending.missed(result, files)
        return Told(False, None, failures[0] if failures else None, pending.current)
    if prober is None:
        pending.cleared()
        return Told(True, None)
    on_disk = _leaf_serials(store)
    served = _served(prober, on_disk, timeout, sleep, monotonic)
    if served in on_disk:
        pending.cleared()
        return Told(True, True)
    what = f"serial {crypto.format_serial(served)}" if served is not None else "nothing that could be read"
    pending.unverified(f"{endpoint} serves another certificate", files, tuple(a.describe() for a in actions))
    return Told(True, False, f"verify: {endpoint} still serves {what}, not the restored certificate, after "
                             f"{timeout:g}s", pending.current)


def _served(prober: Prober, wanted: set[int], timeout: float, sleep: Callable[[float], object],
            monotonic: Callable[[], float]) -> int | None:
    """The serial the endpoint serves, polled until it is one of ``wanted`` or ``timeout`` is spent."""
    deadline = monotonic() + timeout
    served: int | None = None
    while True:
        with contextlib.suppress(ReloadError):        # down while it restarts: look again
            served = prober.served_serial()
        if served in wanted or monotonic() >= deadline:
            return served
        sleep(POLL)


def _leaf_serials(store: CertsDir) -> set[int]:
    """The serials of the leaf certificates the database reads from the certs-dir now."""
    serials = set()
    for name, entry in store.snapshot().entries.items():
        if name.endswith(".crt") and not name.startswith("ca") and entry.data:
            with contextlib.suppress(VaultpkiError):
                serials.add(crypto.load_certs(entry.data)[0].serial_number)
    return serials
