"""When each file is renewed next (issue 18: ``status`` shows it; the daemon's log says what its times mean).

The pure part: ``core.renewal.schedule`` (the window, the jitter, the time they give) and the renewal rows of
``core.report.status_report``; then the daemon's own words for the same times: ``next_renewal`` (the earliest
renewal time of any file) apart from ``wake_at`` (when it wakes: earlier for the CA/OCSP check or the token).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from vaultpki.core.renewal import MIN_LIFE_FRACTION, RenewPolicy, jitter_unit, renew_at, schedule
from vaultpki.core.report import status_report
from vaultpki.core.snapshot import DirState
from vaultpki.core.validate import Problem

from .conftest import DAY, NOW, CaSet, Pki
from .test_daemon import FakeTokens, MakeRig, sleeping
from .test_reload_actions import a_rig


@pytest.fixture
def rigged(tmp_path: Path, cas: CaSet) -> MakeRig:
    return lambda **kw: a_rig(tmp_path, cas, **kw)

HOUR = dt.timedelta(hours=1)
SERIAL = 0x5EED


def third(jitter: float = 0.05) -> RenewPolicy:
    return RenewPolicy(before_fraction=1 / 3, jitter_fraction=jitter)


# --- core.renewal.schedule ------------------------------------------------------------------------------------

def test_the_schedule_is_the_window_moved_by_this_serials_jitter() -> None:
    not_before, not_after = NOW, NOW + 90 * DAY
    plan = schedule(not_before, not_after, SERIAL, third())
    lifetime = (not_after - not_before).total_seconds()
    assert plan.window_opens == not_after - 30 * DAY                          # renew.before = a third of the lifetime
    assert plan.jitter_seconds == pytest.approx(0.05 * lifetime)              # ± 5% of it, for any serial
    assert plan.jitter_offset_seconds == pytest.approx(jitter_unit(SERIAL) * 0.05 * lifetime)
    assert abs(plan.jitter_offset_seconds) <= plan.jitter_seconds
    assert plan.renew_at == plan.window_opens + dt.timedelta(seconds=plan.jitter_offset_seconds)
    assert not plan.floored


@pytest.mark.parametrize("serial", [0, 1, 0xFF, 2**64 + 7, 2**158 - 3, SERIAL])
@pytest.mark.parametrize("policy", [third(), third(0.25), RenewPolicy(before_fraction=None, before_seconds=3600),
                                    RenewPolicy(before_fraction=0.6, jitter_fraction=0.0)])
def test_the_schedule_gives_the_very_time_the_daemon_acts_on(serial: int, policy: RenewPolicy) -> None:
    """status computes what the daemon will do: the same instant, whatever the serial and the policy."""
    for lifetime in (HOUR, 90 * dt.timedelta(seconds=1), 30 * DAY):
        assert schedule(NOW, NOW + lifetime, serial, policy).renew_at == renew_at(NOW, NOW + lifetime, serial, policy)


def test_a_fixed_window_opens_that_long_before_the_expiry() -> None:
    plan = schedule(NOW, NOW + 30 * DAY, SERIAL, RenewPolicy(before_fraction=None, before_seconds=86400,
                                                             jitter_fraction=0.0))
    assert plan.window_opens == NOW + 29 * DAY and plan.renew_at == plan.window_opens
    assert plan.jitter_seconds == 0 and plan.jitter_offset_seconds == 0


def test_a_window_wider_than_half_the_lifetime_is_floored_at_half_life() -> None:
    """A '24h' window on a 1h certificate: it opens before the certificate does; it renews at half-life."""
    plan = schedule(NOW, NOW + HOUR, SERIAL, RenewPolicy(before_fraction=None, before_seconds=86400))
    assert plan.window_opens == NOW + HOUR - dt.timedelta(hours=24)
    assert plan.floored and plan.renew_at == NOW + HOUR * MIN_LIFE_FRACTION


# --- core.report: the renewal of each row ------------------------------------------------------------------------

def node_dir(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState]) -> tuple[DirState, dict[str, x509.Certificate]]:
    node = pki.leaf("node", cas.inter, dns=["db1.test"], not_before=NOW - DAY, not_after=NOW + 89 * DAY)
    client = pki.leaf("node", cas.inter, not_before=NOW - 80 * DAY, not_after=NOW + 10 * DAY)
    marc = pki.leaf("marc", cas.inter)
    state = dir_state({
        "ca.crt": cas.root.cert_pem, "node.crt": node.chain_pem(cas.inter), "node.key": node.key_pem,
        "client.node.crt": client.chain_pem(cas.inter), "client.node.key": client.key_pem,
        "client.marc.crt": marc.cert_pem, "client.marc.key": marc.key_pem,
    })
    return state, {"node.crt": node.cert, "client.node.crt": client.cert}


def test_each_file_sync_renews_gets_its_schedule(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState]) -> None:
    state, certs = node_dir(pki, cas, dir_state)
    policy = third()
    report = status_report(state, [], NOW, {}, policy=policy, renewed={"node.crt", "client.node.crt"})
    rows = {row.file: row for row in report.files}
    # The CA file is renewed when the mount's CA changes, never by date; client.marc.crt is not the daemon's.
    assert rows["ca.crt"].renewal is None and rows["client.marc.crt"].renewal is None
    for name in ("node.crt", "client.node.crt"):
        cert = certs[name]
        plan = schedule(cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number, policy)
        row = rows[name].renewal
        assert row is not None
        assert row.renew_at == plan.renew_at.isoformat() and row.window_opens == plan.window_opens.isoformat()
        assert row.jitter_seconds == round(plan.jitter_seconds)
        assert row.jitter_offset_seconds == round(plan.jitter_offset_seconds)
    node, client = rows["node.crt"].renewal, rows["client.node.crt"].renewal
    assert node is not None and client is not None
    assert not node.due and node.seconds_until > 50 * 86400
    assert client.due and client.seconds_until == 0                 # 10 days left of 90: inside its window


def test_a_file_with_an_error_is_due_now_whatever_its_dates(pki: Pki, cas: CaSet,
                                                             dir_state: Callable[..., DirState]) -> None:
    state, _ = node_dir(pki, cas, dir_state)
    errors = [Problem("node.key", "does not match node.crt"), Problem("client.node.crt", "mode 0644", "warning")]
    rows = {row.file: row for row in status_report(state, errors, NOW, {}, policy=third(),
                                                   renewed={"node.crt"}).files}
    node = rows["node.crt"].renewal
    assert node is not None and node.due and node.seconds_until > 0      # its time is still far; its key is wrong


def test_without_a_policy_no_row_has_a_schedule(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState]) -> None:
    """No configuration (``status --certs-dir`` alone): the window is unknown, so none is made up."""
    state, _ = node_dir(pki, cas, dir_state)
    report = status_report(state, [], NOW, {}, renewed={"node.crt"})
    assert all(row.renewal is None for row in report.files)


# --- the daemon: next_renewal is not wake_at --------------------------------------------------------------------

def test_a_pass_reports_the_next_renewal_apart_from_the_next_wake(rigged: MakeRig,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """issue 18: the pass logged ``next_renewal=`` with the time of its next wake-up (an hour away, for the CA
    check), not of the next renewal."""
    rig = rigged(renew={"ca_check": "10m"})
    with caplog.at_level(logging.INFO, logger="test.syncer"):
        report = rig.syncer.run_pass()
    node = rig.node()
    due = renew_at(node.not_valid_before_utc, node.not_valid_after_utc, node.serial_number, rig.cfg.renew)
    assert report.next_renewal == due and report.next_wake == rig.clock() + dt.timedelta(minutes=10)
    done = next(r for r in caplog.records if r.getMessage() == "pass complete")
    assert done.__dict__["next_renewal"] == due.isoformat()
    assert done.__dict__["wake_at"] == (rig.clock() + dt.timedelta(minutes=10)).isoformat()


@pytest.mark.parametrize(("wake_in", "renewal_in", "wake_for"), [
    pytest.param(100, 100, "renewal", id="the-renewal"),
    pytest.param(100, 5000, "ca_check", id="the-ca-check-first"),
])
def test_each_sleep_says_when_it_ends_why_and_when_the_next_renewal_is(
        rigged: MakeRig, caplog: pytest.LogCaptureFixture, wake_in: int, renewal_in: int, wake_for: str) -> None:
    rig, loop, syncer, _ = sleeping(rigged, None)
    wake, renewal = rig.clock() + dt.timedelta(seconds=wake_in), rig.clock() + dt.timedelta(seconds=renewal_in)
    with caplog.at_level(logging.INFO, logger="test.daemon"):
        loop.daemon._sleep_until(syncer, wake, renewal)
    [slept] = [r.__dict__ for r in caplog.records if r.getMessage() == "sleeping"]
    assert (slept["wake_at"], slept["wake_for"], slept["next_renewal"]) == (wake.isoformat(), wake_for,
                                                                            renewal.isoformat())


def test_a_wake_for_the_token_says_so_and_keeps_the_next_renewal(rigged: MakeRig,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    keeper = FakeTokens(30.0, after_refresh=10_000.0)
    rig, loop, syncer, _ = sleeping(rigged, keeper)
    start = rig.clock()
    renewal = start + dt.timedelta(seconds=100)
    with caplog.at_level(logging.INFO, logger="test.daemon"):
        loop.daemon._sleep_until(syncer, renewal, renewal)
    slept = [r.__dict__ for r in caplog.records if r.getMessage() == "sleeping"]
    assert [(s["wake_at"], s["wake_for"], s["next_renewal"]) for s in slept] == [
        ((start + dt.timedelta(seconds=30)).isoformat(), "token", renewal.isoformat()),
        (renewal.isoformat(), "renewal", renewal.isoformat()),
    ]
    assert loop.sleeper.calls == [30.0, 70.0] and keeper.ensured == 1
