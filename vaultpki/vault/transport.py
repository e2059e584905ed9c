"""HTTP for vaultpki: one ``requests`` session per Vault address list (and one per OCSP check), made safe
whatever ``requests`` does by default, and the one translation of hvac/requests failures into vaultpki errors.

What ``send`` guarantees, each for a reason the defaults do not cover:

- **A deadline for the whole request.** ``requests`` only bounds each ``recv``: a server that drips a
  byte a second, or sends ``100 Continue`` for ever, keeps a request alive indefinitely. Each request
  gets a deadline; the connections it opens or reuses register a duplicate of their socket with it, and
  at the deadline a watchdog thread shuts those sockets down, so whatever ``recv`` is blocked (TLS handshake,
  the status line loop in ``http.client``, the body) returns at once and the request fails.
- **A cap on every body.** Bodies are streamed and refused past ``limit`` bytes (a huge
  ``Content-Length`` before reading anything), so a runaway answer costs bounded memory.
- **Redirects only to allowed origins.** Redirects are never followed by ``requests``; ``send`` follows
  307/308 itself, only to an origin the caller allows (for Vault: the configured addresses) and never
  from https to http, so the token and login bodies never leave them.
- **Proxies from the environment the caller passes** (``proxy_for``), and nothing else from it: no
  ``.netrc`` credentials, no ``REQUESTS_CA_BUNDLE``.
- **TLS from one ``ssl.SSLContext``** built here: the configured CA (else the system's trust store),
  host names and IP addresses checked, the client certificate for cert auth.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed

import hvac.exceptions as hvac_errors
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.poolmanager

from vaultpki.errors import VaultDenied, VaultpkiError, VaultRequestError, VaultUnavailable

__all__ = [
    "MAX_VAULT_BODY", "Answer", "BodyTooLarge", "DeadlineExceeded", "NotFollowed", "Refused", "conn_reason",
    "new_session", "one_line", "origin", "proxy_for", "send", "ssl_reason", "tls_context", "translate_errors",
    "vault_error",
]

MAX_VAULT_BODY = 4 << 20       # Vault's largest honest answer (a LIST of many certificates) is well under this
MAX_REDIRECTS = 5


class BodyTooLarge(requests.exceptions.RequestException):
    """The answer's body is longer than the caller's limit; it was not read to the end."""


class DeadlineExceeded(requests.exceptions.Timeout):
    """The whole request took longer than its deadline."""


class NotFollowed(requests.exceptions.RequestException):
    """A redirect to an origin the request may not go to (another host, or https to http)."""


class Refused(VaultUnavailable):
    """Vault could not be used in a way that retrying will not change (TLS, a hostile answer): the next
    configured address may still be tried, but the same one is not asked again."""


class Answer:
    """One HTTP answer, read whole: status, headers and body bytes."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, url: str) -> None:
        self.status, self.headers, self.body, self.url = status, headers, body, url


# --- the deadline ------------------------------------------------------------------------------

_current = threading.local()


class _Deadline:
    """Shuts down every socket registered with it when ``seconds`` have passed, unless cancelled first (the
    watchdog's thread does it). The sockets it holds are duplicates (see ``_watch``), closed on ``cancel``."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)
        self.expired = False
        self.done = False
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []
        _watchdog.add(self)

    def watch(self, handle: socket.socket) -> None:
        with self._lock:
            self._handles.append(handle)
            if self.expired:
                _shut(handle)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for handle in self._handles:
                _shut(handle)

    def cancel(self) -> None:
        with self._lock:
            self.done = True
            for handle in self._handles:
                handle.close()
            self._handles.clear()


class _Watchdog:
    """One thread for every request's deadline (a thread per request would cost a bulk run more than its
    requests): it sleeps until the earliest deadline, expires it unless it was cancelled, and sleeps for
    good when there is none, so an idle daemon spends nothing on it."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._queue: list[tuple[float, int, _Deadline]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self._wake:
            heapq.heappush(self._queue, (deadline.at, next(self._count), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vaultpki-deadlines", daemon=True)
                self._thread.start()
            elif self._queue[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._queue and self._queue[0][2].done:
                    heapq.heappop(self._queue)
                if not self._queue:
                    self._wake.wait()
                    continue
                left = self._queue[0][0] - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._queue)[2].expire()


_watchdog = _Watchdog()


def _shut(handle: socket.socket) -> None:
    try:
        handle.shutdown(socket.SHUT_RDWR)
    except OSError:               # the connection is gone already: nothing is waiting on it
        pass


def _watch(sock: socket.socket | None) -> None:
    """Register a connection's socket with the request running in this thread, if any. What is registered
    is a duplicate of its descriptor: the TLS layer takes the original over, and http.client may close the
    connection's object while its answer is still being read; a shutdown through either ends both."""
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is None or sock is None or sock.fileno() < 0:
        return
    deadline.watch(socket.fromfd(sock.fileno(), sock.family, sock.type))


class _WatchedMixin:
    """A connection whose socket its request's deadline can shut down: a new one when it is made (before
    any TLS handshake), a reused keep-alive one when a request starts on it."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HttpConnection(_WatchedMixin, urllib3.connection.HTTPConnection):
    pass


class _HttpsConnection(_WatchedMixin, urllib3.connection.HTTPSConnection):
    pass


class _HttpPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HttpConnection


class _HttpsPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HttpsConnection


def _watched(manager: urllib3.poolmanager.PoolManager) -> urllib3.poolmanager.PoolManager:
    manager.pool_classes_by_scheme = {"http": _HttpPool, "https": _HttpsPool}
    return manager


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter with the watched connections, one TLS context, and no retries of its own."""

    def __init__(self, tls: ssl.SSLContext, pool: int, addresses: int) -> None:
        self._tls = tls
        super().__init__(pool_connections=max(1, addresses), pool_maxsize=max(1, pool), max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._tls, **kwargs)
        _watched(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.poolmanager.PoolManager:
        return _watched(super().proxy_manager_for(proxy, ssl_context=self._tls, **kwargs))

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust comes from the one TLS context alone: requests would add certifi's bundle to it."""


def tls_context(ca_cert: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """Verification against ``ca_cert`` (else the system's trust store), host names checked; a client
    certificate when given."""
    context = ssl.create_default_context(cafile=ca_cert)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def new_session(tls: ssl.SSLContext, pool: int = 1, addresses: int = 1) -> requests.Session:
    """A keep-alive session: up to ``pool`` connections to each of ``addresses`` origins."""
    session = requests.Session()
    session.trust_env = False                      # proxies are chosen by proxy_for; no netrc, no CA bundle variables
    session.headers["Accept-Encoding"] = "identity"   # the body cap counts what is read, not what it inflates to
    adapter = _Adapter(tls, pool, addresses)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- one request -------------------------------------------------------------------------------

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
    deadline = _Deadline(timeout)
    _current.deadline = deadline
    try:
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
    finally:
        _current.deadline = None
        deadline.cancel()


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


def _once(session: requests.Session, method: str, url: str, deadline: _Deadline, timeout: float, limit: int,
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


def _read_capped(response: requests.Response, limit: int, deadline: _Deadline) -> bytes:
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


# --- failures into the vaultpki hierarchy -------------------------------------------------------

def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" .*")


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
