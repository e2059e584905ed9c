"""HTTP safety whatever the HTTP library does by default, against hostile servers on loopback.

Each hostile "Vault" here misbehaves at the byte level (raw sockets, a TLS one with a CA made in the
test and trusted through ``vault.ca_cert``); ``vaultpki`` runs as users run it, in a subprocess:

- a redirect goes only to a configured Vault address, never to another host or from https to http:
  the token, the secret-id and the login body never reach the other server (it sees no connection);
- ``vault.timeout`` bounds the whole request: a 1 byte/s drip, an endless ``100 Continue``, a head
  that never ends and a body that never ends all stop at the deadline with one error line, and
  ``sync`` carries on to its next pass;
- every body is capped: a huge ``Content-Length``, endless chunks and an endless close-delimited body
  are refused in bounded memory (peak RSS read from /proc, address space limited to 1 GiB);
- proxies from the environment (HTTPS_PROXY, NO_PROXY) are honoured against the real OpenBao, and TLS
  host names are checked for DNS names and IP addresses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import NODE_HOSTS, SHORT, run_cli, toml_dump, tree
from .daemon_proc import SyncDaemon, msg
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

TOKEN = "hvs.SECRET-TOKEN-must-not-leak"
SECRET_ID = "SECRET-ID-must-not-leak"
TIMEOUT = 2          # vault.timeout of every hostile test, seconds
MIB = 1 << 20

# ----------------------------------------------------------------------------------------- a test CA


class LocalCa:
    """A CA made here, and server certificates from it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "http-safety test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                     .not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = directory / "test-ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A TLS server context whose certificate names exactly ``names`` (IP addresses or DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        tag = "-".join(names).replace(":", "_")
        cert_path, key_path = self.dir / f"{tag}.crt", self.dir / f"{tag}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context


# ----------------------------------------------------------------------------------- hostile servers

Behaviour = Callable[[socket.socket, bytes], None]


class Hostile:
    """A server on ``host`` that reads each request's head and body and hands the connection to
    ``behaviour``; with ``tls`` it speaks TLS first. Records every byte it was sent and each connection."""

    def __init__(self, behaviour: Behaviour | None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.behaviour, self.tls = behaviour, tls
        self.received = bytearray()
        self.connections = 0
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(30)
            request = self._read_request(conn)
            if request and self.behaviour is not None:
                self.behaviour(conn, request)
        except OSError:
            pass
        finally:
            conn.close()

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                self.received += data
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        self.received += head + b"\r\n\r\n" + body
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    started: list[Hostile] = []

    def start(behaviour: Behaviour | None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Hostile:
        server = Hostile(behaviour, host, tls)
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()


def path_of(request: bytes) -> str:
    return request.split(b" ", 2)[1].decode()


def redirect_to(target: str) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}{path_of(request)}\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    return behaviour


def for_seconds(seconds: float, stopped: threading.Event) -> Iterator[int]:
    """Counts until ``seconds`` have passed or the server stopped (an old client must end some day)."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and not stopped.is_set():
        yield i
        i += 1


# --------------------------------------------------------------------------------------- the CLI

def config_for(tmp_path: Path, addr: str, ca: LocalCa | None = None, auth: str = "token", **vault: Any) -> Path:
    section: dict[str, Any] = {"addr": addr, "timeout": TIMEOUT, "retry_for": "1s", **vault}
    if ca is not None:
        section["ca_cert"] = str(ca.path)
    if auth == "approle":
        secret = tmp_path / "secret-id"
        secret.write_text(SECRET_ID)
        secret.chmod(0o600)
        section |= {"auth": "approle", "role_id": "role-id-1", "secret_id_file": str(secret)}
    path = tmp_path / "vaultpki.toml"
    path.write_text(toml_dump({"certs_dir": str(tmp_path / "certs"), "vault": section, "pki": {"mount": "pki"},
                               "node": {"hosts": ["localhost"]}}))
    return path


def issue_node(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": TOKEN, **(env or {})}, timeout=120)



# ------------------------------------------------------------------------------------ redirects

@pytest.mark.parametrize("auth", ["token", "approle"])
@pytest.mark.parametrize("elsewhere", ["http-other-host", "https-other-host", "http-same-host-other-port"])
def test_a_redirect_away_from_the_configured_addresses_is_refused_and_nothing_leaks(
        hostile: Callable[..., Hostile], tmp_path: Path, auth: str, elsewhere: str) -> None:
    """A TLS "Vault" answers ``307 Location: <another origin>``: the other server must see no connection
    at all (so neither the token, nor the secret-id, nor any login body)."""
    ca = LocalCa(tmp_path)
    other = hostile(None, host="127.0.0.1" if elsewhere == "http-same-host-other-port" else "127.0.0.2")
    scheme = "https" if elsewhere.startswith("https") else "http"
    vault = hostile(redirect_to(f"{scheme}://{other.url.split('://')[1]}"), tls=ca.server_context("127.0.0.1"))
    result = issue_node(config_for(tmp_path, vault.url, ca, auth))
    time.sleep(0.2)                                     # a leaked request would have arrived by now
    assert other.connections == 0 and bytes(other.received) == b"", bytes(other.received)[:600]
    one_error_line(result, 1, "redirect to", "refused")
    assert TOKEN not in result.stderr and SECRET_ID not in result.stderr
    assert vault.connections >= 1
    assert tree(tmp_path / "certs") == {}


# ------------------------------------------------------------------------------------ the deadline

def drip_body(server_stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in for_seconds(60, server_stopped):
            conn.sendall(b" ")
            time.sleep(1)
    return behaviour


def endless_continue(server_stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        for _ in for_seconds(60, server_stopped):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.5)
    return behaviour


def endless_head(server_stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for i in for_seconds(60, server_stopped):
            conn.sendall(f"X-Slow-{i % 50}: x\r\n".encode())
            time.sleep(1)
    return behaviour


def never_closes(server_stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{")
        for _ in for_seconds(60, server_stopped):
            conn.sendall(b" ")
            time.sleep(1)
    return behaviour


SLOW = {"drip": drip_body, "endless-100-continue": endless_continue, "endless-head": endless_head,
        "never-closes": never_closes}


@pytest.mark.parametrize("kind", sorted(SLOW))
def test_vault_timeout_bounds_the_whole_request(hostile: Callable[..., Hostile], tmp_path: Path, kind: str) -> None:
    """Each of these keeps every single read short; only a deadline on the whole request ends it."""
    stopped = threading.Event()
    vault = hostile(SLOW[kind](stopped))
    try:
        start = time.monotonic()
        result = issue_node(config_for(tmp_path, vault.url))
        elapsed = time.monotonic() - start
    finally:
        stopped.set()
    one_error_line(result, 1, f"within {TIMEOUT}s")
    # one try (TIMEOUT) is already past retry_for (1 s): no second one; the rest is start-up on a busy machine
    assert elapsed < TIMEOUT + 1 + 6, elapsed
    assert tree(tmp_path / "certs") == {}


def test_sync_carries_on_after_a_request_that_hit_the_deadline(hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    stopped = threading.Event()
    vault = hostile(drip_body(stopped))
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({"certs_dir": str(tmp_path / "certs"), "mode": "standard", **SHORT,
                                 "vault": {"addr": vault.url, "timeout": TIMEOUT, "retry_for": "1s"},
                                 "pki": {"mount": "pki"}, "node": {"hosts": list(NODE_HOSTS)}}))
    try:
        with SyncDaemon(config, {"VAULT_TOKEN": TOKEN}) as daemon:
            first = daemon.wait_for(msg("pass failed; retrying"), 30)
            assert f"within {TIMEOUT}s" in first["error"], first
            daemon.wait_for(msg("pass failed; retrying"), 30)          # the next pass came, and failed the same way
            assert daemon.proc.poll() is None
            assert daemon.stop() == 0
    finally:
        stopped.set()


# ------------------------------------------------------------------------------------ body caps

def huge_length(stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8589934592\r\n\r\n")
        block = b"0" * MIB
        for _ in for_seconds(60, stopped):
            conn.sendall(block)
    return behaviour


def endless_chunks(stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"100000\r\n" + b"0" * MIB + b"\r\n"
        for _ in for_seconds(60, stopped):
            conn.sendall(chunk)
    return behaviour


def endless_close_delimited(stopped: threading.Event) -> Behaviour:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        block = b"0" * MIB
        for _ in for_seconds(60, stopped):
            conn.sendall(block)
    return behaviour


HUGE = {"huge-content-length": huge_length, "endless-chunks": endless_chunks,
        "endless-close-delimited": endless_close_delimited}

# Runs vaultpki with its address space limited to 1 GiB (exec keeps the pid, so /proc/<pid> is vaultpki's).
LIMITED = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
           "os.execv(sys.executable, [sys.executable, '-m', 'vaultpki', *sys.argv[1:]])")


def high_water_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_a_runaway_body_is_refused_in_bounded_memory(hostile: Callable[..., Hostile], tmp_path: Path, kind: str) -> None:
    stopped = threading.Event()
    vault = hostile(HUGE[kind](stopped))
    config = config_for(tmp_path, vault.url, timeout=30)       # the cap, not the deadline, must end it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env["VAULT_TOKEN"] = TOKEN
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", LIMITED, "--config", str(config), "issue-node"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    try:
        while proc.poll() is None and time.monotonic() - start < 90:
            peak = max(peak, high_water_mib(proc.pid) or 0.0)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=30)
    finally:
        stopped.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - start
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    one_error_line(result, 1, "refused (at most" if kind == "huge-content-length" else "bytes refused")
    assert peak < 200, f"peak RSS {peak:.0f} MiB"
    assert elapsed < 20, elapsed
    assert tree(tmp_path / "certs") == {}


# ------------------------------------------------------------------------------ proxies and TLS names

class ConnectProxy:
    """A CONNECT-only proxy on loopback that records each target and tunnels to it."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.targets.append(f"{method} {target}")
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pipes = {conn: upstream, upstream: conn}
                while True:
                    ready, _, _ = select.select(list(pipes), [], [], 30)
                    if not ready:
                        return
                    for side in ready:
                        data = side.recv(65536)
                        if not data:
                            return
                        pipes[side].sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def tls_bao() -> Iterator[DevServer]:
    with DevServer(tls=True) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token, verify=server.ca_cert)
        pki = PkiNames(mount="proxy-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                       user_role="user", ui_mount=None, ui_role=None)
        provision(admin, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS,
                                                    root_mount="proxy-root"))
        yield server


def real_config(tmp_path: Path, server: DevServer, addr: str) -> Path:
    path = tmp_path / "vaultpki.toml"
    path.write_text(toml_dump({"certs_dir": str(tmp_path / "certs"), "mode": "standard", "ttl": "1h",
                               "vault": {"addr": addr, "ca_cert": server.ca_cert or "", "retry_for": "1s"},
                               "pki": {"mount": "proxy-crdb"}, "node": {"hosts": list(NODE_HOSTS)}}))
    return path


def no_proxies() -> dict[str, str]:
    """The variables the test sets itself win; the developer's proxies must not be in the way."""
    return {k: "" for k in os.environ if k.lower().endswith("_proxy")}


@pytest.mark.parametrize("bypass", [False, True])
def test_https_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(tls_bao: DevServer, tmp_path: Path,
                                                                          bypass: bool) -> None:
    proxy = ConnectProxy()
    try:
        env = {**no_proxies(), "HTTPS_PROXY": proxy.url, "VAULT_TOKEN": tls_bao.root_token}
        if bypass:
            env["NO_PROXY"] = "127.0.0.1"
        result = run_cli(["--config", str(real_config(tmp_path, tls_bao, tls_bao.addr)), "issue-node"], env)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "certs" / "node.crt").is_file()
        port = tls_bao.addr.rsplit(":", 1)[1]
        assert proxy.targets == ([] if bypass else [f"CONNECT 127.0.0.1:{port}"] * len(proxy.targets))
        assert bypass or proxy.targets
    finally:
        proxy.close()


def test_a_dns_name_in_vaults_certificate_is_accepted(tls_bao: DevServer, tmp_path: Path) -> None:
    addr = tls_bao.addr.replace("127.0.0.1", "localhost")
    result = run_cli(["--config", str(real_config(tmp_path, tls_bao, addr)), "issue-node"],
                     {**no_proxies(), "VAULT_TOKEN": tls_bao.root_token})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("addr_host", "cert_names", "reason"), [
    ("127.0.0.1", ("vault.example",), "IP address mismatch"),
    ("localhost", ("127.0.0.1",), "Hostname mismatch"),
])
def test_a_certificate_for_another_name_is_refused(hostile: Callable[..., Hostile], tmp_path: Path, addr_host: str,
                                                   cert_names: tuple[str, ...], reason: str) -> None:
    """Signed by the trusted CA, but for another name: the TLS name check refuses it before any request."""
    ca = LocalCa(tmp_path)
    vault = hostile(redirect_to("http://127.0.0.2:1"), tls=ca.server_context(*cert_names))
    result = issue_node(config_for(tmp_path, vault.url.replace("127.0.0.1", addr_host), ca))
    one_error_line(result, 1, "TLS connection to Vault", reason)
    assert TOKEN.encode() not in bytes(vault.received)
