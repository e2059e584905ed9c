"""``vaultpki rollback`` (issue 19, section 5), with real certificates from OpenBao, a real PostgreSQL and a
real second user.

- With [reload], the database is told: PostgreSQL gets its SIGHUP and serves the restored certificate, as
  ``reload.verify`` confirms. Without [reload], or with ``--no-reload``, nothing is signalled and the command
  says the database still serves the set it loaded before.
- With ``renew.revoke_replaced = true`` the previous set's node.crt was revoked by the renewal that replaced it:
  the rollback is refused (its OCSP responder, asked as CockroachDB asks, says revoked), nothing changes, and
  ``--force`` restores it anyway. A responder that cannot be asked refuses it too, then (it cannot be ruled out).
- A user who may not open the certs-dir gets one line and exit 1, and nothing changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import _EMPTY_HOME, NODE_HOSTS, Deployment, run_cli, toml_dump, tree
from .test_cli_errors import one_error_line
from .test_local_attacks import SETPRIV

pytestmark = pytest.mark.integration

SIGHUP_LINE = "received SIGHUP, reloading configuration files"
FEWER_HOSTS = tuple(h for h in NODE_HOSTS if h != "127.0.0.1")     # node.hosts that make node.crt due
STILL_SERVES = "the database still serves the set it loaded before until it reloads (SIGHUP it)"


def serial(path: Path) -> int:
    return crypto.load_certs(path.read_bytes())[0].serial_number


def hex_serial(value: int) -> str:
    return crypto.format_serial(value)


def node_config(dep: Deployment, base: Path, reload: dict[str, Any] | None) -> Path:
    """The node's config: files for PostgreSQL (owner postgres, a CA file libpq-style clients trust)."""
    doc = dep.config_doc(base / "certs", ca_trust="root", owner="postgres", group="postgres", ttl="1h",
                         node={"hosts": list(NODE_HOSTS)}, **({"reload": reload} if reload else {}))
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


@dataclass
class Node:
    """A node's certs-dir with two sets (the previous one, then the current one), served by PostgreSQL."""

    dep: Deployment
    base: Path
    pg: PostgresServer
    token: dict[str, str]

    @property
    def certs(self) -> Path:
        return self.base / "certs"

    def config(self, reload: dict[str, Any] | None) -> Path:
        return node_config(self.dep, self.base, reload)

    def reload(self) -> dict[str, Any]:
        return {"pidfile": str(self.pg.data_dir / "postmaster.pid"), "verify": f"postgres://127.0.0.1:{self.pg.port}",
                "verify_timeout": "10s"}

    def sighups(self) -> int:
        return self.pg.log_text().count(SIGHUP_LINE)

    def previous_serial(self) -> int:
        return serial(self.certs / ".vaultpki" / "previous" / "node.crt")

    def served(self) -> int:
        return self.pg.served_certificate().serial_number

    def settle(self) -> int:
        """PostgreSQL reloaded until it serves the node.crt on disk (a SIGHUP is handled asynchronously)."""
        on_disk = serial(self.certs / "node.crt")
        if self.served() != on_disk:
            self.pg.reload()
        deadline = time.monotonic() + 10
        while self.served() != on_disk:
            assert time.monotonic() < deadline, f"PostgreSQL never served node.crt {hex_serial(on_disk)}"
            time.sleep(0.05)
        return on_disk


