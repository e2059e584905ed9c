"""A real TLS consumer: PostgreSQL 15 serves the issued node certificate and maps client CNs to users.

CockroachDB cannot be installed here; PostgreSQL's ``hostssl ... cert`` authentication
maps the client certificate's CN to the SQL user exactly as ``client.<user>.crt`` does,
and it reloads its certificate files on SIGHUP.

OpenSSL (PostgreSQL, libpq) needs a chain that ends at a self-signed root, so these
configurations use ``ca_trust = "root"``.
"""

from __future__ import annotations

import grp
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode
from vaultpki.dev.provision import role_body

from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import Deployment, run_cli


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = make_shared_tempdir("vaultpki-pg-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def issue(dep: Deployment, base: Path, *args: str, **top: object) -> Path:
    config = dep.write_config(base / "vaultpki.toml", base / "certs", ca_trust="root",
                              owner="postgres", group="postgres", **top)
    result = run_cli(["--config", str(config), *args], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return config


def issue_user(dep: Deployment, config: Path, user: str, target: Path) -> Path:
    result = run_cli(["--config", str(config), "issue-user", user, "--certs-dir", str(target)],
                     {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return target


def connect(pg: PostgresServer, user: str, creds: Path, as_user: str | None = None, host: str = "localhost") -> str:
    result = pg.connect_as(as_user or user, creds / f"client.{user}.crt", creds / f"client.{user}.key",
                           creds / "ca.crt", host=host)
    return result.stdout.strip() if result.returncode == 0 else f"REFUSED: {result.stderr.strip()}"


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_postgres_serves_node_cert_and_maps_client_cn(
    deploy: Callable[..., Deployment], shared_dir: Path, mode: Mode,
) -> None:
    dep = deploy(mode)
    config = issue(dep, shared_dir, "issue-node")
    certs_dir = shared_dir / "certs"
    marc = issue_user(dep, config, "marc", shared_dir / "marc")
    eve = issue_user(dep, config, "eve", shared_dir / "eve")
    client_ca = certs_dir / ("ca-client.crt" if mode is Mode.SPLIT_CA else "ca.crt")
    (shared_dir / "pg").mkdir(mode=0o755)
    with PostgresServer(shared_dir / "pg", certs_dir / "node.crt", certs_dir / "node.key", client_ca) as pg:
        pg.create_user("marc")
        pg.create_user("eve")
        assert connect(pg, "marc", marc) == "marc"
        assert connect(pg, "marc", marc, host="127.0.0.1") == "marc"        # the IP SAN, verify-full
        assert connect(pg, "eve", eve) == "eve"
        refused = connect(pg, "eve", eve, as_user="marc")                   # eve's cert cannot be marc
        assert refused.startswith("REFUSED") and "certificate authentication failed" in refused
        assert connect(pg, "marc", marc, as_user="postgres").startswith("REFUSED")
        served = pg.served_certificate()
        assert served == crypto.load_certs((certs_dir / "node.crt").read_bytes())[0]


def test_reissue_and_sighup_rotates_the_served_certificate(deploy: Callable[..., Deployment], shared_dir: Path) -> None:
    """The generation swap is one rename: PostgreSQL re-reads through the links and serves the new pair."""
    dep = deploy(Mode.STANDARD)
    config = issue(dep, shared_dir, "issue-node")
    certs_dir = shared_dir / "certs"
    marc = issue_user(dep, config, "marc", shared_dir / "marc")
    (shared_dir / "pg").mkdir(mode=0o755)
    with PostgresServer(shared_dir / "pg", certs_dir / "node.crt", certs_dir / "node.key", certs_dir / "ca.crt") as pg:
        pg.create_user("marc")
        old = pg.served_certificate().serial_number
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
        assert result.returncode == 0, result.stderr
        new = crypto.load_certs((certs_dir / "node.crt").read_bytes())[0].serial_number
        assert new != old
        pg.reload()
        deadline = time.monotonic() + 10
        while pg.served_certificate().serial_number != new and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pg.served_certificate().serial_number == new
        assert connect(pg, "marc", marc) == "marc"


def test_split_ca_with_separate_roots_refuses_node_ca_client_certs(
    deploy: Callable[..., Deployment], shared_dir: Path,
) -> None:
    """Split-CA isolation at a real consumer: a CN=marc certificate from the node CA is not a client cert."""
    dep = deploy(Mode.SPLIT_CA, intermediate=False, ui=False)
    config = issue(dep, shared_dir, "issue-node")
    certs_dir = shared_dir / "certs"
    marc = issue_user(dep, config, "marc", shared_dir / "marc")
    # A (mis)configured user role on the *node* CA's mount: what an attacker with node-CA access could mint.
    dep.admin.write_data(f"{dep.pki.mount}/roles/user-on-node-ca", data=role_body("user", [], openbao=True))
    rogue_config = dep.write_config(shared_dir / "rogue.toml", shared_dir / "unused", mode="standard",
                                    ca_trust="root")
    rogue_config.write_text(rogue_config.read_text()
                            .replace('user_role = "user"', 'user_role = "user-on-node-ca"')
                            .replace(f'client_mount = "{dep.pki.client_mount}"\n', ""))
    rogue = issue_user(dep, rogue_config, "marc", shared_dir / "rogue")
    (shared_dir / "pg").mkdir(mode=0o755)
    with PostgresServer(shared_dir / "pg", certs_dir / "node.crt", certs_dir / "node.key",
                        certs_dir / "ca-client.crt") as pg:
        pg.create_user("marc")
        assert connect(pg, "marc", marc) == "marc"
        refused = connect(pg, "marc", rogue)
        assert refused.startswith("REFUSED") and "unknown ca" in refused, refused


def test_root_owned_key_readable_through_the_service_group(deploy: Callable[..., Deployment], shared_dir: Path) -> None:
    """owner = root + group: keys are 0640 root:<group> (CockroachDB's 0740 rule; PostgreSQL has the same)."""
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(shared_dir / "vaultpki.toml", shared_dir / "certs", ca_trust="root",
                              owner="root", group="postgres")
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    certs_dir = shared_dir / "certs"
    key = (certs_dir / "node.key").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (0, 0o640)
    assert key.st_gid == grp.getgrnam("postgres").gr_gid
    assert run_cli(["--config", str(config), "verify"]).returncode == 0
    marc = issue_user(dep, config, "marc", shared_dir / "marc")
    (shared_dir / "pg").mkdir(mode=0o755)
    with PostgresServer(shared_dir / "pg", certs_dir / "node.crt", certs_dir / "node.key", certs_dir / "ca.crt") as pg:
        pg.create_user("marc")
        assert connect(pg, "marc", marc) == "marc"
