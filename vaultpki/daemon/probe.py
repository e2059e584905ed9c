"""Which certificate is a server serving right now?

A reload signal is fire-and-forget, and a database that finds its new files
unusable keeps serving the old certificate (PostgreSQL logs "SSL configuration
was not reloaded"; CockroachDB logs and carries on). The only proof that a
rotation took is to connect and look, so the sync daemon compares the served
serial with the one it just wrote.

Two endpoint kinds: ``tls://host:port`` starts TLS at once (CockroachDB's DB
Console); ``postgres://host:port`` first sends PostgreSQL's 8-byte SSLRequest and
needs ``S`` back, which is what both PostgreSQL and CockroachDB's SQL port speak.
Nothing is verified on purpose: we want to see what is served, whatever it is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import struct
import time
from typing import Protocol

import msgspec
from cryptography import x509

from vaultpki.errors import ConfigError, ReloadError

__all__ = ["SCHEMES", "Endpoint", "EndpointProber", "Prober", "parse_endpoint", "served_certificate"]

#: Accepted schemes; ``postgresql`` (libpq's other spelling) is read as ``postgres``.
SCHEMES = ("tls", "postgres")
_ALIASES = {"postgresql": "postgres"}
#: PostgreSQL's SSLRequest: length 8, then the code 1234 << 16 | 5679.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


class Endpoint(msgspec.Struct, frozen=True):
    """A parsed ``scheme://host:port``; *host* is lower-case, IPv6 without brackets."""

    scheme: str
    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_endpoint(text: str) -> Endpoint:
    """``tls://host:port`` or ``postgres://host:port`` (IPv6 as ``[::1]``); ConfigError otherwise."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"endpoint {text!r}: {why}")

    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        raise bad("no scheme: write tls://host:port or postgres://host:port")
    scheme = _ALIASES.get(scheme.lower(), scheme.lower())
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme!r}: use tls:// (plain TLS) or postgres:// (SSLRequest, then TLS)")
    if any(c in rest for c in "/?#@"):
        raise bad("only scheme://host:port is allowed (no user, path or query)")
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or not isinstance(_ip(host.split("%")[0]), ipaddress.IPv6Address):
            raise bad("brackets must hold an IPv6 address, e.g. tls://[::1]:26257")
        if after and not after.startswith(":"):
            raise bad("expected :port after the IPv6 address")
        address, percent, zone = host.partition("%")
        host = address.lower() + percent + zone  # interface names in a zone id are case-sensitive
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:
        raise bad("an IPv6 address must be in brackets, e.g. tls://[::1]:26257")
    else:
        host, colon, port_text_ = rest.partition(":")
        port_text = port_text_ if colon else None
        if not host:
            raise bad("no host")
        host = host.lower()
        if _ip(host) is None and not _valid_hostname(host):
            raise bad(f"{host!r} is neither a host name nor an IP address")
    if port_text is None or port_text == "":
        raise bad("no port (CockroachDB: SQL 26257, DB Console 8080; PostgreSQL 5432)")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise bad(f"port {port_text!r} is not a number from 1 to 65535")
    return Endpoint(scheme, host, int(port_text))


def _valid_hostname(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def served_certificate(endpoint: str | Endpoint, timeout: float = 5.0, server_name: str | None = None) -> x509.Certificate:
    """Connect, handshake without verifying, and return the leaf the server presented.

    *timeout* bounds the whole probe. SNI is *server_name*, else the host unless
    it is an IP literal. Every failure is a ReloadError with a one-line reason.
    """
    ep = endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    sni = server_name if server_name is not None else (None if ep.is_ip else ep.host)
    try:
        with socket.create_connection((ep.host, ep.port), timeout=remaining()) as raw:
            if ep.scheme == "postgres":
                raw.settimeout(remaining())
                _ssl_request(raw, ep)
            raw.settimeout(remaining())
            with _client_context().wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
                _close_politely(tls, deadline - time.monotonic())
    except ReloadError:
        raise
    except TimeoutError:  # socket.timeout is TimeoutError since 3.10
        raise ReloadError(f"probe {ep}: no answer within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise ReloadError(f"probe {ep}: connection refused (is the server listening on {ep.address}?)") from None
    except socket.gaierror as exc:
        raise ReloadError(f"probe {ep}: cannot resolve {ep.host!r}: {exc.strerror}") from None
    except (ssl.SSLEOFError, ConnectionResetError):
        raise ReloadError(f"probe {ep}: the server closed the connection during the TLS handshake") from None
    except ssl.SSLError as exc:
        raise ReloadError(f"probe {ep}: TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ReloadError(f"probe {ep}: {(exc.strerror or str(exc)).lower()}") from None
    if not der:
        raise ReloadError(f"probe {ep}: the server presented no certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ReloadError(f"probe {ep}: the served certificate does not parse: {exc}") from None


def _close_politely(tls: ssl.SSLSocket, left: float) -> None:
    """End the session with a TLS close_notify and wait for the server's, then shut the socket down.

    Closing at once would leave what the server sent after the handshake (TLS 1.3 session tickets)
    unread, and the kernel answers unread data with a reset: PostgreSQL then logs "connection reset
    by peer" at every probe. Read to the server's close_notify instead; a server that will not say
    goodbye in time costs nothing, the certificate is already in hand."""
    if left <= 0:
        return
    with contextlib.suppress(OSError, ValueError):     # ssl.SSLError and timeouts are OSErrors
        tls.settimeout(left)
        tls.unwrap().shutdown(socket.SHUT_RDWR)


def _ssl_request(sock: socket.socket, ep: Endpoint) -> None:
    """PostgreSQL wire protocol: ask for TLS; ``S`` means go ahead, ``N`` means no TLS here."""
    try:
        sock.sendall(SSL_REQUEST)
        answer = sock.recv(1)
    except ConnectionResetError:  # e.g. a plain TLS port that cannot parse our 8 bytes
        answer = b""
    if answer == b"S":
        return
    if answer == b"N":
        raise ReloadError(f"probe {ep}: the server does not offer TLS (answered 'N' to SSLRequest)")
    if not answer:
        raise ReloadError(f"probe {ep}: the server closed the connection after SSLRequest (not a PostgreSQL-protocol port?)")
    raise ReloadError(f"probe {ep}: unexpected answer {answer!r} to SSLRequest (not a PostgreSQL-protocol port?)")


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Prober(Protocol):
    def served_serial(self) -> int: ...


class EndpointProber(msgspec.Struct, frozen=True):
    """The served serial of one endpoint; the endpoint is checked when constructed."""

    endpoint: str
    timeout: float = 5.0
    server_name: str | None = None

    def __post_init__(self) -> None:
        parse_endpoint(self.endpoint)          # a bad endpoint is a config error now, not at the first probe
        if not self.timeout > 0:
            raise ConfigError(f"probe timeout must be positive, not {self.timeout!r}")

    def served_serial(self) -> int:
        return served_certificate(parse_endpoint(self.endpoint), self.timeout, self.server_name).serial_number
