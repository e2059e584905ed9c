"""A CA replaced outside ``ca rotate`` (issue 19 §5): which changes of a mount's CAs drop a trusted CA without an
overlap (``core.ca_change``), and a daemon pass holding the set on disk, alerting, and moving once the overlap
is back or an operator has written the new set. Against real OpenBao and Go: tests/integration/
test_ca_replaced.py.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from vaultpki.config import parse
from vaultpki.core import crypto
from vaultpki.core.ca_change import replacement
from vaultpki.core.issue import IssueOptions, obtain
from vaultpki.core.ports import CaMaterial
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.sync_pass import Syncer
from vaultpki.store.certs_dir import CertsDir

from .conftest import DAY, NOW, CaSet, Issued, Pki
from .test_daemon import METRICS_SKEW, ClockedPki, FakeClock, FakeReloader, Monotonic, Vault, make_config
from .test_issue import pem

# --- the rule -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four(pki: Pki) -> dict[str, x509.Certificate]:
    root = pki.ca("Root")
    return {"old": pki.ca("Old CA", root).cert, "new": pki.ca("New CA", root).cert, "root": root.cert,
            "expired": pki.ca("Expired CA", not_before=NOW - 30 * DAY, not_after=NOW - DAY).cert}


@pytest.mark.parametrize(("on_disk", "offered", "known", "held"), [
    (["old"], ["new"], ["new", "root"], True),                  # a new CA on the mount, the old one gone
    ([], ["new"], ["new"], False),                              # first boot: nothing trusted yet
    (["old"], ["new", "old"], ["new", "old"], False),           # ca rotate: the bundle grows
    (["new", "old"], ["new"], ["new"], False),                  # ca retire after the overlap: it shrinks
    (["old"], ["root"], ["old", "root"], False),                # ca_trust issuer -> root: the mount still knows it
    (["expired"], ["new"], ["new"], False),                     # an expired CA is trusted by nobody
    (["old", "expired"], ["new"], ["new"], True),
])
def test_which_changes_drop_a_trusted_ca_without_an_overlap(four: dict[str, x509.Certificate], on_disk: list[str],
                                                            offered: list[str], known: list[str], held: bool) -> None:
    found = replacement("pki-crdb", "ca.crt", [four[n] for n in on_disk], [four[n] for n in offered],
                        [four[n] for n in known], NOW)
    assert (found is not None) is held
    if found is not None:
        assert found.trusted == ("CN=Old CA",) and found.offered == ("CN=New CA",)
        assert "no longer CN=Old CA, which ca.crt trusts" in found.describe()


# --- the daemon ---------------------------------------------------------------------------------------

@dataclass
class MountVault(Vault):
    """The fake Vault, whose mount offers ``material`` when set (default issuer, others) and signs with ``signer``."""

    material: CaMaterial | None = None

    def ca_material(self, mount: str) -> CaMaterial:
        return self.material if self.material is not None else super().ca_material(mount)


@dataclass
class Node:
    syncer: Syncer
    vault: MountVault
    path: Path
    metrics: Metrics
    clock: FakeClock

    def file(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


@pytest.fixture
def node(tmp_path: Path, cas: CaSet) -> Node:
    clock = FakeClock()
    vault = MountVault(ClockedPki(clock), cas)
    metrics = Metrics(now=lambda: clock().timestamp() + METRICS_SKEW)
    syncer = Syncer(cfg=make_config(renew={"ocsp_check": False}), vault=vault, store=CertsDir(tmp_path / "certs"),
                    reloader=FakeReloader(), prober=None, metrics=metrics, now=clock, log=logging.getLogger("test.hold"),
                    sleep=Monotonic().sleep)
    assert syncer.run_pass().ok
    return Node(syncer, vault, tmp_path / "certs", metrics, clock)


def replace_ca(node: Node, cas: CaSet, new: Issued) -> None:
    """A new root generated on the mount, the old CA gone from it (a rebuilt Vault, say)."""
    node.vault.cas = dataclasses.replace(cas, inter=new, root=new)


def mismatch(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("vaultpki_ca_mismatch", {"mount": "pki-crdb"})


def test_a_replaced_ca_is_held_and_said_until_the_overlap_is_back(node: Node, cas: CaSet, pki: Pki) -> None:
    before = {n: node.file(n) for n in ("ca.crt", "node.crt", "node.key")}
    new = pki.ca("Replacement CA")
    replace_ca(node, cas, new)
    for _ in range(2):                                 # every pass says so again
        report = node.syncer.run_pass()
        assert not report.ok and report.renewed == ()
        assert [f.split(":", 1)[0] for f in report.failures] == ["ca.crt", "node.crt"]
        assert all("held (" in f and "no longer CN=Test Intermediate CA" in f for f in report.failures)
        assert {n: node.file(n) for n in before} == before
        assert mismatch(node.metrics) == 1
        health = node.metrics.health
        assert not health.healthy and [h.mount for h in health.ca_mismatch] == ["pki-crdb"]
        assert health.to_json()["ca_mismatch"][0]["trusted"] == ["CN=Test Intermediate CA"]
    # The operator puts the old CA back on the mount as the default, the new one beside it: ca rotate's overlap.
    node.vault.material = CaMaterial(issuer=pem(cas.inter), chain=(pem(cas.inter), pem(cas.root)),
                                     others=((pem(new), ()),))
    node.vault.cas = cas
    report = node.syncer.run_pass()
    assert report.ok, report.failures
    assert crypto.load_certs(node.file("ca.crt")) == [new.cert, cas.inter.cert] or \
        crypto.load_certs(node.file("ca.crt")) == [cas.inter.cert, new.cert]
    assert node.file("node.crt") == before["node.crt"]        # still from the default issuer: nothing to re-issue
    assert mismatch(node.metrics) == 0 and node.metrics.health.healthy and node.metrics.health.ca_mismatch == ()


def test_after_the_operator_writes_the_new_set_the_daemon_follows(node: Node, cas: CaSet, pki: Pki) -> None:
    replace_ca(node, cas, pki.ca("Replacement CA"))
    assert not node.syncer.run_pass().ok
    # `vaultpki issue-node` on this node: the set as the mount has it now.
    plan = node.syncer.plan()
    options = IssueOptions(key_type=crypto.KeyType.EC, key_bits=256, ttl_seconds=3600)
    node.syncer.store.write_set(obtain(plan, node.vault, options, node.clock).files)
    report = node.syncer.run_pass()
    assert report.ok and not any(d.due for d in report.decisions)
    assert mismatch(node.metrics) == 0 and node.metrics.health.ca_mismatch == ()


def test_a_leaf_of_another_mount_is_still_renewed_while_one_mount_is_held(tmp_path: Path, cas: CaSet, pki: Pki) -> None:
    """split-ca: the client CA replaced; node.crt (node CA) still renews, client.node.crt and ca-client.crt wait."""
    clock = FakeClock()

    @dataclass
    class TwoMounts(MountVault):
        client: Issued | None = None

        def ca_material(self, mount: str) -> CaMaterial:
            ca = (self.client or cas.client_root) if mount == "pki-client" else cas.inter
            return CaMaterial(issuer=pem(ca), chain=(pem(ca),))

        def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None):  # type: ignore[no-untyped-def]
            self.cas = dataclasses.replace(cas, inter=(self.client or cas.client_root) if mount == "pki-client" else cas.inter)
            return super().sign(mount, role, csr, common_name, ttl)

    cfg = parse({"mode": "split-ca", "ttl": "1h", "vault": {"addr": "https://vault.test:8200"},
                 "pki": {"mount": "pki-crdb", "client_mount": "pki-client"}, "node": {"hosts": ["node1.internal"]},
                 "renew": {"ca_check": "0", "ocsp_check": False}}, {})
    vault = TwoMounts(ClockedPki(clock), cas)
    metrics = Metrics(now=lambda: clock().timestamp() + METRICS_SKEW)
    syncer = Syncer(cfg=cfg, vault=vault, store=CertsDir(tmp_path / "certs"), reloader=FakeReloader(), prober=None,
                    metrics=metrics, now=clock, log=logging.getLogger("test.hold"), sleep=Monotonic().sleep)
    assert syncer.run_pass().ok
    path = tmp_path / "certs"
    client_ca, client_node, node_crt = (path / "ca-client.crt").read_bytes(), (path / "client.node.crt").read_bytes(), \
        (path / "node.crt").read_bytes()
    vault.client = pki.ca("Replacement Client CA")
    clock.advance(3600)                     # node.crt is due by date now; so would be client.node.crt
    report = syncer.run_pass()
    assert [f.split(":", 1)[0] for f in report.failures] == ["ca-client.crt", "client.node.crt"]
    assert [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    assert (path / "node.crt").read_bytes() != node_crt
    assert (path / "ca-client.crt").read_bytes() == client_ca and (path / "client.node.crt").read_bytes() == client_node
    assert metrics.registry.get_sample_value("vaultpki_ca_mismatch", {"mount": "pki-client"}) == 1
    assert metrics.registry.get_sample_value("vaultpki_ca_mismatch", {"mount": "pki-crdb"}) == 0
