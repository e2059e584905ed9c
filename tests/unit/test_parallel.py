"""vaultpki.parallel: bounded workers, results in order, errors handed back, cancelling, waiting on exit.

Every wait here is on an event with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from vaultpki.parallel import Cancelled, Parallel, Pending

WAIT = 10.0      # seconds: only reached when something is broken


def test_results_come_back_in_the_order_the_calls_were_handed_in() -> None:
    with Parallel(3) as pool:
        assert pool.map(lambda n: n * n, range(20)) == [n * n for n in range(20)]


def test_no_more_than_workers_calls_run_at_once_and_every_one_runs() -> None:
    lock = threading.Lock()
    running, peak, ran = 0, 0, []
    three_in = threading.Barrier(3, timeout=WAIT)    # the first three calls meet: all three run at once

    def call(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if n < 3:
            three_in.wait()
        with lock:
            running -= 1
            ran.append(n)
        return n

    with Parallel(3) as pool:
        pending = [pool.submit(call, n) for n in range(12)]
    assert [p.result() for p in pending] == list(range(12))
    assert peak == 3 and sorted(ran) == list(range(12))


def test_a_failure_is_raised_by_result_and_does_not_stop_the_others() -> None:
    def call(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    with Parallel(2) as pool:
        pending = [pool.submit(call, n) for n in range(5)]
    with pytest.raises(ValueError, match="two"):
        pending[2].result()
    assert [p.result() for i, p in enumerate(pending) if i != 2] == [0, 1, 3, 4]
    with Parallel(2) as pool, pytest.raises(ValueError, match="two"):
        pool.map(call, range(5))


def test_map_drops_the_calls_not_started_once_one_failed() -> None:
    release = threading.Event()
    ran = []

    def call(n: int) -> int:
        if n == 0:
            raise ValueError("zero")
        assert release.wait(WAIT)
        ran.append(n)
        return n

    with Parallel(2) as pool:
        with pytest.raises(ValueError, match="zero"):
            pool.map(call, range(6))      # 0 fails at once; 1 holds the other worker; 2-5 wait in the queue
        release.set()
    # 1 and 2 may have started before the failure was seen (two workers); without the cancel, 3-5 would run
    # once released, since leaving the block runs what is queued
    assert set(ran) <= {1, 2}


def test_a_queued_call_can_be_cancelled_a_running_one_cannot() -> None:
    started, release = threading.Event(), threading.Event()
    ran = []

    def blocker() -> str:
        started.set()
        assert release.wait(WAIT)
        return "blocker"

    with Parallel(1) as pool:
        first = pool.submit(blocker)
        assert started.wait(WAIT)
        queued = pool.submit(ran.append, "queued")
        assert first.cancel() is False                  # already running
        assert queued.cancel() is True
        assert queued.cancel() is True                  # and it stays cancelled
        release.set()
    assert first.result() == "blocker"
    with pytest.raises(Cancelled):
        queued.result()
    assert ran == []


def test_leaving_the_block_waits_for_queued_calls_and_the_threads_are_gone() -> None:
    release = threading.Event()
    done = []

    def call(n: int) -> None:
        assert release.wait(WAIT)
        done.append(n)

    def workers() -> int:
        return sum(t.name.startswith("vaultpki-") for t in threading.enumerate())

    with Parallel(2) as pool:
        for n in range(6):
            pool.submit(call, n)
        assert workers() == 2                               # a thread per call, up to workers
        release.set()
    assert sorted(done) == list(range(6))
    assert workers() == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(call, 7)


def test_an_idle_worker_is_reused_before_a_new_thread_starts() -> None:
    with Parallel(4) as pool:
        assert pool.submit(lambda: 1).result() == 1
        idle_again = threading.Event()
        for _ in range(int(WAIT * 100)):                   # the worker goes back to waiting
            if pool._idle == 1:
                idle_again.set()
                break
            idle_again.wait(0.01)
        assert idle_again.is_set()
        assert pool.submit(lambda: 2).result() == 2
        assert len(pool._threads) == 1


def test_a_known_outcome_and_bad_sizes() -> None:
    assert Pending.of({"a": 1}).result() == {"a": 1}
    assert Pending.of(None).cancel() is False
    with pytest.raises(ValueError, match="at least 1"):
        Parallel(0)


def test_importing_it_loads_neither_concurrent_futures_nor_logging() -> None:
    """The reason it exists: a cold command that starts its requests through it does not pay for them."""
    code = ("import sys, vaultpki.parallel; "
            "print(sorted(m for m in ('concurrent.futures', 'logging') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
