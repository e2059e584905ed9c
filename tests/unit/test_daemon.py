"""daemon: Syncer passes against in-process fakes (Vault, reloader, prober, clocks) and the Daemon loop.

No real Vault, no database, no real sleeping: FakeVault signs with the in-memory CA of
conftest and dates what it issues from the test's clock; the verify deadline runs on
a fake monotonic clock that the Syncer's fake ``sleep`` advances.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from vaultpki.config import Config, parse
from vaultpki.core import crypto
from vaultpki.core.layout import FileContent
from vaultpki.core.ports import CaMaterial, IssuedCert
from vaultpki.core.renewal import Decision, renew_at
from vaultpki.core.snapshot import judge_leaf
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.reload import ReloadOutcome
from vaultpki.daemon.sync_loop import Daemon, PassFailed, TokenKeeper
from vaultpki.daemon.sync_pass import VERIFY_POLL, PassReport, Syncer
from vaultpki.errors import ConfigError, ReloadError, StoreError, VaultpkiError, VaultRequestError, VaultUnavailable
from vaultpki.store.certs_dir import CertsDir

from .conftest import DAY, NOW, CaSet, Pki
from .test_issue import FakeVault

HOSTS = ("node1.internal", "127.0.0.1")
VERIFY = "tls://127.0.0.1:26257"
SEC = dt.timedelta(seconds=1)
DOWN = "vault.test:8200: connection refused"
METRICS_SKEW = 3600.0     # the Metrics clock runs an hour ahead of the Syncer's, to tell them apart


# --- fakes --------------------------------------------------------------------

class FakeClock:
    def __init__(self, start: dt.datetime = NOW) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


class ClockedPki(Pki):
    """FakeVault dates what it signs from ``pki.now``: make that the test's clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    @property  # type: ignore[override]
    def now(self) -> dt.datetime:
        return self._clock()


@dataclass
class Vault(FakeVault):
    """FakeVault that can be down (every request fails) or refuse to sign."""

    down: bool = False
    refuse: bool = False

    def ca_material(self, mount: str) -> CaMaterial:
        if self.down:
            raise VaultUnavailable(DOWN)
        return super().ca_material(mount)

    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert:
        if self.down:
            raise VaultUnavailable(DOWN)
        if self.refuse:
            raise VaultRequestError(f"{mount}/sign/{role}: role refused the request")
        return super().sign(mount, role, csr, common_name, ttl)


@dataclass
class FakeReloader:
    error: str | None = None
    calls: int = 0

    def reload(self) -> ReloadOutcome:
        self.calls += 1
        if self.error:
            raise ReloadError(self.error)
        return ReloadOutcome((), "fake reload")

    def describe(self) -> str:
        return "fake reloader"


@dataclass
class FakeProber:
    path: Path
    serial: int | None = None          # None: serve the node.crt on disk (a database that reloaded)
    error: str | None = None
    calls: int = 0

    def served_serial(self) -> int:
        self.calls += 1
        if self.error:
            raise ReloadError(self.error)
        return self.serial if self.serial is not None else disk_cert(self.path).serial_number


class Monotonic:
    """Stands in for the ``time`` module inside vaultpki.daemon.sync_pass; ``sleep`` advances it."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class CountingCertsDir(CertsDir):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[list[str]] = []

    def write_set(self, files: Sequence[FileContent]) -> str:
        self.writes.append(sorted(f.name for f in files))
        return super().write_set(files)


# --- helpers ------------------------------------------------------------------

def make_config(hosts: Sequence[str] = HOSTS, reload: dict[str, Any] | None = None,
                renew: dict[str, Any] | None = None) -> Config:
    raw: dict[str, Any] = {"mode": "standard", "ttl": "1h", "vault": {"addr": "https://vault.test:8200"},
                           "pki": {"mount": "pki-crdb"}, "node": {"hosts": list(hosts)}}
    if reload:
        raw["reload"] = reload
    # These tests are about renewals: no periodic CA/OCSP check unless a test asks for one.
    raw["renew"] = {"ca_check": "0", **(renew or {})}
    return parse(raw, {})


def disk_cert(path: Path, name: str = "node.crt") -> x509.Certificate:
    return crypto.load_certs((path / name).read_bytes())[0]


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything under ``root``: links with their targets, dirs with modes, files with modes, inodes and bytes."""
    out: dict[str, tuple[object, ...]] = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_ino, p.read_bytes())
    return out


def by_file(report: PassReport) -> dict[str, Decision]:
    return {d.file: d for d in report.decisions}


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


