"""One HTTP request of vaultpki (to Vault, or to an OCSP responder), made safe whatever ``requests`` does
by default. What ``send`` guarantees, each for a reason the defaults do not cover:

- **A deadline for the whole request** (``deadline``): ``requests`` only bounds each ``recv``.
- **A cap on every body.** Bodies are streamed and refused past ``limit`` bytes (a huge
  ``Content-Length`` before reading anything), so a runaway answer costs bounded memory.
- **Redirects only to allowed origins.** Redirects are never followed by ``requests``; ``send`` follows
  307/308 itself, only to an origin the caller allows (for Vault: the configured addresses) and never
  from https to http, so the token and login bodies never leave them.
- **Proxies from the environment the caller passes** (``proxy_for``), and nothing else from it: no
  ``.netrc`` credentials, no ``REQUESTS_CA_BUNDLE``.
- **TLS from one ``ssl.SSLContext``**, over the session ``http_session.new_session`` makes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed

import requests
import urllib3.exceptions

from vaultpki.vault import deadline as deadlines

__all__ = [
    "MAX_VAULT_BODY", "Answer", "BodyTooLarge", "DeadlineExceeded", "NotFollowed", "one_line", "origin", "proxy_for",
    "send",
]

MAX_VAULT_BODY = 4 << 20       # Vault's largest honest answer (a LIST of many certificates) is well under this
MAX_REDIRECTS = 5


class BodyTooLarge(requests.exceptions.RequestException):
    """The answer's body is longer than the caller's limit; it was not read to the end."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """The whole request took longer than its deadline."""


class NotFollowed(requests.exceptions.RequestException):
    """A redirect to an origin the request may not go to (another host, or https to http)."""


class Answer:
    """One HTTP answer, read whole: status, headers and body bytes."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, url: str) -> None:
        self.status, self.headers, self.body, self.url = status, headers, body, url


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL ``env`` names for ``url``, honouring no_proxy; None for a direct connection."""
    proxies = {k.lower()[:-6]: v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    if not proxies or proxy_bypass_environment(urlsplit(url).netloc, proxies):
        return None
    return proxies.get(url.split("://", 1)[0].lower()) or proxies.get("all")


def send(session: requests.Session, method: str, url: str, *, timeout: float, limit: int,
         env: Mapping[str, str], allowed: frozenset[tuple[str, str, int]] | None,
         headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Answer:
    """One request, its redirects followed (307/308, same method and body) to ``allowed`` origins only
    (None: any), never from https to http; all of it within ``timeout`` seconds; the body at most
    ``limit`` bytes. Raises ``requests`` exceptions (``DeadlineExceeded``, ``BodyTooLarge``,
    ``NotFollowed`` among them)."""
    with deadlines.running(timeout) as deadline:
        for _ in range(MAX_REDIRECTS + 1):
            answer = _once(session, method, url, deadline, timeout, limit, env, headers, body)
            location = answer.headers.get("Location")
            if answer.status not in (307, 308) or not location:
                return answer
            try:
                url = _redirect_target(url, location, allowed)
            except NotFollowed as exc:
                exc.request = requests.Request(method, url)
                raise
        raise NotFollowed(f"more than {MAX_REDIRECTS} redirects")


def _redirect_target(current: str, location: str, allowed: frozenset[tuple[str, str, int]] | None) -> str:
    target = urljoin(current, location)
    where = origin(target)
    if where[0] not in ("http", "https") or (origin(current)[0] == "https" and where[0] != "https"):
        raise NotFollowed(f"redirect to {_show(target)} refused: not https")
    if allowed is not None and where not in allowed:
        raise NotFollowed(f"redirect to {_show(target)} refused: not a configured Vault address")
    return target


def _show(url: str) -> str:
    """The origin of a URL, for a message (a hostile Location may be long or carry anything)."""
    scheme, host, port = origin(url)
    return one_line(f"{scheme}://{host}:{port}")[:120]


def _once(session: requests.Session, method: str, url: str, deadline: deadlines.Deadline, timeout: float, limit: int,
          env: Mapping[str, str], headers: Mapping[str, str] | None, body: bytes | None) -> Answer:
    proxy = proxy_for(url, env)
    try:
        response = session.request(method, url, headers=headers, data=body, allow_redirects=False, stream=True,
                                    timeout=timeout, proxies={"http": proxy, "https": proxy} if proxy else {})
        with response:
            try:
                data = _read_capped(response, limit, deadline)
            except urllib3.exceptions.HTTPError as exc:       # reading raw: urllib3's own errors, not requests'
                raise requests.exceptions.ConnectionError(exc, request=response.request) from exc
    except requests.exceptions.RequestException as exc:
        if deadline.expired and not isinstance(exc, BodyTooLarge):
            raise DeadlineExceeded(f"no whole answer within {timeout:g}s", request=exc.request) from exc
        raise
    if deadline.expired:                  # a close-delimited body cut short by the deadline reads as complete
        raise DeadlineExceeded(f"no whole answer within {timeout:g}s", request=response.request)
    return Answer(response.status_code, response.headers, data, url)


def _read_capped(response: requests.Response, limit: int, deadline: deadlines.Deadline) -> bytes:
    """The body, at most ``limit`` bytes. Once the deadline has shut the socket down, a read returns what it
    has; the kernel may still queue bytes the server goes on sending, so the loop stops on the deadline too."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"answer of {int(declared)} bytes refused (at most {limit})", request=response.request)
    chunks: list[bytes] = []
    size = 0
    while not deadline.expired and (chunk := response.raw.read(65536, decode_content=False)):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"answer of more than {limit} bytes refused", request=response.request)
        chunks.append(chunk)
    return b"".join(chunks)


def one_line(text: str) -> str:
    """Text (a server's error, a hostile header) as one line of a message."""
    return re.sub(r"\s+", " ", text).strip(" .*")
