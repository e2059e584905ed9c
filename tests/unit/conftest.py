"""Shared fixtures for the unit tests: a tiny in-memory PKI built with ``cryptography``.

Everything is deterministic in time: certificates are dated around ``NOW`` and the
code under test is always handed ``now`` explicitly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vaultpki.core.snapshot import DirState, FileState

UTC = dt.UTC
NOW = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see the developer's VAULT_* / VAULTPKI_* variables."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "VAULTPKI_")):
            monkeypatch.delenv(name)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def chain_pem(self, *more: Issued) -> bytes:
        return self.cert_pem + b"".join(m.cert_pem for m in more)


_UNSET: object = object()


class Pki:
    """Builds CAs and leaves. All keys are EC P-256 (fast to generate)."""

    now = NOW

    @staticmethod
    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def _name(cn: str | None, ou: str | None = None) -> x509.Name:
        attrs = []
        if ou is not None:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        if cn is not None:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attrs)

    def ca(
        self,
        cn: str,
        issuer: Issued | None = None,
        *,
        not_before: dt.datetime = NOW - 365 * DAY,
        not_after: dt.datetime = NOW + 3650 * DAY,
        ekus: Iterable[x509.ObjectIdentifier] | None = None,
        is_ca: bool = True,
        key_cert_sign: bool = True,
    ) -> Issued:
        key = self.new_key()
        subject = self._name(cn)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                    crl_sign=key_cert_sign, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        )
        if ekus is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
        return Issued(cert, key)

    def leaf(
        self,
        cn: str | None,
        issuer: Issued,
        *,
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        uris: Iterable[str] = (),
        ekus: Iterable[x509.ObjectIdentifier] | None = (SERVER, CLIENT),
        is_ca: bool | None = False,
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 90 * DAY,
        ou: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        key = key or self.new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._name(cn, ou))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if is_ca is not None:
            builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if ekus is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return Issued(cert, key)


@dataclass(frozen=True)
class CaSet:
    root: Issued          # node CA root ("ca.crt")
    inter: Issued         # intermediate under root; leaves are usually issued here
    other: Issued         # an unrelated CA
    client_root: Issued   # the split-ca client CA ("ca-client.crt")


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def cas(pki: Pki) -> CaSet:
    root = pki.ca("Test Root CA")
    return CaSet(
        root=root,
        inter=pki.ca("Test Intermediate CA", root),
        other=pki.ca("Unrelated CA"),
        client_root=pki.ca("Test Client CA"),
    )


@pytest.fixture
def now() -> dt.datetime:
    return NOW


def make_dir_state(
    files: Mapping[str, bytes | FileState],
    *,
    key_mode: int = 0o600,
    uid: int = 1000,
    gid: int = 1000,
    service_gid: int = 1000,
    path: str = "/certs",
) -> DirState:
    """A DirState as the store would report it; keys get ``key_mode``, certs 0644."""
    entries: dict[str, FileState] = {}
    for name, value in files.items():
        if isinstance(value, FileState):
            entries[name] = value
            continue
        mode = key_mode if name.endswith(".key") else 0o644
        entries[name] = FileState(name, mode=mode, uid=uid, gid=gid, data=value)
    return DirState(path, True, entries, service_gid=service_gid)


@pytest.fixture(scope="session")
def dir_state() -> Callable[..., DirState]:
    return make_dir_state


@pytest.fixture(scope="session")
def ekus() -> tuple[x509.ObjectIdentifier, x509.ObjectIdentifier]:
    """(serverAuth, clientAuth) OIDs."""
    return SERVER, CLIENT


# --------------------------------------------------------------------- a loopback HTTP server

Handler = Callable[[str, str, dict[str, str], Any], tuple[int, dict[str, str], Any]]


DROP = object()
"""A reply that is no answer: the server closes the connection instead."""


class Recorded:
    """What a loopback server (the ``server`` fixture) was sent; ``handler`` decides each answer:
    ``(method, path, headers, body) -> (status, extra headers, JSON reply or raw bytes or None or DROP)``.
    ``peers``: the client port of each request, to tell connections apart."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.peers: list[int] = []


@pytest.fixture
def server() -> Iterator[Callable[..., tuple[str, Recorded]]]:
    """Start a loopback HTTP server; ``keep_alive=True`` answers in HTTP/1.1 and keeps connections open."""
    started: list[ThreadingHTTPServer] = []

    def start(handler: Handler, keep_alive: bool = False) -> tuple[str, Recorded]:
        record = Recorded(handler)

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                record.requests.append((self.command, self.path, headers, body))
                record.peers.append(self.client_address[1])
                status, extra, reply = record.handler(self.command, self.path, headers, body)
                if reply is DROP:
                    self.close_connection = True
                    return
                data = reply if isinstance(reply, bytes) else b"" if reply is None else json.dumps(reply).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_LIST = _any  # noqa: N815

            def log_message(self, *args: object) -> None:
                return None

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", record

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()
