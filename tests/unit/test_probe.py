"""vaultpki.daemon.probe against real loopback servers: plain TLS, PostgreSQL's SSLRequest, and liars.

Each server runs in a thread on an ephemeral port, serves a certificate made here,
and records the SNI it was sent, so the tests see exactly what a client sees.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.daemon.probe import SSL_REQUEST, Endpoint, EndpointProber, parse_endpoint, served_certificate
from vaultpki.errors import ConfigError, ReloadError

UNSET = object()


def make_cert(directory: Path, cn: str = "node") -> tuple[Path, Path, int]:
    """A self-signed server certificate and key on disk; returns (cert, key, serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(serial).not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{serial}.crt", directory / f"{serial}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, serial


class Server:
    """A one-thread loopback server. *mode*: tls, postgres, refuse-tls, silent, close, close-after-request, http."""

    def __init__(self, mode: str, cert: tuple[Path, Path, int], host: str = "127.0.0.1") -> None:
        self.mode = mode
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.port = int(self.listener.getsockname()[1])
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.sni_callback = self._record_sni
        self.serve(cert)
        self.sni: list[str | None] = []
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if mode != "silent":  # silent: the kernel completes TCP connects, nobody ever answers
            self._thread.start()

    def serve(self, cert: tuple[Path, Path, int]) -> None:
        """Serve *cert* on every later handshake (a reload, as the database would do it)."""
        self.context.load_cert_chain(cert[0], cert[1])

    def _record_sni(self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        self.sni.append(server_name)

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # listener closed
            with conn:
                conn.settimeout(5)
                try:
                    self._handle(conn)
                except OSError:
                    pass  # the client's failure is what the test checks

    def _handle(self, conn: socket.socket) -> None:
        if self.mode == "close":
            return
        if self.mode == "http":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            conn.recv(1024)
            return
        if self.mode in ("postgres", "refuse-tls", "close-after-request"):
            self.requests.append(_recv_exactly(conn, 8))
            if self.mode == "close-after-request" or self.requests[-1] != SSL_REQUEST:
                return  # PostgreSQL hangs up on a startup packet it cannot parse
            conn.sendall(b"S" if self.mode == "postgres" else b"N")
            if self.mode == "refuse-tls":
                conn.recv(1024)
                return
        with self.context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # hold the connection until the client hangs up

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass  # never listened to by the thread ("silent") or already shut
        self.listener.close()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., tuple[Server, int]]]:
    """``server(mode, host=...)`` -> (running server, serial it serves)."""
    started: list[Server] = []

    def start(mode: str, host: str = "127.0.0.1") -> tuple[Server, int]:
        cert = make_cert(tmp_path)
        started.append(Server(mode, cert, host))
        return started[-1], cert[2]

    yield start
    for each in started:
        each.close()


# ----------------------------------------------------------------- what is served


def test_plain_tls_endpoint_returns_the_served_certificate(server: Callable[..., tuple[Server, int]]) -> None:
    srv, serial = server("tls")

    cert = served_certificate(f"tls://127.0.0.1:{srv.port}")

    assert cert.serial_number == serial
    assert cert.subject.rfc4514_string() == "CN=node"


def test_postgres_endpoint_sends_sslrequest_then_does_tls(server: Callable[..., tuple[Server, int]]) -> None:
    srv, serial = server("postgres")

    assert served_certificate(f"postgres://127.0.0.1:{srv.port}").serial_number == serial
    assert srv.requests == [b"\x00\x00\x00\x08\x04\xd2\x16\x2f"]  # length 8, 1234 << 16 | 5679
    assert SSL_REQUEST == srv.requests[0]


def test_prober_sees_a_reloaded_certificate(tmp_path: Path, server: Callable[..., tuple[Server, int]]) -> None:
    srv, first = server("postgres")
    prober = EndpointProber(f"postgres://localhost:{srv.port}", timeout=5)
    assert prober.served_serial() == first

    _, _, second = new = make_cert(tmp_path)
    srv.serve(new)

    assert prober.served_serial() == second != first


