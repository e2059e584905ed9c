"""Fleet features on real OpenBao: bulk issue-user --from-file, and --dry-run that mints nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from vaultpki.core import crypto
from vaultpki.core.layout import Mode
from vaultpki.dev.provision import role_body

from .conftest import Deployment, run_cli, toml_dump, tree
from .test_cli_errors import one_error_line


def test_from_file_issues_everyone_into_one_set(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.SPLIT_CA)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    users = [f"app_{i:03d}" for i in range(40)]
    listing = tmp_path / "users.txt"
    listing.write_text("# service accounts\n" + "\n".join(users) + "\n\napp_000   # a duplicate\n")
    before = dep.serials(dep.pki.client_mount)
    result = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(tmp_path / "clients"), "--json"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(i["user"] for i in summary["issued"]) == users and summary["failed"] == []
    assert len(dep.serials(dep.pki.client_mount) - before) == len(users)      # one certificate each, no more
    for user in users:
        cert = crypto.load_certs((tmp_path / "clients" / f"client.{user}.crt").read_bytes())[0]
        key = crypto.load_key((tmp_path / "clients" / f"client.{user}.key").read_bytes())
        assert crypto.describe(cert).common_name == user and crypto.key_matches(cert, key)
    generations = [p for p in (tmp_path / "clients" / ".vaultpki").iterdir() if p.name.startswith("gen-")]
    assert len(generations) == 1                                              # written as one set


def test_from_stdin_and_one_failure_does_not_stop_the_others(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    # A role that refuses one name (allowed_domains instead of any name): that user fails, the rest go through.
    body = role_body("user", [], openbao=True)
    body.update(allow_any_name=False, allowed_domains=["alice", "bob"])
    dep.admin.write_data(f"{dep.pki.mount}/roles/user-some", data=body)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    config.write_text(config.read_text().replace('user_role = "user"', 'user_role = "user-some"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_"))}
    env["VAULT_TOKEN"] = dep.server.root_token
    result = subprocess.run([sys.executable, "-m", "vaultpki", "--config", str(config), "issue-user", "--from-file", "-",
                             "--certs-dir", str(tmp_path / "clients")], input="alice\ncarol\nbob\n", env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "issued 2 of 3 user certificates" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("vaultpki: error: carol: ")
    assert sorted(p.name for p in (tmp_path / "clients").glob("client.*.crt")) == ["client.alice.crt", "client.bob.crt"]


def test_from_file_refuses_any_bad_name_before_any_request(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    listing = tmp_path / "users.txt"
    listing.write_text("alice\nbob\n../etc\n")
    before = dep.serials()
    result = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(tmp_path / "clients")], {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 2, "line 3", "user name")
    assert dep.serials() == before and not (tmp_path / "clients").exists()
    one_error_line(run_cli(["--config", str(config), "issue-user", "alice", "--from-file", str(listing)]),
                   2, "exactly one of USER or --from-file")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    one_error_line(run_cli(["--config", str(config), "issue-user", "--from-file", str(empty)]), 2, "names no user")


def test_dry_run_mints_nothing(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.SPLIT_NODE, ui=True)
    token = {"VAULT_TOKEN": dep.server.root_token}
    certs = tmp_path / "certs"
    doc = dep.config_doc(certs, ttl="1h", reload={"process": "no-such-daemon"})
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump(doc))
    before = {m: dep.serials(m) for m in (dep.pki.mount, dep.pki.ui_mount)}

    node = run_cli(["--config", str(config), "issue-node", "--dry-run", "--json"], token)
    assert node.returncode == 0, node.stderr
    plan = json.loads(node.stdout)
    assert plan["dry_run"] and {c["file"] for c in plan["certificates"]} == {"node.crt", "client.node.crt", "ui.crt"}
    assert {c["file"] for c in plan["ca_files"]} == {"ca.crt", "ca-ui.crt"} and plan["key_mode"] == "0600"
    user = run_cli(["--config", str(config), "issue-user", "marc", "--dry-run", "--certs-dir", str(tmp_path / "m")], token)
    assert user.returncode == 0 and "would issue client.marc.crt" in user.stdout and "CN=marc" in user.stdout
    sync = run_cli(["--config", str(config), "sync", "--dry-run"], token)
    assert sync.returncode == 0, sync.stderr
    assert "would renew node.crt: missing" in sync.stdout and "SIGHUP to every process named 'no-such-daemon'" in sync.stdout
    assert {m: dep.serials(m) for m in before} == before                       # nothing minted
    assert tree(certs) == {} and not (tmp_path / "m").exists()                # nothing written

    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    quiet = run_cli(["--config", str(config), "sync", "--dry-run"], token)
    assert quiet.returncode == 0 and quiet.stdout.startswith("nothing due; next renewal")


def test_a_failed_user_keeps_its_old_files_and_an_all_failed_run_writes_nothing(
        deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    env = {"VAULT_TOKEN": dep.server.root_token}
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    clients = tmp_path / "clients"
    listing = tmp_path / "users.txt"
    listing.write_text("alice\ncarol\n")
    first = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir", str(clients)], env)
    assert first.returncode == 0, first.stderr
    old = {n: (clients / n).read_bytes() for n in ("client.alice.crt", "client.carol.crt", "client.carol.key")}

    # Now a role that refuses carol: alice is renewed, carol's files stay as they were (never half-replaced).
    body = role_body("user", [], openbao=True)
    body.update(allow_any_name=False, allowed_domains=["alice", "bob"])
    dep.admin.write_data(f"{dep.pki.mount}/roles/user-some", data=body)
    config.write_text(config.read_text().replace('user_role = "user"', 'user_role = "user-some"'))
    second = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir", str(clients)], env)
    assert second.returncode == 1 and "issued 1 of 2 user certificates" in second.stdout
    assert (clients / "client.alice.crt").read_bytes() != old["client.alice.crt"]
    assert {n: (clients / n).read_bytes() for n in ("client.carol.crt", "client.carol.key")} == {
        n: old[n] for n in ("client.carol.crt", "client.carol.key")}
    assert run_cli(["verify", "--certs-dir", str(clients)]).returncode == 0

    # Everyone refused: exit 1, one error line each, and the certs-dir is never created.
    listing.write_text("carol\ndave\n")
    fresh = tmp_path / "fresh"
    third = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir", str(fresh)], env)
    assert third.returncode == 1 and "issued 0 of 2 user certificates" in third.stdout
    assert [line.split(":")[2].strip() for line in third.stderr.strip().splitlines()] == ["carol", "dave"]
    assert not fresh.exists()


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules a vaultpki command loads (python -X importtime), and the top-level package of each,
    checking that it succeeds."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "vaultpki", *args], env=base | env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return modules | {m.split(".")[0] for m in modules}


def test_one_http_path_for_a_single_node_and_for_a_bulk_run(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A cold issue-node and a bulk run both reach Vault through hvac and requests (vaultpki.vault.transport), and
    nothing else: no second HTTP stack (asyncio, httptools, h11) and no module of the old ones."""
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    env = {"VAULT_TOKEN": dep.server.root_token}
    listing = tmp_path / "users.txt"
    listing.write_text("amy\nbob\n")
    bulk = imported(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                     str(tmp_path / "clients")], env)
    cold = imported(["--config", str(config), "issue-node"], env)
    other_stacks = {"asyncio", "httptools", "h11", "httpx", "aiohttp", "vaultpki.wire", "vaultpki.stream",
                    "vaultpki.parallel"}
    for loaded in (bulk, cold):
        assert {"hvac", "requests", "vaultpki.vault.transport"} <= loaded
        assert not loaded & other_stacks, sorted(loaded & other_stacks)