@dataclass
class Rig:
    cfg: Config
    path: Path
    clock: FakeClock
    vault: Vault
    store: CountingCertsDir
    reloader: FakeReloader
    prober: FakeProber | None
    metrics: Metrics
    mono: Monotonic
    syncer: Syncer = field(init=False)

    def __post_init__(self) -> None:
        self.syncer = self.syncer_for(self.cfg)

    def syncer_for(self, cfg: Config) -> Syncer:
        return Syncer(cfg=cfg, vault=self.vault, store=self.store, reloader=self.reloader, prober=self.prober,
                      metrics=self.metrics, now=self.clock, log=logging.getLogger("test.syncer"),
                      sleep=self.mono.sleep, monotonic=self.mono.monotonic)

    def node(self) -> x509.Certificate:
        return disk_cert(self.path)


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path, cas: CaSet, monkeypatch: pytest.MonkeyPatch) -> MakeRig:
    mono = Monotonic()          # the verify deadline, on a fake clock (Syncer takes it as an input)

    def make(verify: bool = False, rollback: bool = False, hosts: Sequence[str] = HOSTS,
             renew: dict[str, Any] | None = None) -> Rig:
        reload: dict[str, Any] = {}
        if verify:
            reload["verify"] = VERIFY
        if rollback:
            reload["rollback_on_failure"] = True
        clock = FakeClock()
        path = tmp_path / "certs"
        metrics = Metrics(now=lambda: clock().timestamp() + METRICS_SKEW)
        return Rig(cfg=make_config(hosts, reload, renew), path=path, clock=clock, vault=Vault(ClockedPki(clock), cas),
                   store=CountingCertsDir(path), reloader=FakeReloader(),
                   prober=FakeProber(path) if verify else None, metrics=metrics, mono=mono)
    return make


# --- Syncer.run_pass ------------------------------------------------------------

