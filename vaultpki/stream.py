"""Many POSTs in flight from one thread: asyncio and httptools over a few keep-alive connections.

A bulk run's client work is keys, checks and files. With urllib3, which blocks, every request in
flight needs a thread of its own, and handing the GIL between those threads and the one doing the
crypto cost more than the work itself (~1.9 ms of CPU per certificate instead of ~0.8, on the cores
the Vault server needs as well). Here one thread sends each request as soon as a connection is free,
and the caller handles each answer as it arrives, between two turns of the event loop.

This module only carries the healthy case, and knows nothing about Vault: ``judge`` turns an
answer into a result or asks for the ``slow`` path (``SLOW``), which runs in a worker thread. After
a transport failure (refused, reset, TLS, timeout) or a request for the slow path, every later
request takes the slow path too; a request that was in flight when its connection failed is handed
to it as well, so that none is lost.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import msgspec

from .wire import Answer, ProtocolError, request_bytes

__all__ = ["SLOW", "Endpoint", "Post", "exchange"]

K = TypeVar("K")
T = TypeVar("T")


class _Slow:
    def __repr__(self) -> str:
        return "SLOW"


SLOW = _Slow()
"""What ``judge`` returns for an answer it will not settle: the request goes to the slow path."""


class Endpoint(msgspec.Struct, frozen=True):
    """Where the requests go (an ``http(s)://host:port[/prefix]`` address, split), its TLS context, the
    timeout in seconds for connecting and for each answer, and whether requests may go direct at all
    (``False``: every request takes the slow path, e.g. when a proxy sits in between)."""

    host: str
    port: int
    netloc: str
    prefix: str
    tls: ssl.SSLContext | None
    timeout: float
    direct: bool = True

    @classmethod
    def at(cls, addr: str, tls: ssl.SSLContext | None, timeout: float, direct: bool = True) -> Endpoint:
        parts = urlsplit(addr)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.hostname or "", port, parts.netloc, parts.path.rstrip("/"), tls, timeout, direct)


class Post(msgspec.Struct, Generic[K], frozen=True):
    """One request: the caller's tag for it, the path below the address, the body and its headers."""

    tag: K
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _Broken(Exception):
    """The connection failed mid-request; the request goes to the slow path."""


_READ_SIZE = 65536


class _Link(asyncio.BufferedProtocol):
    """The receiving side of one connection: what arrives is read into one reused buffer and handed
    straight to the answer's parser, and the request waiting for it is woken once it is complete (or
    broken). Bytes that arrive while no request waits (the server broke the protocol) close the link.

    A protocol rather than asyncio's streams: those read every chunk into a new 256 KiB object
    (an mmap and a munmap per answer) and add a task wake-up of their own. The buffer is handed out
    as a memoryview: asyncio's TLS transport reads the rest of a record into ``buffer[offset:]``,
    which for a bytearray would be a copy, and those bytes would be lost (python/cpython#156275).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._answer: Answer | None = None
        self._done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._advance(self._buffer[:nbytes])          # parsed in place: httptools copies out only the body

    def eof_received(self) -> None:
        self._advance(b"")            # returning None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc or ConnectionResetError("Vault closed the connection before answering"))

    async def ask(self, request: bytes) -> Answer:
        """Send one whole request and wait for its whole answer."""
        assert self.transport is not None
        self._answer = answer = Answer()
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            await self._done
        finally:
            self._answer = self._done = None
        return answer

    def _advance(self, data: bytes | memoryview) -> None:
        if self._done is None or self._done.done() or self._answer is None:
            if data and self.transport is not None:
                self.closed = True            # nobody asked: this connection carries no further request
                self.transport.close()
            return
        try:
            complete = self._answer.feed(data)
        except (ProtocolError, ConnectionResetError) as exc:
            self._done.set_exception(exc)
            return
        if complete:
            self._done.set_result(None)


class _Conn(msgspec.Struct):
    """One keep-alive connection, opened on first use and again after the server closed it."""

    endpoint: Endpoint
    link: _Link | None = None

    async def post(self, path: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> tuple[int, bytes]:
        end = self.endpoint
        request = request_bytes("POST", f"{end.prefix}/{path}", end.netloc, body, headers)
        try:
            async with asyncio.timeout(end.timeout):
                if self.link is None or self.link.closed:
                    _, self.link = await asyncio.get_running_loop().create_connection(
                        _Link, end.host, end.port, ssl=end.tls, server_hostname=end.host if end.tls else None)
                link = self.link
                answer = await link.ask(request)
        except (OSError, ProtocolError) as exc:      # TimeoutError and ssl.SSLError are OSErrors
            self.close()
            raise _Broken(str(exc)) from exc
        if not answer.keep_alive:
            self.close()
        return answer.status, answer.body

    def close(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()
        self.link = None


def exchange(
    endpoint: Endpoint, posts: Iterator[Post[K]], parallel: int,
    judge: Callable[[Post[K], int, bytes], T | _Slow], slow: Callable[[Post[K]], T],
) -> Iterator[tuple[K, T]]:
    """Send every post, ``parallel`` at a time over as many connections; yield (tag, result) as each
    completes, in completion order.

    ``posts`` is drawn lazily, in this thread, only when a connection is free: the caller can make
    a post's key just before it goes out. ``judge`` runs in this thread; ``slow`` in a worker thread.
    Closing the generator early, or an exception from ``posts`` or ``judge``, abandons what is in
    flight and closes the connections.

    Each connection has a worker coroutine that sends its next post as soon as an answer is in; the
    loop only stops (to hand the caller what has finished) while those requests are at the server.
    """
    loop = asyncio.new_event_loop()
    workers = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="vaultpki-slow")
    direct = [endpoint.direct]      # cleared for good after the first failure or slow answer
    finished: deque[tuple[K, T]] = deque()
    wake: list[asyncio.Future[None] | None] = [None]

    def woken(_: object = None) -> None:
        if wake[0] is not None and not wake[0].done():
            wake[0].set_result(None)

    async def one(conn: _Conn, post: Post[K]) -> tuple[K, T]:
        if direct[0]:
            try:
                status, body = await conn.post(post.path, post.body, post.headers)
            except _Broken:
                direct[0] = False
            else:
                result = judge(post, status, body)
                if not isinstance(result, _Slow):
                    return post.tag, result
                direct[0] = False
        return post.tag, await loop.run_in_executor(workers, slow, post)

    async def work(conn: _Conn) -> None:
        try:
            while (post := next(posts, None)) is not None:
                finished.append(await one(conn, post))
                woken()
        finally:
            conn.close()

    tasks = [loop.create_task(work(_Conn(endpoint))) for _ in range(parallel)]
    for task in tasks:
        task.add_done_callback(woken)
    try:
        while True:
            while finished:
                yield finished.popleft()
            for task in tasks:
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            if all(task.done() for task in tasks):
                return
            wake[0] = pause = loop.create_future()
            loop.run_until_complete(pause)
    finally:
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.wait(tasks))
        loop.run_until_complete(asyncio.sleep(0))       # let the transports close before the loop does
        loop.close()
        workers.shutdown(wait=False, cancel_futures=True)
