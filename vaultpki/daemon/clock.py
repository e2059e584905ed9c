"""Time as an input: the daemon asks a Clock, so tests can drive it without patching."""

from __future__ import annotations

import datetime as dt
import os
import select
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken early by ``wake()`` or a signal."""
        ...

    def wake(self) -> None: ...


class SystemClock:
    """Wall-clock time; ``sleep`` waits on a self-pipe.

    The pipe's write end is also given to ``signal.set_wakeup_fd``. A signal can be
    delivered to *any* thread (the metrics server's, say). Python then runs its
    handler only when the main thread next executes bytecode, which a plain
    ``Event.wait`` would not do until its timeout: possibly the next renewal, hours
    away. The C-level handler writes to the wakeup fd from whichever thread took the
    signal, so the ``select`` here returns at once, and the handler runs.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    @property
    def wakeup_fd(self) -> int:
        return self._write

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float) -> bool:
        ready, _, _ = select.select([self._read], [], [], max(0.0, seconds))
        if not ready:
            return False
        while True:
            try:
                if not os.read(self._read, 512):
                    break
            except BlockingIOError:
                break
        return True

    def wake(self) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass        # the pipe is full: a wake-up is already pending

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)
