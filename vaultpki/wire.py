"""One HTTP/1.1 request at a time per caller, through h11 over a few keep-alive sockets.

The node side's common case: a few requests to one Vault address, answered directly. urllib3
would do it as well, but loading it (with ``http.client``, ``email`` and ``importlib.metadata``)
cost a cold ``issue-node`` ~15-25 ms, a sixth of its run. h11 is the protocol without the I/O;
this module adds the sockets, and nothing else: no redirects, no proxies, no retries. The caller
(``vault.HttpVault``) hands those to urllib3, which it loads only then.

Thread-safe: each request takes an idle connection (or opens one) and gives it back when the
answer is complete and the server keeps it open.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11
import msgspec

if TYPE_CHECKING:
    import ssl

__all__ = ["Answer", "Wire", "WireError", "next_cycle", "request_bytes"]

_IDLE_MAX = 16        # idle connections kept per address: more than issue.MAX_PARALLEL


class WireError(Exception):
    """The request failed below HTTP (refused, reset, timed out, TLS, a malformed answer); ``__cause__`` says how."""


class _Conn(msgspec.Struct):
    sock: socket.socket
    h11: h11.Connection

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
        conn = self._take()
        try:
            status, answer_headers, data = self._exchange(conn, method, target, body, headers)
        except (OSError, h11.ProtocolError) as exc:     # socket.timeout and ssl.SSLError are OSErrors
            conn.close()
            raise WireError(str(exc)) from exc
        if next_cycle(conn.h11):
            self._give_back(conn)
        else:
            conn.close()
        return status, answer_headers, data

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
        return _Conn(sock, h11.Connection(h11.CLIENT))

    def _give_back(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append(conn)
                return
        conn.close()

    def _exchange(self, conn: _Conn, method: str, target: str, body: bytes | None,
                  headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], bytes]:
        conn.sock.sendall(request_bytes(conn.h11, method, target, self._netloc, body, headers))
        answer = Answer()
        while not answer.take(conn.h11):
            conn.h11.receive_data(conn.sock.recv(65536))
        return answer.status, answer.headers, answer.body


# --- the protocol without the I/O, shared with ``stream`` --------------------------------------

def request_bytes(conn: h11.Connection, method: str, target: str, host: str, body: bytes | None,
                  headers: Sequence[tuple[str, str]]) -> bytes:
    """The bytes of one whole request (a body, when given, with its Content-Length)."""
    framing = [("Content-Length", str(len(body)))] if body is not None else []
    out = conn.send(h11.Request(method=method, target=target, headers=[("Host", host), *framing, *headers])) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


class Answer:
    """One response, read off an h11 connection: ``take`` what h11 has parsed, feeding it the socket's
    bytes, until it returns True."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}         # names in lower case
        self._chunks: list[bytes] = []

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def take(self, conn: h11.Connection) -> bool:
        """True once the response is complete; False when h11 needs more bytes. A connection closed
        before the answer is a ConnectionResetError."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                self._chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return True
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("Connection reset: Vault closed the connection before answering")


def next_cycle(conn: h11.Connection) -> bool:
    """Ready the connection for its next request; False when it must be closed instead (Connection:
    close, or a body read to EOF)."""
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


def _idle_and_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection is readable only when the server closed it (or broke the protocol)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
