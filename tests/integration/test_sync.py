"""``vaultpki sync`` against real OpenBao and a real reloading consumer (PostgreSQL).

Certificates live a minute (ttl = 60s; OpenBao backdates notBefore by 30 s, so the
issued lifetime is 90 s) and are renewed when 60% of that is left, so a renewal
comes every ~15 s (never earlier than half the lifetime: renewal.MIN_LIFE_FRACTION).
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import SHORT, Deployment, run_cli, toml_dump, tree
from .daemon_proc import SyncDaemon, msg


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = make_shared_tempdir("vaultpki-sync-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(dep: Deployment, base: Path, **top: object) -> Path:
    doc = dep.config_doc(base / "certs", ca_trust="root", owner="postgres", group="postgres", **SHORT)
    doc.update(top)
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


def serial_of(path: Path) -> int:
    return crypto.load_certs(path.read_bytes())[0].serial_number


def connect_marc(pg: PostgresServer, creds: Path) -> str:
    result = pg.connect_as("marc", creds / "client.marc.crt", creds / "client.marc.key", creds / "ca.crt")
    return result.stdout.strip() if result.returncode == 0 else f"REFUSED: {result.stderr.strip()}"


@pytest.fixture
def pg_node(deploy: Callable[..., Deployment], shared_dir: Path) -> Iterator[tuple[Deployment, Path, PostgresServer, Path]]:
    """A node certs-dir issued once, PostgreSQL serving it, and marc's client certificate."""
    dep = deploy(Mode.STANDARD, ui=False)
    config = write_config(dep, shared_dir)
    token = {"VAULT_TOKEN": dep.server.root_token}
    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    marc = shared_dir / "marc"
    result = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(marc), "--owner", "root"], token)
    assert result.returncode == 0, result.stderr
    certs = shared_dir / "certs"
    (shared_dir / "pg").mkdir(mode=0o755)
    with PostgresServer(shared_dir / "pg", certs / "node.crt", certs / "node.key", certs / "ca.crt") as pg:
        pg.create_user("marc")
        yield dep, config, pg, marc


@pytest.mark.parametrize("how", ["process", "pidfile"])
@pytest.mark.slow
def test_daemon_renews_reloads_postgres_and_marc_keeps_working(
    pg_node: tuple[Deployment, Path, PostgresServer, Path], how: str,
) -> None:
    dep, config, pg, marc = pg_node
    port = pg.port
    reload = {"process": "postgres"} if how == "process" else {"pidfile": str(pg.data_dir / "postmaster.pid")}
    reload["verify"] = f"postgres://127.0.0.1:{port}"
    config = write_config(dep, config.parent, reload=reload)
    node_crt = config.parent / "certs" / "node.crt"
    first = serial_of(node_crt)
    served = {pg.served_certificate().serial_number}
    with SyncDaemon(config, {"VAULT_TOKEN": dep.server.root_token}) as daemon:
        daemon.wait_for(msg("sync started"), 30)
        renewals = 0
        while renewals < 2:
            event = daemon.wait_for(lambda e: str(e.get("msg")).startswith(("reload verified", "reload NOT")), 60)
            assert event["msg"] == "reload verified", daemon.events[-10:]
            renewals += 1
            now_serving = pg.served_certificate().serial_number
            assert now_serving == serial_of(node_crt) and now_serving not in served
            served.add(now_serving)
            assert connect_marc(pg, marc) == "marc"                      # across every renewal
        assert daemon.metric("vaultpki_reload_verified") == 1
        assert daemon.metric("security_certificate_expiration_node") == pytest.approx(
            crypto.load_certs(node_crt.read_bytes())[0].not_valid_after_utc.timestamp())
        status, body = daemon.get("/healthz")
        assert status == 200 and '"healthy": true' in body
        assert daemon.stop() == 0
    logged = repr(daemon.events)
    assert dep.server.root_token not in logged and "PRIVATE KEY" not in logged     # never in the logs
    assert first not in {serial_of(node_crt)}
    assert run_cli(["--config", str(config), "verify"]).returncode == 0


