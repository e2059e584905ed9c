"""renewal: renew_at / decide / next_wake / parse_percent / jitter_unit (pure: times and serials in, decisions out)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from vaultpki.core.renewal import Decision, RenewPolicy, decide, jitter_unit, next_wake, parse_percent, renew_at
from vaultpki.errors import ConfigError

from .conftest import DAY, NOW

HOUR = dt.timedelta(hours=1)
SEC = dt.timedelta(seconds=1)
NO_JITTER = 0.0


def policy(before: float | None = 1 / 3, seconds: int | None = None, jitter: float = 0.05) -> RenewPolicy:
    return RenewPolicy(before_fraction=None if seconds is not None else before, before_seconds=seconds,
                       jitter_fraction=jitter)


def secs(delta: dt.timedelta) -> float:
    return delta.total_seconds()


# --- renew_at -----------------------------------------------------------------

@pytest.mark.parametrize(("lifetime", "pol", "expected_after_not_before"), [
    pytest.param(90 * DAY, policy(1 / 3, jitter=NO_JITTER), 60 * DAY, id="third-of-90d"),
    pytest.param(90 * DAY, policy(0.1, jitter=NO_JITTER), 81 * DAY, id="10pct-of-90d"),
    pytest.param(30 * DAY, policy(0.5, jitter=NO_JITTER), 15 * DAY, id="50pct-is-exactly-the-floor"),
    pytest.param(90 * DAY, policy(seconds=10 * 86400, jitter=NO_JITTER), 80 * DAY, id="fixed-10d-window"),
    pytest.param(24 * HOUR, policy(seconds=3600, jitter=NO_JITTER), 23 * HOUR, id="fixed-1h-window-on-1d"),
])
def test_renew_at_windows(lifetime: dt.timedelta, pol: RenewPolicy, expected_after_not_before: dt.timedelta) -> None:
    not_before = NOW - DAY
    at = renew_at(not_before, not_before + lifetime, 0xABCDEF, pol)
    assert at == not_before + expected_after_not_before


def test_renew_at_uses_the_issued_lifetime_not_a_nominal_one() -> None:
    """The same 1/3 window means 10 days on a 30-day certificate and 1 day on a 3-day one."""
    nb = NOW
    assert renew_at(nb, nb + 30 * DAY, 1, policy(jitter=NO_JITTER)) == nb + 20 * DAY
    assert renew_at(nb, nb + 3 * DAY, 1, policy(jitter=NO_JITTER)) == nb + 2 * DAY


@pytest.mark.parametrize("serial", [pytest.param(s, id=f"serial-{s:x}") for s in (0, 1, 0xFF, 2**64 + 7, 2**158 - 3)])
def test_window_larger_than_the_certificate_renews_at_half_life(serial: int) -> None:
    """A '24h' window on a 1h certificate would be due at once: the half-life floor wins, jitter or not."""
    not_before = NOW
    at = renew_at(not_before, not_before + HOUR, serial, policy(seconds=24 * 3600, jitter=0.25))
    assert at == not_before + HOUR / 2


def test_backdated_short_certificate_is_not_due_when_fresh() -> None:
    """Vault backdates not_before by 30s; TTL 60s; before = 60%.

    lifetime = 90s, window = 54s -> unfloored renew_at = issued + 6s (+-4.5s jitter);
    the half-life floor is not_before + 45s = issued + 15s, so the fresh certificate is not due.
    """
    issued = NOW
    not_before, not_after = issued - 30 * SEC, issued + 60 * SEC
    pol = policy(0.6, jitter=0.05)
    for serial in range(1, 200):
        assert renew_at(not_before, not_after, serial, pol) == issued + 15 * SEC
        fresh = decide("node.crt", issued, pol, validity=(not_before, not_after, serial))
        assert not fresh.due and fresh.reason == "fresh" and fresh.at == issued + 15 * SEC
    assert decide("node.crt", issued + 15 * SEC, pol, validity=(not_before, not_after, 5)).due


@pytest.mark.parametrize("serial", [pytest.param(s, id=f"serial-{i}") for i, s in
                                    enumerate(random.Random(7).getrandbits(159) for _ in range(20))])
def test_jitter_stays_within_its_fraction_of_the_lifetime(serial: int) -> None:
    not_before, not_after = NOW, NOW + 90 * DAY
    lifetime = secs(not_after - not_before)
    plain = renew_at(not_before, not_after, serial, policy(jitter=NO_JITTER))
    jittered = renew_at(not_before, not_after, serial, policy(jitter=0.05))
    offset = secs(jittered - plain)
    assert abs(offset) <= 0.05 * lifetime + 1e-6
    assert offset == pytest.approx(jitter_unit(serial) * 0.05 * lifetime, abs=1e-5)


def test_jitter_is_deterministic_per_serial() -> None:
    nb, na = NOW, NOW + 30 * DAY
    for serial in (1, 12345, 2**100 + 1):
        times = {renew_at(nb, na, serial, policy()) for _ in range(5)}
        assert len(times) == 1
        assert jitter_unit(serial) == jitter_unit(serial)
    assert renew_at(nb, na, 1, policy()) != renew_at(nb, na, 2, policy())


def test_jitter_spreads_a_fleet_uniformly() -> None:
    rng = random.Random(20300601)
    not_before, not_after = NOW, NOW + 90 * DAY
    lifetime = secs(not_after - not_before)
    plain = renew_at(not_before, not_after, 1, policy(jitter=NO_JITTER))
    units = []
    for _ in range(1000):
        at = renew_at(not_before, not_after, rng.getrandbits(159) | 1, policy(jitter=0.05))
        units.append(secs(at - plain) / (0.05 * lifetime))
    assert all(-1 - 1e-9 <= u <= 1 + 1e-9 for u in units)
    assert min(units) < -0.97 and max(units) > 0.97
    histogram = [0] * 10
    for u in units:
        histogram[min(9, int((u + 1) / 2 * 10))] += 1
    assert all(60 <= count <= 140 for count in histogram), histogram    # expected 100 each
    assert abs(sum(units) / len(units)) < 0.1                           # centred on the unjittered time


@pytest.mark.parametrize("serial", [pytest.param(s, id=f"{s:#x}") for s in (0, 1, 2**63, 2**159 - 1)])
def test_jitter_unit_is_in_range(serial: int) -> None:
    assert -1.0 <= jitter_unit(serial) <= 1.0


# --- decide -------------------------------------------------------------------

def test_decide_problem_is_due_now() -> None:
    d = decide("node.crt", NOW, policy(), problem="node.key owner/mode differs",
               validity=(NOW - DAY, NOW + 90 * DAY, 3))
    assert d == Decision("node.crt", True, "node.key owner/mode differs", NOW)


def test_decide_without_validity_is_missing() -> None:
    assert decide("ca.crt", NOW, policy()) == Decision("ca.crt", True, "missing", NOW)


def test_decide_fresh_reports_when_it_will_be_due() -> None:
    validity = (NOW - DAY, NOW + 89 * DAY, 42)
    d = decide("node.crt", NOW, policy(), validity=validity)
    assert not d.due and d.reason == "fresh"
    assert d.at == renew_at(*validity, policy()) and d.at > NOW


def test_decide_inside_window_mentions_seconds_left() -> None:
    validity = (NOW - 80 * DAY, NOW + 10 * DAY + 7 * SEC, 42)    # 90 days; 10 days left < 1/3 +- 5%
    d = decide("node.crt", NOW, policy(), validity=validity)
    assert d.due
    assert d.reason == f"inside its renewal window ({10 * 86400 + 7}s left)"
    assert d.at == renew_at(*validity, policy()) and d.at <= NOW


def test_decide_is_due_exactly_at_renew_at() -> None:
    validity = (NOW, NOW + 30 * DAY, 99)
    at = renew_at(*validity, policy())
    assert not decide("node.crt", at - dt.timedelta(microseconds=1), policy(), validity=validity).due
    assert decide("node.crt", at, policy(), validity=validity).due


def test_decide_expired_certificate_has_zero_seconds_left() -> None:
    d = decide("node.crt", NOW, policy(), validity=(NOW - 30 * DAY, NOW - DAY, 1))
    assert d.due and d.reason == "inside its renewal window (0s left)"


# --- next_wake ----------------------------------------------------------------

def test_next_wake_is_the_earliest_future_time() -> None:
    decisions = [
        Decision("ca.crt", False, "fresh", NOW + 365 * DAY),
        Decision("node.crt", False, "fresh", NOW + 20 * DAY),
        Decision("client.node.crt", False, "fresh", NOW + 21 * DAY),
    ]
    assert next_wake(decisions, NOW) == NOW + 20 * DAY


def test_next_wake_ignores_due_and_past_decisions() -> None:
    decisions = [
        Decision("node.crt", True, "missing", NOW),                          # due now
        Decision("ui.crt", True, "inside its renewal window", NOW + DAY),    # due, even with a future time
        Decision("client.node.crt", False, "fresh", NOW - SEC),              # past
        Decision("ca.crt", False, "fresh", NOW),                             # not in the future
        Decision("ca-client.crt", False, "fresh", NOW + 3 * DAY),
    ]
    assert next_wake(decisions, NOW) == NOW + 3 * DAY


@pytest.mark.parametrize("decisions", [
    pytest.param([], id="empty"),
    pytest.param([Decision("node.crt", True, "missing", NOW)], id="all-due"),
    pytest.param([Decision("node.crt", False, "fresh", NOW - DAY)], id="all-past"),
])
def test_next_wake_none_when_nothing_is_scheduled(decisions: list[Decision]) -> None:
    assert next_wake(decisions, NOW) is None


# --- parse_percent ------------------------------------------------------------

@pytest.mark.parametrize(("text", "allow_zero", "value"), [
    pytest.param("5%", False, 0.05, id="5"),
    pytest.param(" 33 % ", False, 0.33, id="spaces"),
    pytest.param("12.5%", False, 0.125, id="decimal"),
    pytest.param("99.9%", False, 0.999, id="just-below-100"),
    pytest.param("0%", True, 0.0, id="zero-allowed"),
])
def test_parse_percent(text: str, allow_zero: bool, value: float) -> None:
    assert parse_percent(text, "renew.x", allow_zero=allow_zero) == pytest.approx(value)


@pytest.mark.parametrize(("text", "allow_zero", "fragment"), [
    pytest.param("100%", False, "below 100%", id="100"),
    pytest.param("100%", True, "below 100%", id="100-zero-allowed"),
    pytest.param("150%", True, "below 100%", id="150"),
    pytest.param("0%", False, "above 0%", id="zero-not-allowed"),
    pytest.param("0.0%", False, "above 0%", id="zero-decimal-not-allowed"),
    pytest.param("abc", True, "not a percentage", id="abc"),
    pytest.param("5", True, "not a percentage", id="no-percent-sign"),
    pytest.param("-5%", True, "not a percentage", id="negative"),
    pytest.param("", True, "not a percentage", id="empty"),
    pytest.param("5%%", True, "not a percentage", id="double-percent"),
])
def test_parse_percent_refuses(text: str, allow_zero: bool, fragment: str) -> None:
    with pytest.raises(ConfigError, match="renew.before") as info:
        parse_percent(text, "renew.before", allow_zero=allow_zero)
    assert fragment in str(info.value)
