"""vaultpki.wire (and the bulk path's stream, over the same parser): keep-alive reuse, servers that close, framing, and
failures below HTTP, against raw loopback sockets."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultpki.config import parse
from vaultpki.devserver import free_port
from vaultpki.stream import Endpoint, Post, exchange
from vaultpki.vault import HttpVault
from vaultpki.wire import Answer as Parsed
from vaultpki.wire import ProtocolError, Wire, WireError, request_bytes

Answer = Callable[[bytes], bytes | None]          # the request's bytes -> what to send back (None: nothing)


class RawServer:
    """Accepts connections on loopback; answers each request with ``answer``; ``close_after`` closes the
    connection once it has answered. Counts the connections it accepted."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer, self.close_after = answer, close_after
        self.accepted = 0
        self.closed = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            self._answer_all(conn)
        finally:
            conn.close()
            self.closed += 1

    def _answer_all(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += conn.recv(65536)
            request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
            reply = self.answer(request)
            if reply is None:
                time.sleep(5)
                return
            conn.sendall(reply)
            if self.close_after:
                return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer, close_after: bool = False) -> RawServer:
        servers.append(RawServer(answer, close_after))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def ok(body: bytes = b'{"data": {}}', extra: bytes = b"") -> Answer:
    return lambda _request: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_requests_reuse_one_keep_alive_connection(raw: Any) -> None:
    server = raw(ok())
    wire = Wire("127.0.0.1", server.port, None, 5)
    for _ in range(3):
        assert wire.request("GET", "/v1/x", None, []) == (200, {"content-length": "12"}, b'{"data": {}}')
    assert server.accepted == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(raw: Any) -> None:
    """The server answers in keep-alive HTTP/1.1 and then closes (an idle timeout): the next request
    notices before sending and opens a new connection."""
    server = raw(ok(), close_after=True)
    wire = Wire("127.0.0.1", server.port, None, 5)
    assert wire.request("POST", "/v1/x", b"{}", [])[0] == 200
    deadline = time.monotonic() + 5
    while server.closed < 1 and time.monotonic() < deadline:         # the server has closed its side
        time.sleep(0.01)
    assert wire.request("POST", "/v1/x", b"{}", [])[0] == 200
    assert server.accepted == 2


@pytest.mark.parametrize(("reply", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsealed", b"sealed"),
])
def test_framing_chunked_and_closing_answers(raw: Any, reply: bytes, body: bytes) -> None:
    server = raw(lambda _request: reply)
    wire = Wire("127.0.0.1", server.port, None, 5)
    assert wire.request("GET", "/", None, [])[2] == body
    assert wire.request("GET", "/", None, [])[2] == body             # a closed connection is not reused


def test_what_is_sent_is_the_method_target_host_length_and_headers(raw: Any) -> None:
    seen: list[bytes] = []
    server = raw(lambda request: seen.append(request) or ok()(request))
    Wire("127.0.0.1", server.port, None, 5).request("LIST", "/v1/pki/certs", b'{"a": 1}', [("X-Vault-Token", "t")])
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"LIST /v1/pki/certs HTTP/1.1" and body == b'{"a": 1}'
    assert {b"host: 127.0.0.1:%d" % server.port, b"content-length: 8", b"x-vault-token: t"} <= {ln.lower() for ln in lines[1:]}


def test_refused_and_silent_servers_are_wire_errors(raw: Any) -> None:
    with pytest.raises(WireError) as refused:
        Wire("127.0.0.1", free_port(), None, 5).request("GET", "/", None, [])
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    silent = raw(lambda _request: None)
    start = time.monotonic()
    with pytest.raises(WireError, match="timed out"):
        Wire("127.0.0.1", silent.port, None, 0.3).request("GET", "/", None, [])
    assert time.monotonic() - start < 3


def test_a_missing_vault_ca_file_is_one_tls_line_and_not_retried(tmp_path: Path) -> None:
    cfg = parse({"vault": {"addr": f"https://127.0.0.1:{free_port()}", "ca_cert": str(tmp_path / "absent.pem"),
                           "retry_for": "30s"}}, {"VAULT_TOKEN": "t"}).vault
    start = time.monotonic()
    with pytest.raises(Exception, match="TLS set-up for Vault at https://127.0.0.1:.* failed: .*No such file") as info:
        HttpVault(cfg, one_shot=True, env={}).sign("pki", "node", "CSR", None, None)
    assert "\n" not in str(info.value) and time.monotonic() - start < 5


