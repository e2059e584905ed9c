"""All three layouts, ui, intermediate and root-only mounts, sign and issue: end to end on real OpenBao."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.layout import Eku, Mode
from vaultpki.core.validate import verify_chain

from .conftest import NODE_HOSTS, UI_HOSTS, Deployment, run_cli

NOW = lambda: dt.datetime.now(dt.UTC)  # noqa: E731


def certs(path: Path) -> list[x509.Certificate]:
    return crypto.load_certs(path.read_bytes())


def issue_node(dep: Deployment, tmp_path: Path, **top: object) -> tuple[Path, Path]:
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir, **top)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return certs_dir, config


def assert_key_pair(certs_dir: Path, stem: str) -> None:
    cert = certs(certs_dir / f"{stem}.crt")[0]
    key = crypto.load_key((certs_dir / f"{stem}.key").read_bytes())
    assert crypto.key_matches(cert, key)
    assert stat.S_IMODE((certs_dir / f"{stem}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((certs_dir / f"{stem}.crt").stat().st_mode) == 0o644


def assert_verifies(config: Path) -> None:
    result = run_cli(["--config", str(config), "verify", "--json"])
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_issue_node_every_mode(deploy: Callable[..., Deployment], tmp_path: Path, mode: Mode) -> None:
    dep = deploy(mode)
    certs_dir, config = issue_node(dep, tmp_path)
    node_ca = certs(certs_dir / "ca.crt")
    node = certs(certs_dir / "node.crt")
    info = crypto.describe(node[0])
    assert set(NODE_HOSTS) - {"127.0.0.1"} <= set(info.dns_sans)
    assert info.ip_sans == ("127.0.0.1",)
    # ca_trust = "issuer" (default): ca.crt is the mount's intermediate, the leaf file carries it too.
    assert len(node_ca) == 1 and not crypto.is_self_signed(node_ca[0])
    assert len(node) == 2 and node[1] == node_ca[0]
    assert_key_pair(certs_dir, "node")
    if mode is Mode.STANDARD:
        assert info.common_name == "node"
        assert info.ekus == {Eku.SERVER_AUTH, Eku.CLIENT_AUTH}
        assert not (certs_dir / "client.node.crt").exists()
    else:
        assert info.common_name == NODE_HOSTS[0]
        assert info.ekus == {Eku.SERVER_AUTH}
        client_node = certs(certs_dir / "client.node.crt")
        cn_info = crypto.describe(client_node[0])
        assert cn_info.common_name == "node" and cn_info.ekus == {Eku.CLIENT_AUTH}
        assert cn_info.dns_sans in ((), ("node",)) and cn_info.ip_sans == ()
        assert_key_pair(certs_dir, "client.node")
    if mode is Mode.SPLIT_CA:
        client_ca = certs(certs_dir / "ca-client.crt")
        assert client_ca != node_ca
        client_node = certs(certs_dir / "client.node.crt")
        assert verify_chain(client_node, client_ca, NOW(), {Eku.CLIENT_AUTH}) is None
        # The split: the node CA does not vouch for client.node, the client CA not for node.crt.
        assert verify_chain(client_node, node_ca, NOW(), {Eku.CLIENT_AUTH}) is not None
        assert verify_chain(node, client_ca, NOW(), {Eku.SERVER_AUTH}) is not None
    else:
        assert not (certs_dir / "ca-client.crt").exists()
    ui = certs(certs_dir / "ui.crt")
    ui_info = crypto.describe(ui[0])
    assert set(ui_info.dns_sans) == set(UI_HOSTS) and Eku.SERVER_AUTH in (ui_info.ekus or ())
    assert_key_pair(certs_dir, "ui")
    assert_verifies(config)


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_issue_node_with_users_writes_one_set(deploy: Callable[..., Deployment], tmp_path: Path, mode: Mode) -> None:
    """node.users and --user put client.<user> certs into the node's own set (root for `cockroach init`),
    from the client CA in split-ca, so that the node's ca-client.crt vouches for them."""
    dep = deploy(mode)
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir, node={"hosts": list(NODE_HOSTS), "users": ["marc"]})
    result = run_cli(["--config", str(config), "issue-node", "--user", "root", "--json"],
                     {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert {"client.marc.crt", "client.marc.key", "client.root.crt", "client.root.key", "node.crt"} <= set(files)
    client_ca = certs(certs_dir / ("ca-client.crt" if mode is Mode.SPLIT_CA else "ca.crt"))
    for user in ("marc", "root"):
        leaf = certs(certs_dir / f"client.{user}.crt")
        assert crypto.describe(leaf[0]).common_name == user
        assert verify_chain(leaf, client_ca, NOW(), {Eku.CLIENT_AUTH}) is None
        assert_key_pair(certs_dir, f"client.{user}")
    # One set: a single generation holds every file.
    assert len([g for g in (certs_dir / ".vaultpki").iterdir() if g.name.startswith("gen-")]) == 1
    assert_verifies(config)


def test_issue_node_refuses_a_bad_user_before_any_request(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    for bad in ("node", "../x", "Marc"):
        result = run_cli(["--config", str(config), "issue-node", "--user", bad], {"VAULT_TOKEN": dep.server.root_token})
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_issue_user_every_mode(deploy: Callable[..., Deployment], tmp_path: Path, mode: Mode) -> None:
    dep = deploy(mode)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node-certs")
    user_dir = tmp_path / "marc-certs"
    result = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(user_dir), "--json"],
                     {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == ["ca.crt", "client.marc.crt", "client.marc.key"]
    leaf = certs(user_dir / "client.marc.crt")
    info = crypto.describe(leaf[0])
    assert info.common_name == "marc" and info.ekus == {Eku.CLIENT_AUTH}
    assert set(info.dns_sans) <= {"marc"} and info.ip_sans == ()
    assert_key_pair(user_dir, "client.marc")
    ca = certs(user_dir / "ca.crt")
    if mode is Mode.SPLIT_CA:
        # A client's ca.crt verifies the nodes (node CA); its own cert comes from the client CA.
        assert verify_chain(leaf, ca, NOW(), {Eku.CLIENT_AUTH}) is not None
        assert summary["issued"][0]["file"] == "client.marc.crt"
    else:
        assert verify_chain(leaf, ca, NOW(), {Eku.CLIENT_AUTH}) is None
    verify = run_cli(["verify", "--certs-dir", str(user_dir)])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # A split-ca client dir cannot show its own CA: said as a warning, not an error.
    assert ("warning: client.marc.crt" in verify.stdout + verify.stderr) is (mode is Mode.SPLIT_CA)


def test_default_user_dir_is_cockroach_client_default(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node-certs")
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli(["--config", str(config), "issue-user", "alice"],
                     {"VAULT_TOKEN": dep.server.root_token, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (home / ".cockroach-certs" / "client.alice.crt").exists()
    assert (home / ".cockroach-certs" / "ca.crt").exists()


def test_root_only_mount_and_ca_trust_root(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A mount that is itself the root CA: ca.crt is the root, the leaf file holds only the leaf."""
    dep = deploy(Mode.STANDARD, intermediate=False, ui=False)
    certs_dir, config = issue_node(dep, tmp_path)
    ca = certs(certs_dir / "ca.crt")
    assert len(ca) == 1 and crypto.is_self_signed(ca[0])
    assert len(certs(certs_dir / "node.crt")) == 1
    assert not (certs_dir / "ui.crt").exists()
    assert_verifies(config)


def test_ca_trust_root_writes_the_self_signed_root(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.SPLIT_CA)
    certs_dir, config = issue_node(dep, tmp_path, ca_trust="root")
    for name in ("ca.crt", "ca-client.crt"):
        ca = certs(certs_dir / name)
        assert len(ca) == 1 and crypto.is_self_signed(ca[0]), name
    node = certs(certs_dir / "node.crt")
    assert len(node) == 2 and not crypto.is_self_signed(node[1])     # leaf + intermediate, no root
    assert_verifies(config)


@pytest.mark.parametrize(("key_type", "key_bits", "method"), [
    pytest.param("rsa", 2048, "sign", id="rsa2048-sign"),
    pytest.param("ec", 384, "sign", id="p384-sign"),
    pytest.param("ec", 256, "issue", id="p256-issue"),
])
def test_key_types_and_issue_method(deploy: Callable[..., Deployment], tmp_path: Path,
                                     key_type: str, key_bits: int, method: str) -> None:
    dep = deploy(Mode.SPLIT_NODE)
    certs_dir, config = issue_node(dep, tmp_path, key_type=key_type, key_bits=key_bits, issue_method=method)
    key = crypto.load_key((certs_dir / "node.key").read_bytes())
    assert key.key_size == key_bits  # type: ignore[union-attr]
    assert (key_type == "rsa") is (type(key).__name__.startswith("_RSA") or "RSA" in type(key).__name__)
    assert_key_pair(certs_dir, "client.node")
    assert_verifies(config)


def test_reissue_replaces_the_set_and_keeps_previous(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    certs_dir, config = issue_node(dep, tmp_path)
    first = certs(certs_dir / "node.crt")[0].serial_number
    user = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(certs_dir)],
                   {"VAULT_TOKEN": dep.server.root_token})
    assert user.returncode == 0, user.stderr
    again = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert again.returncode == 0, again.stderr
    assert certs(certs_dir / "node.crt")[0].serial_number != first
    assert (certs_dir / "client.marc.crt").exists()           # carried over into the new set
    assert_key_pair(certs_dir, "node")
    back = run_cli(["--config", str(config), "rollback"])
    assert back.returncode == 0, back.stderr
    assert certs(certs_dir / "node.crt")[0].serial_number == first
    assert_key_pair(certs_dir, "node")


def test_adopts_existing_plain_files_without_losing_foreign_ones(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A certs-dir made by hand (plain files) is taken over; files we do not manage stay untouched."""
    dep = deploy(Mode.STANDARD)
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    (certs_dir / "node.crt").write_text("old cert\n")
    (certs_dir / "node.key").write_text("old key\n")
    (certs_dir / "client.bob.crt").write_text("operator's own file\n")
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    assert_key_pair(certs_dir, "node")
    assert (certs_dir / "client.bob.crt").read_text() == "operator's own file\n"
    assert not (certs_dir / "client.bob.crt").is_symlink()


def test_status_json_lists_every_file(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.SPLIT_CA)
    certs_dir, config = issue_node(dep, tmp_path)
    result = run_cli(["--config", str(config), "status", "--json"])
    assert result.returncode == 0, result.stderr
    rows = {row["file"]: row for row in json.loads(result.stdout)["files"]}
    assert set(rows) == {"ca.crt", "ca-client.crt", "ca-ui.crt", "node.crt", "client.node.crt", "ui.crt"}
    node = rows["node.crt"]["certificates"][0]
    assert node["serial"] == crypto.describe(certs(certs_dir / "node.crt")[0]).serial
    assert 3000 < node["seconds_left"] <= 3600                         # ttl = "1h"
    assert all(row["problems"] == [] for row in rows.values())
    human = run_cli(["--config", str(config), "status"])
    assert human.returncode == 0 and "client.node.crt" in human.stdout and "left" in human.stdout
