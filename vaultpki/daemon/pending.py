"""A reload of the database that has not happened yet, remembered in the state dir until it does.

At first boot, or after an outage, the database is not running when the set is written: that is not a
failure (it reads the new files when it starts), but the reload is *pending*. A process that exists and
cannot be signalled, a command that fails, or a reload whose probe never sees the new certificate is a
failure, and stays pending too. Either way every pass tries again until a reload happens (and, with
``reload.verify``, is verified). The record lives in ``.vaultpki/pending-reload.json`` (written by the
store, atomically), so a restart of the daemon or a SIGHUP does not forget it, and ``status`` shows it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence

import msgspec

from vaultpki.core.report import PendingReload
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.reload import ReloadNotRunning
from vaultpki.errors import ReloadError, StoreError
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
        if self.current is not None:
            self.log.warning("a reload is pending from before", extra={
                "since": self.current.since, "reason": self.current.reason, "reload_failures": self.current.failures})
        self._publish()

    def missed(self, exc: ReloadError, files: Sequence[str] = ()) -> tuple[str, ...]:
        """A reload that did not happen: remembered; returns the pass's failures (none when nobody was there)."""
        if isinstance(exc, ReloadNotRunning):
            self.metrics.reloads.labels("pending").inc()
            self.log.warning("reload pending: nobody to tell yet", extra={"error": str(exc)})
            self._keep(f"not running: {exc}", failed=False, files=files)
            return ()
        self.metrics.reloads.labels("failed").inc()
        self.log.error("reload failed", extra={"error": str(exc)})
        self._keep(f"failed: {exc}", failed=True, files=files)
        return (f"reload: {exc}",)

    def unverified(self, reason: str, files: Sequence[str] = ()) -> None:
        """The reload went out, but the database does not serve what was written."""
        self._keep(f"not verified: {reason}", failed=True, files=files)

    def done(self) -> None:
        """The reload happened (and was verified, where that is checked): forget it."""
        if self.current is not None:
            self.log.info("pending reload done", extra={"since": self.current.since})
            self.current = None
            self._save()
        self._publish()

    def _keep(self, reason: str, failed: bool, files: Sequence[str]) -> None:
        old = self.current
        since = old.since if old is not None else self.now().isoformat()
        failures = (old.failures if old is not None else 0) + (1 if failed else 0)
        known = tuple(sorted({*(old.files if old is not None else ()), *files}))
        self.current = PendingReload(since=since, reason=reason, failures=failures, files=known)
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
