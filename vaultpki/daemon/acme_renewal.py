"""``sync`` and an ACME ``ui.crt``: due by the same window logic as every other file, on its issued lifetime;
ordered only when due, and never again before the CA's ``Retry-After`` or our own back-off after a failure.

A failed order changes nothing on disk (the current ``ui.crt`` stays until it is inside its window, and beyond:
an expiring certificate is still better than none), is logged as one line with when the next order may be
made, and counts as a failure of that pass. A public CA limits how often it may be asked; the back-off doubles
from ``BACKOFF_INITIAL`` to ``BACKOFF_MAX`` and a ``Retry-After`` later than that wins. The back-off is kept
as a record of the state dir (``BACKOFF_RECORD``), so neither a restarted daemon nor the next ``sync --once``
of a timer orders again before it ends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from vaultpki.acme.console import AcmeUi, obtain_ui, write_origin
from vaultpki.acme.problems import AcmeRateLimited
from vaultpki.config.records import AcmeConfig
from vaultpki.core import crypto
from vaultpki.core.layout import UI_NAMES, split_hosts
from vaultpki.core.renewal import Decision, RenewPolicy, renew_at
from vaultpki.core.snapshot import DirState
from vaultpki.errors import VaultpkiError
from vaultpki.store.certs_dir import CertsDir

__all__ = ["BACKOFF_INITIAL", "BACKOFF_MAX", "AcmeOutcome", "AcmeRenewer"]

UI_FILE = "ui.crt"
BACKOFF_RECORD = "acme-order-backoff.json"
BACKOFF_INITIAL = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=1)

Obtain = Callable[[AcmeConfig, Sequence[str], Path, crypto.KeyType, int, dt.datetime], AcmeUi]


class AcmeOutcome(msgspec.Struct, frozen=True):
    """What one pass did about ``ui.crt``: its decision, and the files of a new one (or why there are none)."""

    decision: Decision
    issued: AcmeUi | None = None
    failure: str | None = None          # "ui.crt: <one line>"


class _Backoff(msgspec.Struct, frozen=True):
    not_before: dt.datetime
    failures: int


class AcmeRenewer:
    """The ACME part of a ``Syncer``: working state between passes (the back-off), so a plain class."""

    def __init__(self, acme: AcmeConfig, hosts: Sequence[str], store: CertsDir, key_type: crypto.KeyType,
                 key_bits: int, policy: RenewPolicy, log: logging.Logger, obtain: Obtain = obtain_ui) -> None:
        self.acme, self.hosts, self.store = acme, tuple(hosts), store
        self.key_type, self.key_bits, self.policy, self.log, self._obtain = key_type, key_bits, policy, log, obtain
        self.not_before: dt.datetime | None = None      # no order before this (Retry-After, or our back-off)
        self.failures = 0
        self._recalled = False

    def _recall(self) -> None:
        """The back-off an earlier process left (once per process; a missing or torn record is none)."""
        self._recalled = True
        try:
            data = self.store.read_record(BACKOFF_RECORD)
            kept = None if data is None else msgspec.json.decode(data, type=_Backoff)
        except (VaultpkiError, msgspec.DecodeError, msgspec.ValidationError):
            return
        if kept is not None:
            self.not_before, self.failures = kept.not_before, kept.failures

    def _keep(self) -> None:
        """Record the back-off (or, after a success, remove it); a failure to record is only logged."""
        try:
            self.store.write_record(BACKOFF_RECORD, None if self.not_before is None
                                    else msgspec.json.encode(_Backoff(self.not_before, self.failures)))
        except VaultpkiError as exc:
            self.log.warning("could not record the ACME back-off", extra={"error": str(exc)})

    def decision(self, state: DirState, now: dt.datetime) -> Decision:
        """Whether ``ui.crt`` is due: missing, unreadable, without the names of ``ui.hosts``, its key or its
        ca-ui.crt missing, or inside its window; a due one waits while the back-off runs."""
        due = self._why_due(state, now)
        if isinstance(due, Decision):
            return due
        if not self._recalled:
            self._recall()
        if self.not_before is not None and now < self.not_before:
            return Decision(UI_FILE, False, f"{due}; backing off after a failed ACME order until "
                                            f"{self.not_before:%Y-%m-%d %H:%M:%S}Z", self.not_before)
        return Decision(UI_FILE, True, due, now)

    def _why_due(self, state: DirState, now: dt.datetime) -> str | Decision:
        data = {name: entry.data for name in UI_NAMES if (entry := state.entries.get(name)) is not None and entry.data}
        missing = sorted(UI_NAMES - set(data))
        if missing:
            return f"{', '.join(missing)} missing"
        try:
            leaf = crypto.load_certs(data[UI_FILE] or b"")[0]
        except (VaultpkiError, ValueError, IndexError):
            return "not a readable certificate"
        info = crypto.describe(leaf)
        dns, ips = split_hosts(self.hosts)
        lacking = sorted(set(dns) - {n.lower() for n in info.dns_sans}) + sorted(set(ips) - set(info.ip_sans))
        if lacking:
            return f"its SANs lack {', '.join(lacking)} of ui.hosts"
        at = renew_at(leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number, self.policy)
        if now < at:
            return Decision(UI_FILE, False, "valid", at)
        return "inside its renewal window" if now < leaf.not_valid_after_utc else "expired"

    def run(self, state: DirState, now: dt.datetime) -> AcmeOutcome:
        """Order a new ``ui.crt`` when it is due; a failure is one log line and a back-off, nothing written."""
        decision = self.decision(state, now)
        if not decision.due:
            return AcmeOutcome(decision)
        try:
            issued = self._obtain(self.acme, self.hosts, self.store.ensure_state_dir(), self.key_type, self.key_bits, now)
        except VaultpkiError as exc:
            self.failures += 1
            backoff = min(BACKOFF_INITIAL * 2 ** (self.failures - 1), BACKOFF_MAX)
            retry = exc.retry_after if isinstance(exc, AcmeRateLimited) else None
            self.not_before = max(now + backoff, retry or now)
            self._keep()
            self.log.error("ACME order failed", extra={"file": UI_FILE, "error": str(exc),
                                                       "next_order": self.not_before.isoformat()})
            # Not due again until the back-off ends: the next wake is then, not at once.
            return AcmeOutcome(self.decision(state, now), failure=f"{UI_FILE}: {exc}")
        had_backoff, self.failures, self.not_before = self.not_before is not None, 0, None
        if had_backoff:
            self._keep()
        return AcmeOutcome(decision, issued=issued)

    def written(self, issued: AcmeUi) -> None:
        """After the set holding ``issued`` is visible: where it came from, for ``status``; logged."""
        try:
            write_origin(self.store, issued.origin)
        except VaultpkiError as exc:
            self.log.warning("could not record where ui.crt came from", extra={"error": str(exc)})
        self.log.info("renewed", extra={"file": UI_FILE, "serial": issued.origin.serial,
                                        "not_after": issued.origin.not_after.isoformat(),
                                        "acme_order": issued.origin.order_url})
