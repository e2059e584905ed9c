"""One HTTP/1.1 request at a time per caller, parsed by httptools, over a few keep-alive sockets.

The node side's common case: a few requests to one Vault address, answered directly. urllib3
would do it as well, but loading it (with ``http.client``, ``email`` and ``importlib.metadata``)
cost a cold ``issue-node`` ~15-25 ms, a sixth of its run; h11, which did it before httptools,
cost ~7 % (its event classes are dataclasses, compiled at import). httptools is llhttp, Node.js's
HTTP parser, in C: it reads the answers (framing, chunks, keep-alive); this module writes the
requests, a line and a few headers, and adds the sockets, and nothing else: no redirects, no
proxies, no retries. The caller (``vault.HttpVault``) hands those to urllib3, which it loads only
then.

Thread-safe: each request takes an idle connection (or opens one) and gives it back when the
answer is complete and the server keeps it open.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httptools
import msgspec

from .config import header_safe

if TYPE_CHECKING:
    import ssl

__all__ = ["Answer", "ProtocolError", "Wire", "WireError", "request_bytes"]

_IDLE_MAX = 16        # idle connections kept per address: more than issue.MAX_PARALLEL
_HEAD_MAX = 65536     # an answer's status line and headers; Vault's take a few hundred bytes


class WireError(Exception):
    """The request failed below HTTP (refused, reset, timed out, TLS, a malformed answer); ``__cause__`` says how."""


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 answer (or its head is too long)."""


class _Conn(msgspec.Struct):
    sock: socket.socket

    def close(self) -> None:
        self.sock.close()


class Wire:
    """Requests to one ``host:port`` (plain or TLS), each over a keep-alive connection."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        self._host, self._port, self.tls, self._timeout = host, port, tls, timeout
        self._netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # What the resolver is given: an ASCII name (or address) as bytes, which skips the IDNA codec that a str
        # goes through (it and stringprep load on first use: ~1 % of a cold command); other names as they are.
        self._resolve: str | bytes = host.encode("ascii") if host.isascii() else host
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def request(self, method: str, target: str, body: bytes | None,
                headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); raises WireError."""
        request = request_bytes(method, target, self._netloc, body, headers)
        conn = self._take()
        try:
            answer = self._exchange(conn, request)
        except (OSError, ProtocolError) as exc:     # socket.timeout and ssl.SSLError are OSErrors
            conn.close()
            raise WireError(str(exc)) from exc
        if answer.keep_alive:
            self._give_back(conn)
        else:
            conn.close()
        return answer.status, answer.headers, answer.body

    def _take(self) -> _Conn:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if _idle_and_open(conn.sock):
                return conn
            conn.close()              # the server closed it (an idle timeout) while it waited here
        try:
            # (create_connection hands the host to getaddrinfo, which takes bytes; typeshed only lists str)
            sock = socket.create_connection((self._resolve, self._port), timeout=self._timeout)  # type: ignore[arg-type]
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self._host)
        except OSError as exc:
            raise WireError(str(exc)) from exc
        return _Conn(sock)

    def _give_back(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append(conn)
                return
        conn.close()

    @staticmethod
    def _exchange(conn: _Conn, request: bytes) -> Answer:
        conn.sock.sendall(request)
        answer = Answer()
        while not answer.feed(conn.sock.recv(65536)):
            pass
        return answer


# --- the protocol without the I/O, shared with ``stream`` --------------------------------------

def request_bytes(method: str, target: str, host: str, body: bytes | None,
                  headers: Sequence[tuple[str, str]]) -> bytes:
    """The bytes of one whole request (a body, when given, with its Content-Length).

    Every part is checked, so that no value can end a line early and add headers of its own;
    the error names the part, never the value (which may be a token)."""
    framing = [("Content-Length", str(len(body)))] if body is not None else []
    if not (method.isascii() and method.isalpha() and method.isupper()):
        raise ValueError("an HTTP method must be upper-case letters")
    if not (target.startswith("/") and header_safe(target) and " " not in target):
        raise ValueError("an HTTP request target must be a path of printable ASCII without spaces")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in [("Host", host), *framing, *headers]:
        if not (name.isascii() and name.replace("-", "").isalnum()):
            raise ValueError("an HTTP header name must be letters, digits and hyphens")
        if not header_safe(value):
            raise ValueError(f"the value of HTTP header {name} has a character a header cannot carry")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head + body if body else head


class Answer:
    """One response, parsed as its bytes arrive: ``feed`` it what the socket reads (``b""`` at the end
    of the stream) until it returns True. A connection closed before the answer is complete is a
    ConnectionResetError; bytes that are not an answer are a ProtocolError."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}         # names in lower case
        self.complete = False
        self.keep_alive = False                   # once complete: the connection can carry another request
        self._chunks: list[bytes] = []
        self._head = 0                            # bytes parsed while a head was incomplete (interim ones too)
        self._in_head = True
        self._parser = httptools.HttpResponseParser(self)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def feed(self, data: bytes | memoryview) -> bool:
        """True once the answer is complete. ``data`` is parsed before this returns (a reused buffer will do)."""
        if self.complete:
            if data:
                self.keep_alive = False           # bytes after the answer: the connection can't be trusted
            return True
        if not data:
            return self._at_end_of_stream()
        if self._in_head:
            # Only what fits in the bound is parsed while the head is incomplete: the read that ends the
            # head may bring much of the body with it, which is no long head.
            room = _HEAD_MAX - self._head
            head, data = data[:room], data[room:]
            self._head += len(head)
            self._parse(head)
            if self._in_head and data:
                raise ProtocolError(f"the answer's head is longer than {_HEAD_MAX} bytes")
        if data:
            self._parse(data)
        return self.complete

    def _parse(self, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:     # (an upgrade: nothing asked for one)
            if not self.complete:                 # (complete: bytes after the answer, refused by on_message_begin)
                raise ProtocolError(f"not an HTTP/1.1 answer: {exc}") from None
            self.keep_alive = False

    def _at_end_of_stream(self) -> bool:
        # An answer with neither Content-Length nor Transfer-Encoding runs until the server closes
        # (RFC 9112, 6.3); llhttp is only told about the end by a call httptools does not offer.
        if not self._in_head and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self.complete, self.keep_alive = True, False
            return True
        raise ConnectionResetError("Connection reset: Vault closed the connection before answering")

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise ProtocolError("bytes after the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._in_head = False

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:              # an interim answer (100 Continue): the real one follows
            self.headers, self._chunks, self._in_head = {}, [], True
            return
        self.complete, self.keep_alive = True, self._parser.should_keep_alive()


def _idle_and_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection is readable only when the server closed it (or broke the protocol)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
