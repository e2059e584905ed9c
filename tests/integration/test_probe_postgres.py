"""The reload probe against a real PostgreSQL (issue 18): it closes politely, so the server's log does
not show "connection reset by peer" at every check."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.daemon.probe import EndpointProber, served_certificate

from ..support.postgres import PostgresServer, install_server_key_permissions, make_shared_tempdir

pytestmark = pytest.mark.integration


def self_signed(directory: Path) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "node.crt", directory / "node.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    install_server_key_permissions(key_file)
    cert_file.chmod(0o644)
    return cert_file, key_file, cert


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[PostgresServer, x509.Certificate]]:
    base = make_shared_tempdir("vaultpki-probe-")
    cert_file, key_file, cert = self_signed(base)
    (base / "pg").mkdir(mode=0o755)
    try:
        with PostgresServer(base / "pg", cert_file, key_file, cert_file) as pg:
            yield pg, cert
    finally:
        shutil.rmtree(base, ignore_errors=True)


def backends(postmaster: int) -> set[int]:
    """The postmaster's children: its own workers plus one per connection still being served."""
    children: set[int] = set()
    for task in Path(f"/proc/{postmaster}/task").iterdir():
        children |= {int(p) for p in (task / "children").read_text().split()}
    return children


def wait_for_backends(postmaster: int, expected: set[int], timeout: float = 10.0) -> None:
    """Poll until every connection's backend has exited (and so has written what it logs)."""
    deadline = time.monotonic() + timeout
    while backends(postmaster) - expected:
        assert time.monotonic() < deadline, f"backends still running: {backends(postmaster) - expected}"
        time.sleep(0.02)


@pytest.mark.parametrize("endpoint", ["postgres://127.0.0.1:{port}", "postgres://localhost:{port}"])
def test_probe_closes_politely_no_connection_reset_in_the_postgres_log(
        postgres: tuple[PostgresServer, x509.Certificate], endpoint: str) -> None:
    pg, cert = postgres
    workers = backends(pg.pid)
    start = len(pg.log_text())
    url = endpoint.format(port=pg.port)
    for _ in range(3):
        assert served_certificate(url, timeout=5.0) == cert
    assert EndpointProber(url).served_serial() == cert.serial_number
    wait_for_backends(pg.pid, workers)
    log = pg.log_text()[start:]
    assert "connection reset by peer" not in log.lower(), log
    assert "could not receive data from client" not in log, log