def test_ipv6_literal_endpoint(server: Callable[..., tuple[Server, int]]) -> None:
    srv, serial = server("tls", host="::1")

    assert EndpointProber(f"tls://[::1]:{srv.port}", timeout=5).served_serial() == serial
    assert srv.sni == [None]  # IP literals are never sent as SNI


@pytest.mark.parametrize(
    ("host", "server_name", "expected"),
    [
        pytest.param("localhost", None, "localhost", id="host-name-is-sni"),
        pytest.param("127.0.0.1", None, None, id="ip-literal-has-no-sni"),
        pytest.param("127.0.0.1", "node1.db.internal", "node1.db.internal", id="explicit-server-name"),
        pytest.param("localhost", "node1.db.internal", "node1.db.internal", id="explicit-overrides-host"),
    ],
)
def test_sni(server: Callable[..., tuple[Server, int]], host: str, server_name: str | None, expected: str | None) -> None:
    srv, _ = server("tls")

    served_certificate(f"tls://{host}:{srv.port}", server_name=server_name)

    assert srv.sni == [expected]


# ----------------------------------------------------------------- failures


def test_closed_port_is_connection_refused() -> None:
    with socket.socket() as bound_not_listening:  # holds the port, so nothing else can take it meanwhile
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        with pytest.raises(ReloadError, match=f"^probe tls://127.0.0.1:{port}: connection refused"):
            served_certificate(f"tls://127.0.0.1:{port}")


@pytest.mark.parametrize("scheme", ["tls", "postgres"])
def test_server_that_never_answers_times_out(server: Callable[..., tuple[Server, int]], scheme: str) -> None:
    srv, _ = server("silent")
    started = time.monotonic()

    with pytest.raises(ReloadError, match=f"^probe {scheme}://127.0.0.1:{srv.port}: no answer within 0.5s$"):
        served_certificate(f"{scheme}://127.0.0.1:{srv.port}", timeout=0.5)

    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("scheme", "mode", "error"),
    [
        pytest.param("postgres", "refuse-tls", r"the server does not offer TLS \(answered 'N' to SSLRequest\)$",
                     id="postgres-without-ssl"),
        pytest.param("postgres", "close-after-request", r"the server closed the connection after SSLRequest \(",
                     id="closed-after-sslrequest"),
        pytest.param("postgres", "tls", "the server closed the connection after SSLRequest", id="postgres-probe-of-a-tls-port"),
        pytest.param("tls", "postgres", "the server closed the connection during the TLS handshake$",
                     id="tls-probe-of-a-postgres-port"),
        pytest.param("tls", "http", "TLS handshake failed: ", id="not-tls-at-all"),
        pytest.param("tls", "close", "the server closed the connection during the TLS handshake$", id="hang-up"),
    ],
)
def test_protocol_failures_are_one_line_reload_errors(
    server: Callable[..., tuple[Server, int]], scheme: str, mode: str, error: str,
) -> None:
    srv, _ = server(mode)

    with pytest.raises(ReloadError, match=f"^probe {scheme}://127.0.0.1:{srv.port}: {error}") as caught:
        served_certificate(f"{scheme}://127.0.0.1:{srv.port}", timeout=1)

    assert "\n" not in str(caught.value)


def test_unresolvable_host() -> None:
    with pytest.raises(ReloadError, match="cannot resolve 'no-such-host.invalid'"):
        served_certificate("tls://no-such-host.invalid:26257", timeout=5)


def test_bad_endpoints_are_config_errors_before_any_connection() -> None:
    with pytest.raises(ConfigError):
        served_certificate("127.0.0.1:26257")
    with pytest.raises(ConfigError):
        EndpointProber("tls://127.0.0.1", timeout=5)
    with pytest.raises(ConfigError, match="timeout must be positive"):
        EndpointProber("tls://127.0.0.1:1", timeout=0)


