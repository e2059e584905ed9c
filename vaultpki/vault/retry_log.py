"""What a retried Vault request says in the log: one warning when it starts retrying, one when it gives up.

Without them a request that waits out an election or an outage is silent for up to ``vault.retry_for``,
and an operator cannot tell a slow pass from a hung one. The address is the one the last attempt went
to (the adapter fails over between the configured ones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

from tenacity import RetryCallState

__all__ = ["gave_up", "started_retrying"]

_log = logging.getLogger("vaultpki.vault")
# Heard only where logging is set up (the daemon, ``logs.setup``): a one-shot command's failure stays its one
# error line on stderr, not preceded by Python's last-resort print of every warning.
_log.addHandler(logging.NullHandler())


def _failure(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def started_retrying(what: str, address: Callable[[], str], retry_for: float) -> Callable[[RetryCallState], None]:
    """tenacity's ``before_sleep``: a warning at the first retry only (not one per attempt)."""
    def callback(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            _log.warning("Vault request failed; retrying", extra={
                "what": what, "addr": address(), "error": str(_failure(state)), "retry_for": f"{retry_for:g}s"})
    return callback


def gave_up(what: str, address: Callable[[], str], retry_for: float) -> Callable[[RetryCallState], Any]:
    """tenacity's ``retry_error_callback``: a warning, then the last failure is raised as it was."""
    def callback(state: RetryCallState) -> NoReturn:
        exc = _failure(state)
        _log.warning("Vault request failed; giving up", extra={
            "what": what, "addr": address(), "error": str(exc), "attempts": state.attempt_number,
            "retry_for": f"{retry_for:g}s"})
        assert exc is not None           # tenacity stops only after an attempt that failed
        raise exc
    return callback
