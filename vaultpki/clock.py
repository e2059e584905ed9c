"""Time as an input: the daemon asks a Clock, so tests can drive it without patching."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken early by ``wake()``."""
        ...

    def wake(self) -> None: ...


class SystemClock:
    """Wall-clock time; ``sleep`` is an Event wait, so a signal handler can cut it short."""

    def __init__(self) -> None:
        self._woken = threading.Event()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float) -> bool:
        woken = self._woken.wait(max(0.0, seconds))
        self._woken.clear()
        return woken

    def wake(self) -> None:
        self._woken.set()
