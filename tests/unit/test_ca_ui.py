"""``ca-ui.crt`` in the pure core: when a plan writes it, and what ``verify`` says of a dir without it.

CockroachDB's own HTTPS client for the DB Console trusts ``ca-ui.crt``, else ``ca.crt``
(``GetUIClientTLSConfig``/``getUICACertLocked`` in pkg/security/certificate_manager.go)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from vaultpki.core.layout import CA_FILE, CA_UI_FILE, Mode, TrustSpec, plan_node
from vaultpki.core.snapshot import DirState, Expectation, judge

from .conftest import SERVER, CaSet, Pki
from .test_layout import HOSTS, names

UI_HOSTS = ["console.example.com"]


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_a_ui_mount_of_its_own_writes_its_ca_into_ca_ui_crt(mode: Mode) -> None:
    plan = plan_node(mode, names(client_mount="pki-client", ui_mount="pki-ui"), HOSTS, UI_HOSTS)
    ui = next(c for c in plan.certs if c.stem == "ui")
    assert ui.trust == TrustSpec("pki-ui", CA_UI_FILE)
    assert [t for t in plan.ca_files if t.file == CA_UI_FILE] == [TrustSpec("pki-ui", CA_UI_FILE)]
    assert plan.file_names.count(CA_UI_FILE) == 1


def test_a_ui_certificate_from_the_node_mount_needs_no_ca_ui_crt() -> None:
    plan = plan_node(Mode.STANDARD, names(ui_mount="pki-crdb"), HOSTS, UI_HOSTS)
    ui = next(c for c in plan.certs if c.stem == "ui")
    assert ui.trust == TrustSpec("pki-crdb", CA_FILE)
    assert plan.trusts == (TrustSpec("pki-crdb", CA_FILE),) and CA_UI_FILE not in plan.file_names


def _dir(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState], ui_ca: str, with_ca_ui: bool) -> DirState:
    node = pki.leaf("node", cas.root, dns=["db1.example.com", "node"])
    ui = pki.leaf("console.example.com", getattr(cas, ui_ca), dns=UI_HOSTS, ekus=[SERVER])
    files = {"ca.crt": cas.root.cert_pem, "node.crt": node.cert_pem, "node.key": node.key_pem,
             "ui.crt": ui.cert_pem, "ui.key": ui.key_pem}
    if with_ca_ui:
        files[CA_UI_FILE] = getattr(cas, ui_ca).cert_pem
    state: DirState = dir_state(files)
    return state


def test_verify_names_a_missing_ca_ui_crt(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState],
                                           now: dt.datetime) -> None:
    """ui.crt from another CA and no ca-ui.crt: a warning without the configuration, an error with one that
    configures the UI (vaultpki writes ca-ui.crt then); nothing once ca-ui.crt is there, or when ca.crt
    itself signed ui.crt."""
    missing = _dir(pki, cas, dir_state, "other", with_ca_ui=False)
    found = [(p.file, p.severity) for p in judge(missing, now) if p.file == CA_UI_FILE]
    assert found == [(CA_UI_FILE, "warning")]
    expect = Expectation(Mode.STANDARD, ("db1.example.com",), ui=True)
    found = [(p.file, p.severity, p.message) for p in judge(missing, now, expect) if p.file == CA_UI_FILE]
    assert len(found) == 1 and found[0][1] == "error" and "GetUIClientTLSConfig" in found[0][2]
    assert judge(_dir(pki, cas, dir_state, "other", with_ca_ui=True), now) == []
    assert judge(_dir(pki, cas, dir_state, "root", with_ca_ui=False), now) == []
