"""One pass of ``vaultpki sync``: what the node needs now, and doing it.

A pass:
1. plans what the node needs;
2. judges every file on disk (missing, invalid, different from the config, from an
   old CA, or inside its renewal window; a file of vaultpki's the layout no longer has;
   a CA file held because its mount's CA was replaced without an overlap):
   ``vaultpki.daemon.judging`` and ``vaultpki.daemon.ca_hold``;
3. issues only what is due, and nothing of a held mount;
4. writes everything as one crash-safe set, without what the layout no longer has;
5. runs the post-renewal actions once, in order: the reload signal, then each command
   (``vaultpki.daemon.actions``);
6. checks that the database now serves what was written.

A pass raises nothing for a file it could not renew: its report names the failures, and
the loop (``vaultpki.daemon.sync_loop``) decides when to try again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Collection, Sequence

import msgspec

from vaultpki.acme.console import AcmeUi, UiOrigin
from vaultpki.config import Config
from vaultpki.core import crypto
from vaultpki.core.issue import IssuedLeaf, IssueOptions, obtain_partial
from vaultpki.core.layout import UI_NAMES, CertSpec, FileContent, Plan
from vaultpki.core.ports import VaultPort
from vaultpki.core.renewal import Decision, next_wake, renew_at
from vaultpki.core.snapshot import DirState
from vaultpki.daemon.acme_renewal import AcmeRenewer
from vaultpki.daemon.actions import Actions, Renewed, run_actions
from vaultpki.daemon.ca_hold import report_holds
from vaultpki.daemon.judging import JudgesFiles
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.pending import PendingReloads
from vaultpki.daemon.probe import Prober
from vaultpki.daemon.reload import Reloader
from vaultpki.errors import ReloadError, StoreError, VaultpkiError
from vaultpki.store.certs_dir import CertsDir

__all__ = ["VERIFY_POLL", "PassReport", "Syncer", "failed_files"]

VERIFY_POLL = 0.25


class PassReport(msgspec.Struct, frozen=True):
    decisions: tuple[Decision, ...]
    renewed: tuple[IssuedLeaf, ...] = ()
    failures: tuple[str, ...] = ()            # "file: reason", one per failed file or step
    reloaded: bool = False
    verified: bool | None = None              # None: nothing to verify, or no verify endpoint
    next_wake: dt.datetime | None = None      # when the next pass is due: the next renewal, or the CA/OCSP check
    next_renewal: dt.datetime | None = None   # the earliest renewal time of any file
    vault_error: str | None = None            # Vault could not be asked this pass (nothing due: no failure)
    removed: tuple[str, ...] = ()             # vaultpki's files the layout no longer has, taken out of the set
    acme_renewed: UiOrigin | None = None      # a new ui.crt from the ACME CA was written

    @property
    def ok(self) -> bool:
        return not self.failures


class Syncer(JudgesFiles):
    """Everything one pass needs, handed in by the caller (so tests can swap any part).

    A service with state between passes, not a value: a plain class.
    """

    def __init__(self, *, cfg: Config, vault: VaultPort, store: CertsDir, reloader: Reloader | Actions,
                 prober: Prober | None, metrics: Metrics, now: Callable[[], dt.datetime], log: logging.Logger,
                 sleep: Callable[[float], object] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.vault, self.store, self.reloader, self.prober = cfg, vault, store, reloader, prober
        self.actions = reloader.items if isinstance(reloader, Actions) else (reloader,)
        self.metrics, self.now, self.log, self.sleep, self.monotonic = metrics, now, log, sleep, monotonic
        self._options = IssueOptions(key_type=cfg.key_type, key_bits=cfg.key_bits, ttl_seconds=cfg.ttl_seconds,
                                     method=cfg.issue_method, ca_trust=cfg.ca_trust)
        self.pending = PendingReloads(store, metrics, log, now)   # a reload owed from before: try it again
        self._defaults = {}
        self.acme = None if cfg.ui_acme is None else AcmeRenewer(cfg.ui_acme, cfg.ui_hosts, store,
                                                                 cfg.key_type, cfg.key_bits, cfg.renew, log)

    # --- one pass -----------------------------------------------------------

    def run_pass(self) -> PassReport:
        """Judge, issue what is due, write once, reload once, verify. Raises nothing for per-file failures."""
        now = self.now()
        look = self._look(now)
        plan, state, anchors, vault_error, decisions = look.plan, look.state, look.anchors, look.vault_error, \
            list(look.decisions)
        self.metrics.vault_up.set(0 if vault_error else 1)
        if anchors is not None:
            report_holds(plan, look.holds, self.metrics, self.log)
        ui = self.acme.run(state, now) if self.acme is not None else None     # ordered apart from Vault's files
        decisions += [ui.decision] if ui is not None else []
        ui_failures = (ui.failure,) if ui is not None and ui.failure else ()
        acme = ui.issued if ui is not None else None
        if acme is not None and not look.due:
            return self._acme_only(plan, acme, decisions)
        held = tuple(f"{d.file}: {d.reason}" for d in decisions if d.due and d.file in look.held)
        due = look.due
        for d in due:      # an expired certificate is an outage in the making: a warning, not routine
            level = logging.WARNING if _has_expired(state, d.file, now) else logging.INFO
            self.log.log(level, "due", extra={"file": d.file, "reason": d.reason})
        if not due:
            self._observe(plan, self.store.snapshot(), now, due=[d.file for d in decisions if d.due])
            report = PassReport(tuple(decisions), failures=(*held, *ui_failures), next_wake=self._wake_at(decisions),
                                next_renewal=next_wake(decisions, now),
                                vault_error=str(vault_error) if vault_error is not None else None)
            return self._reload_again(report) if self.pending.current else self._done(report)
        if anchors is None:
            assert vault_error is not None
            self._observe(plan, state, now, due=[d.file for d in due])
            if acme is not None:      # Vault away: the ACME CA's part still goes ahead
                return self._acme_only(plan, acme, decisions, tuple(f"{d.file}: {vault_error}" for d in due))
            return self._done(PassReport(tuple(decisions), failures=(*(f"{d.file}: {vault_error}" for d in due),
                                                                     *ui_failures), vault_error=str(vault_error)))
        due_specs = tuple(s for s in plan.certs if s.cert_file in {d.file for d in due})
        trusts = tuple(t for t in plan.trusts if t.mount not in look.holds)     # a held CA file stays as it is
        issued, failed = obtain_partial(Plan(trusts, due_specs), self.vault, self._options, self.now, anchors)
        failures = [f"{name}: {exc}" for name, exc in failed.items()]
        for name, exc in failed.items():
            self.metrics.renewal_failures.labels(name).inc()
            self.log.error("renewal failed", extra={"file": name, "error": str(exc)})
        files, leaves = self._consistent(plan, due, issued.files, issued.leaves, set(failed))
        report = PassReport(tuple(decisions), failures=(*held, *failures, *ui_failures))
        if files or look.strays or acme is not None:
            report = self._write_reload_verify((*files, *(acme.files if acme else ())), leaves, report, look.strays,
                                               plan.stray_names, serials=_serials(acme))
            if acme is not None and self.acme is not None:
                self.acme.written(acme)
                report = msgspec.structs.replace(report, acme_renewed=acme.origin)
        after = self.store.snapshot()
        self._observe(plan, after, self.now(), due=list(failed_files(report)))
        # Only for the next wake: the leaves kept were asked about at the start of this pass, and a leaf
        # Vault just signed has nothing to ask its responder about yet.
        fresh = self.judge(plan, after, anchors, True, self.now(), ask_ocsp=False)
        fresh += [self.acme.decision(after, self.now())] if self.acme is not None else []
        if self.cfg.renew.revoke_replaced and report.renewed:
            self._revoke_replaced(state, report.renewed)
        return self._done(msgspec.structs.replace(report, next_wake=self._wake_at(fresh),
                                                  next_renewal=next_wake(fresh, self.now())))

    def _acme_only(self, plan: Plan, issued: AcmeUi, decisions: list[Decision],
                   failures: tuple[str, ...] = ()) -> PassReport:
        """A pass where only the ACME CA's ui.crt is new: written alone as a set, reloaded, verified."""
        report = self._write_reload_verify(issued.files, (), PassReport(tuple(decisions), failures=failures),
                                           serials=_serials(issued))
        after = self.store.snapshot()
        self._observe(plan, after, self.now())
        if self.acme is not None:
            self.acme.written(issued)
            decisions = [*decisions[:-1], self.acme.decision(after, self.now())]
        return self._done(msgspec.structs.replace(report, next_wake=self._wake_at(decisions), acme_renewed=issued.origin,
                                                  next_renewal=next_wake(decisions, self.now())))

    def _wake_at(self, decisions: list[Decision]) -> dt.datetime | None:
        """The next renewal, or the next CA/OCSP check, or (a reload owed: the database not up yet at
        boot) the next try after ``retry_max``, whichever comes first."""
        now, renewal = self.now(), next_wake(decisions, self.now())
        checks = [self.cfg.renew.ca_check or None, self.cfg.retry_max if self.pending.current else None]
        return min([t for t in [renewal, *(now + dt.timedelta(seconds=c) for c in checks if c)] if t], default=None)

    def _revoke_replaced(self, before: DirState, renewed: tuple[IssuedLeaf, ...]) -> None:
        """Revoke what the new set replaced, proving possession of its key (no `revoke` capability). Only
        for leaves still on disk: after a rollback (``reload.rollback_on_failure``) the "replaced" set is
        the one being served again, and revoking it would lock the database out with OCSP on."""
        on_disk = self._leaf_serials()
        for leaf in (leaf for leaf in renewed if int(leaf.serial.replace(":", ""), 16) in on_disk):
            cert, key = before.entries.get(leaf.spec.cert_file), before.entries.get(leaf.spec.key_file)
            if cert is None or key is None or not cert.data or not key.data:
                continue
            try:
                old = crypto.load_certs(cert.data)[0]
                if old.not_valid_after_utc <= self.now():
                    continue
                pem = crypto.certs_to_pem([old]).decode()
                self.vault.revoke_with_key(leaf.spec.mount, pem, key.data.decode())
            except VaultpkiError as exc:
                self.log.warning("could not revoke the replaced certificate",
                                 extra={"file": leaf.spec.cert_file, "error": str(exc)})
            else:
                self.log.info("revoked the replaced certificate", extra={
                    "file": leaf.spec.cert_file, "serial": crypto.format_serial(old.serial_number)})

    def _done(self, report: PassReport) -> PassReport:
        """Log the pass: ``next_renewal`` is the earliest renewal time of any file, ``wake_at`` when the next
        pass runs (earlier for the CA/OCSP check; the loop may also wake for the token or a retry)."""
        self.log.info("pass complete", extra={
            "renewed": [leaf.spec.cert_file for leaf in report.renewed], "failures": len(report.failures),
            "removed": list(report.removed),
            "verified": report.verified,
            "next_renewal": report.next_renewal.isoformat() if report.next_renewal else None,
            "wake_at": report.next_wake.isoformat() if report.next_wake else None})
        return report

    def _reload_again(self, report: PassReport) -> PassReport:
        """Nothing is due, but the last reload did not take (the database was restarting, say): run again
        what is still owed of the actions, in order."""
        files = self.pending.files
        failures, complete = self._act(files, self.pending.done)
        if not complete:
            return self._done(msgspec.structs.replace(report, failures=(*report.failures, *failures)))
        verified = self._verify((), list(files))
        failures = () if verified is not False else (f"verify: {self.cfg.reload.verify} still does not serve "
                                                     "the certificates on disk",)
        return self._done(msgspec.structs.replace(report, failures=(*report.failures, *failures), reloaded=True,
                                                  verified=verified,
                                                  next_wake=self._wake_at(list(report.decisions))))   # none owed now

    def _act(self, files: Sequence[str], done: Sequence[str]) -> tuple[tuple[str, ...], bool]:
        """Run the actions owed for ``files`` (all but ``done``); the pass's failures, and whether none is
        owed any more. Whatever is still owed is remembered (``pending``)."""
        result = run_actions(self.actions, Renewed(str(self.store.path), tuple(files)), done, self.log)
        if not result.complete:
            return self.pending.missed(result, files), False
        self.metrics.reloads.labels("ok").inc()
        return (), True

    @staticmethod
    def _consistent(plan: Plan, due: list[Decision], files: tuple[FileContent, ...], leaves: tuple[IssuedLeaf, ...],
                    failed: set[str]) -> tuple[tuple[FileContent, ...], tuple[IssuedLeaf, ...]]:
        """Never write a mount's new CA file beside a leaf of that mount that could not be re-issued
        (it would not chain): for such a mount, nothing is written this pass. Files of other mounts go ahead."""
        changed_ca = {t.mount for t in plan.ca_files if t.file in {d.file for d in due}}
        held = {s.trust.mount for s in plan.certs if s.cert_file in failed} & changed_ca
        if not held:
            return (files, leaves) if leaves or changed_ca else ((), ())
        held_files = {t.file for t in plan.trusts if t.mount in held and t.file}
        held_files |= {n for s in plan.certs if s.trust.mount in held for n in s.file_names}
        kept_leaves = tuple(leaf for leaf in leaves if leaf.spec.trust.mount not in held)
        kept = tuple(f for f in files if f.name not in held_files)
        return (kept, kept_leaves) if kept_leaves else ((), ())

    def _write_reload_verify(self, files: tuple[FileContent, ...], leaves: tuple[IssuedLeaf, ...],
                             report: PassReport, strays: Sequence[str] = (), drop: Collection[str] = (),
                             serials: frozenset[int] = frozenset()) -> PassReport:
        """Write the set (without ``drop`` when there are ``strays`` to take out), run the actions, verify."""
        failures = list(report.failures)
        if strays:
            self.store.write_set(files, drop=drop)
        else:
            self.store.write_set(files)
        names = sorted(f.name for f in files)
        self.metrics.renewed(n for n in names if n.endswith(".crt"))
        for leaf in leaves:
            self.log.info("renewed", extra={"file": leaf.spec.cert_file, "serial": leaf.serial,
                                            "not_after": leaf.not_after.isoformat()})
        reasons = {d.file: d.reason for d in report.decisions}
        for name in strays:
            self.log.warning("removed", extra={"file": name, "reason": reasons.get(name)})
        report = msgspec.structs.replace(report, removed=tuple(strays))
        # Files of an earlier set nobody was told of are news to the actions as well; every action runs.
        told = sorted({*names, *strays, *self.pending.files})
        missed, complete = self._act(told, ())       # nobody to tell yet is pending, not failed (first boot)
        if not complete:
            return msgspec.structs.replace(report, renewed=leaves, failures=(*failures, *missed))
        verified = self._verify(leaves, told, serials)
        if verified is False:
            failures.append(f"verify: {self.cfg.reload.verify} does not serve the certificate just written "
                            f"(previous set kept in {self.store.path}/.vaultpki/previous)")
            if self.cfg.reload.rollback_on_failure:
                try:
                    generation = self.store.rollback()
                except StoreError as exc:      # e.g. the very first set: there is nothing to go back to
                    self.log.error("rollback failed", extra={"error": str(exc)})
                else:
                    self.log.warning("rolled back", extra={"generation": generation})
                    # Best effort: the database is told its old set is back; the verify failure is what is reported.
                    run_actions(self.actions, Renewed(str(self.store.path), (*names, *strays)), (), self.log)
        return msgspec.structs.replace(report, renewed=leaves, failures=tuple(failures), reloaded=True, verified=verified)

    def _verify(self, leaves: tuple[IssuedLeaf, ...], names: list[str] | None = None,
                serials: frozenset[int] = frozenset()) -> bool | None:
        """Poll the endpoint until it serves a certificate that is on disk now (the new one if it was renewed)."""
        if self.prober is None:
            self.pending.cleared()          # the actions succeeded; there is nothing more to check
            return None
        on_disk = self._leaf_serials()
        written = {int(leaf.serial.replace(":", ""), 16) for leaf in leaves} | serials
        deadline = self.monotonic() + self.cfg.reload.verify_timeout
        served: int | None = None
        while True:
            try:
                served = self.prober.served_serial()
            except ReloadError as exc:
                self.log.warning("verify probe failed", extra={"error": str(exc)})
            if served is not None and served in on_disk | written:
                self.pending.cleared()
                self.metrics.reload_verified.set(1)
                self.metrics.health.reload_verified = True
                self.log.info("reload verified", extra={"serial": crypto.format_serial(served)})
                return True
            if self.monotonic() >= deadline:
                break
            self.sleep(VERIFY_POLL)
        self.pending.unverified(f"{self.cfg.reload.verify} serves another certificate", names or (),
                                tuple(a.describe() for a in self.actions))
        self.metrics.reload_verified.set(0)
        self.metrics.health.reload_verified = False
        self.log.error("reload NOT verified: the endpoint still serves another certificate",
                       extra={"endpoint": self.cfg.reload.verify,
                              "served": crypto.format_serial(served) if served is not None else None})
        return False

    def _leaf_serials(self) -> set[int]:
        serials = set()
        for name, entry in self.store.snapshot().entries.items():
            if name.endswith(".crt") and not name.startswith("ca") and entry.data:
                with contextlib.suppress(VaultpkiError):
                    serials.add(crypto.load_certs(entry.data)[0].serial_number)
        return serials

    def _observe(self, plan: Plan, state: DirState, now: dt.datetime, due: list[str] | None = None) -> None:
        names = [t.file for t in plan.ca_files if t.file] + [s.cert_file for s in plan.certs]
        if self.acme is not None:                 # ui.crt and ca-ui.crt from the ACME CA: watched like the rest
            names += [n for n in sorted(UI_NAMES) if n.endswith(".crt") and n not in names]
        specs: dict[str, CertSpec] = {s.cert_file: s for s in plan.certs}
        for name in names:
            entry = state.entries.get(name)
            not_after = at = None
            if entry is not None and entry.data:
                with contextlib.suppress(VaultpkiError):
                    cert = crypto.load_certs(entry.data)[0]
                    not_after = cert.not_valid_after_utc.timestamp()
                    if name in specs or (self.acme is not None and name == "ui.crt"):
                        at = renew_at(cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number,
                                      self.cfg.renew).timestamp()
            self.metrics.observe_file(name, not_after, at)
        self.metrics.health.due_files = tuple(due or ())


def _serials(acme: AcmeUi | None) -> frozenset[int]:
    """The serial of a new ACME ui.crt, for the verify probe: the endpoint may serve it (the DB Console's port)."""
    return frozenset() if acme is None else frozenset({int(acme.origin.serial.replace(":", ""), 16)})


def failed_files(report: PassReport) -> tuple[str, ...]:
    """The files named by a report's failures ('reload' and 'verify' failures name none)."""
    return tuple(f.split(":", 1)[0] for f in report.failures if f.split(":", 1)[0].endswith(".crt"))


def _has_expired(state: DirState, file: str, now: dt.datetime) -> bool:
    """Whether the leaf in ``file`` (as read this pass) is past its not-after."""
    entry = state.entries.get(file)
    try:
        chain = crypto.load_certs(entry.data) if entry is not None and entry.data else []
    except VaultpkiError:
        return False
    return bool(chain) and chain[0].not_valid_after_utc <= now
