"""``ca-ui.crt``: the DB Console's own CA, for CockroachDB's own HTTPS client (issue 19 §4).

With ``pki.ui_mount``, ``ui.crt`` comes from a CA of its own. CockroachDB's HTTPS client for the console
trusts ``ca-ui.crt`` when the certs-dir has one, else ``ca.crt`` (``GetUIClientTLSConfig`` and
``getUICACertLocked`` in pkg/security/certificate_manager.go), so without ``ca-ui.crt`` it refuses the
console vaultpki set up. ``issue-node`` writes it in the same set as ``ui.crt`` (the UI mount's CA at the
configured ``ca_trust``), ``sync`` writes it into a set that lacks it, ``status`` shows it and what
``ui.crt`` chains to, and ``verify`` refuses a ``ui.crt`` that does not chain to it. The Go consumer
set up as CockroachDB (``tests/support/gotls.py``) judges each dir as CockroachDB's client would.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support import gotls
from .conftest import UI_HOSTS, Deployment, run_cli

pytestmark = pytest.mark.integration


def _issue_node(dep: Deployment, base: Path, trust: str) -> tuple[Path, Path]:
    certs_dir = base / "certs"
    base.mkdir(exist_ok=True)
    config = dep.write_config(base / "vaultpki.toml", certs_dir, ca_trust=trust)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return certs_dir, config


def _ui_anchor(dep: Deployment, trust: str) -> bytes:
    """What a CA file of the UI mount holds at ``trust``: its issuing CA, or the self-signed root above it."""
    issuer = dep.admin.read(f"{dep.pki.ui_mount}/issuer/default")["data"]
    pem = issuer["certificate"] if trust == "issuer" else issuer["ca_chain"][-1]
    return crypto.certs_to_pem(crypto.load_certs(pem.encode()))


def _cockroach_console_client(certs_dir: Path) -> gotls.Result:
    """CockroachDB's own HTTPS client (trusting ca-ui.crt, else ca.crt) against the console this dir serves."""
    return gotls.check_one(gotls.Case(name=f"console {certs_dir}", kind="ui", server_dir=str(certs_dir),
                                      client_dir=str(certs_dir), server_name=UI_HOSTS[0]))


@pytest.mark.parametrize(("mode", "intermediate", "trust"), [
    (Mode.STANDARD, True, "issuer"), (Mode.SPLIT_CA, True, "root"), (Mode.SPLIT_NODE, False, "issuer"),
], ids=["standard-intermediate-issuer", "split-ca-intermediate-root", "split-node-self-rooted-issuer"])
def test_issue_node_writes_ca_ui_crt_in_the_set(deploy: Callable[..., Deployment], tmp_path: Path, mode: Mode,
                                                intermediate: bool, trust: str) -> None:
    dep = deploy(mode, intermediate)
    certs_dir, config = _issue_node(dep, tmp_path, trust)
    ca_ui = certs_dir / "ca-ui.crt"
    assert ca_ui.read_bytes() == _ui_anchor(dep, trust)
    # One set: ca-ui.crt is a link into the same generation as ui.crt and the rest.
    assert os.readlink(ca_ui) == ".vaultpki/current/ca-ui.crt"
    assert (certs_dir / ".vaultpki" / "current" / "ui.crt").exists()
    # Behind a root shared with the node CA, ca_trust = "root" makes the two files the same root.
    assert (ca_ui.read_bytes() == (certs_dir / "ca.crt").read_bytes()) is (intermediate and trust == "root")
    verify = run_cli(["--config", str(config), "verify"])
    assert verify.returncode == 0 and "ca-ui.crt" not in verify.stdout + verify.stderr, verify
    status = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)
    rows = {row["file"]: row for row in status["files"]}
    assert rows["ca-ui.crt"]["kind"] == "ca-ui" and rows["ca-ui.crt"]["problems"] == []
    if not (intermediate and trust == "root"):       # a shared root: any CA file holding it is named
        assert rows["ui.crt"]["chains_to"].endswith("(ca-ui.crt #1 of 1)")
    console = _cockroach_console_client(certs_dir)
    assert console.ok and console.peer_identity == UI_HOSTS[0], console


def test_dry_run_names_ca_ui_crt(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    result = run_cli(["--config", str(config), "issue-node", "--dry-run", "--json"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"file": "ca-ui.crt", "mount": dep.pki.ui_mount, "trust": "issuer"} in doc["ca_files"]
    assert "ca-ui.crt" in doc["files"]
    assert not (tmp_path / "certs").exists()


def test_sync_writes_ca_ui_crt_into_a_set_without_it(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A set without ca-ui.crt (as vaultpki wrote them before): verify names it, CockroachDB's console client
    refuses the console, and one sync pass writes it, after which both accept the set."""
    dep = deploy(Mode.SPLIT_NODE)
    certs_dir, config = _issue_node(dep, tmp_path, "issuer")
    (certs_dir / "ca-ui.crt").unlink()
    before = _cockroach_console_client(certs_dir)
    assert not before.ok and "x509: certificate signed by unknown authority" in before.error, before
    verify = run_cli(["--config", str(config), "verify"])
    assert verify.returncode == 1 and "ca-ui.crt: is missing: ui.crt does not chain to ca.crt" in verify.stderr, verify
    ui_serial = crypto.load_certs((certs_dir / "ui.crt").read_bytes())[0].serial_number
    synced = run_cli(["--config", str(config), "sync", "--once"], {"VAULT_TOKEN": dep.server.root_token})
    assert synced.returncode == 0, synced.stderr
    assert (certs_dir / "ca-ui.crt").read_bytes() == _ui_anchor(dep, "issuer")
    # The console's own certificate was fine: only its CA file was due.
    assert crypto.load_certs((certs_dir / "ui.crt").read_bytes())[0].serial_number == ui_serial
    assert run_cli(["--config", str(config), "verify"]).returncode == 0
    after = _cockroach_console_client(certs_dir)
    assert after.ok and after.peer_identity == UI_HOSTS[0], after


def test_verify_refuses_a_ui_crt_not_chaining_to_ca_ui(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """ca-ui.crt holding another CA than the one that signed ui.crt: CockroachDB's console client refuses the
    console, and verify says why."""
    dep = deploy(Mode.STANDARD)
    certs_dir, _ = _issue_node(dep, tmp_path / "issued", "issuer")
    copy = tmp_path / "copy"
    shutil.copytree(certs_dir, copy, ignore=shutil.ignore_patterns(".vaultpki"))      # links followed: plain files
    (copy / "ca-ui.crt").write_bytes((copy / "ca.crt").read_bytes())                    # the node CA, not the UI CA
    go = _cockroach_console_client(copy)
    assert not go.ok and "x509: certificate signed by unknown authority" in go.error, go
    verify = run_cli(["verify", "--certs-dir", str(copy)])
    assert verify.returncode == 1, verify
    assert any(line.startswith("ui.crt: ") and "chain" in line for line in verify.stderr.splitlines()), verify.stderr