@pytest.fixture(scope="module")
def node(deploy: Callable[..., Deployment]) -> Iterator[Node]:
    """Two sets issued by the real CLI; PostgreSQL started on the first, then reloaded onto the second."""
    base = make_shared_tempdir("vaultpki-rollback-")
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    (base / "pg").mkdir(mode=0o755)
    certs = base / "certs"
    try:
        assert run_cli(["--config", str(node_config(dep, base, None)), "issue-node"], token).returncode == 0
        with PostgresServer(base / "pg", certs / "node.crt", certs / "node.key", certs / "ca.crt") as pg:
            first = pg.served_certificate().serial_number
            assert run_cli(["--config", str(node_config(dep, base, None)), "issue-node"], token).returncode == 0
            node = Node(dep, base, pg, token)
            assert node.settle() != first
            yield node
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_rollback_reloads_the_database_which_then_serves_the_restored_certificate(node: Node) -> None:
    config = node.config(node.reload())
    served, restored, before = node.settle(), node.previous_serial(), node.sighups()
    assert served != restored
    log_at = len(node.pg.log_text())
    result = run_cli(["--config", str(config), "rollback"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert serial(node.certs / "node.crt") == restored
    assert node.served() == restored                                  # the database was told, not just the files
    node.pg.wait_for_log(SIGHUP_LINE, timeout=10, start=log_at)
    assert node.sighups() == before + 1
    assert f"reloaded: SIGHUP to the pid in {node.pg.data_dir / 'postmaster.pid'}" in result.stdout, result.stdout
    assert f"postgres://127.0.0.1:{node.pg.port} serves the restored certificate" in result.stdout
    assert not result.stderr
    assert not (node.certs / ".vaultpki" / "pending-reload.json").exists()

    # And back again, as one JSON document saying the same.
    doc = json.loads(run_cli(["--config", str(config), "rollback", "--json"]).stdout)
    assert doc["ok"] and doc["reloaded"] and doc["verified"] is True and doc["reload_pending"] is None
    assert {"node.crt", "node.key"} <= set(doc["files"]) and doc["failures"] == []
    assert node.served() == served == serial(node.certs / "node.crt")


@pytest.mark.parametrize("how", ["no-reload-table", "--no-reload"])
def test_without_a_reload_it_says_the_database_still_serves_the_set_it_loaded(node: Node, how: str) -> None:
    config = node.config(None if how == "no-reload-table" else node.reload())
    served, restored, before = node.settle(), node.previous_serial(), node.sighups()
    result = run_cli(["--config", str(config), "rollback", *([how] if how.startswith("--") else [])])
    assert result.returncode == 0, result.stdout + result.stderr
    why = f"no [reload] in {config}" if how == "no-reload-table" else "not reloaded (--no-reload)"
    assert f"{why}: {STILL_SERVES}" in result.stdout, result.stdout
    assert serial(node.certs / "node.crt") == restored
    assert node.served() == served != restored and node.sighups() == before       # what it says is true


def test_a_database_not_running_yet_leaves_the_reload_owed(node: Node) -> None:
    """Nobody to signal is no failure (the database reads the restored files when it starts), but it is owed:
    recorded as a sync pass records it, so status shows it and vaultpki sync retries it."""
    config = node.config({"process": "vpki-not-running"})
    result = run_cli(["--config", str(config), "rollback"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reload pending (not running: no process named 'vpki-not-running'" in result.stdout, result.stdout
    pending = json.loads((node.certs / ".vaultpki" / "pending-reload.json").read_text())
    assert pending["remaining"] == ["SIGHUP to every process named 'vpki-not-running'"]
    assert {"node.crt", "node.key"} <= set(pending["files"]) and pending["failures"] == 0
    assert "still to run: SIGHUP to every process named 'vpki-not-running'" in run_cli(
        ["--config", str(config), "status"]).stdout


def test_a_client_certs_dir_is_not_said_to_need_a_reload(node: Node, tmp_path: Path) -> None:
    users = tmp_path / "users"
    for _ in range(2):
        assert run_cli(["--config", str(node.config(None)), "issue-user", "marc", "--certs-dir", str(users)],
                       node.token).returncode == 0
    result = run_cli(["--config", str(node.config(node.reload())), "rollback", "--certs-dir", str(users)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"rolled back {users} to gen-") and "reload" not in result.stdout


# --- a previous set that was revoked -------------------------------------------------------------------


@pytest.fixture(scope="module")
def revoked(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> tuple[Deployment, Path, int]:
    """A certs-dir whose previous node.crt was revoked by the renewal that replaced it (revoke_replaced)."""
    base = tmp_path_factory.mktemp("revoked")
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = base / "vaultpki.toml"
    config.write_text(toml_dump(dep.config_doc(base / "certs", renew={"revoke_replaced": True})))
    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    replaced = serial(base / "certs" / "node.crt")
    config.write_text(toml_dump(dep.config_doc(base / "certs", renew={"revoke_replaced": True},
                                               node={"hosts": list(FEWER_HOSTS)})))
    result = run_cli(["--config", str(config), "sync", "--once"], token)
    assert result.returncode == 0, result.stderr
    assert serial(base / "certs" / "node.crt") != replaced
    checked = run_cli(["verify", "--ocsp", "--certs-dir", str(base / "certs" / ".vaultpki" / "previous")])
    assert "is revoked" in checked.stdout + checked.stderr         # the renewal did revoke it: the premise holds
    return dep, config, replaced


def test_a_revoked_previous_set_is_refused_and_nothing_changes(revoked: tuple[Deployment, Path, int]) -> None:
    _, config, replaced = revoked
    certs = config.parent / "certs"
    before = tree(certs)
    line = one_error_line(run_cli(["--config", str(config), "rollback"]), 1,
                          f"refusing to roll back {certs}: node.crt (serial {hex_serial(replaced)}) was revoked at ",
                          "security.ocsp.mode", "renew.revoke_replaced = true", "Nothing was changed", "--force")
    assert "/ocsp)" in line
    assert tree(certs) == before


def test_a_responder_that_cannot_be_asked_refuses_it_with_revoke_replaced(
        revoked: tuple[Deployment, Path, int], tmp_path: Path) -> None:
    """Every OCSP request goes through a proxy that is not there: whether node.crt was revoked cannot be told."""
    _, config, replaced = revoked
    certs = config.parent / "certs"
    before = tree(certs)
    unreachable = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    one_error_line(run_cli(["--config", str(config), "rollback"], unreachable), 1,
                   f"cannot tell whether node.crt (serial {hex_serial(replaced)}) was revoked", "--force")
    assert tree(certs) == before
    # Without revoke_replaced nothing says the set was revoked: a warning, and it is rolled back.
    lenient = tmp_path / "lenient.toml"
    lenient.write_text(config.read_text().replace("revoke_replaced = true", "revoke_replaced = false"))
    assert lenient.read_text() != config.read_text()
    result = run_cli(["--config", str(lenient), "rollback", "--no-reload"], unreachable)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("vaultpki: warning: cannot tell whether node.crt") and result.stderr.count("\n") == 1
    assert serial(certs / "node.crt") == replaced
    assert run_cli(["--config", str(lenient), "rollback", "--no-reload"]).returncode == 0      # back as it was


def test_force_restores_a_revoked_set_and_says_so(revoked: tuple[Deployment, Path, int]) -> None:
    _, config, replaced = revoked
    certs = config.parent / "certs"
    result = run_cli(["--config", str(config), "rollback", "--force"])
    assert result.returncode == 0, result.stderr
    assert serial(certs / "node.crt") == replaced
    assert result.stderr.startswith(f"vaultpki: warning: restored anyway (--force): node.crt (serial "
                                    f"{hex_serial(replaced)}) was revoked"), result.stderr
    shown = run_cli(["verify", "--ocsp", "--certs-dir", str(certs)])
    assert shown.returncode == 1 and "node.crt: is revoked" in shown.stdout + shown.stderr


# --- a user without access -----------------------------------------------------------------------------


def as_nobody(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env["HOME"] = _EMPTY_HOME
    return subprocess.run([*SETPRIV, sys.executable, "-m", "vaultpki", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd="/")


@pytest.fixture(scope="module")
def two_sets(deploy: Callable[..., Deployment]) -> Iterator[Path]:
    """A root-owned certs-dir with two sets, in a root-owned dir that nobody can reach (0755)."""
    base = Path(tempfile.mkdtemp(prefix="vaultpki-rollback-nobody-", dir="/tmp"))
    base.chmod(0o755)
    dep = deploy(Mode.STANDARD, ui=False)
    config = dep.write_config(base / "vaultpki.toml", base / "closed" / "certs")
    (base / "closed").mkdir(mode=0o755)
    for _ in range(2):
        assert run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token}).returncode == 0
    try:
        yield base / "closed" / "certs"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("closed", ["parent", "certs-dir"])
def test_a_user_without_access_gets_one_line_and_nothing_changes(two_sets: Path, closed: str) -> None:
    """``parent``: a directory above the certs-dir is closed to the user (it cannot even look at the path);
    ``certs-dir``: it can look in, but not into the state dir nor take the lock."""
    certs = two_sets
    shut = certs.parent if closed == "parent" else certs
    mode = shut.stat().st_mode & 0o7777
    shut.chmod(0o700 if closed == "parent" else 0o755)
    try:
        before = tree(certs)
        one_error_line(as_nobody(["rollback", "--certs-dir", str(certs)]), 1, "permission denied",
                       "as nobody (uid 65534)", "nothing was changed")
        assert tree(certs) == before
    finally:
        shut.chmod(mode)
