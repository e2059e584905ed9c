"""The ``vaultpki sync`` loop: passes forever, with backoff, sleeps and signals.

The loop sleeps until the next renewal time (or until the Vault token needs
renewing); it sends Vault nothing in between. Failing passes are retried with
tenacity's capped exponential backoff and jitter, forever: the daemon never exits
because Vault is away, and it never touches the files while it is. A pass that could
not reach Vault counts as failing even when nothing is due yet: it is retried the same
way, and ``/healthz`` reports it once it keeps happening (``PASS_FAILURES_UNHEALTHY``).

Each sleep is logged (``sleeping``) with ``wake_at`` (when it ends), ``wake_for`` (why
then: ``renewal``, ``ca_check``, ``token`` or ``idle``) and ``next_renewal`` (the earliest
renewal time of any file, which a wake for the token or the CA check does not move).

Signal handlers only set flags and wake the sleep: SIGHUP re-reads the config and
runs a pass now; SIGTERM/SIGINT let the pass in progress finish its write, then
exit 0.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Protocol

from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, wait_exponential_jitter

from vaultpki.config import Config
from vaultpki.daemon.sync_pass import PassReport, Syncer, failed_files
from vaultpki.errors import VaultpkiError

__all__ = ["Daemon", "PassFailed", "TokenKeeper"]


class TokenKeeper(Protocol):
    def seconds_until_token_refresh(self) -> float | None: ...

    def ensure_token(self) -> None: ...


class PassFailed(VaultpkiError):
    """A pass left something due or unverified, or could not reach Vault; the loop retries it with backoff."""

    def __init__(self, report: PassReport) -> None:
        super().__init__("; ".join(report.failures) or f"nothing is due yet, but Vault could not be asked: "
                                                       f"{report.vault_error}")
        self.report = report


class Daemon:
    """The loop: passes with backoff, sleeps until the next renewal, signals as flags."""

    def __init__(self, load_config: Callable[[], Config], build: Callable[[Config], Syncer],
                 tokens: Callable[[Syncer], TokenKeeper | None], log: logging.Logger,
                 sleep: Callable[[float], bool], wake: Callable[[], None], wakeup_fd: int | None = None) -> None:
        self._load_config = load_config
        self._build = build
        self._tokens = tokens
        self._log = log
        self._sleep = sleep
        self._wake = wake
        self._wakeup_fd = wakeup_fd
        self.stop = False
        self.rerun = False

    # signal handlers: set a flag and wake the sleep, nothing else
    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop = True
        self._wake()

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self.rerun = True
        self._wake()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        # Whichever thread the kernel hands a signal to, the main thread's sleep must end (see SystemClock).
        old_fd = signal.set_wakeup_fd(self._wakeup_fd, warn_on_full_buffer=False) if self._wakeup_fd is not None else None
        try:
            yield
        finally:
            if old_fd is not None:
                signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self, syncer: Syncer) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        with self.signals():
            self._log.info("sync started", extra={"certs_dir": str(syncer.store.path)})
            while not self.stop:
                if self.rerun:
                    syncer = self._reconfigure(syncer)
                report = self._pass_with_backoff(syncer)
                if self.stop:
                    break
                if report is not None:
                    self._sleep_until(syncer, report.next_wake, report.next_renewal)
        self._log.info("stopped")
        return 0

    def _reconfigure(self, syncer: Syncer) -> Syncer:
        self.rerun = False
        try:
            new = self._build(self._load_config())
        except VaultpkiError as exc:
            self._log.error("config reload failed; keeping the running configuration", extra={"error": str(exc)})
            return syncer
        self._log.info("configuration reloaded")
        return new

    def _pass_with_backoff(self, syncer: Syncer) -> PassReport | None:
        metrics = syncer.metrics

        def one_pass() -> PassReport:
            report = syncer.run_pass()
            if not report.ok or report.vault_error is not None:
                raise PassFailed(report)
            return report

        def before_sleep(state: RetryCallState) -> None:
            metrics.passes.labels("failed").inc()
            metrics.health.consecutive_failures = state.attempt_number
            error = state.outcome.exception() if state.outcome else None
            metrics.health.last_error = str(error)
            if isinstance(error, PassFailed):
                metrics.health.due_files = failed_files(error.report)
            self._log.error("pass failed; retrying", extra={
                "attempt": state.attempt_number, "retry_in": round(state.upcoming_sleep, 1), "error": str(error)})

        def sleep(seconds: float) -> None:
            self._sleep(seconds)
            if self.stop:
                raise _Stopped
            if self.rerun:
                raise _Rerun

        retrying = Retrying(
            # Anything but a stop or a SIGHUP is retried: the daemon outlives Vault outages and its own surprises.
            retry=retry_if_not_exception_type((_Stopped, _Rerun)),
            wait=wait_exponential_jitter(multiplier=syncer.cfg.retry_initial, max=syncer.cfg.retry_max),
            before_sleep=before_sleep, sleep=sleep, reraise=True,
        )
        try:
            report = retrying(one_pass)
        except (_Stopped, _Rerun):
            return None
        metrics.passes.labels("ok").inc()
        metrics.health.consecutive_failures = 0
        metrics.health.last_error = None
        return report

    def _sleep_until(self, syncer: Syncer, wake_at: dt.datetime | None,
                     next_renewal: dt.datetime | None = None) -> None:
        """Sleep to the next pass (the next renewal, or the CA/OCSP check), waking early only to keep the
        Vault token alive."""
        tokens = self._tokens(syncer)
        reason = ("idle" if wake_at is None else "renewal" if wake_at == next_renewal
                  else "reload" if syncer.pending.current else "ca_check")
        wake_at = wake_at or syncer.now() + dt.timedelta(hours=1)
        token_stuck = False
        while not (self.stop or self.rerun):
            until_due = (wake_at - syncer.now()).total_seconds()
            if until_due <= 0:
                return
            until_token = None if token_stuck or tokens is None else tokens.seconds_until_token_refresh()
            if until_token is None or until_token >= until_due:
                self._log_sleep(wake_at, reason, next_renewal)
                self._sleep(until_due)
                continue
            self._log_sleep(syncer.now() + dt.timedelta(seconds=until_token), "token", next_renewal)
            self._sleep(until_token)
            if self.stop or self.rerun or tokens is None:
                continue
            try:
                tokens.ensure_token()
            except VaultpkiError as exc:
                self._log.warning("token refresh failed", extra={"error": str(exc)})
                left = (wake_at - syncer.now()).total_seconds()
                self._sleep(max(0.0, min(left, syncer.cfg.retry_initial * 10)))
                continue
            after = tokens.seconds_until_token_refresh()
            if after is not None and after <= 0:
                # Refreshing did not move the deadline (a token that cannot be renewed): stop waking for it.
                self._log.warning("the Vault token cannot be refreshed; it will be replaced at the next pass")
                token_stuck = True

    def _log_sleep(self, until: dt.datetime, reason: str, next_renewal: dt.datetime | None) -> None:
        self._log.info("sleeping", extra={"wake_at": until.isoformat(), "wake_for": reason,
                                          "next_renewal": next_renewal.isoformat() if next_renewal else None})


class _Stopped(Exception):
    """SIGTERM arrived during a backoff wait."""


class _Rerun(Exception):
    """SIGHUP arrived during a backoff wait: re-read the config and go again now."""
