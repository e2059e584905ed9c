"""How ACME problems (RFC 8555 section 6.7) and network failures become vaultpki errors: one line each.

A problem the operator must fix in the configuration or at the CA (a refused name, a CSR the CA will not
sign, a CAA record, a required external account binding) is a ``ConfigError`` (exit 2); anything that may
pass by itself (a rate limit, a CA that is down, a challenge the CA could not check) is operational (exit 1).
``badNonce`` never gets here: the library retries it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

import requests
from acme import errors as acme_errors
from acme import messages

from vaultpki.errors import ConfigError, VaultpkiError

__all__ = ["CONFIG_PROBLEMS", "AcmeError", "AcmeRateLimited", "AcmeUnavailable", "one_line", "translate"]

# Problem types that no retry will cure: the configuration (names, key type, contact, account binding) or the
# CA's policy (CAA) has to change first.
CONFIG_PROBLEMS = frozenset({
    "badCSR", "rejectedIdentifier", "unsupportedIdentifier", "caa", "externalAccountRequired",
    "invalidContact", "unsupportedContact", "badSignatureAlgorithm", "badPublicKey",
})
_MAX_LINE = 400


class AcmeError(VaultpkiError):
    """The ACME CA refused or failed a step of an order (exit 1): nothing was written."""


class AcmeUnavailable(AcmeError):
    """The ACME CA could not be reached, or did not answer in time."""


class AcmeRateLimited(AcmeError):
    """The CA rate-limited us; ``retry_after`` is when it said to come back (None when it did not say)."""

    def __init__(self, message: str, retry_after: dt.datetime | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def one_line(text: object) -> str:
    """Whatever a server or library said, as one bounded line."""
    line = re.sub(r"\s+", " ", str(text)).strip()
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"


def problem_text(problem: messages.Error) -> str:
    """``<type>: <detail>``, with the identifier and subproblems a CA gives for a multi-name order."""
    text = f"{problem.code or problem.typ}: {problem.detail or problem.description or 'no detail given'}"
    if problem.identifier is not None:
        text += f" ({problem.identifier.value})"
    for sub in problem.subproblems or ():
        text += f"; {problem_text(sub)}"
    return one_line(text)


def retry_after(response: requests.Response | None) -> dt.datetime | None:
    """The ``Retry-After`` of the CA's last answer as a UTC time, or None when it gave none."""
    value = response.headers.get("Retry-After", "").strip() if response is not None else ""
    if value.isdigit():
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(value))
    try:
        # The library's own parser returns a naive time in UTC for a date and local time for seconds: an aware
        # time here, whatever the local zone.
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def translate(exc: BaseException, step: str, directory_url: str,
              last_response: requests.Response | None = None) -> VaultpkiError:
    """The vaultpki error for *exc*, raised at *step* of talking to the CA at *directory_url*."""
    if isinstance(exc, VaultpkiError):
        return exc
    if isinstance(exc, messages.Error):
        return _from_problem(exc, step, last_response)
    if isinstance(exc, acme_errors.IssuanceError):
        return _from_problem(exc.error, step, last_response)
    if isinstance(exc, acme_errors.TimeoutError):
        return AcmeUnavailable(f"ACME {step}: the CA at {directory_url} did not finish before the order's deadline")
    if isinstance(exc, requests.exceptions.RequestException):
        why = type(exc).__name__ if isinstance(exc, requests.exceptions.ConnectionError) else one_line(exc)
        return AcmeUnavailable(f"ACME {step}: the CA at {directory_url} is unreachable ({why}); "
                               "keeping the current certificate")
    return AcmeError(f"ACME {step}: {one_line(exc) or type(exc).__name__}")


def _from_problem(problem: messages.Error, step: str, last_response: requests.Response | None) -> VaultpkiError:
    text = problem_text(problem)
    if problem.code == "rateLimited":
        when = retry_after(last_response)
        after = f"retry after {when:%Y-%m-%d %H:%M:%S}Z" if when else "the CA gave no Retry-After"
        return AcmeRateLimited(f"ACME {step}: rate limited by the CA ({text}); {after}; keeping the current certificate",
                               when)
    codes = {problem.code, *(sub.code for sub in problem.subproblems or ())}
    if codes & CONFIG_PROBLEMS:
        return ConfigError(f"ACME {step}: the CA refused it: {text}")
    return AcmeError(f"ACME {step}: {text}")
