"""A reload of the database that has not happened yet, remembered in the state dir until it does.

At first boot, or after an outage, the database is not running when the set is written: that is not a
failure (it reads the new files when it starts), but the reload is *pending*. A process that exists and
cannot be signalled, a command that fails, or a reload whose probe never sees the new certificate is a
failure, and stays pending too. Either way every pass tries again until a reload happens (and, with
``reload.verify``, is verified). The record lives in ``.vaultpki/pending-reload.json`` (written by the
store, atomically), so a restart of the daemon or a SIGHUP does not forget it, and ``status`` shows it.
With several actions (``vaultpki.daemon.actions``) it also says which already ran for the files it
names, so a retry runs only the rest, in order.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence

import msgspec

from vaultpki.core.report import PendingReload
from vaultpki.daemon.actions import ActionsResult
from vaultpki.daemon.metrics import Metrics
from vaultpki.errors import StoreError
from vaultpki.store.certs_dir import CertsDir

__all__ = ["PENDING_RECORD", "PendingReloads", "read_pending"]

PENDING_RECORD = "pending-reload.json"


def read_pending(store: CertsDir) -> PendingReload | None:
    """The pending reload recorded in ``store``'s state dir, if any. A record that cannot be read back
    still means a reload may be owed: it reads as pending, so the next pass tries once more."""
    try:
        data = store.read_record(PENDING_RECORD)
    except StoreError as exc:
        return PendingReload(since="unknown", reason=f"pending-reload record unreadable: {exc}")
    if data is None:
        return None
    try:
        return msgspec.json.decode(data, type=PendingReload)
    except msgspec.DecodeError:
        return PendingReload(since="unknown", reason="pending-reload record unreadable: not a valid record")


class PendingReloads:
    """The one pending reload of a certs-dir: in memory, in the state dir, in metrics and ``/healthz``.

    State that changes from pass to pass (a plain class, not a value)."""

    def __init__(self, store: CertsDir, metrics: Metrics, log: logging.Logger,
                 now: Callable[[], dt.datetime]) -> None:
        self.store, self.metrics, self.log, self.now = store, metrics, log, now
        self.current = read_pending(store)
        if self.current is not None and self.current.since == "unknown":
            # The record could not be read (the state dir refused, a torn file): a reload may be owed, so it
            # is treated as pending, but nothing says one was: the log must not claim it.
            self.log.warning("cannot tell whether a reload is pending; one will be tried",
                             extra={"reason": self.current.reason})
        elif self.current is not None:
            self.log.warning("a reload is pending from before", extra={
                "since": self.current.since, "reason": self.current.reason, "reload_failures": self.current.failures,
                "remaining": list(self.current.remaining)})
        self._publish()

    @property
    def files(self) -> tuple[str, ...]:
        """What was written that the database has not been told of (none when nothing is pending)."""
        return self.current.files if self.current is not None else ()

    @property
    def done(self) -> tuple[str, ...]:
        """The actions that already ran for those files."""
        return self.current.done if self.current is not None else ()

    def missed(self, result: ActionsResult, files: Sequence[str] = ()) -> tuple[str, ...]:
        """Actions still owed after a run: remembered; returns the pass's failures (none when the only
        actions owed are signals that found nobody to tell)."""
        if result.failed is None:
            self.metrics.reloads.labels("pending").inc()
            self.log.warning("reload pending: nobody to tell yet", extra={
                "error": result.not_running, "remaining": list(result.remaining)})
            self._keep(f"not running: {result.not_running}", False, files, result)
            return ()
        self.metrics.reloads.labels("failed").inc()
        self.log.error("reload failed", extra={"error": result.failed, "remaining": list(result.remaining)})
        self._keep(f"failed: {result.failed}", True, files, result)
        return (f"reload: {result.failed}",)

    def unverified(self, reason: str, files: Sequence[str], remaining: Sequence[str]) -> None:
        """The actions ran, but the database does not serve what was written: every action is owed again
        (which one it missed cannot be told)."""
        self._keep(f"not verified: {reason}", True, files, ActionsResult((), tuple(remaining)))

    def cleared(self) -> None:
        """The reload happened (and was verified, where that is checked): forget it."""
        if self.current is not None:
            self.log.info("pending reload done", extra={"since": self.current.since})
            self.current = None
            self._save()
        self._publish()

    def _keep(self, reason: str, failed: bool, files: Sequence[str], result: ActionsResult) -> None:
        old = self.current
        since = old.since if old is not None else self.now().isoformat()
        failures = (old.failures if old is not None else 0) + (1 if failed else 0)
        known = tuple(sorted({*(old.files if old is not None else ()), *files}))
        self.current = PendingReload(since=since, reason=reason, failures=failures, files=known,
                                     done=result.done, remaining=result.remaining)
        self._save()
        self._publish()

    def _save(self) -> None:
        """Best effort: a record that cannot be written is logged, and the reload stays pending in memory."""
        data = msgspec.json.encode(self.current) if self.current is not None else None
        try:
            self.store.write_record(PENDING_RECORD, data)
        except StoreError as exc:
            self.log.error("cannot record the pending reload", extra={"error": str(exc)})

    def _publish(self) -> None:
        pending = self.current
        self.metrics.reload_pending.set(1 if pending is not None else 0)
        self.metrics.health.reload_pending = pending is not None
        self.metrics.health.reload_failures = pending.failures if pending is not None else 0
