"""SystemClock's sleep ends at once on a signal, whichever thread the kernel delivered it to."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from vaultpki.daemon.clock import SystemClock


def test_sleep_times_out_and_wake_cuts_it_short() -> None:
    clock = SystemClock()
    try:
        started = time.monotonic()
        assert clock.sleep(0.05) is False
        assert time.monotonic() - started >= 0.05
        clock.wake()
        clock.wake()                      # several wakes before a sleep: one early return, then drained
        assert clock.sleep(5) is True
        assert clock.sleep(0.01) is False
    finally:
        clock.close()


@pytest.mark.parametrize("target", ["main", "other"])
def test_signal_to_any_thread_ends_the_main_threads_sleep(target: str) -> None:
    clock = SystemClock()
    seen: list[int] = []
    previous_handler = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    previous_fd = signal.set_wakeup_fd(clock.wakeup_fd, warn_on_full_buffer=False)
    parked = threading.Event()
    worker = threading.Thread(target=parked.wait, args=(10,), daemon=True)
    worker.start()
    main_ident = threading.get_ident()

    def send() -> None:
        time.sleep(0.2)
        assert worker.ident is not None
        signal.pthread_kill(main_ident if target == "main" else worker.ident, signal.SIGUSR1)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        started = time.monotonic()
        woken = clock.sleep(10)
        elapsed = time.monotonic() - started
        assert woken and elapsed < 5, elapsed           # an Event.wait here would sleep all 10 s
        deadline = time.monotonic() + 2
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [signal.SIGUSR1]                  # and the Python handler ran in the main thread
    finally:
        sender.join()
        parked.set()
        worker.join()
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGUSR1, previous_handler)
        clock.close()