# ----------------------------------------------------------------- parse_endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("tls://localhost:8080", Endpoint("tls", "localhost", 8080), id="tls-host"),
        pytest.param("postgres://127.0.0.1:26257", Endpoint("postgres", "127.0.0.1", 26257), id="postgres-ipv4"),
        pytest.param("postgresql://db.example.com:5432", Endpoint("postgres", "db.example.com", 5432), id="postgresql-alias"),
        pytest.param("TLS://Node1.DB.Internal:8080", Endpoint("tls", "node1.db.internal", 8080), id="case-folded"),
        pytest.param("tls://[::1]:26257", Endpoint("tls", "::1", 26257), id="ipv6-loopback"),
        pytest.param("postgres://[2001:DB8::10]:26257", Endpoint("postgres", "2001:db8::10", 26257), id="ipv6"),
        pytest.param("tls://[FE80::1%Eth0]:26257", Endpoint("tls", "fe80::1%Eth0", 26257), id="ipv6-zone-keeps-case"),
        pytest.param(" tls://node_1.internal:1 ", Endpoint("tls", "node_1.internal", 1), id="spaces-underscore-port-1"),
        pytest.param("tls://node1.db.internal.:65535", Endpoint("tls", "node1.db.internal.", 65535), id="fqdn-top-port"),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("", "no scheme", id="empty"),
        pytest.param("localhost:26257", "no scheme", id="no-scheme"),
        pytest.param("https://localhost:8080", "unknown scheme 'https'", id="https"),
        pytest.param("tcp://localhost:26257", "unknown scheme 'tcp'", id="tcp"),
        pytest.param("tls://localhost", "no port", id="no-port"),
        pytest.param("tls://localhost:", "no port", id="empty-port"),
        pytest.param("tls://[::1]", "no port", id="ipv6-no-port"),
        pytest.param("tls://localhost:0", "port '0' is not a number from 1 to 65535", id="port-zero"),
        pytest.param("tls://localhost:65536", "port '65536' is not a number from 1 to 65535", id="port-too-big"),
        pytest.param("tls://localhost:-1", "is not a number from 1 to 65535", id="port-negative"),
        pytest.param("tls://localhost:8o80", "is not a number from 1 to 65535", id="port-letters"),
        pytest.param("tls://localhost:８０", "is not a number from 1 to 65535", id="port-non-ascii-digits"),
        pytest.param("tls://:26257", "no host", id="no-host"),
        pytest.param("tls://::1:26257", "IPv6 address must be in brackets", id="ipv6-without-brackets"),
        pytest.param("tls://[127.0.0.1]:26257", "brackets must hold an IPv6 address", id="ipv4-in-brackets"),
        pytest.param("tls://[::1:26257", "brackets must hold an IPv6 address", id="unclosed-bracket"),
        pytest.param("tls://[::1]26257", "expected :port", id="no-colon-after-bracket"),
        pytest.param("postgres://root@localhost:26257", "no user, path or query", id="user"),
        pytest.param("postgres://localhost:26257/defaultdb?sslmode=verify-full", "no user, path or query", id="path-query"),
        pytest.param("tls://bad host:8080", "neither a host name nor an IP address", id="space-in-host"),
        pytest.param("tls://-node.internal:8080", "neither a host name nor an IP address", id="leading-hyphen"),
        pytest.param("tls://node..internal:8080", "neither a host name nor an IP address", id="empty-label"),
    ],
)
def test_parse_endpoint_rejects(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        parse_endpoint(text)
    assert str(caught.value).startswith(f"endpoint {text!r}: ")


@pytest.mark.parametrize(
    "text", ["tls://localhost:8080", "postgres://127.0.0.1:26257", "tls://[::1]:26257", "postgres://[2001:db8::10]:5432"],
)
def test_endpoint_round_trips(text: str) -> None:
    assert str(parse_endpoint(text)) == text
    assert parse_endpoint(str(parse_endpoint(text))) == parse_endpoint(text)