def test_an_answer_without_length_runs_until_the_server_closes(raw: Any) -> None:
    server = raw(lambda _request: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", close_after=True)
    wire = Wire("127.0.0.1", server.port, None, 5)
    assert wire.request("GET", "/", None, []) == (200, {"content-type": "text/plain"}, b"until the end")
    assert wire.request("GET", "/", None, [])[2] == b"until the end"
    assert server.accepted == 2                                       # such a connection is never reused


def test_an_interim_100_continue_is_passed_over(raw: Any) -> None:
    server = raw(lambda request: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")(request))  # type: ignore[operator]
    wire = Wire("127.0.0.1", server.port, None, 5)
    assert wire.request("POST", "/", b"{}", []) == (200, {"content-length": "5"}, b"final")
    assert wire.request("POST", "/", b"{}", [])[2] == b"final"
    assert server.accepted == 1


@pytest.mark.parametrize(("reply", "needle"), [
    pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.1 answer", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 "not an HTTP/1.1 answer", id="length-and-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", "longer than 65536 bytes", id="huge-head"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection", id="cut-short"),
])
def test_a_malformed_or_cut_answer_is_a_wire_error(raw: Any, reply: bytes, needle: str) -> None:
    server = raw(lambda _request: reply, close_after=True)
    with pytest.raises(WireError, match=needle):
        Wire("127.0.0.1", server.port, None, 5).request("GET", "/", None, [])


def test_bytes_after_the_answer_mean_the_connection_is_not_reused(raw: Any) -> None:
    server = raw(lambda request: ok(b"one")(request) + b"HTTP/1.1 200 OK\r\n")  # type: ignore[operator]
    wire = Wire("127.0.0.1", server.port, None, 5)
    assert wire.request("GET", "/", None, [])[2] == b"one"
    assert wire.request("GET", "/", None, [])[2] == b"one"
    assert server.accepted == 2


@pytest.mark.parametrize(("method", "target", "headers", "needle"), [
    pytest.param("GET", "/v1/x", [("X-Vault-Token", "t\r\nX-Evil: 1")], "X-Vault-Token", id="value-line-break"),
    pytest.param("GET", "/v1/x", [("X-Vault-Token", "t\u00e9")], "X-Vault-Token", id="value-non-ascii"),
    pytest.param("GET", "/v1/x", [("X-Evil: 1\r\nX", "t")], "header name", id="name"),
    pytest.param("GET", "/v1/x HTTP/1.0\r\nX-Evil: 1", [], "request target", id="target"),
    pytest.param("GET /", "/v1/x", [], "method", id="method"),
])
def test_no_part_of_a_request_can_add_a_line_and_the_error_never_shows_the_value(
        method: str, target: str, headers: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        request_bytes(method, target, "vault:8200", None, headers)
    assert "Evil" not in str(info.value) and "t\u00e9" not in str(info.value)


def test_the_parser_reads_an_answer_fed_a_byte_at_a_time() -> None:
    """Framing does not depend on how the bytes arrive: chunked, one byte per read, keep-alive kept."""
    answer = Parsed()
    data = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    done = [answer.feed(data[i:i + 1]) for i in range(len(data))]
    assert done[-1] and not any(done[:-1])
    assert (answer.status, answer.headers, answer.body, answer.keep_alive) == (
        201, {"transfer-encoding": "chunked", "x-a": "b"}, b"abc", True)


ANSWERS = [   # (bytes, ends with the stream, what it is: status, body, keep-alive)
    (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", False, (200, b"hello world", True)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
     False, (200, b"hello world", True)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}", False, (404, b"{}", True)),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", True, (200, b"until the end", False)),
    (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 6\r\n\r\nsealed", False, (503, b"sealed", False)),
    (b"HTTP/1.1 204 No Content\r\n\r\n", False, (204, b"", True)),
]


@given(which=st.integers(0, len(ANSWERS) - 1), cuts=st.sets(st.integers(1, 200), max_size=12))
def test_framing_does_not_depend_on_where_the_reads_split(which: int, cuts: set[int]) -> None:
    data, ends_with_stream, expected = ANSWERS[which]
    edges = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    answer = Parsed()
    done = [answer.feed(data[a:b]) for a, b in itertools.pairwise(edges)]
    if ends_with_stream:
        assert not any(done) and answer.feed(b"")
    else:
        assert done[-1] and not any(done[:-1])
    assert (answer.status, answer.body, answer.keep_alive) == expected


def test_only_the_head_counts_against_its_bound() -> None:
    """A read that ends a short head may bring a large body with it (a long LIST, say): that is no long head."""
    answer = Parsed()
    assert not answer.feed(b"HTTP/1.1 200 OK\r\n")
    assert answer.feed(b"Content-Length: 70000\r\n\r\n" + b"x" * 70000)
    assert len(answer.body) == 70000
    with pytest.raises(ProtocolError, match="longer than 65536"):
        Parsed().feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000)


def test_http_1_0_and_connection_close_answers_are_not_kept() -> None:
    for head in (b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\r\nConnection: close\r\n"):
        answer = Parsed()
        assert answer.feed(head + b"Content-Length: 0\r\n\r\n")
        assert answer.keep_alive is False
    with pytest.raises(ProtocolError):
        Parsed().feed(b"HTTP/2 200\r\n\r\n")


# --- the same parser under the bulk path's stream ----------------------------------------------

def streamed(server: RawServer, count: int, parallel: int) -> tuple[dict[int, str], list[int]]:
    """Send ``count`` posts through ``stream.exchange``: ({tag: how it was settled}, the tags sent to the slow path)."""
    slow: list[int] = []

    def judge(post: Post[int], status: int, body: bytes) -> str:
        return f"direct {status} {body.decode()}"

    def slow_path(post: Post[int]) -> str:
        slow.append(post.tag)
        return "slow"
    posts = (Post(i, "v1/pki/sign/node", b"{}") for i in range(count))
    endpoint = Endpoint.at(f"http://127.0.0.1:{server.port}", None, 5)
    return dict(exchange(endpoint, posts, parallel, judge, slow_path)), slow


def test_the_stream_takes_an_answer_with_bytes_after_it_and_does_not_reuse_that_connection(raw: Any) -> None:
    server = raw(lambda request: ok(b"one")(request) + b"HTTP/1.1 200 OK\r\n")  # type: ignore[operator]
    results, slow = streamed(server, 4, 2)
    assert results == {i: "direct 200 one" for i in range(4)} and slow == []
    assert server.accepted == 4                                       # each connection carried one answer


def test_the_stream_hands_a_request_whose_answer_is_not_http_to_the_slow_path(raw: Any) -> None:
    server = raw(lambda _request: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    results, slow = streamed(server, 3, 1)
    assert results == {0: "slow", 1: "slow", 2: "slow"} and slow == [0, 1, 2]
    assert server.accepted == 1                                       # after the first failure, no direct request
