"""When is a certificate due? Pure: times, serials and the policy in; decisions out.

A file is due when it is missing or invalid (the caller says why), or when ``now``
has reached its renewal time:

    renew_at = not_after - window + jitter

- ``window`` is a fraction of the *issued* lifetime (``not_after - not_before`` of
  the certificate Vault actually returned, never the lifetime we asked for), or a
  fixed duration.
- ``jitter`` spreads a fleet: a fraction of the lifetime, scaled by a number in
  [-1, 1] derived from the certificate's serial. Serials are random, so the fleet is
  spread, and the same certificate always gets the same time, so restarting the
  daemon never moves it.
- ``renew_at`` is never before half of the issued lifetime. Otherwise a window
  larger than what Vault issued (a role's ``max_ttl`` clamping a long ``ttl``, or a
  "24h" window on a 1h certificate) would make every fresh certificate due at once:
  a renewal loop.

Nothing here depends on when or where it is computed, so ``status`` gets from ``schedule`` the very
time the daemon will renew a certificate, from the certificate and the ``[renew]`` policy alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable

import msgspec

from vaultpki.errors import ConfigError

__all__ = ["Decision", "RenewPolicy", "Schedule", "decide", "jitter_unit", "next_wake", "parse_percent", "renew_at",
           "schedule"]

MIN_LIFE_FRACTION = 0.5
# ASCII digits only: Python's \d and float() also take '５' and other scripts' digits.
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*")


class RenewPolicy(msgspec.Struct, frozen=True):
    before_fraction: float | None = 1 / 3      # renew when this much of the lifetime is left...
    before_seconds: int | None = None          # ...or this many seconds (exactly one is set)
    jitter_fraction: float = 0.05
    ca_check: int = 3600                       # seconds between CA-bundle/OCSP checks (0: only at renewals)
    ocsp_check: bool = True                    # ask the responder whether node certificates were revoked
    revoke_replaced: bool = False              # revoke the certificate a renewal replaced


class Decision(msgspec.Struct, frozen=True):
    """Whether one file is due, why, and when it is (or was) due."""

    file: str
    due: bool
    reason: str
    at: dt.datetime


def parse_percent(text: str, key: str, *, allow_zero: bool) -> float:
    match = _PERCENT.fullmatch(str(text))
    if not match:
        raise ConfigError(f"{key} = {text!r} is not a percentage like '5%'")
    value = float(match.group(1)) / 100
    if value >= 1 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} = {text!r} must be {'' if allow_zero else 'above 0% and '}below 100%")
    return value


def jitter_unit(serial: int) -> float:
    """A number in [-1, 1] that depends only on the serial."""
    digest = hashlib.sha256(serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")).digest()
    return int.from_bytes(digest[:8], "big") / float(2**64 - 1) * 2 - 1


class Schedule(msgspec.Struct, frozen=True):
    """When one certificate is renewed, and why then: its window, its jitter, and the time they give.

    ``window_opens`` is ``not_after - window`` (``renew.before``); ``jitter_seconds`` is how far the
    jitter may move any certificate of this lifetime (±), and ``jitter_offset_seconds`` how far it moves
    this one (from its serial); ``renew_at`` is the window's opening moved by that offset, never before
    half of the issued lifetime (``floored`` says when that floor decided it)."""

    window_opens: dt.datetime
    jitter_seconds: float
    jitter_offset_seconds: float
    renew_at: dt.datetime
    floored: bool


def schedule(not_before: dt.datetime, not_after: dt.datetime, serial: int, policy: RenewPolicy) -> Schedule:
    """The renewal schedule of the certificate with these dates and serial, under ``policy``."""
    lifetime = (not_after - not_before).total_seconds()
    if policy.before_seconds is not None:
        window = float(policy.before_seconds)
    else:
        window = (policy.before_fraction or 0.0) * lifetime
    spread = policy.jitter_fraction * lifetime
    offset = jitter_unit(serial) * spread
    opens = not_after - dt.timedelta(seconds=window)
    at = not_after - dt.timedelta(seconds=window - offset)
    earliest = not_before + dt.timedelta(seconds=lifetime * MIN_LIFE_FRACTION)
    return Schedule(window_opens=opens, jitter_seconds=spread, jitter_offset_seconds=offset,
                    renew_at=max(at, earliest), floored=at < earliest)


def renew_at(not_before: dt.datetime, not_after: dt.datetime, serial: int, policy: RenewPolicy) -> dt.datetime:
    """When the certificate with these dates and serial is due (``schedule``'s ``renew_at``)."""
    return schedule(not_before, not_after, serial, policy).renew_at


def decide(
    file: str,
    now: dt.datetime,
    policy: RenewPolicy,
    *,
    problem: str | None = None,
    validity: tuple[dt.datetime, dt.datetime, int] | None = None,
) -> Decision:
    """Due now when there is a ``problem``; else due when ``now`` reaches the renewal time of ``validity``
    (not_before, not_after, serial)."""
    if problem is not None or validity is None:
        return Decision(file, True, problem or "missing", now)
    at = renew_at(*validity, policy)
    if now >= at:
        left = max(0, int((validity[1] - now).total_seconds()))
        return Decision(file, True, f"inside its renewal window ({left}s left)", at)
    return Decision(file, False, "fresh", at)


def next_wake(decisions: Iterable[Decision], now: dt.datetime) -> dt.datetime | None:
    """The earliest future renewal time (None when nothing is scheduled)."""
    times = [d.at for d in decisions if not d.due and d.at > now]
    return min(times) if times else None
