"""A CA replaced outside ``ca rotate``: the pass keeps serving the set on disk, and says so, until the overlap
is in place or an operator acts.

``vaultpki.core.ca_change`` tells a replacement from a rotation. For a mount whose CA was replaced, nothing
of the mount is written: not its CA file (the other nodes' certificates chain to the CA in it), and not a
leaf from the new CA (the other nodes would refuse it). Each pass says so: one error line per held CA file,
``vaultpki_ca_mismatch{mount} 1``, and ``/healthz`` unhealthy with the record under ``ca_mismatch``; the
held files are the pass's failures, so ``sync --once`` exits 1 naming them. Other mounts go on as usual.

It ends when the mount offers the old CA again beside the new one (the overlap ``ca rotate`` gives), or
when the CA file on disk is the mount's (an operator ran ``vaultpki issue-node`` on this node).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping

from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.ca_change import CaReplaced, replacement
from vaultpki.core.layout import Plan
from vaultpki.core.snapshot import DirState
from vaultpki.daemon.metrics import Metrics
from vaultpki.errors import VaultpkiError

__all__ = ["find_holds", "held_files", "report_holds"]


def find_holds(plan: Plan, state: DirState, anchors: Mapping[str, list[x509.Certificate]],
               known: Mapping[str, list[x509.Certificate]], now: dt.datetime) -> dict[str, CaReplaced]:
    """Each mount whose CA file would lose a trusted CA with no overlap (an unreadable file trusts nothing)."""
    holds: dict[str, CaReplaced] = {}
    for trust in plan.ca_files:
        assert trust.file is not None
        entry = state.entries.get(trust.file)
        on_disk: list[x509.Certificate] = []
        if entry is not None and entry.data:
            with contextlib.suppress(VaultpkiError):
                on_disk = crypto.load_certs(entry.data)
        found = replacement(trust.mount, trust.file, on_disk, anchors[trust.mount], known.get(trust.mount, []), now)
        if found is not None:
            holds.setdefault(trust.mount, found)
    return holds


def held_files(plan: Plan, holds: Mapping[str, CaReplaced]) -> dict[str, CaReplaced]:
    """The files a pass leaves as they are, each with its hold: the CA file and every leaf of each held mount."""
    held = {t.file: holds[t.mount] for t in plan.ca_files if t.mount in holds and t.file}
    for spec in plan.certs:
        mount = spec.trust.mount if spec.trust.mount in holds else spec.mount
        if mount in holds:
            held.setdefault(spec.cert_file, holds[mount])
    return held


def report_holds(plan: Plan, holds: Mapping[str, CaReplaced], metrics: Metrics, log: logging.Logger) -> None:
    """Say so at every pass (a log line per held CA file, the gauge per mount, ``/healthz``), and clear it for
    the mounts whose hold has ended."""
    for mount in sorted({t.mount for t in plan.ca_files}):
        metrics.ca_mismatch.labels(mount).set(1 if mount in holds else 0)
    for hold in holds.values():
        log.error("CA replaced without an overlap: keeping the set on disk", extra={
            "mount": hold.mount, "file": hold.file, "trusted": list(hold.trusted), "offered": list(hold.offered),
            "error": hold.describe()})
    metrics.health.ca_mismatch = tuple(holds.values())