def test_first_pass_issues_writes_once_and_reloads_once(make_rig: MakeRig, cas: CaSet) -> None:
    rig = make_rig()
    report = rig.syncer.run_pass()
    assert report.ok and report.reloaded and report.verified is None
    assert [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    assert {(d.file, d.due, d.reason) for d in report.decisions} == {("ca.crt", True, "missing"),
                                                                      ("node.crt", True, "missing")}
    assert len(rig.vault.calls) == 1 and rig.reloader.calls == 1
    assert rig.store.writes == [["ca.crt", "node.crt", "node.key"]]
    assert sorted(os.listdir(rig.path)) == [".vaultpki", "ca.crt", "node.crt", "node.key"]
    node = rig.node()
    assert report.renewed[0].serial == crypto.format_serial(node.serial_number)
    assert crypto.load_certs((rig.path / "ca.crt").read_bytes()) == [cas.inter.cert]
    assert crypto.key_matches(node, crypto.load_key((rig.path / "node.key").read_bytes()))
    assert report.next_wake == renew_at(node.not_valid_before_utc, node.not_valid_after_utc, node.serial_number,
                                        rig.cfg.renew)
    assert report.next_wake > rig.clock()
    assert rig.metrics.health.due_files == ()


def test_second_pass_with_the_same_clock_does_nothing(make_rig: MakeRig) -> None:
    rig = make_rig()
    first = rig.syncer.run_pass()
    before = tree(rig.path)
    second = rig.syncer.run_pass()
    assert second.ok and second.renewed == () and not second.reloaded and second.verified is None
    assert not any(d.due for d in second.decisions)
    assert {d.file: d.reason for d in second.decisions} == {"ca.crt": "fresh", "node.crt": "fresh"}
    assert len(rig.vault.calls) == 1 and rig.reloader.calls == 1 and len(rig.store.writes) == 1
    assert second.next_wake == first.next_wake
    assert tree(rig.path) == before


def test_renews_once_inside_the_window(make_rig: MakeRig) -> None:
    rig = make_rig()
    first = rig.syncer.run_pass()
    assert first.next_wake is not None
    old = rig.node()

    rig.clock.t = first.next_wake - SEC
    assert not any(d.due for d in rig.syncer.run_pass().decisions)
    assert len(rig.vault.calls) == 1

    rig.clock.t = first.next_wake + SEC
    report = rig.syncer.run_pass()
    decisions = by_file(report)
    left = int((old.not_valid_after_utc - rig.clock()).total_seconds())
    assert left > 0
    assert decisions["node.crt"].due
    assert decisions["node.crt"].reason == f"inside its renewal window ({left}s left)"
    assert decisions["node.crt"].at == first.next_wake
    assert not decisions["ca.crt"].due
    assert report.ok and [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    new = rig.node()
    assert new.serial_number != old.serial_number
    assert len(rig.vault.calls) == 2 and rig.reloader.calls == 2 and len(rig.store.writes) == 2
    assert report.next_wake is not None and report.next_wake > rig.clock()


def test_a_pass_asks_each_kept_leaf_s_responder_once_and_never_about_a_leaf_it_just_got(
        make_rig: MakeRig, caplog: pytest.LogCaptureFixture) -> None:
    # The test CA's leaves name no responder, so every question asked shows as one "OCSP check failed".
    rig = make_rig(renew={"ocsp_check": True})

    def asked() -> list[str]:
        return [r.__dict__["file"] for r in caplog.records if r.getMessage() == "OCSP check failed"]

    with caplog.at_level(logging.WARNING, logger="test.syncer"):
        first = rig.syncer.run_pass()                 # an empty dir: node.crt is issued, then not asked about
        assert first.renewed and asked() == []
        rig.syncer.run_pass()                         # nothing due: the kept leaf is asked about, once
        assert asked() == ["node.crt"]
        assert first.next_wake is not None
        rig.clock.t = first.next_wake + SEC           # renewed: asked at the start, not again after
        assert rig.syncer.run_pass().renewed
        assert asked() == ["node.crt", "node.crt"]


def test_verify_success(make_rig: MakeRig) -> None:
    rig = make_rig(verify=True)
    report = rig.syncer.run_pass()
    assert report.ok and report.verified is True
    assert rig.prober is not None and rig.prober.calls == 1
    assert rig.mono.sleeps == []
    assert gauge(rig.metrics, "vaultpki_reload_verified") == 1
    assert rig.metrics.health.reload_verified is True


def test_verify_polls_until_the_new_certificate_is_served(make_rig: MakeRig) -> None:
    rig = make_rig(verify=True)
    assert rig.prober is not None
    rig.prober.error = "connection refused"          # the database is still restarting...
    real_sleep = rig.mono.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if len(rig.mono.sleeps) == 3:                 # ...and comes back after three polls
            assert rig.prober is not None
            rig.prober.error = None
    rig.syncer.sleep = sleep
    report = rig.syncer.run_pass()
    assert report.ok and report.verified is True
    assert rig.mono.sleeps == [VERIFY_POLL] * 3 and rig.prober.calls == 4


def renew_with_old_serial_served(rig: Rig) -> tuple[PassReport, x509.Certificate]:
    """First pass (verified), then a renewal after which the endpoint keeps serving the old certificate."""
    first = rig.syncer.run_pass()
    assert first.ok and first.verified is True and first.next_wake is not None
    old = rig.node()
    assert rig.prober is not None
    rig.prober.serial = old.serial_number
    rig.clock.t = first.next_wake + SEC
    return rig.syncer.run_pass(), old


def test_verify_failure_when_the_old_serial_is_still_served(make_rig: MakeRig) -> None:
    rig = make_rig(verify=True)
    report, old = renew_with_old_serial_served(rig)
    assert not report.ok and report.reloaded and report.verified is False
    assert [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    (failure,) = report.failures
    assert failure.startswith(f"verify: {VERIFY} does not serve the certificate just written")
    assert gauge(rig.metrics, "vaultpki_reload_verified") == 0
    assert rig.metrics.health.reload_verified is False
    assert rig.node().serial_number != old.serial_number            # no rollback unless asked for
    # polled every VERIFY_POLL until verify_timeout (15s by default) ran out
    assert set(rig.mono.sleeps) == {VERIFY_POLL}
    assert sum(rig.mono.sleeps) == pytest.approx(rig.cfg.reload.verify_timeout)


def test_unverified_reload_is_retried_until_it_takes(make_rig: MakeRig) -> None:
    rig = make_rig(verify=True)
    renew_with_old_serial_served(rig)
    assert rig.prober is not None
    signs, reloads = len(rig.vault.calls), rig.reloader.calls

    again = rig.syncer.run_pass()                      # nothing due, but the reload did not take: again
    assert not any(d.due for d in again.decisions)
    assert len(rig.vault.calls) == signs and len(rig.store.writes) == 2
    assert rig.reloader.calls == reloads + 1
    assert again.reloaded and again.verified is False and not again.ok
    assert any(f.startswith("verify:") and "still does not serve" in f for f in again.failures)

    rig.prober.serial = None                           # the database finally serves what is on disk
    fixed = rig.syncer.run_pass()
    assert fixed.ok and fixed.reloaded and fixed.verified is True
    assert rig.reloader.calls == reloads + 2
    assert gauge(rig.metrics, "vaultpki_reload_verified") == 1

    quiet = rig.syncer.run_pass()                      # cleared: no more reloads
    assert quiet.ok and not quiet.reloaded and quiet.verified is None
    assert rig.reloader.calls == reloads + 2


def test_failed_reload_is_retried_on_the_next_pass(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.reloader.error = "no process named cockroach"
    report = rig.syncer.run_pass()
    assert report.failures == ("reload: no process named cockroach",)
    assert not report.reloaded and [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    assert (rig.path / "node.crt").exists()                         # written; only the reload failed
    assert gauge(rig.metrics, "vaultpki_reloads_total", result="failed") == 1

    again = rig.syncer.run_pass()
    assert again.failures == ("reload: no process named cockroach",) and rig.reloader.calls == 2
    assert len(rig.vault.calls) == 1

    rig.reloader.error = None
    fixed = rig.syncer.run_pass()
    assert fixed.ok and fixed.reloaded and rig.reloader.calls == 3

    quiet = rig.syncer.run_pass()
    assert quiet.ok and not quiet.reloaded and rig.reloader.calls == 3


def test_retried_reloads_are_counted(make_rig: MakeRig) -> None:
    """vaultpki_reloads_total{result} counts every reload, including the retries of one that did not take."""
    rig = make_rig()
    rig.reloader.error = "no process named cockroach"
    rig.syncer.run_pass()                    # renewal: reload fails
    rig.syncer.run_pass()                    # retry: fails again
    rig.reloader.error = None
    rig.syncer.run_pass()                    # retry: works
    assert rig.reloader.calls == 3
    assert gauge(rig.metrics, "vaultpki_reloads_total", result="failed") == 2
    assert gauge(rig.metrics, "vaultpki_reloads_total", result="ok") == 1


def test_rollback_on_failure_restores_the_previous_generation(make_rig: MakeRig) -> None:
    rig = make_rig(verify=True, rollback=True)
    report, old = renew_with_old_serial_served(rig)
    assert not report.ok and report.verified is False
    assert any(f.startswith("verify:") for f in report.failures)
    rejected = report.renewed[0].serial
    assert rejected != crypto.format_serial(old.serial_number)
    node = rig.node()
    assert node.serial_number == old.serial_number                  # the old set is back...
    assert crypto.key_matches(node, crypto.load_key((rig.path / "node.key").read_bytes()))   # ...with its own key
    assert rig.reloader.calls == 3                                  # first pass, renewal, after the rollback


def test_rollback_on_failure_without_a_previous_generation_still_reports(make_rig: MakeRig) -> None:
    """The very first set has nothing to roll back to: the pass must report the verify failure, not raise."""
    rig = make_rig(verify=True, rollback=True)
    assert rig.prober is not None
    rig.prober.serial = 0x1234                                      # some other certificate is served
    report = rig.syncer.run_pass()
    assert not report.ok and report.verified is False
    assert any(f.startswith("verify:") for f in report.failures)
    assert (rig.path / "node.crt").exists()


def test_vault_unavailable_with_nothing_due_is_ok_and_writes_nothing(make_rig: MakeRig) -> None:
    rig = make_rig()
    first = rig.syncer.run_pass()
    rig.vault.down = True
    before = tree(rig.path)
    report = rig.syncer.run_pass()
    assert report.ok and report.renewed == () and not report.reloaded
    assert not any(d.due for d in report.decisions)
    assert report.next_wake == first.next_wake
    assert tree(rig.path) == before
    assert len(rig.vault.calls) == 1 and rig.reloader.calls == 1
    assert gauge(rig.metrics, "vaultpki_vault_up") == 0


def test_vault_unavailable_with_a_missing_file_fails_and_touches_nothing(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.syncer.run_pass()
    assert gauge(rig.metrics, "vaultpki_vault_up") == 1
    (rig.path / "node.crt").unlink()
    rig.vault.down = True
    before = tree(rig.path)
    report = rig.syncer.run_pass()
    assert not report.ok and report.failures == (f"node.crt: {DOWN}",)
    assert by_file(report)["node.crt"].reason == "missing" and not by_file(report)["ca.crt"].due
    assert tree(rig.path) == before
    assert rig.reloader.calls == 1 and len(rig.store.writes) == 1
    assert rig.metrics.health.due_files == ("node.crt",)
    assert gauge(rig.metrics, "security_certificate_expiration_node") == 0
    assert gauge(rig.metrics, "vaultpki_vault_up") == 0


def test_vault_unavailable_before_the_first_set_creates_nothing(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.vault.down = True
    report = rig.syncer.run_pass()
    assert sorted(report.failures) == [f"ca.crt: {DOWN}", f"node.crt: {DOWN}"]
    assert not os.path.lexists(rig.path)
    assert rig.reloader.calls == 0


def test_key_with_the_wrong_mode_is_due(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.syncer.run_pass()
    old = rig.node()
    os.chmod(rig.path / "node.key", 0o644)          # through the link, on the generation's file
    report = rig.syncer.run_pass()
    decision = by_file(report)["node.crt"]
    assert decision.due
    assert "node.key owner/mode" in decision.reason and "0644" in decision.reason
    assert "differs from the configuration" in decision.reason
    assert report.ok and [leaf.spec.cert_file for leaf in report.renewed] == ["node.crt"]
    assert rig.node().serial_number != old.serial_number
    assert stat.S_IMODE(os.stat(rig.path / "node.key").st_mode) == 0o600


def test_certificate_with_other_sans_than_the_config_is_due(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.syncer.run_pass()
    syncer = rig.syncer_for(make_config(hosts=("node2.internal", "127.0.0.1")))
    report = syncer.run_pass()
    decision = by_file(report)["node.crt"]
    assert decision.due and "node2.internal" in decision.reason
    assert report.ok
    sans = rig.node().extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node2.internal"]
    assert not any(d.due for d in syncer.run_pass().decisions)


def test_new_ca_is_not_written_beside_a_leaf_that_does_not_chain_to_it(make_rig: MakeRig, pki: Pki,
                                                                         cas: CaSet) -> None:
    """If the CA changed but the leaf could not be renewed, ca.crt must still trust the node.crt on disk
    (keep the old CA file, or write old + new; never the new CA alone beside a leaf it did not sign)."""
    rig = make_rig()
    rig.syncer.run_pass()
    rig.vault.cas = dataclasses.replace(cas, inter=pki.ca("Test Intermediate CA 2", cas.root))
    rig.vault.refuse = True
    report = rig.syncer.run_pass()
    assert not report.ok and any(f.startswith("node.crt: ") for f in report.failures)
    on_disk_ca = crypto.load_certs((rig.path / "ca.crt").read_bytes())
    spec = rig.syncer.plan().certs[0]
    assert judge_leaf(spec, rig.store.snapshot(), on_disk_ca, rig.clock()).problem is None


def test_refused_renewal_is_counted_and_leaves_the_old_set(make_rig: MakeRig) -> None:
    rig = make_rig()
    first = rig.syncer.run_pass()
    assert first.next_wake is not None
    before = tree(rig.path)
    rig.vault.refuse = True
    rig.clock.t = first.next_wake + SEC
    report = rig.syncer.run_pass()
    assert report.failures == ("node.crt: pki-crdb/sign/node: role refused the request",)
    assert gauge(rig.metrics, "vaultpki_renewal_failures_total", file="node.crt") == 1
    assert rig.metrics.health.due_files == ("node.crt",)
    assert tree(rig.path) == before and rig.reloader.calls == 1


def test_metrics_after_a_pass(make_rig: MakeRig, cas: CaSet) -> None:
    rig = make_rig()
    report = rig.syncer.run_pass()
    node = rig.node()
    not_after = node.not_valid_after_utc.timestamp()
    metrics_now = rig.clock().timestamp() + METRICS_SKEW
    m = rig.metrics
    assert gauge(m, "security_certificate_expiration_node") == not_after
    assert gauge(m, "security_certificate_ttl_node") == not_after - metrics_now
    assert gauge(m, "vaultpki_certificate_expiration_timestamp_seconds", file="node.crt") == not_after
    assert gauge(m, "vaultpki_certificate_seconds_left", file="node.crt") == not_after - metrics_now
    assert gauge(m, "security_certificate_expiration_ca") == cas.inter.cert.not_valid_after_utc.timestamp()
    assert report.next_wake is not None
    assert gauge(m, "vaultpki_certificate_renewal_timestamp_seconds", file="node.crt") == report.next_wake.timestamp()
    assert gauge(m, "vaultpki_last_renewal_timestamp_seconds", file="node.crt") == metrics_now
    assert gauge(m, "vaultpki_reloads_total", result="ok") == 1
    assert gauge(m, "vaultpki_vault_up") == 1
    assert gauge(m, "vaultpki_reload_verified") == -1              # no verify endpoint: never checked


# --- Daemon ---------------------------------------------------------------------

def failed(reason: str = DOWN) -> PassReport:
    return PassReport((Decision("node.crt", True, "missing", NOW),), failures=(f"node.crt: {reason}",))


def ok_until(wake: dt.datetime) -> PassReport:
    return PassReport((Decision("node.crt", False, "fresh", wake),), next_wake=wake)


def ok_in(clock: FakeClock, seconds: float) -> Callable[[], PassReport]:
    """A successful pass whose next renewal is ``seconds`` after the time it runs."""
    return lambda: ok_until(clock() + dt.timedelta(seconds=seconds))


Step = PassReport | BaseException | Callable[[], PassReport]


class Script:
    """Replaces Syncer.run_pass: returns (or raises) the scripted steps, then ``default`` forever."""

    def __init__(self, steps: Sequence[Step], default: Step) -> None:
        self.steps = list(steps)
        self.default = default
        self.calls = 0

    def __call__(self) -> PassReport:
        self.calls += 1
        step = self.steps.pop(0) if self.steps else self.default
        if isinstance(step, BaseException):
            raise step
        return step if isinstance(step, PassReport) else step()


def scripted(rig: Rig, steps: Sequence[Step], default: Step, cfg: Config | None = None) -> tuple[Syncer, Script]:
    syncer = rig.syncer_for(cfg or rig.cfg)
    script = Script(steps, default)
    syncer.run_pass = script  # type: ignore[method-assign]
    return syncer, script


class Sleeper:
    """The daemon's sleep: records the wait and the health it saw, advances the clock, runs a hook per call."""

    LIMIT = 1000

    def __init__(self, clock: FakeClock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.calls: list[float] = []
        self.seen: list[tuple[int, bool, tuple[str, ...], str | None, float | None]] = []
        self.hooks: dict[int, Callable[[Daemon], None]] = {}
        self.daemon: Daemon | None = None

    def __call__(self, seconds: float) -> bool:
        assert self.daemon is not None
        h = self.metrics.health
        self.seen.append((h.consecutive_failures, h.healthy, h.due_files, h.last_error,
                          gauge(self.metrics, "vaultpki_healthy")))
        self.calls.append(seconds)
        self.clock.advance(seconds)
        hook = self.hooks.get(len(self.calls))
        if hook is not None:
            hook(self.daemon)
        if len(self.calls) >= self.LIMIT:           # a runaway loop ends the test instead of hanging it
            self.daemon.stop = True
        return False


def stop(d: Daemon) -> None:
    d._on_stop(signal.SIGTERM, None)


def hup(d: Daemon) -> None:
    d._on_hup(signal.SIGHUP, None)


@dataclass
class Loop:
    daemon: Daemon
    sleeper: Sleeper
    wakes: list[int]
    built: list[Config]


def make_loop(rig: Rig, build: Callable[[Config], Syncer] | None = None,
              load_config: Callable[[], Config] | None = None,
              tokens: Callable[[Syncer], TokenKeeper | None] | None = None) -> Loop:
    sleeper = Sleeper(rig.clock, rig.metrics)
    wakes: list[int] = []
    built: list[Config] = []

    def default_build(cfg: Config) -> Syncer:
        built.append(cfg)
        return rig.syncer_for(cfg)

    def counting_build(cfg: Config) -> Syncer:
        built.append(cfg)
        assert build is not None
        return build(cfg)

    d = Daemon(load_config=load_config or (lambda: rig.cfg), build=counting_build if build else default_build,
               tokens=tokens or (lambda s: None), log=logging.getLogger("test.daemon"), sleep=sleeper,
               wake=lambda: wakes.append(1))
    sleeper.daemon = d
    return Loop(d, sleeper, wakes, built)


def test_backoff_grows_with_jitter_up_to_the_cap_then_recovers(make_rig: MakeRig) -> None:
    rig = make_rig(renew={"retry_initial": "1s", "retry_max": "10s"})
    syncer, script = scripted(rig, [failed()] * 5, ok_in(rig.clock, 100))
    loop = make_loop(rig)
    loop.sleeper.hooks[6] = stop                     # 5 backoff waits, then the wait for the next renewal
    assert loop.daemon.run(syncer) == 0
    waits, rest = loop.sleeper.calls[:5], loop.sleeper.calls[5:]
    for wait, (low, high) in zip(waits, [(1, 2), (2, 3), (4, 5), (8, 9), (10, 10)], strict=True):
        assert low <= wait <= high, waits            # initial * 2**n plus up to 1s of jitter, capped at retry_max
    assert rest == [100.0]
    assert script.calls == 6
    # while failing: the failure count grows and a due file makes it unhealthy
    for attempt, (failures, healthy, due, error, healthy_gauge) in enumerate(loop.sleeper.seen[:5], start=1):
        assert failures == attempt and not healthy and healthy_gauge == 0
        assert due == ("node.crt",) and error == f"node.crt: {DOWN}"
    failures, healthy, _, error, healthy_gauge = loop.sleeper.seen[5]
    assert failures == 0 and healthy and error is None and healthy_gauge == 1
    assert rig.metrics.health.healthy
    assert gauge(rig.metrics, "vaultpki_passes_total", result="failed") == 5
    assert gauge(rig.metrics, "vaultpki_passes_total", result="ok") == 1


def test_unexpected_exceptions_are_retried_too(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, script = scripted(rig, [StoreError("no space left on device"), RuntimeError("surprise")],
                              ok_in(rig.clock, 86400))
    loop = make_loop(rig)
    loop.sleeper.hooks[3] = stop
    assert loop.daemon.run(syncer) == 0
    assert script.calls == 3
    assert [seen[3] for seen in loop.sleeper.seen[:2]] == ["no space left on device", "surprise"]
    assert loop.sleeper.calls[2] == 86400
    assert gauge(rig.metrics, "vaultpki_passes_total", result="failed") == 2


def test_sleeps_until_the_next_renewal_then_runs_a_pass(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, script = scripted(rig, [ok_until(NOW + 100 * SEC), ok_until(NOW + 250 * SEC)], ok_until(NOW + DAY))
    loop = make_loop(rig)
    loop.sleeper.hooks[2] = stop
    assert loop.daemon.run(syncer) == 0
    assert loop.sleeper.calls == [100.0, 150.0] and script.calls == 2
    assert loop.built == []


def test_no_next_renewal_sleeps_an_hour(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, _ = scripted(rig, [], PassReport(()))
    loop = make_loop(rig)
    loop.sleeper.hooks[1] = stop
    assert loop.daemon.run(syncer) == 0
    assert loop.sleeper.calls == [3600.0]


def test_sighup_during_backoff_rebuilds_and_runs_a_new_pass(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, old_script = scripted(rig, [], failed())
    new_cfg = make_config(hosts=("node2.internal",))
    new_syncer, new_script = scripted(rig, [], ok_in(rig.clock, 100), cfg=new_cfg)
    loop = make_loop(rig, build=lambda cfg: new_syncer, load_config=lambda: new_cfg)
    loop.sleeper.hooks[1] = hup                      # during the first backoff wait
    loop.sleeper.hooks[2] = stop                     # during the wait for the new syncer's next renewal
    assert loop.daemon.run(syncer) == 0
    assert old_script.calls == 1 and new_script.calls == 1
    assert loop.built == [new_cfg]
    assert loop.sleeper.calls[1] == 100.0
    assert not loop.daemon.rerun and loop.wakes == [1, 1]


def test_sighup_while_sleeping_rebuilds_and_runs_a_pass_now(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, old_script = scripted(rig, [], ok_until(NOW + DAY))
    new_syncer, new_script = scripted(rig, [], ok_until(NOW + 2 * DAY))
    loop = make_loop(rig, build=lambda cfg: new_syncer)
    loop.sleeper.hooks[1] = hup
    loop.sleeper.hooks[2] = stop
    assert loop.daemon.run(syncer) == 0
    assert old_script.calls == 1 and new_script.calls == 1 and len(loop.built) == 1
    assert loop.sleeper.calls == [86400.0, 86400.0]     # woken after the first; the second pass ran at once


@pytest.mark.parametrize("where", ["load_config", "build"])
def test_config_reload_failure_keeps_the_running_syncer(make_rig: MakeRig, caplog: pytest.LogCaptureFixture,
                                                        where: str) -> None:
    rig = make_rig()
    syncer, script = scripted(rig, [failed()], ok_in(rig.clock, 100))

    def broken_load() -> Config:
        raise ConfigError("config file /etc/vaultpki.toml is not valid TOML")

    def broken_build(cfg: Config) -> Syncer:
        raise StoreError("certs-dir /certs is a symlink")

    if where == "load_config":
        loop = make_loop(rig, load_config=broken_load)
    else:
        loop = make_loop(rig, build=broken_build)
    loop.sleeper.hooks[1] = hup
    loop.sleeper.hooks[2] = stop
    with caplog.at_level(logging.ERROR, logger="test.daemon"):
        assert loop.daemon.run(syncer) == 0
    assert script.calls == 2                          # the old syncer ran the pass after the failed reload
    assert loop.built == ([] if where == "load_config" else [rig.cfg])
    assert any("config reload failed" in r.getMessage() for r in caplog.records)
    assert not loop.daemon.rerun


def test_stop_during_backoff_exits_zero(make_rig: MakeRig) -> None:
    rig = make_rig()
    syncer, script = scripted(rig, [], failed())
    loop = make_loop(rig)
    loop.sleeper.hooks[1] = stop
    assert loop.daemon.run(syncer) == 0
    assert script.calls == 1 and len(loop.sleeper.calls) == 1 and loop.wakes == [1]
    assert loop.daemon.stop


def test_stop_during_a_pass_exits_without_sleeping(make_rig: MakeRig) -> None:
    rig = make_rig()
    loop = make_loop(rig)

    def pass_interrupted() -> PassReport:
        stop(loop.daemon)                              # SIGTERM arrives while the pass writes
        return ok_until(NOW + DAY)
    syncer, script = scripted(rig, [pass_interrupted], failed())
    assert loop.daemon.run(syncer) == 0
    assert script.calls == 1 and loop.sleeper.calls == []


def test_handlers_only_set_flags_and_wake(make_rig: MakeRig) -> None:
    loop = make_loop(make_rig())
    loop.daemon._on_hup(signal.SIGHUP, None)
    assert loop.daemon.rerun and not loop.daemon.stop and loop.wakes == [1]
    loop.daemon._on_stop(signal.SIGINT, None)
    assert loop.daemon.stop and loop.wakes == [1, 1]


def test_signals_context_installs_handlers_and_restores_the_previous_ones(make_rig: MakeRig) -> None:
    loop = make_loop(make_rig())
    d = loop.daemon
    received: list[int] = []

    def previous(signum: int, frame: object) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGHUP, previous)
    term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with d.signals():
            assert signal.getsignal(signal.SIGHUP) == d._on_hup
            assert signal.getsignal(signal.SIGTERM) == d._on_stop
            assert signal.getsignal(signal.SIGINT) == d._on_stop
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100_000):                   # Python runs the handler at the next bytecode boundary
                if d.rerun:
                    break
            assert d.rerun and not d.stop and loop.wakes == [1]
            assert received == []
        assert signal.getsignal(signal.SIGHUP) is previous
        assert signal.getsignal(signal.SIGTERM) == term and signal.getsignal(signal.SIGINT) == intr
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100_000):
            if received:
                break
        assert received == [signal.SIGHUP] and loop.wakes == [1]
    finally:
        signal.signal(signal.SIGHUP, original)


# --- Daemon._sleep_until and the Vault token ---------------------------------------

class FakeTokens:
    def __init__(self, refresh_in: float | None, after_refresh: float | None = None, error: str | None = None) -> None:
        self.refresh_in = refresh_in
        self.after_refresh = after_refresh
        self.error = error
        self.ensured = 0

    def seconds_until_token_refresh(self) -> float | None:
        return self.refresh_in

    def ensure_token(self) -> None:
        self.ensured += 1
        if self.error:
            raise VaultUnavailable(self.error)
        if self.after_refresh is not None:
            self.refresh_in = self.after_refresh


def sleeping(make_rig: MakeRig, keeper: FakeTokens | None) -> tuple[Rig, Loop, Syncer, list[Syncer]]:
    rig = make_rig()
    asked: list[Syncer] = []

    def tokens(s: Syncer) -> FakeTokens | None:
        asked.append(s)
        return keeper
    loop = make_loop(rig, tokens=tokens)
    return rig, loop, rig.syncer, asked


def test_sleep_wakes_to_refresh_the_token_then_sleeps_the_rest(make_rig: MakeRig) -> None:
    keeper = FakeTokens(5.0, after_refresh=1000.0)
    rig, loop, syncer, asked = sleeping(make_rig, keeper)
    loop.daemon._sleep_until(syncer, rig.clock() + 100 * SEC)
    assert loop.sleeper.calls == [5.0, 95.0]
    assert keeper.ensured == 1 and asked == [syncer]
    assert rig.clock() == NOW + 100 * SEC


def test_token_refresh_failure_is_logged_and_retried(make_rig: MakeRig, caplog: pytest.LogCaptureFixture) -> None:
    keeper = FakeTokens(5.0, error="vault sealed")
    rig, loop, syncer, _ = sleeping(make_rig, keeper)
    with caplog.at_level(logging.WARNING, logger="test.daemon"):
        loop.daemon._sleep_until(syncer, rig.clock() + 100 * SEC)
    assert loop.sleeper.calls[:2] == [5.0, 10.0]        # retry_initial (1s) * 10 after a failed refresh
    assert keeper.ensured >= 2
    assert any(r.getMessage() == "token refresh failed" for r in caplog.records)
    assert rig.clock() >= NOW + 100 * SEC


def test_token_refresh_failure_does_not_oversleep_the_renewal(make_rig: MakeRig) -> None:
    """After a failed refresh the back-off wait must be cut to what is left until the renewal time
    (here: 90s in, the token wait takes 5s, 5s remain, yet min(until_due, 10s) computed before it sleeps 10s)."""
    keeper = FakeTokens(5.0, error="vault sealed")
    rig, loop, syncer, _ = sleeping(make_rig, keeper)
    loop.daemon._sleep_until(syncer, rig.clock() + 100 * SEC)
    assert rig.clock() == NOW + 100 * SEC, f"woke {rig.clock() - (NOW + 100 * SEC)} late: {loop.sleeper.calls}"


def test_token_that_cannot_be_refreshed_does_not_busy_loop(make_rig: MakeRig) -> None:
    """A non-renewable token (a batch token, or VAULT_TOKEN without renewable) past 2/3 of its TTL: the keeper
    says 'refresh now' (0s) and ensure_token() can do nothing. The wait must not spin on zero-length sleeps."""
    keeper = FakeTokens(0.0)
    rig, loop, syncer, _ = sleeping(make_rig, keeper)
    loop.daemon._sleep_until(syncer, rig.clock() + 100 * SEC)
    zero = sum(1 for s in loop.sleeper.calls if s <= 0)
    assert len(loop.sleeper.calls) < Sleeper.LIMIT and zero <= 1, \
        f"{len(loop.sleeper.calls)} sleeps, {zero} of them zero-length; {keeper.ensured} ensure_token() calls"


@pytest.mark.parametrize(("wake_in", "expected"), [
    pytest.param(-5.0, [], id="already-past"),
    pytest.param(0.0, [], id="now"),
    pytest.param(42.0, [42.0], id="future"),
])
def test_sleep_until_without_a_token(make_rig: MakeRig, wake_in: float, expected: list[float]) -> None:
    rig, loop, syncer, _ = sleeping(make_rig, None)
    loop.daemon._sleep_until(syncer, rig.clock() + dt.timedelta(seconds=wake_in))
    assert loop.sleeper.calls == expected


def test_sleep_until_returns_on_sighup(make_rig: MakeRig) -> None:
    keeper = FakeTokens(5.0, after_refresh=5.0)
    rig, loop, syncer, _ = sleeping(make_rig, keeper)
    loop.sleeper.hooks[1] = hup
    loop.daemon._sleep_until(syncer, rig.clock() + 100 * SEC)
    assert loop.sleeper.calls == [5.0] and keeper.ensured == 0      # no Vault traffic once asked to rerun


def test_token_keeper_is_consulted_in_the_loop(make_rig: MakeRig) -> None:
    keeper = FakeTokens(30.0, after_refresh=10_000.0)
    rig = make_rig()
    syncer, _ = scripted(rig, [], ok_until(NOW + 100 * SEC))
    asked: list[Syncer] = []

    def tokens(s: Syncer) -> FakeTokens:
        asked.append(s)
        return keeper
    loop = make_loop(rig, tokens=tokens)
    loop.sleeper.hooks[2] = stop
    assert loop.daemon.run(syncer) == 0
    assert loop.sleeper.calls == [30.0, 70.0] and keeper.ensured == 1 and asked == [syncer]


def test_errors_reaching_the_loop_are_vaultpki_errors() -> None:
    """PassFailed carries its report; it is a VaultpkiError like everything the loop logs."""
    report = failed()
    exc = PassFailed(report)
    assert isinstance(exc, VaultpkiError) and exc.report is report and str(exc) == f"node.crt: {DOWN}"
    assert not report.ok and PassReport(()).ok


@pytest.fixture(autouse=True)
def _no_real_signals_left_behind() -> Iterator[None]:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    assert {s: signal.getsignal(s) for s in before} == before


def test_next_wake_is_the_ca_check_when_it_comes_before_the_renewal(make_rig: MakeRig) -> None:
    rig = make_rig(renew={"ca_check": "10m"})
    report = rig.syncer.run_pass()
    assert report.ok and report.next_wake == rig.clock() + dt.timedelta(minutes=10)


def test_an_expired_certificate_is_logged_as_a_warning_and_a_due_one_as_info(
        make_rig: MakeRig, caplog: pytest.LogCaptureFixture) -> None:
    # issue 18: an expired certificate was logged "due" at info, like a routine renewal.
    rig = make_rig()
    first = rig.syncer.run_pass()
    assert first.next_wake is not None

    def due_levels() -> dict[str, str]:
        return {r.__dict__["file"]: r.levelname for r in caplog.records if r.getMessage() == "due"}

    with caplog.at_level(logging.INFO, logger="test.syncer"):
        rig.clock.t = first.next_wake + SEC                      # inside the window, still valid
        assert rig.syncer.run_pass().ok
        assert due_levels() == {"node.crt": "INFO"}
        caplog.clear()
        rig.clock.t = rig.node().not_valid_after_utc + SEC       # past its not-after
        assert rig.syncer.run_pass().ok
        assert due_levels() == {"node.crt": "WARNING"}
