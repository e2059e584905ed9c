"""A file the configured layout does not have (issue 19 §5, "layout switch"): which names a layout decides on,
what ``verify`` says of such a file, how the store leaves it out of the next set (the previous one keeps it),
and the daemon's pass taking it out. The real CLI, OpenBao and Go's TLS stack: tests/integration/
test_layout_switch.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vaultpki.core.layout import (
    CA_CLIENT_FILE,
    LAYOUT_NAMES,
    FileContent,
    Mode,
    PkiNames,
    layout_files,
    plan_node,
    plan_user,
    stray_findings,
)
from vaultpki.core.snapshot import Expectation, judge
from vaultpki.daemon.metrics import Metrics
from vaultpki.daemon.sync_pass import Syncer
from vaultpki.errors import StoreError
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.opening import STATE_DIR

from .conftest import NOW, CaSet, Issued, Pki
from .test_daemon import METRICS_SKEW, ClockedPki, FakeClock, FakeReloader, Monotonic, Vault, make_config

PKI = PkiNames(mount="pki-crdb", client_mount="pki-client", node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
HOSTS = ("node1.internal", "127.0.0.1")


def pki_with_ui(ui_mount: str | None) -> PkiNames:
    return PkiNames(PKI.mount, PKI.client_mount, PKI.node_role, PKI.client_node_role, PKI.user_role, ui_mount,
                    "ui" if ui_mount else None)


# --- which names a layout decides on -------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("ui_mount", [None, "pki-crdb", "pki-web"], ids=["no-ui", "ui-from-node-ca", "ui-own-ca"])
def test_a_plan_has_exactly_the_layout_files_and_lists_the_rest_as_strays(mode: Mode, ui_mount: str | None) -> None:
    plan = plan_node(mode, pki_with_ui(ui_mount), HOSTS, ("console.internal",), users=("root",))
    have = layout_files(mode, ui_mount is not None, ui_mount not in (None, PKI.mount))
    assert set(plan.file_names) & LAYOUT_NAMES == have
    assert set(plan.stray_names) == LAYOUT_NAMES - have
    assert not any(n.startswith("client.root") for n in plan.stray_names)     # users are never the layout's


def test_what_each_switch_leaves_behind() -> None:
    assert plan_node(Mode.SPLIT_NODE, PKI, HOSTS, ()).stray_names == ("ca-client.crt", "ca-ui.crt", "ui.crt", "ui.key")
    assert plan_node(Mode.STANDARD, PKI, HOSTS, ()).stray_names == (
        "ca-client.crt", "ca-ui.crt", "client.node.crt", "client.node.key", "ui.crt", "ui.key")
    assert "ca-ui.crt" in plan_node(Mode.SPLIT_CA, pki_with_ui("pki-crdb"), HOSTS, ("c.internal",)).stray_names
    assert plan_user(Mode.SPLIT_CA, PKI, "marc").stray_names == ()          # a user's dir is the user's


# --- what verify says ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "mode", "managed", "expected"), [
    ("ca-client.crt", Mode.SPLIT_NODE, True, ("error", "ca-client.crt: is not part of split-node: CockroachDB verifies "
                                                    "every client certificate against it; vaultpki removes it at the next "
                                                    "issue-node/sync")),
    ("ca-client.crt", Mode.STANDARD, False, ("error", "vaultpki did not write it, so it leaves it there: remove it")),
    ("client.node.crt", Mode.STANDARD, True, ("error", "instead of node.crt when it dials other nodes; vaultpki removes")),
    ("client.node.crt", Mode.STANDARD, False, ("warning", "vaultpki did not write it and does not renew it")),
    ("ui.crt", Mode.SPLIT_NODE, True, ("error", "ui.crt: is not part of this configuration: CockroachDB serves it on")),
    ("ui.crt", Mode.SPLIT_NODE, False, None),          # an operator's own DB Console certificate
    ("ca-ui.crt", Mode.SPLIT_NODE, False, None),
    ("ca-client.crt", Mode.SPLIT_CA, True, None),      # part of the layout
    ("client.marc.crt", Mode.SPLIT_NODE, True, None),  # a user's: never the layout's
])
def test_stray_findings(name: str, mode: Mode, managed: bool, expected: tuple[str, str] | None) -> None:
    found = [f"{severity}|{file}: {message}" for file, message, severity in stray_findings({name: managed}, mode, False, False)]
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(f"{expected[0]}|") and expected[1] in found[0], found


def test_ca_ui_is_not_judged_when_whether_it_belongs_is_unknown() -> None:
    assert stray_findings({"ca-ui.crt": True}, Mode.STANDARD, True, None) == []
    assert [f[0] for f in stray_findings({"ca-ui.crt": True}, Mode.STANDARD, True, False)] == ["ca-ui.crt"]
    assert stray_findings({"ca-ui.crt": True}, Mode.STANDARD, True, True) == []


# --- the store --------------------------------------------------------------------------------------

@pytest.fixture
def split_ca_set(pki: Pki, cas: CaSet) -> list[FileContent]:
    node = pki.leaf("node1.internal", cas.root, dns=["node1.internal"])
    client_node = pki.leaf("node", cas.client_root)

    def pair(stem: str, issued: Issued) -> list[FileContent]:
        return [FileContent(f"{stem}.crt", issued.cert_pem, False), FileContent(f"{stem}.key", issued.key_pem, True)]

    return [FileContent("ca.crt", cas.root.cert_pem, False), FileContent(CA_CLIENT_FILE, cas.client_root.cert_pem, False),
            *pair("node", node), *pair("client.node", client_node)]


def test_a_dropped_file_leaves_the_set_and_the_previous_set_keeps_it(tmp_path: Path, split_ca_set: list[FileContent]) -> None:
    store = CertsDir(tmp_path / "certs")
    store.write_set(split_ca_set)
    assert store.snapshot().entries[CA_CLIENT_FILE].managed
    node = [f for f in split_ca_set if f.name.startswith("node.")]
    store.write_set(node, drop=plan_node(Mode.SPLIT_NODE, PKI, HOSTS, ()).stray_names)
    assert not os.path.lexists(tmp_path / "certs" / CA_CLIENT_FILE)
    assert (tmp_path / "certs" / STATE_DIR / "previous" / CA_CLIENT_FILE).read_bytes() == split_ca_set[1].data
    assert (tmp_path / "certs" / "client.node.crt").exists()          # kept: not dropped, not rewritten
    store.rollback()
    assert (tmp_path / "certs" / CA_CLIENT_FILE).read_bytes() == split_ca_set[1].data


def test_a_file_vaultpki_did_not_write_is_left_where_it_is(tmp_path: Path, split_ca_set: list[FileContent]) -> None:
    store = CertsDir(tmp_path / "certs")
    store.write_set([f for f in split_ca_set if f.name != CA_CLIENT_FILE])
    (tmp_path / "certs" / CA_CLIENT_FILE).write_bytes(split_ca_set[1].data)        # the operator's copy
    assert not store.snapshot().entries[CA_CLIENT_FILE].managed
    store.write_set(split_ca_set[2:4], drop=(CA_CLIENT_FILE,))
    assert not (tmp_path / "certs" / CA_CLIENT_FILE).is_symlink()
    assert (tmp_path / "certs" / CA_CLIENT_FILE).read_bytes() == split_ca_set[1].data
    problems = judge(store.snapshot(), NOW, Expectation(Mode.SPLIT_NODE, HOSTS))
    assert any(p.file == CA_CLIENT_FILE and "remove it" in p.message for p in problems)


def test_the_pk8_copy_of_a_dropped_key_goes_with_it(tmp_path: Path, split_ca_set: list[FileContent]) -> None:
    store = CertsDir(tmp_path / "certs")
    store.write_set([*split_ca_set, FileContent("client.node.key.pk8", b"copy", True)])
    store.write_set([], drop=("client.node.crt", "client.node.key"))
    names = set(os.listdir(tmp_path / "certs"))
    assert not names & {"client.node.crt", "client.node.key", "client.node.key.pk8"}
    assert {"ca.crt", CA_CLIENT_FILE, "node.crt", "node.key"} <= names


def test_a_name_both_written_and_dropped_is_refused(tmp_path: Path, split_ca_set: list[FileContent]) -> None:
    with pytest.raises(StoreError, match="invalid file set"):
        CertsDir(tmp_path / "certs").write_set(split_ca_set, drop=(CA_CLIENT_FILE,))
    with pytest.raises(StoreError, match="invalid file set"):
        CertsDir(tmp_path / "certs").write_set(split_ca_set[:1], drop=("../x",))
    assert not (tmp_path / "certs").exists()


# --- the daemon -------------------------------------------------------------------------------------

def test_a_pass_takes_out_a_file_of_an_earlier_layout_and_tells_the_reload(tmp_path: Path, cas: CaSet) -> None:
    """Standard mode; the dir still holds the client.node pair of an earlier split-node set of vaultpki's:
    CockroachDB would dial its peers with it instead of node.crt, and nothing renews it."""
    clock, path = FakeClock(), tmp_path / "certs"
    store, reloader = CertsDir(path), FakeReloader()
    syncer = Syncer(cfg=make_config(renew={"ocsp_check": False}), vault=Vault(ClockedPki(clock), cas), store=store,
                    reloader=reloader, prober=None, metrics=Metrics(now=lambda: clock().timestamp() + METRICS_SKEW),
                    now=clock, log=logging.getLogger("test.strays"), sleep=Monotonic().sleep)
    assert syncer.run_pass().ok
    leftover = [FileContent("client.node.crt", (path / "node.crt").read_bytes(), False),
                FileContent("client.node.key", (path / "node.key").read_bytes(), True)]
    store.write_set(leftover)
    calls = reloader.calls
    report = syncer.run_pass()
    assert report.ok and report.renewed == () and report.removed == ("client.node.crt", "client.node.key")
    stray = next(d for d in report.decisions if d.file == "client.node.crt")
    assert stray.due and "not part of standard" in stray.reason and "previous set keeps it" in stray.reason
    assert not os.path.lexists(path / "client.node.crt") and not os.path.lexists(path / "client.node.key")
    assert (path / STATE_DIR / "previous" / "client.node.crt").exists()
    assert reloader.calls == calls + 1
    again = syncer.run_pass()
    assert again.ok and again.removed == () and not any(d.due for d in again.decisions)
    (path / "client.node.crt").write_bytes(leftover[0].data)       # not vaultpki's: nobody removes it
    assert syncer.run_pass().removed == () and (path / "client.node.crt").exists()
