"""A few worker threads for blocking calls (Vault requests), without ``concurrent.futures``.

A cold ``issue-node`` sends its requests at once: the node certificate's, and the CA reads of
each mount. ``concurrent.futures`` would carry them just as well, but it imports ``logging``
(and that ``traceback``, ``string``, ``weakref``...) before it runs anything: 15 M of the
command's ~520 M instructions, about 3 % of its wall time, for three threads. What the callers
use of it is small, and this is that much: bounded workers, results in order, a queued call
that can be cancelled, and leaving the ``with`` block waits for every call handed in.
The bulk path (``stream``) keeps ``concurrent.futures``: asyncio loads it anyway.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["Cancelled", "Parallel", "Pending"]

T = TypeVar("T")
R = TypeVar("R")

_QUEUED, _RUNNING, _FINISHED, _CANCELLED = range(4)


class Cancelled(Exception):
    """``result()`` of a call that was cancelled before it started."""


class Pending(Generic[T]):
    """The outcome of one call: ``result()`` waits for it, then returns what it returned or raises what it raised."""

    __slots__ = ("_call", "_done", "_error", "_lock", "_state", "_value")

    def __init__(self, call: Callable[[], T] | None = None) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._state = _QUEUED
        self._value: T | None = None
        self._error: BaseException | None = None

    @classmethod
    def of(cls, value: T) -> Pending[T]:
        """An outcome known already (the caller passed in what would otherwise be fetched)."""
        known: Pending[T] = cls()
        known._value, known._state = value, _FINISHED
        known._done.set()
        return known

    def cancel(self) -> bool:
        """Drop the call if it has not started; True when it will never run."""
        with self._lock:
            if self._state == _QUEUED:
                self._state = _CANCELLED
                self._done.set()
            return self._state == _CANCELLED

    def result(self) -> T:
        self._done.wait()
        if self._state == _CANCELLED:
            raise Cancelled("the call was cancelled before it started")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]   # set by the call, which returned a T

    def _run(self) -> None:
        with self._lock:
            if self._state != _QUEUED:
                return
            self._state = _RUNNING
        assert self._call is not None
        try:
            self._value = self._call()
        except BaseException as exc:        # handed to whoever asks for the result, as concurrent.futures does
            self._error = exc
        finally:
            self._call = None               # the arguments (a key, a CSR) go with it
            self._state = _FINISHED
            self._done.set()


class Parallel:
    """Calls run by at most ``workers`` threads, started as calls arrive, in the order they were handed in.

    Leaving the ``with`` block waits for every call that was not cancelled, the queued ones included;
    then the threads are gone.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._workers = workers
        self._queue: collections.deque[Pending[Any]] = collections.deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def __enter__(self) -> Parallel:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def submit(self, fn: Callable[..., T], *args: Any) -> Pending[T]:
        pending: Pending[T] = Pending(lambda: fn(*args))
        with self._ready:
            if self._closed:
                raise RuntimeError("Parallel is closed")
            self._queue.append(pending)
            if self._idle:                  # a sleeping worker takes it (claimed now, so the next call counts right)
                self._idle -= 1
                self._ready.notify()
            elif len(self._threads) < self._workers:
                worker = threading.Thread(target=self._work, name=f"vaultpki-{len(self._threads)}", daemon=True)
                self._threads.append(worker)
                worker.start()
        return pending

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` of every item, run in parallel; the results in the items' order. The first failure raises,
        and the calls that have not started yet are dropped."""
        pending = [self.submit(fn, item) for item in items]
        try:
            return [p.result() for p in pending]
        finally:
            for p in pending:
                p.cancel()

    def close(self) -> None:
        """Run what is queued, then let the threads go, and wait for them."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for worker in self._threads:
            worker.join()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._idle += 1             # submit() takes it back when it wakes this thread
                    self._ready.wait()
                if not self._queue:
                    return
                pending = self._queue.popleft()
            pending._run()
