"""A deadline for the whole of an HTTP request, enforced from outside the request.

``requests`` only bounds each ``recv``: a server that drips a byte a second, or sends ``100 Continue``
for ever, keeps a request alive indefinitely. Each request gets a ``Deadline`` (``running``); the
connections it opens or reuses register a duplicate of their socket with it (``watch``), and at the
deadline a watchdog thread shuts those sockets down, so whatever ``recv`` is blocked (TLS handshake, the
status line loop in ``http.client``, the body) returns at once and the request fails.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["Deadline", "running", "watch"]

_current = threading.local()


class Deadline:
    """Shuts down every socket registered with it when ``seconds`` have passed, unless cancelled first (the
    watchdog's thread does it). The sockets it holds are duplicates (see ``watch``), closed on ``cancel``."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)
        self.expired = False
        self.done = False
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []
        _watchdog.add(self)

    def watch(self, handle: socket.socket) -> None:
        with self._lock:
            self._handles.append(handle)
            if self.expired:
                _shut(handle)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for handle in self._handles:
                _shut(handle)

    def cancel(self) -> None:
        with self._lock:
            self.done = True
            for handle in self._handles:
                handle.close()
            self._handles.clear()


class _Watchdog:
    """One thread for every request's deadline (a thread per request would cost a bulk run more than its
    requests): it sleeps until the earliest deadline, expires it unless it was cancelled, and sleeps for
    good when there is none, so an idle daemon spends nothing on it."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._queue: list[tuple[float, int, Deadline]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._queue, (deadline.at, next(self._count), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vaultpki-deadlines", daemon=True)
                self._thread.start()
            elif self._queue[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._queue and self._queue[0][2].done:
                    heapq.heappop(self._queue)
                if not self._queue:
                    self._wake.wait()
                    continue
                left = self._queue[0][0] - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._queue)[2].expire()


_watchdog = _Watchdog()


def _shut(handle: socket.socket) -> None:
    try:
        handle.shutdown(socket.SHUT_RDWR)
    except OSError:               # the connection is gone already: nothing is waiting on it
        pass


def watch(sock: socket.socket | None) -> None:
    """Register a connection's socket with the request running in this thread, if any. What is registered
    is a duplicate of its descriptor: the TLS layer takes the original over, and http.client may close the
    connection's object while its answer is still being read; a shutdown through either ends both."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is None or sock is None or sock.fileno() < 0:
        return
    deadline.watch(socket.fromfd(sock.fileno(), sock.family, sock.type))


@contextlib.contextmanager
def running(seconds: float) -> Iterator[Deadline]:
    """The deadline of the request this thread makes inside the block: its connections are watched until
    the block ends, and then released."""
    deadline = Deadline(seconds)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = None
        deadline.cancel()
