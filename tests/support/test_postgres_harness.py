"""Tests for tests/support/postgres.py against a real PostgreSQL server.

They prove the harness is a trustworthy TLS consumer before other integration
tests rely on it: certificate auth maps CN -> user, foreign CAs and non-TLS
connections are rejected, and a SIGHUP makes the server serve a rotated
certificate.  Nothing is skipped: a missing PostgreSQL is an error.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .postgres import (
    PostgresServer,
    find_bindir,
    free_port,
    install_server_key_permissions,
    make_shared_tempdir,
)

pytestmark = pytest.mark.integration  # real PostgreSQL server

# --------------------------------------------------------------------- tiny PKI


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=1)
    )


def make_ca(cn: str) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(cert, key)


def issue(
    ca: CA, cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def server_cert(ca: CA) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return issue(
        ca,
        "node",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_client_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # libpq (running as root here) insists on 0600 for a key it does not see as root:group.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem(key))


def replace_server_files(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """Atomically swap in a new server cert and key, key already postgres-owned 0600."""
    tmp_key = key_path.with_name(key_path.name + ".new")
    tmp_cert = cert_path.with_name(cert_path.name + ".new")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem(key))
    install_server_key_permissions(tmp_key)
    write_cert(tmp_cert, cert)
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)


@dataclass
class Pki:
    dir: Path
    ca: CA
    ca_file: Path
    server_cert: x509.Certificate
    server_cert_file: Path
    server_key_file: Path

    def client(self, name: str, ca: CA | None = None) -> tuple[Path, Path]:
        """Issue client cert CN=*name* (from *ca*, default the cluster CA); return (crt, key)."""
        ca = ca or self.ca
        cert, key = issue(ca, name, ExtendedKeyUsageOID.CLIENT_AUTH)
        tag = "" if ca is self.ca else "foreign."
        crt_path = self.dir / f"{tag}client.{name}.crt"
        key_path = self.dir / f"{tag}client.{name}.key"
        write_cert(crt_path, cert)
        write_client_key(key_path, key)
        return crt_path, key_path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(mode=0o755)
    ca = make_ca("Test Cluster CA")
    ca_file = directory / "ca.crt"
    write_cert(ca_file, ca.cert)
    cert, key = server_cert(ca)
    cert_file = directory / "node.crt"
    key_file = directory / "node.key"
    write_cert(cert_file, cert)
    write_client_key(key_file, key)
    install_server_key_permissions(key_file)
    return Pki(directory, ca, ca_file, cert, cert_file, key_file)


def start_server(base: Path) -> tuple[PostgresServer, Pki]:
    pki = make_pki(base / "certs")
    server = PostgresServer(base, pki.server_cert_file, pki.server_key_file, pki.ca_file)
    server.start()
    return server, pki


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = make_shared_tempdir("vaultpki-pg-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------- fixtures


@dataclass
class Env:
    server: PostgresServer
    pki: Pki
    marc: tuple[Path, Path]
    eve: tuple[Path, Path]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = make_shared_tempdir("vaultpki-pg-")
    server: PostgresServer | None = None
    try:
        server, pki = start_server(base)
        server.create_user("marc")
        yield Env(server, pki, pki.client("marc"), pki.client("eve"))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def assert_rejected(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, f"connection unexpectedly succeeded: {proc.stdout!r}"
    assert proc.stdout == ""
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# --------------------------------------------------------------------- tests


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_find_bindir_has_server_binaries() -> None:
    bindir = find_bindir()
    for name in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bindir / name, os.X_OK)


def test_server_is_running_as_postgres(env: Env) -> None:
    pid = env.server.pid
    assert Path(f"/proc/{pid}").exists()
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    import pwd

    assert pwd.getpwuid(uid).pw_name == "postgres"
    assert env.server.sql("SHOW ssl") == "on"
    assert env.server.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('marc','eve')") == "marc"


def test_client_cert_maps_cn_to_user(env: Env) -> None:
    crt, key = env.marc
    proc = env.server.connect_as("marc", crt, key, env.pki.ca_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "marc"


def test_verify_full_against_ip_san(env: Env) -> None:
    crt, key = env.marc
    proc = env.server.connect_as("marc", crt, key, env.pki.ca_file, host="127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "marc"


def test_valid_cert_for_missing_role_is_rejected(env: Env) -> None:
    crt, key = env.eve
    # Cert auth succeeds (CN matches the requested user); the role lookup then fails.
    assert_rejected(env.server.connect_as("eve", crt, key, env.pki.ca_file), 'role "eve" does not exist')


def test_cn_mismatch_is_rejected(env: Env) -> None:
    crt, key = env.marc
    start = len(env.server.log_text())
    assert_rejected(
        env.server.connect_as("eve", crt, key, env.pki.ca_file),
        'certificate authentication failed for user "eve"',
    )
    env.server.wait_for_log(
        r"provided user name \(eve\) and authenticated user name \(marc\) do not match", start=start
    )


def test_cn_mismatch_with_existing_role_is_rejected(env: Env) -> None:
    crt, key = env.marc
    assert_rejected(
        env.server.connect_as("postgres", crt, key, env.pki.ca_file),
        'certificate authentication failed for user "postgres"',
    )


def test_client_cert_from_foreign_ca_is_rejected(env: Env) -> None:
    foreign = make_ca("Unrelated CA")
    crt, key = env.pki.client("marc", ca=foreign)
    start = len(env.server.log_text())
    proc = env.server.connect_as("marc", crt, key, env.pki.ca_file)
    assert_rejected(proc)
    assert "unknown ca" in proc.stderr or "certificate verify failed" in proc.stderr, proc.stderr
    env.server.wait_for_log(r"could not accept SSL connection: .*certificate verify failed", start=start)


def test_server_cert_from_other_ca_fails_verify_full(env: Env) -> None:
    foreign = make_ca("Unrelated CA")
    other_root = env.pki.dir / "foreign-root.crt"
    write_cert(other_root, foreign.cert)
    crt, key = env.marc
    assert_rejected(
        env.server.connect_as("marc", crt, key, other_root), "certificate verify failed"
    )


def test_non_tls_tcp_is_rejected(env: Env) -> None:
    crt, key = env.marc
    assert_rejected(
        env.server.connect_as("marc", crt, key, env.pki.ca_file, sslmode="disable"),
        "no pg_hba.conf entry",
    )


def test_served_certificate_is_server_cert(env: Env) -> None:
    served = env.server.served_certificate()
    assert served.serial_number == env.pki.server_cert.serial_number
    assert served == env.pki.server_cert


def test_stop_is_idempotent(shared_dir: Path) -> None:
    server, pki = start_server(shared_dir)
    with server:
        pid = server.pid
        assert server.sql("SELECT 1") == "1"
    assert not server.running
    assert not (server.data_dir / "postmaster.pid").exists()
    assert "postgres" not in _cmdline(pid)  # gone, or a zombie awaiting reaping by PID 1
    server.stop()  # second stop is a no-op
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.pid


def test_stop_survives_deleted_base_dir(shared_dir: Path) -> None:
    # Regression: a fixture removing the dir before stop() used to leak the server.
    server, _ = start_server(shared_dir)
    pid = server.pid
    shutil.rmtree(shared_dir)
    server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "postgres" in _cmdline(pid):
        time.sleep(0.05)
    assert "postgres" not in _cmdline(pid)


def _cmdline(pid: int) -> str:
    """Command line of *pid*; '' if it does not exist or is a zombie (exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_start_failure_reports_log_tail(shared_dir: Path) -> None:
    pki = make_pki(shared_dir / "certs")
    pki.server_key_file.chmod(0o644)  # PostgreSQL refuses group/world-readable keys
    server = PostgresServer(shared_dir, pki.server_cert_file, pki.server_key_file, pki.ca_file)
    with pytest.raises(RuntimeError, match="has group or world access") as info:
        server.start()
    assert "pg_ctl start failed" in str(info.value)
    assert not server.running
    assert not (server.data_dir / "postmaster.pid").exists()


def test_inaccessible_base_dir_fails_clearly(tmp_path: Path) -> None:
    # pytest's tmp_path chain is 0700 root: the postgres user cannot get in.
    pki_dir = tmp_path / "certs"
    pki = make_pki(pki_dir)
    server = PostgresServer(tmp_path, pki.server_cert_file, pki.server_key_file, pki.ca_file)
    with pytest.raises(RuntimeError, match="cannot reach"):
        server.start()
    assert not server.running


def wait_for_serial(server: PostgresServer, serial: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        current = server.served_certificate().serial_number
        if current == serial or time.monotonic() >= deadline:
            return current
        time.sleep(0.1)


def test_reload_serves_rotated_certificate(shared_dir: Path) -> None:
    server, pki = start_server(shared_dir)
    with server:
        server.create_user("marc")
        marc = pki.client("marc")
        old_serial = pki.server_cert.serial_number
        assert server.served_certificate().serial_number == old_serial

        new_cert, new_key = server_cert(pki.ca)
        assert new_cert.serial_number != old_serial
        replace_server_files(pki.server_cert_file, pki.server_key_file, new_cert, new_key)
        # Files changed but no SIGHUP yet: still the old certificate.
        assert server.served_certificate().serial_number == old_serial

        pid_before = server.pid
        server.reload()
        assert wait_for_serial(server, new_cert.serial_number) == new_cert.serial_number
        assert server.pid == pid_before  # reloaded in place, not restarted
        proc = server.connect_as("marc", *marc, pki.ca_file)
        assert (proc.returncode, proc.stdout.strip()) == (0, "marc"), proc.stderr


def test_reload_with_bad_key_keeps_old_certificate(shared_dir: Path) -> None:
    server, pki = start_server(shared_dir)
    with server:
        old_serial = pki.server_cert.serial_number
        new_cert, _ = server_cert(pki.ca)
        _, unrelated_key = server_cert(pki.ca)
        # Cert and key that do not belong together: the reload must be refused.
        replace_server_files(pki.server_cert_file, pki.server_key_file, new_cert, unrelated_key)
        start = len(server.log_text())
        server.reload()
        server.wait_for_log(r"SSL configuration was not reloaded", start=start)
        assert server.served_certificate().serial_number == old_serial


def test_reload_follows_swapped_symlinks(shared_dir: Path) -> None:
    """Server paths are symlinks into a generation dir; re-pointing them + SIGHUP rotates.

    PostgreSQL opens the configured names (following symlinks) on every reload,
    and checks the key permissions on the symlink's target.
    """
    pki = make_pki(shared_dir / "gen1")
    live = shared_dir / "live"
    live.mkdir(mode=0o755)
    for name in ("node.crt", "node.key", "ca.crt"):
        (live / name).symlink_to(pki.dir / name)
    server = PostgresServer(shared_dir, live / "node.crt", live / "node.key", live / "ca.crt")
    with server:
        assert server.served_certificate().serial_number == pki.server_cert.serial_number

        gen2 = shared_dir / "gen2"
        gen2.mkdir(mode=0o755)
        new_cert, new_key = server_cert(pki.ca)
        write_cert(gen2 / "ca.crt", pki.ca.cert)
        write_cert(gen2 / "node.crt", new_cert)
        write_client_key(gen2 / "node.key", new_key)
        install_server_key_permissions(gen2 / "node.key")
        for name in ("node.key", "node.crt", "ca.crt"):
            tmp = live / (name + ".tmp")
            tmp.symlink_to(gen2 / name)
            os.replace(tmp, live / name)

        server.reload()
        assert wait_for_serial(server, new_cert.serial_number) == new_cert.serial_number
        server.create_user("marc")
        proc = server.connect_as("marc", *pki.client("marc"), live / "ca.crt")
        assert (proc.returncode, proc.stdout.strip()) == (0, "marc"), proc.stderr