@pytest.mark.slow
def test_restart_ten_times_issues_nothing(deploy: Callable[..., Deployment], shared_dir: Path) -> None:
    dep = deploy(Mode.SPLIT_CA, ui=True)
    config = write_config(dep, shared_dir, ttl="1h")
    token = {"VAULT_TOKEN": dep.server.root_token}
    first = run_cli(["--config", str(config), "sync", "--once"], token)
    assert first.returncode == 0 and "renewed" in first.stdout, first.stderr
    mounts = [dep.pki.mount, dep.pki.client_mount, dep.pki.ui_mount]
    before = {m: dep.serials(m) for m in mounts}
    before_tree = tree(shared_dir / "certs")
    for _ in range(3):
        again = run_cli(["--config", str(config), "sync", "--once"], token)
        assert again.returncode == 0 and "nothing due" in again.stdout, again.stdout + again.stderr
    for i in range(10):
        with SyncDaemon(config, token) as daemon:
            event = daemon.wait_for(msg("pass complete"), 30)
            assert event["renewed"] == [] and event["failures"] == 0
            assert daemon.stop(signal.SIGINT if i % 2 else signal.SIGTERM) == 0
    assert {m: dep.serials(m) for m in mounts} == before          # Vault's own record: zero new certificates
    assert tree(shared_dir / "certs") == before_tree


@pytest.mark.slow
def test_reload_that_does_not_take_is_reported(deploy: Callable[..., Deployment], shared_dir: Path,
                                               tmp_path: Path) -> None:
    """A consumer that ignores SIGHUP keeps serving the old certificate: reported, metric set, rollback possible."""
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = write_config(dep, shared_dir, ttl="1h")
    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    certs = shared_dir / "certs"
    old = serial_of(certs / "node.crt")
    with StubbornTls(tmp_path, certs / "node.crt", certs / "node.key") as stubborn:
        reload = {"pidfile": str(stubborn.pidfile), "verify": f"tls://127.0.0.1:{stubborn.port}", "verify_timeout": "3s"}
        # Dropping the IP from node.hosts makes node.crt due (its SANs no longer match the config).
        fewer_hosts = {"hosts": ["node1.test.internal", "localhost"]}
        config = write_config(dep, shared_dir, ttl="1h", reload=reload, node=fewer_hosts)
        result = run_cli(["--config", str(config), "sync", "--once"], token)
        assert result.returncode == 1
        assert "does not serve the certificate just written" in result.stderr
        assert result.stderr.count("vaultpki: error:") == 1
        assert serial_of(certs / "node.crt") != old and stubborn.alive()
        # The previous set is kept: the operator can roll back with one command.
        assert run_cli(["--config", str(config), "rollback"]).returncode == 0
        assert serial_of(certs / "node.crt") == old
        # With rollback_on_failure the daemon does it by itself, and says so in logs, metrics and health.
        config = write_config(dep, shared_dir, ttl="1h", reload={**reload, "rollback_on_failure": True},
                              node=fewer_hosts)
        with SyncDaemon(config, token) as daemon:
            daemon.wait_for(msg("reload NOT verified"), 60)
            daemon.wait_for(msg("rolled back"), 10)
            daemon.wait_for(msg("pass failed; retrying"), 10)
            assert serial_of(certs / "node.crt") == old
            assert daemon.metric("vaultpki_reload_verified") == 0
            status, body = daemon.get("/healthz")
            assert status == 503 and '"reload_verified": false' in body
            assert daemon.stop() == 0


@pytest.mark.slow
def test_sigterm_during_a_pass_exits_zero_and_leaves_a_consistent_dir(
    deploy: Callable[..., Deployment], shared_dir: Path,
) -> None:
    dep = deploy(Mode.SPLIT_NODE, ui=True)
    config = write_config(dep, shared_dir, ttl="1h")
    token = {"VAULT_TOKEN": dep.server.root_token}
    rng = random.Random(1234)
    for _ in range(6):
        shutil.rmtree(shared_dir / "certs", ignore_errors=True)
        with SyncDaemon(config, token) as daemon:
            daemon.wait_for(msg("sync started"), 30)
            time.sleep(rng.uniform(0, 0.3))        # somewhere inside the first pass (it issues 3 leaves)
            assert daemon.stop() == 0
        after = run_cli(["verify", "--certs-dir", str(shared_dir / "certs")])
        entries = sorted(p.name for p in (shared_dir / "certs").iterdir()) if (shared_dir / "certs").exists() else []
        visible = [e for e in entries if not e.startswith(".")]
        # Either nothing was switched in yet, or the complete set is there and valid.
        assert visible == [] or (after.returncode == 0 and {"ca.crt", "node.crt", "client.node.crt", "ui.crt"} <= set(visible)), \
            (visible, after.stdout, after.stderr)


