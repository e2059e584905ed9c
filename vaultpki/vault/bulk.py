"""Many Vault requests at once, for the core's port: a thread pool whose workers share the session's
keep-alive connections. The core draws requests and judges answers in its own thread; only the requests
wait here, because workers that each did their own crypto as well fought over the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from vaultpki.errors import VaultpkiError

__all__ = ["MAX_READS", "each", "in_flight"]

K = TypeVar("K")
R = TypeVar("R")
T = TypeVar("T")

MAX_READS = 8       # a set has a mount or two, a split-ca set three: all read at once


def in_flight(
    call: Callable[[R], T], requests: Iterable[tuple[K, R]], parallel: int, name: str,
) -> Generator[tuple[K, T | VaultpkiError], None, None]:
    """``call`` each request, ``parallel`` at a time; yield (tag, answer or its vaultpki error) as each completes.
    A vaultpki error is one request's answer and does not stop the others; anything else propagates.

    ``requests`` is drawn in this thread, one more each time one completes; an exception from it stops
    the run (what is queued is cancelled) and propagates, as does closing the generator.
    """
    source = iter(requests)
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix=name) as pool:
        pending: dict[Future[T | VaultpkiError], K] = {}

        def draw() -> None:
            for tag, request in source:
                pending[pool.submit(_answer_or_error, call, request)] = tag
                return

        try:
            for _ in range(max(1, parallel)):
                draw()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    tag = pending.pop(future)
                    draw()                # keep the pool busy while the caller handles this answer
                    yield tag, future.result()
        finally:
            for future in pending:
                future.cancel()


def _answer_or_error(call: Callable[[R], T], request: R) -> T | VaultpkiError:
    try:
        return call(request)
    except VaultpkiError as exc:
        return exc


def each(call: Callable[[R], T], items: Sequence[R], parallel: int = MAX_READS) -> list[T]:
    """``call`` every item, up to ``parallel`` at once; the answers in the items' order, the first failure raised."""
    with ThreadPoolExecutor(min(parallel, max(1, len(items)))) as pool:
        return list(pool.map(call, items))
