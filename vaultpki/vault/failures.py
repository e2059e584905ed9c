"""The one translation of hvac's and requests' failures into the vaultpki error hierarchy, shared by every
caller (the node side's ``HttpVault``, the admin commands): each failure becomes the most specific
vaultpki error, on one line, naming the address and what was being done.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import hvac.exceptions as hvac_errors
import requests

from vaultpki.errors import VaultDenied, VaultpkiError, VaultRequestError, VaultUnavailable
from vaultpki.vault.transport import BodyTooLarge, DeadlineExceeded, NotFollowed, one_line

__all__ = ["Refused", "conn_reason", "ssl_reason", "translate_errors", "vault_error"]


class Refused(VaultUnavailable):
    """Vault could not be used in a way that retrying will not change (TLS, a hostile answer): the next
    configured address may still be tried, but the same one is not asked again."""


def conn_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker.lower()
    return one_line(text)[:200]


def ssl_reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"certificate verify failed: ([^(')]+)", text)
    return match.group(1).strip() if match else one_line(text)[:200]


def _hvac_reason(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc.args[0]) if exc.args and exc.args[0] else type(exc).__name__]
    text = one_line("; ".join(str(e) for e in errors))
    return text.replace("1 error occurred: * ", "").replace("1 error occurred: ", "")[:400]


_TRANSIENT = (hvac_errors.VaultDown, hvac_errors.InternalServerError, hvac_errors.BadGateway,
              hvac_errors.RateLimitExceeded, hvac_errors.VaultNotInitialized)


def vault_error(exc: BaseException, addr: str, what: str) -> VaultpkiError | None:
    """The vaultpki error for an hvac or requests failure while ``what`` at ``addr``; None for anything else."""
    if isinstance(exc, requests.exceptions.SSLError):
        return Refused(f"TLS connection to Vault at {addr} failed while {what}: {ssl_reason(exc)}")
    if isinstance(exc, DeadlineExceeded):
        return VaultUnavailable(f"Vault at {addr} gave {exc} while {what}")
    if isinstance(exc, (BodyTooLarge, NotFollowed)):
        return Refused(f"Vault at {addr} sent an unusable answer while {what}: {exc}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return VaultUnavailable(f"cannot reach Vault at {addr} while {what}: {conn_reason(exc)}")
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultUnavailable(f"request to Vault at {addr} failed while {what}: {one_line(str(exc))[:200]}")
    if isinstance(exc, (hvac_errors.Forbidden, hvac_errors.Unauthorized)):
        return VaultDenied(f"Vault denied {what}: {_hvac_reason(exc)}")
    if isinstance(exc, _TRANSIENT):
        return VaultUnavailable(f"Vault at {addr} is unavailable while {what}: {_hvac_reason(exc)}")
    if isinstance(exc, hvac_errors.InvalidPath):
        return VaultRequestError(f"Vault has no such path while {what} (is the mount or role provisioned?)")
    if isinstance(exc, hvac_errors.VaultError):
        return VaultRequestError(f"Vault refused {what}: {_hvac_reason(exc)}")
    return None


def _where(exc: BaseException) -> str | None:
    """The Vault address (scheme://host:port as written) a failure happened at, when it says."""
    url = getattr(exc, "url", None) if isinstance(exc, hvac_errors.VaultError) else \
        getattr(getattr(exc, "request", None), "url", None)
    if not isinstance(url, str) or "://" not in url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@contextlib.contextmanager
def translate_errors(addr: str, what: str) -> Iterator[None]:
    """Re-raise hvac/requests failures as the most specific vaultpki error, chained to their cause."""
    try:
        yield
    except (hvac_errors.VaultError, requests.exceptions.RequestException) as exc:
        error = vault_error(exc, _where(exc) or addr, what)
        if error is None:
            raise
        raise error from exc
