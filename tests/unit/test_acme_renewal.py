"""``sync`` and an ACME ui.crt (``vaultpki.daemon.acme_renewal``): due by the window on the issued lifetime; after a
failed order one log line and no order before the back-off or the CA's Retry-After, whichever is later.

The order itself is the real adapter against OpenBao in tests/integration/test_acme_issue_node.py; here it is a
function that records its calls, so the clock can be moved across hours of back-off.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import DAY, NOW, Pki, make_dir_state
from vaultpki.acme.console import AcmeUi, UiOrigin
from vaultpki.acme.problems import AcmeRateLimited, AcmeUnavailable
from vaultpki.config.records import AcmeConfig
from vaultpki.core.crypto import KeyType
from vaultpki.core.renewal import RenewPolicy
from vaultpki.daemon.acme_renewal import BACKOFF_INITIAL, BACKOFF_MAX, AcmeRenewer
from vaultpki.errors import VaultpkiError
from vaultpki.store.certs_dir import CertsDir

HOSTS = ("console.example.com",)
ACME = AcmeConfig(directory="https://acme.example.com/directory")
POLICY = RenewPolicy(before_fraction=1 / 3, jitter_fraction=0.0)
ISSUED = AcmeUi(files=(), origin=UiOrigin(directory=ACME.directory, account_url="a", order_url="o", serial="01",
                                          not_after=NOW, challenge="http-01", root="CN=r"))


class Orders:
    """Stands in for one ACME CA: answers each order with the next of ``results`` (an error is raised)."""

    def __init__(self, *results: AcmeUi | VaultpkiError) -> None:
        self.results, self.calls = list(results), []

    def __call__(self, acme: AcmeConfig, hosts: Any, certs_dir: Path, key_type: KeyType, bits: int,
                 now: dt.datetime) -> AcmeUi:
        self.calls.append(now)
        result = self.results.pop(0)
        if isinstance(result, VaultpkiError):
            raise result
        return result


def ui_dir(pki: Pki, not_before: dt.datetime, not_after: dt.datetime, dns: tuple[str, ...] = HOSTS) -> Any:
    root = pki.ca("ACME Root")
    leaf = pki.leaf(None, root, dns=dns, not_before=not_before, not_after=not_after)
    return make_dir_state({"ui.crt": leaf.cert_pem, "ui.key": leaf.key_pem, "ca-ui.crt": root.cert_pem})


def renewer(orders: Orders, certs_dir: Path | None = None) -> AcmeRenewer:
    """A renewer over a certs-dir whose state dir holds its records (a fresh one by default)."""
    home = certs_dir or Path(tempfile.mkdtemp(prefix="vaultpki-acme-certs-"))
    if certs_dir is None:
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    store = CertsDir(home)
    store.ensure_state_dir()
    return AcmeRenewer(ACME, HOSTS, store, KeyType.EC, 256, POLICY, logging.getLogger("t"), obtain=orders)


def test_due_by_the_window_on_the_issued_lifetime(pki: Pki) -> None:
    orders = Orders(ISSUED)
    r = renewer(orders)
    state = ui_dir(pki, NOW - 60 * DAY, NOW + 30 * DAY)             # 90 days, a third left at NOW + 0
    fresh = r.decision(ui_dir(pki, NOW - DAY, NOW + 89 * DAY), NOW)
    assert not fresh.due and fresh.at == NOW + 59 * DAY
    assert r.run(ui_dir(pki, NOW - DAY, NOW + 89 * DAY), NOW).issued is None and orders.calls == []
    outcome = r.run(state, NOW + dt.timedelta(seconds=1))
    assert outcome.decision.due and outcome.decision.reason == "inside its renewal window"
    assert outcome.issued is ISSUED and len(orders.calls) == 1


@pytest.mark.parametrize(("state_files", "reason"), [
    ({}, "ca-ui.crt, ui.crt, ui.key missing"),
    ({"ui.crt": b"not a certificate", "ui.key": b"k", "ca-ui.crt": b"c"}, "not a readable certificate"),
])
def test_due_when_missing_or_unreadable(state_files: dict[str, bytes], reason: str) -> None:
    decision = renewer(Orders()).decision(make_dir_state(state_files), NOW)
    assert decision.due and decision.reason == reason


def test_due_when_ui_hosts_changed(pki: Pki) -> None:
    decision = renewer(Orders()).decision(ui_dir(pki, NOW - DAY, NOW + 89 * DAY, dns=("old.example.com",)), NOW)
    assert decision.due and decision.reason == "its SANs lack console.example.com of ui.hosts"


def test_a_failure_is_one_line_and_backs_off_doubling_to_a_cap(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    down = AcmeUnavailable("ACME new order: the CA at https://acme.example.com/directory is unreachable (ConnectionError)")
    orders = Orders(*[down] * 12, ISSUED)
    r = renewer(orders)
    state = make_dir_state({})
    caplog.set_level(logging.INFO)
    outcome = r.run(state, NOW)
    assert outcome.issued is None and outcome.failure == f"ui.crt: {down}"
    assert not outcome.decision.due and outcome.decision.at == NOW + BACKOFF_INITIAL
    assert [rec.getMessage() for rec in caplog.records] == ["ACME order failed"]
    assert caplog.records[0].error == str(down)                          # type: ignore[attr-defined]
    # no order before the back-off ends: the decision says why, and when
    waiting = r.run(state, NOW + BACKOFF_INITIAL - dt.timedelta(seconds=1))
    assert not waiting.decision.due and "backing off after a failed ACME order until" in waiting.decision.reason
    assert len(orders.calls) == 1
    when, waits = NOW, []
    for _ in range(10):
        when = r.not_before or when
        r.run(state, when)
        waits.append(r.not_before - when if r.not_before else None)
    assert waits[:3] == [2 * BACKOFF_INITIAL, 4 * BACKOFF_INITIAL, 8 * BACKOFF_INITIAL]
    assert waits[-1] == BACKOFF_MAX
    r.run(state, r.not_before or when)
    r.run(state, r.not_before or when)
    assert r.not_before is None and r.failures == 0                     # a success clears the back-off


def test_a_rate_limit_is_never_ordered_before_its_retry_after(pki: Pki) -> None:
    later = NOW + dt.timedelta(hours=3)                                  # beyond our own back-off
    limited = AcmeRateLimited("ACME new order: rate limited by the CA (rateLimited: too many); retry after …", later)
    orders = Orders(limited, ISSUED)
    r = renewer(orders)
    state = make_dir_state({})
    r.run(state, NOW)
    assert r.not_before == later
    for minutes in (1, 30, 179):
        assert not r.run(state, NOW + dt.timedelta(minutes=minutes)).decision.due
    assert len(orders.calls) == 1
    assert r.run(state, later).issued is ISSUED and len(orders.calls) == 2


def test_the_back_off_outlives_the_process(tmp_path: Path) -> None:
    """A restarted daemon, or a timer's next `sync --once`, used to order again at once after a failure."""
    later = NOW + dt.timedelta(hours=3)
    limited = AcmeRateLimited("ACME new order: rate limited by the CA (rateLimited: too many); retry after …", later)
    first = renewer(Orders(limited), tmp_path)
    first.run(make_dir_state({}), NOW)
    again = Orders(ISSUED)
    restarted = renewer(again, tmp_path)
    assert not restarted.run(make_dir_state({}), NOW + dt.timedelta(minutes=5)).decision.due and not again.calls
    assert restarted.run(make_dir_state({}), later).issued is ISSUED
    assert not (tmp_path / ".vaultpki" / "acme-order-backoff.json").exists()   # a success clears it
