"""What a pass of ``vaultpki sync`` finds: every file the layout has, judged against its mount's CAs (or,
while Vault is away, the CA files on disk); the files of vaultpki's the layout no longer has; and the CA
files held because their mount's CA was replaced without an overlap (``vaultpki.daemon.ca_hold``).

A file is due when it is missing, invalid, different from the configuration, from a CA the mount no longer
issues from, revoked (OCSP), or inside its renewal window. A file of the layout's names that the configured
layout lacks (``Plan.stray_names``: a split-ca dir's ``ca-client.crt`` once the node is split-node) is due
too, to leave the set, when vaultpki wrote it; the previous generation keeps it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import msgspec
from cryptography import x509

from vaultpki.config import Config
from vaultpki.core import crypto
from vaultpki.core.ca_change import CaReplaced
from vaultpki.core.issue import default_issuer, fetch_materials, material_certs, trust_anchors
from vaultpki.core.layout import CertSpec, FileKind, Plan, plan_node, stray_reason
from vaultpki.core.ocsp import OcspStatus
from vaultpki.core.ports import VaultPort
from vaultpki.core.renewal import Decision, decide
from vaultpki.core.snapshot import DirState, judge_leaf
from vaultpki.daemon.acme_renewal import AcmeRenewer
from vaultpki.daemon.ca_hold import find_holds, held_files
from vaultpki.errors import VaultpkiError, VaultUnavailable
from vaultpki.store.certs_dir import CertsDir
from vaultpki.vault import ocsp

__all__ = ["JudgesFiles", "Look"]


class Look(msgspec.Struct, frozen=True):
    """What one look at the dir and the mounts found."""

    plan: Plan
    state: DirState
    anchors: dict[str, list[x509.Certificate]] | None      # every mount's CAs; None while Vault is away
    vault_error: VaultUnavailable | None
    decisions: tuple[Decision, ...]                          # every planned file, then every stray
    strays: tuple[str, ...] = ()                             # vaultpki's files the layout no longer has
    holds: dict[str, CaReplaced] = msgspec.field(default_factory=dict)
    held: dict[str, CaReplaced] = msgspec.field(default_factory=dict)    # each file of a held mount: its hold

    @property
    def due(self) -> list[Decision]:
        """What this pass acts on: due, and not held."""
        return [d for d in self.decisions if d.due and d.file not in self.held]


class JudgesFiles:
    """The judging part of the ``Syncer`` (``vaultpki.daemon.sync_pass``), which sets these attributes."""

    cfg: Config
    vault: VaultPort
    store: CertsDir
    acme: AcmeRenewer | None
    log: logging.Logger
    now: Callable[[], dt.datetime]
    _defaults: dict[str, x509.Certificate]

    def plan(self) -> Plan:
        cfg = self.cfg
        return plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, cfg.node_users, pk8=cfg.node_pk8,
                         acme_ui=cfg.ui_acme is not None)

    def _anchors(self, plan: Plan) -> tuple[dict[str, list[x509.Certificate]] | None, dict[str, list[x509.Certificate]],
                                            VaultUnavailable | None]:
        """Every mount's trust bundle, every CA the mount still knows (and, remembered, the issuer that signs new
        leaves there)."""
        mounts = sorted({t.mount for t in plan.trusts})
        try:
            materials = fetch_materials(mounts, self.vault)
        except VaultUnavailable as exc:
            self._defaults = {}
            return None, {}, exc
        self._defaults = {m: default_issuer(materials[m], m) for m in mounts}
        known = {m: material_certs(materials[m], m) for m in mounts}
        return {m: trust_anchors(materials[m], m, self.cfg.ca_trust) for m in mounts}, known, None

    def _on_disk_anchors(self, state: DirState, plan: Plan) -> dict[str, list[x509.Certificate]]:
        """Without Vault, judge leaves against the CA files already on disk (the UI mount has none)."""
        anchors: dict[str, list[x509.Certificate]] = {}
        for trust in plan.trusts:
            entry = state.entries.get(trust.file) if trust.file else None
            try:
                anchors[trust.mount] = crypto.load_certs(entry.data) if entry and entry.data else []
            except VaultpkiError:
                anchors[trust.mount] = []
        return anchors

    def judge(self, plan: Plan, state: DirState, anchors: dict[str, list[x509.Certificate]], vault_known: bool,
              now: dt.datetime, ask_ocsp: bool = True) -> list[Decision]:
        """What is due. ``ask_ocsp=False``: the leaves' responders are not asked (they were, this pass)."""
        decisions = []
        key_owner = self._key_owner()
        for trust in plan.ca_files:
            assert trust.file is not None
            entry = state.entries.get(trust.file)
            problem = None
            if entry is None or entry.data is None:
                problem = "missing"
            elif vault_known:
                try:
                    on_disk = {crypto.fingerprint(c) for c in crypto.load_certs(entry.data)}
                except VaultpkiError:
                    on_disk = set()
                if on_disk != {crypto.fingerprint(c) for c in anchors[trust.mount]}:
                    problem = f"differs from the CA of mount {trust.mount}"
            decisions.append(decide(trust.file, now, self.cfg.renew, problem=problem,
                                    validity=None if problem else (now, now + dt.timedelta(days=36500), 0)))
        for spec in plan.certs:
            if not vault_known and spec.trust.file is None:
                # No anchor on disk for ui.crt: judge it by its own dates only while Vault is away.
                found = judge_leaf(spec, state, [], now, key_owner)
                problem = None if found.validity and "does not chain" in (found.problem or "") else found.problem
            else:
                found = judge_leaf(spec, state, anchors[spec.trust.mount], now, key_owner)
                problem = found.problem
                if problem is None and vault_known:
                    problem = self._issuer_or_ocsp_problem(spec, state, now, ask_ocsp)
            decisions.append(decide(spec.cert_file, now, self.cfg.renew, problem=problem, validity=found.validity))
        return decisions

    def _issuer_or_ocsp_problem(self, spec: CertSpec, state: DirState, now: dt.datetime, ask_ocsp: bool) -> str | None:
        """A valid leaf is still due when its mount now issues from another CA (after a CA rotation is
        activated), or when its OCSP responder says it was revoked."""
        entry = state.entries[spec.cert_file]
        chain = crypto.load_certs(entry.data or b"")
        leaf = chain[0]
        default = self._defaults.get(spec.mount)
        if default is not None and not crypto.is_issued_by(leaf, default):
            return (f"issued by {leaf.issuer.rfc4514_string()}; mount {spec.mount} now issues from "
                    f"{default.subject.rfc4514_string()} (CA rotation)")
        if not (ask_ocsp and self.cfg.renew.ocsp_check and default is not None
                and spec.kind in (FileKind.NODE, FileKind.CLIENT_NODE)):
            return None
        try:
            result = ocsp.query(leaf, default, timeout=5.0, now=now, ca_cert=self.cfg.vault.ca_cert)
        except VaultpkiError as exc:
            self.log.warning("OCSP check failed", extra={"file": spec.cert_file, "error": str(exc)})
            return None
        if result.status is OcspStatus.REVOKED:
            when = result.revocation_time.isoformat() if result.revocation_time else "unknown time"
            return f"revoked (OCSP, at {when})"
        return None

    def _key_owner(self) -> tuple[int | None, int | None, int]:
        owner = self.store.owner
        return owner.uid, owner.gid, self.store.key_mode

    def _strays(self, plan: Plan, state: DirState, now: dt.datetime) -> list[Decision]:
        """vaultpki's files under the layout's names that the configured layout lacks: each leaves the set."""
        decisions = []
        for name in plan.stray_names:
            entry = state.entries.get(name)
            if entry is None or not entry.managed:
                continue           # not there, or not vaultpki's: verify names it, nobody removes it
            reason = f"{stray_reason(name, self.cfg.mode)}: it leaves the set (the previous set keeps it)"
            decisions.append(Decision(name, True, reason, now))
        return decisions

    def _look(self, now: dt.datetime) -> Look:
        """The plan, the dir, the mounts' CAs (None while Vault is away), what is due, and what is held."""
        plan = self.plan()
        state = self.store.snapshot()
        anchors, known, vault_error = self._anchors(plan)
        decisions = self.judge(plan, state, anchors or self._on_disk_anchors(state, plan), anchors is not None, now)
        strays = self._strays(plan, state, now)
        holds = find_holds(plan, state, anchors, known, now) if anchors is not None else {}
        held = held_files(plan, holds)
        decisions = [_held(d, held[d.file]) if d.due and d.file in held else d for d in decisions]
        return Look(plan, state, anchors, vault_error, (*decisions, *strays), tuple(d.file for d in strays),
                    holds, held)

    def preview(self) -> tuple[list[Decision], VaultUnavailable | None]:
        """What a pass would do, without issuing, writing or signalling (``sync --dry-run``)."""
        now = self.now()
        look = self._look(now)
        acme = [self.acme.decision(look.state, now)] if self.acme is not None else []
        return [*look.decisions, *acme], look.vault_error


def _held(decision: Decision, hold: CaReplaced) -> Decision:
    """A due file of a held mount: due, and held, and why."""
    return msgspec.structs.replace(decision, reason=f"held ({decision.reason}): {hold.describe()}")
