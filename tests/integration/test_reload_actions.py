"""Post-renewal actions with real processes (issue 18): PostgreSQL gets the signal, then shell commands run in
the order given, each writing what it sees (its place in the order, its environment) to files.

- The signal comes first: the first command waits until PostgreSQL has logged the SIGHUP, and gives up (exit 7)
  if it has not, which fails the pass.
- Every command is told ``RENEWED_CERTS_DIR`` and ``RENEWED_FILES`` and sees no Vault credential.
- A failing command stops the list; the rest stays owed in ``.vaultpki/pending-reload.json``; the daemon is
  SIGKILLed; started again, it runs only what is owed, in order, then verifies: PostgreSQL gets no second SIGHUP
  and no command runs twice.
- A signal that finds nobody (the database not running yet) does not hold the commands back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import NODE_HOSTS, Deployment, run_cli, toml_dump
from .daemon_proc import SyncDaemon, msg
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

SIGHUP_LINE = "received SIGHUP, reloading configuration files"

# $1 order file, $2 env dir, $3 name: append the name to the order, dump the environment.
RECORD = """#!/bin/sh
echo "$3" >> "$1"
env > "$2/$3.env"
"""
# $4 flag: while it exists, record "<name>-fail" and exit 3.
FAIL_WHILE = """#!/bin/sh
if [ -e "$4" ]; then echo "$3-fail" >> "$1"; echo "flag $4 is set" >&2; exit 3; fi
echo "$3" >> "$1"
env > "$2/$3.env"
"""
# $4 PostgreSQL's log, $5 how many SIGHUPs it had logged before: poll ($6 times, 200 by default: 10 s) for one
# more, then record.
AFTER_SIGHUP = """#!/bin/sh
n=0
while [ "$(grep -c "@SIGHUP_LINE@" "$4")" -le "$5" ]; do
  n=$((n + 1)); [ "$n" -gt "${6:-200}" ] && { echo "no SIGHUP logged by PostgreSQL before this command" >&2; exit 7; }
  sleep 0.05
done
echo "$3" >> "$1"
env > "$2/$3.env"
""".replace("@SIGHUP_LINE@", SIGHUP_LINE)


def node_config(dep: Deployment, base: Path, reload: dict[str, Any], hosts: tuple[str, ...] = NODE_HOSTS,
                **renew: str) -> Path:
    """The node's config: files for PostgreSQL (owner postgres, a CA file libpq-style clients trust)."""
    doc = dep.config_doc(base / "certs", ca_trust="root", owner="postgres", group="postgres", ttl="1h",
                         node={"hosts": list(hosts)}, reload=reload,
                         renew={"retry_initial": "1s", "retry_max": "1s", **renew})
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


@dataclass
class Node:
    """A node certs-dir served by a real PostgreSQL, and the hooks that record what they see."""

    dep: Deployment
    base: Path
    pg: PostgresServer
    token: dict[str, str]

    @property
    def certs(self) -> Path:
        return self.base / "certs"

    @property
    def hooks(self) -> Path:
        return self.base / "hooks"

    def config(self, reload: dict[str, Any], hosts: tuple[str, ...] = NODE_HOSTS, **renew: str) -> Path:
        return node_config(self.dep, self.base, reload, hosts, **renew)

    def due_hosts(self) -> tuple[str, ...]:
        """node.hosts that make node.crt due: with its IP SAN when it has none, else without it."""
        has_ip = crypto.describe(crypto.load_certs((self.certs / "node.crt").read_bytes())[0]).ip_sans != ()
        return tuple(h for h in NODE_HOSTS if h != "127.0.0.1") if has_ip else NODE_HOSTS

    def sighups(self) -> int:
        return self.pg.log_text().count(SIGHUP_LINE)

    def signal(self) -> dict[str, str]:
        return {"pidfile": str(self.pg.data_dir / "postmaster.pid")}

    def serial(self) -> int:
        return crypto.load_certs((self.certs / "node.crt").read_bytes())[0].serial_number


