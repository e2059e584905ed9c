"""First boot and restarts: a reload target that is not running yet leaves the reload *pending*, not failed;
a pending (or failing) reload is remembered in the state dir across restarts, retried, shown by ``status``,
exported as a metric, and reported by ``/healthz`` when it keeps failing.

The database stand-in is a real process: a copy of ``sleep`` under a name of its own, so ``reload.process``
finds exactly it, and SIGHUP (which ``sleep`` does not handle) ends it, which proves it got the signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode
from vaultpki.daemon.metrics import RELOAD_FAILURES_UNHEALTHY

from .conftest import Deployment, run_cli, toml_dump
from .daemon_proc import SyncDaemon, msg

pytestmark = pytest.mark.integration

DB_NAME = "vpki-fakedb"
PENDING = Path(".vaultpki") / "pending-reload.json"


class FakeDb:
    """A real process named DB_NAME (``sleep`` copied under that name), optionally run as another user."""

    def __init__(self, base: Path, user: int | None = None) -> None:
        self.binary = base / DB_NAME
        if not self.binary.exists():
            shutil.copy2(shutil.which("sleep") or "/bin/sleep", self.binary)
            self.binary.chmod(0o755)
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
        self.proc = subprocess.Popen([*prefix, str(self.binary), "600"])
        self.pidfile = base / "db.pid"
        self.pidfile.write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + 10         # setpriv execs: wait until the pid is the database
        while Path(f"/proc/{self.proc.pid}/comm").read_text().strip() != DB_NAME:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the fake database did not start"
            time.sleep(0.02)

    def signalled_hup(self, timeout: float = 10) -> bool:
        """Whether it ended by SIGHUP (sleep's default action for it), waiting up to ``timeout``."""
        try:
            return self.proc.wait(timeout) == -signal.SIGHUP
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    tmp_path.chmod(0o755)          # the fake database may run as nobody and must reach its binary
    yield tmp_path


def write_config(dep: Deployment, base: Path, reload: dict[str, object]) -> Path:
    doc = dep.config_doc(base / "certs", ttl="1h", renew={"retry_initial": "1s", "retry_max": "1s"}, reload=reload)
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


@pytest.fixture
def node(deploy: Callable[..., Deployment], base: Path) -> tuple[Path, dict[str, str]]:
    dep = deploy(Mode.STANDARD, ui=False)
    return write_config(dep, base, {"process": DB_NAME}), {"VAULT_TOKEN": dep.server.root_token}


def test_first_boot_without_the_database_succeeds_and_leaves_the_reload_pending(
        node: tuple[Path, dict[str, str]], base: Path) -> None:
    config, token = node
    first = run_cli(["--config", str(config), "sync", "--once"], token)
    assert first.returncode == 0, first.stderr
    assert "vaultpki: error" not in first.stderr
    assert "reload pending" in first.stdout and "no process named" in first.stdout
    assert (base / "certs" / "node.crt").is_file() and (base / "certs" / "node.key").is_file()
    record = json.loads((base / "certs" / PENDING).read_text())
    assert "not running" in record["reason"] and record["failures"] == 0 and "node.crt" in record["files"]
    assert (base / "certs" / PENDING).stat().st_mode & 0o777 == 0o600
    # status shows it: one line, and a JSON field.
    text = run_cli(["--config", str(config), "status"])
    assert text.returncode == 0 and "RELOAD PENDING since" in text.stdout, text.stdout + text.stderr
    doc = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)
    assert doc["reload_pending"]["reason"] == record["reason"]

    # The database has started since: the next pass (nothing due) signals it and forgets the pending reload.
    db = FakeDb(base)
    try:
        second = run_cli(["--config", str(config), "sync", "--once"], token)
        assert second.returncode == 0 and "nothing due" in second.stdout, second.stdout + second.stderr
        assert db.signalled_hup(), "the database started after first boot never got its SIGHUP"
        assert not (base / "certs" / PENDING).exists()
        assert "reload pending" not in second.stdout
        assert json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)["reload_pending"] is None
    finally:
        db.stop()


def test_a_restarted_daemon_retries_the_pending_reload(node: tuple[Path, dict[str, str]], base: Path) -> None:
    config, token = node
    assert run_cli(["--config", str(config), "sync", "--once"], token).returncode == 0
    assert (base / "certs" / PENDING).exists()
    db = FakeDb(base)
    try:
        with SyncDaemon(config, token) as daemon:
            event = daemon.wait_for(msg("a reload is pending from before"), 30)
            assert "not running" in event["reason"]
            daemon.wait_for(msg("pending reload done"), 30)
            done = daemon.wait_for(msg("pass complete"), 30)
            assert done["renewed"] == [] and done["failures"] == 0
            assert db.signalled_hup()
            assert daemon.metric("vaultpki_reload_pending") == 0
            assert daemon.stop() == 0
        assert not (base / "certs" / PENDING).exists()
    finally:
        db.stop()


def test_a_reload_that_keeps_failing_survives_restarts_and_turns_healthz_unhealthy(
        deploy: Callable[..., Deployment], base: Path) -> None:
    """A database that runs but cannot be signalled (its pid runs as another user than the keys are
    written for): a failure, pending, retried; unhealthy after RELOAD_FAILURES_UNHEALTHY attempts; a
    restart neither forgets it nor reports the daemon healthy."""
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    db = FakeDb(base, user=65534)      # nobody
    try:
        config = write_config(dep, base, {"pidfile": str(db.pidfile), "process": DB_NAME})
        once = run_cli(["--config", str(config), "sync", "--once"], token)
        assert once.returncode == 1 and "nothing signalled" in once.stderr, once.stdout + once.stderr
        record = json.loads((base / "certs" / PENDING).read_text())
        assert record["reason"].startswith("failed:") and record["failures"] == 1
        with SyncDaemon(config, token) as daemon:
            daemon.wait_for(msg("a reload is pending from before"), 30)
            for _ in range(RELOAD_FAILURES_UNHEALTHY):
                daemon.wait_for(msg("reload failed"), 30)
            status, body = daemon.get("/healthz")
            assert status == 503, body
            health = json.loads(body)
            assert health["reload_pending"] is True and health["reload_failures"] >= RELOAD_FAILURES_UNHEALTHY
            assert daemon.metric("vaultpki_reload_pending") == 1
            assert daemon.stop() == 0
        with SyncDaemon(config, token) as daemon:      # a restart does not forget it, nor turn healthy
            event = daemon.wait_for(msg("a reload is pending from before"), 30)
            assert event["reload_failures"] >= RELOAD_FAILURES_UNHEALTHY
            daemon.wait_for(msg("metrics listening"), 30)          # the server starts after the Syncer is built
            status, _ = daemon.get("/healthz")
            assert status == 503
            assert daemon.stop() == 0
        assert db.proc.poll() is None                   # never signalled: it was not the database's user
    finally:
        db.stop()
    assert os.path.exists(base / "certs" / PENDING)