class StubbornTls:
    """A TLS server that loads its certificate once and ignores SIGHUP (a consumer whose reload never takes)."""

    SCRIPT = """
import signal, socket, ssl, sys
signal.signal(signal.SIGHUP, signal.SIG_IGN)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0))
open(sys.argv[3], "w").write(f"{__import__('os').getpid()}\\n{srv.getsockname()[1]}\\n")
while True:
    conn, _ = srv.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
    except (OSError, ssl.SSLError):
        pass
"""

    def __init__(self, base: Path, cert: Path, key: Path) -> None:
        # It runs as postgres, the user the keys are written for: vaultpki signals no other user's pid.
        self._dir = make_shared_tempdir("stubborn-")
        shutil.chown(self._dir, "postgres")
        self.pidfile = self._dir / "stubborn.pid"
        self._args = [str(cert), str(key), str(self.pidfile)]
        self.port = 0
        self._proc: object = None

    def __enter__(self) -> StubbornTls:
        import subprocess
        import sys
        self._proc = subprocess.Popen(["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                                       sys.executable, "-c", self.SCRIPT, *self._args])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = self.pidfile.read_text().splitlines() if self.pidfile.exists() else []
            if len(lines) == 2:
                self.port = int(lines[1])
                return self
            time.sleep(0.05)
        raise AssertionError("stubborn TLS server did not start")

    def alive(self) -> bool:
        return self._proc.poll() is None  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self._proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        self._proc.wait()  # type: ignore[attr-defined]
        shutil.rmtree(self._dir)


def test_sighup_rereads_the_config_and_runs_a_pass_now(deploy: Callable[..., Deployment], shared_dir: Path) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = write_config(dep, shared_dir, ttl="1h")
    with SyncDaemon(config, token) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(shared_dir / "certs" / "node.crt")
        # A broken config is refused and the running one kept...
        config.write_text(config.read_text() + "\nno_such_key = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        event = daemon.wait_for(msg("config reload failed"), 10)
        assert "no_such_key" in event["error"]
        # ...a good one is taken at once, and its pass runs now (the next renewal is an hour away).
        write_config(dep, shared_dir, ttl="1h", node={"hosts": ["node1.test.internal", "localhost"]})
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(msg("configuration reloaded"), 10)
        renewed = daemon.wait_for(msg("pass complete"), 30)
        assert renewed["renewed"] == ["node.crt"]
        assert serial_of(shared_dir / "certs" / "node.crt") != first
        assert crypto.describe(crypto.load_certs((shared_dir / "certs" / "node.crt").read_bytes())[0]).ip_sans == ()
        assert daemon.stop() == 0


@pytest.mark.slow
def test_a_rolled_back_pass_does_not_revoke_the_set_it_restored(deploy: Callable[..., Deployment], shared_dir: Path,
                                                                tmp_path: Path) -> None:
    """rollback_on_failure with revoke_replaced: the pass rolled back, then revoked the "replaced" certificate,
    which was the one on disk again: with OCSP on, the database would refuse its own certificate."""
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = write_config(dep, shared_dir, ttl="1h")
    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    certs = shared_dir / "certs"
    old = serial_of(certs / "node.crt")
    with StubbornTls(tmp_path, certs / "node.crt", certs / "node.key") as stubborn:
        reload = {"pidfile": str(stubborn.pidfile), "verify": f"tls://127.0.0.1:{stubborn.port}", "verify_timeout": "2s",
                  "rollback_on_failure": True}
        config = write_config(dep, shared_dir, ttl="1h", reload=reload, renew={"revoke_replaced": True},
                              node={"hosts": ["node1.test.internal", "localhost"]})
        result = run_cli(["--config", str(config), "sync", "--once"], token)
        assert result.returncode == 1 and "does not serve the certificate just written" in result.stderr
    assert serial_of(certs / "node.crt") == old                      # rolled back
    checked = run_cli(["verify", "--ocsp", "--certs-dir", str(certs)])
    assert "revoked" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