@pytest.fixture(scope="module")
def node(deploy: Callable[..., Deployment]) -> Iterator[Node]:
    base = make_shared_tempdir("vaultpki-actions-")
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    assert run_cli(["--config", str(node_config(dep, base, {})), "issue-node"], token).returncode == 0
    (base / "hooks").mkdir()
    for name, text in (("record.sh", RECORD), ("fail-while.sh", FAIL_WHILE), ("after-sighup.sh", AFTER_SIGHUP)):
        (base / "hooks" / name).write_text(text)
        (base / "hooks" / name).chmod(0o755)
    (base / "pg").mkdir(mode=0o755)
    certs = base / "certs"
    with PostgresServer(base / "pg", certs / "node.crt", certs / "node.key", certs / "ca.crt") as pg:
        yield Node(dep, base, pg, token)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def record(node: Node, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh order file and env dir for one test."""
    envs = tmp_path / "env"
    envs.mkdir()
    return tmp_path / "order", envs


def hook(node: Node, script: str, order: Path, envs: Path, name: str, *more: str) -> list[str]:
    return [str(node.hooks / script), str(order), str(envs), name, *more]


def env_of(envs: Path, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (envs / f"{name}.env").read_text().splitlines() if "=" in line)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_the_signal_then_each_command_in_order_told_what_was_renewed_and_no_secret(
        node: Node, record: tuple[Path, Path]) -> None:
    order, envs = record
    token = node.token["VAULT_TOKEN"]
    before, old_serial = node.sighups(), node.serial()
    reload = {**node.signal(), "verify": f"postgres://127.0.0.1:{node.pg.port}", "commands": [
        hook(node, "after-sighup.sh", order, envs, "one", str(node.pg.log_file), str(before)),
        hook(node, "record.sh", order, envs, "two"),
    ]}
    config = node.config(reload, node.due_hosts())
    env = {**node.token, "BAO_TOKEN": token, "COPY_OF_THE_TOKEN": token, "VAULTPKI_RENEW_JITTER": "5%"}
    result = run_cli(["--config", str(config), "sync", "--once"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"reload: SIGHUP to the pid in {node.pg.data_dir / 'postmaster.pid'}, then run {node.hooks}/after-sighup.sh"
            in result.stdout), result.stdout
    assert lines(order) == ["one", "two"]                      # "one" ran only once PostgreSQL had its SIGHUP
    assert node.sighups() == before + 1
    new_serial = node.serial()
    assert new_serial != old_serial and node.pg.served_certificate().serial_number == new_serial   # verified
    for name in ("one", "two"):
        seen = env_of(envs, name)
        assert seen["RENEWED_CERTS_DIR"] == str(node.certs)
        renewed = seen["RENEWED_FILES"].split(" ")
        assert {"node.crt", "node.key"} <= set(renewed) and all((node.certs / f).is_file() for f in renewed)
        assert not [k for k in seen if k.upper().startswith(("VAULT_", "BAO_", "VAULTPKI_"))], sorted(seen)
        assert "COPY_OF_THE_TOKEN" not in seen and token not in (envs / f"{name}.env").read_text()


def test_a_failing_command_stops_the_rest_which_run_in_order_after_a_killed_daemon_restarts(
        node: Node, record: tuple[Path, Path], tmp_path: Path) -> None:
    order, envs = record
    flag = tmp_path / "broken"
    flag.touch()
    before = node.sighups()
    reload = {**node.signal(), "verify": f"postgres://127.0.0.1:{node.pg.port}", "commands": [
        hook(node, "record.sh", order, envs, "one"),
        hook(node, "fail-while.sh", order, envs, "two", str(flag)),
        hook(node, "record.sh", order, envs, "three"),
    ]}
    # The failed pass is retried only a minute later: the daemon is killed long before.
    config = node.config(reload, node.due_hosts(), retry_initial="60s", retry_max="60s")
    signal_action = f"SIGHUP to the pid in {node.pg.data_dir / 'postmaster.pid'}"
    one, two, three = (f"run {node.hooks}/{script} {order} {envs} {name}" for script, name in
                       (("record.sh", "one"), ("fail-while.sh", "two"), ("record.sh", "three")))
    two += f" {flag}"
    with SyncDaemon(config, node.token) as daemon:
        failed = daemon.wait_for(msg("reload failed"), 60)
        daemon.wait_for(msg("pass failed; retrying"), 10)             # the pass is over: what is owed is recorded
        daemon.proc.kill()
        daemon.proc.wait(10)
    assert failed["error"] == (f"action 3 of 4 ({two}) failed: reload command '{node.hooks}/fail-while.sh' exited 3: "
                               f"flag {flag} is set; not run: {three}")
    assert lines(order) == ["one", "two-fail"] and node.sighups() == before + 1
    pending = json.loads((node.certs / ".vaultpki" / "pending-reload.json").read_text())
    assert pending["done"] == [signal_action, one] and pending["remaining"] == [two, three]
    assert pending["failures"] == 1 and "node.crt" in pending["files"]
    shown = run_cli(["--config", str(config), "status"])
    assert f"  still to run: {two}, then {three}" in shown.stdout, shown.stdout
    assert f"  already ran:  {signal_action}, {one}" in shown.stdout
    as_json = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)["reload_pending"]
    assert as_json["remaining"] == [two, three] and as_json["done"] == [signal_action, one]

    flag.unlink()
    with SyncDaemon(config, node.token) as daemon:
        owed = daemon.wait_for(msg("a reload is pending from before"), 30)
        assert owed["remaining"] == [two, three]
        done = daemon.wait_for(msg("pass complete"), 60)
        assert done["renewed"] == [] and done["failures"] == 0 and done["verified"] is True
        assert daemon.stop() == 0
    ran = [e["how"] for e in daemon.events if e.get("msg") == "reloaded"]
    assert ran == [two, three]                                          # neither the signal nor "one" again
    steps = [e["msg"] for e in daemon.events if e.get("msg") in ("reloaded", "reload verified", "pending reload done")]
    assert steps == ["reloaded", "reloaded", "pending reload done", "reload verified"]      # verify after the last
    assert lines(order) == ["one", "two-fail", "two", "three"]
    assert node.sighups() == before + 1
    assert not (node.certs / ".vaultpki" / "pending-reload.json").exists()
    assert "node.crt" in env_of(envs, "three")["RENEWED_FILES"].split(" ")     # told across the restart


def test_a_database_not_running_yet_does_not_hold_the_commands_back(
        deploy: Callable[..., Deployment], record: tuple[Path, Path], tmp_path: Path, node: Node) -> None:
    order, envs = record
    dep = deploy(Mode.STANDARD, ui=False)
    reload = {"process": "vpki-not-running", "commands": [hook(node, "record.sh", order, envs, "one")]}
    config = tmp_path / "vaultpki.toml"
    dep.write_config(config, tmp_path / "certs", reload=reload)
    first = run_cli(["--config", str(config), "sync", "--once"], node.token)
    assert first.returncode == 0 and "reload pending" in first.stdout, first.stdout + first.stderr
    assert lines(order) == ["one"]
    pending = json.loads((tmp_path / "certs" / ".vaultpki" / "pending-reload.json").read_text())
    assert pending["remaining"] == ["SIGHUP to every process named 'vpki-not-running'"]
    assert pending["failures"] == 0 and pending["done"] == [f"run {node.hooks}/record.sh {order} {envs} one"]
    again = run_cli(["--config", str(config), "sync", "--once"], node.token)
    assert again.returncode == 0 and "reload pending" in again.stdout
    assert lines(order) == ["one"]                                      # what ran is not run again


def test_command_and_commands_together_are_refused_before_anything_is_done(node: Node, tmp_path: Path) -> None:
    config = tmp_path / "vaultpki.toml"
    node.dep.write_config(config, tmp_path / "certs", reload={"command": ["true"], "commands": [["true"]]})
    one_error_line(run_cli(["--config", str(config), "sync", "--once"], node.token), 2,
                   "reload.command (one command) or reload.commands (a list of them), not both")
    assert not (tmp_path / "certs").exists()


def test_the_shell_hooks_fail_when_they_should(node: Node, record: tuple[Path, Path], tmp_path: Path) -> None:
    """The hooks themselves: the SIGHUP wait gives up without one, the failing hook fails while its flag is set."""
    order, envs = record
    waited = subprocess.run(hook(node, "after-sighup.sh", order, envs, "x", str(node.pg.log_file),
                                 str(node.sighups()), "2"), capture_output=True, text=True, timeout=30, check=False)
    assert waited.returncode == 7 and "no SIGHUP" in waited.stderr
    flag = tmp_path / "flag"
    flag.touch()
    assert subprocess.run(hook(node, "fail-while.sh", order, envs, "y", str(flag)), check=False).returncode == 3
    assert lines(order) == ["y-fail"]
