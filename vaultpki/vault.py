"""The node-side Vault adapter: JSON over keep-alive HTTP, vaultpki errors and plain values on top.

It speaks Vault's HTTP API itself, not through hvac: a node calls a dozen endpoints, and
hvac + requests would cost a cold ``issue-node`` ~30 ms and ~6 MiB of its ~155 ms and ~39 MiB
(see the README's benchmarks). hvac stays the client of the admin side (``admin.py``:
provisioning, CA rotation), where its coverage of the API is worth its weight.

Requests go over ``wire`` (httptools on keep-alive sockets) when they can: a direct connection and an
answer that is not a redirect. A redirect (a standby that does not forward) and a proxy in the
environment are left to urllib3, which is loaded only then.

Vault's JSON never leaves this module. Transient failures (connection refused,
timeouts, 5xx, sealed, 429) are retried with capped exponential backoff and
jitter; everything else is translated once into the vaultpki hierarchy.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import msgspec
import msgspec.json

from .config import HEADER_UNSAFE, VaultConfig, header_safe
from .errors import ConfigError, VaultDenied, VaultpkiError, VaultRequestError, VaultUnavailable
from .files import NotReadable, read_regular
from .parallel import Parallel
from .redact import redacted_repr
from .wire import Wire, WireError

if TYPE_CHECKING:
    import ssl

    import urllib3

    from .issue import SignRequest
    from .stream import Post, _Slow

__all__ = [
    "CaMaterial", "HttpVault", "IssuedCert", "VaultPort",
    "conn_reason", "one_line", "pool_manager", "proxy_for", "redirects_only", "ssl_reason",
]

K = TypeVar("K")


class IssuedCert(msgspec.Struct, frozen=True):
    """What Vault returned for one leaf, as PEM strings; ``private_key`` only from ``issue``."""

    certificate: str
    ca_chain: tuple[str, ...]
    serial: str
    private_key: str | None = None

    def __repr__(self) -> str:
        return redacted_repr(self, "private_key")


class CaMaterial(msgspec.Struct, frozen=True):
    """A mount's default issuer and the chain above it (issuer first), plus every other issuer of the
    mount that may still issue (during a CA rotation: the new one before activation, the old one after)."""

    issuer: str
    chain: tuple[str, ...]
    others: tuple[tuple[str, tuple[str, ...]], ...] = ()


class VaultPort(Protocol):
    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert: ...

    def sign_many(
        self, requests: Iterable[tuple[K, SignRequest]], parallel: int,
    ) -> Iterator[tuple[K, IssuedCert | VaultpkiError]]:
        """Sign each request, ``parallel`` in flight; yield (tag, certificate or error) as each completes.
        ``requests`` is drawn lazily, in the caller's thread."""
        ...

    def issue(
        self, mount: str, role: str, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...],
        ttl: str | None, key_type: str, key_bits: int,
    ) -> IssuedCert: ...

    def ca_material(self, mount: str) -> CaMaterial: ...

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int: ...


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" .*")


# Vault's answers that mean "not now": sealed/standby/unavailable, overloaded, uninitialised, server errors.
_TRANSIENT_STATUS = frozenset({429, 500, 501, 502, 503, 504})
_POOL_SIZE = 16      # keep-alive connections per address: more than issue.MAX_PARALLEL


def redirects_only() -> urllib3.Retry:
    """urllib3's retry policy here: redirects are followed (a standby that does not forward answers 307
    to the active node); nothing else is retried by urllib3: tenacity does that, bounded by time."""
    import urllib3

    return urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=True)


class _TlsFailure(VaultUnavailable):
    """The TLS connection failed (verification, handshake): never worth retrying."""


def _pool(cfg: VaultConfig, addr: str, env: Mapping[str, str]) -> urllib3.PoolManager:
    """A keep-alive pool for one address, with the TLS settings of the config."""
    tls: dict[str, Any] = {}
    if addr.startswith("https://"):
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": cfg.ca_cert}    # no ca_cert: the system's trust store
        if cfg.auth == "cert" and cfg.cert_file and cfg.key_file:
            tls |= {"cert_file": cfg.cert_file, "key_file": cfg.key_file}
    return pool_manager(addr, env, maxsize=_POOL_SIZE, **tls)


def pool_manager(url: str, env: Mapping[str, str], **kwargs: Any) -> urllib3.PoolManager:
    """urllib3's pool for ``url``: through the proxy the environment names for it, like Go's HTTP clients."""
    import urllib3

    proxy = proxy_for(url, env)
    return urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)


def proxy_for(addr: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL the environment names for ``addr``, honouring no_proxy; None for a direct connection."""
    proxies = {k.lower()[:-6]: v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    if not proxies:
        return None
    from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed

    if proxy_bypass_environment(urlsplit(addr).netloc, proxies):
        return None
    return proxies.get(addr.split("://", 1)[0]) or proxies.get("all")


class _Reply(msgspec.Struct, frozen=True):
    """One HTTP answer: its status and decoded JSON (None for an empty body)."""

    status: int
    body: Any

    @classmethod
    def of(cls, status: int, raw: bytes) -> _Reply:
        try:
            decoded = msgspec.json.decode(raw) if raw.strip() else None
        except msgspec.DecodeError:
            decoded = {"errors": [f"HTTP {status} with a body that is not JSON: {raw[:120]!r}"]}
        return cls(status, decoded)

    def errors(self) -> str:
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        text = "; ".join(str(e) for e in errors) if errors else f"HTTP {self.status}"
        return one_line(text).replace("1 error occurred: * ", "").replace("1 error occurred: ", "")


class HttpVault:
    """VaultPort over keep-alive HTTP, one connection pool per configured address.

    - Addresses are tried in order on transient failures (HA: a dead or sealed node
      is skipped; standbys forward to the active node), and the last good one is
      used first next time.
    - The token is obtained lazily: from the environment or a file, or by logging in
      (AppRole, TLS certificate). A renewable token is renewed when a third of its
      lease is left; a login token is replaced by logging in again when its renewal
      is denied or capped by its max TTL, or when a request is denied and Vault no
      longer knows the token (``auth/token/lookup-self``). A request denied with a
      token Vault still knows is a denial: reported as such, with no new login.
    - ``one_shot``: a command that ends within seconds does not look its static token
      up to learn its lease (one round trip less); the daemon does.
    - Thread-safe: the leaves of a set are signed in parallel over the same pools.
    """

    def __init__(self, cfg: VaultConfig, *, max_wait: float = 8.0, clock: Callable[[], float] = time.monotonic,
                 one_shot: bool = False, env: Mapping[str, str] | None = None) -> None:
        self._cfg = cfg
        self._one_shot = one_shot
        self._max_wait = max_wait
        self._clock = clock
        self._addrs = cfg.addrs or (cfg.addr,)
        self._env = os.environ if env is None else env
        self._pools: list[urllib3.PoolManager | None] = [None] * len(self._addrs)    # made on first use
        self._direct = [proxy_for(addr, self._env) is None for addr in self._addrs]
        self._wires: list[Wire | None] = [None] * len(self._addrs)
        self._wire_lock = threading.Lock()
        self._active = 0
        self._token_lock = threading.RLock()
        self._token: str | None = None
        self._lease: float | None = None          # seconds; None: the token never expires
        self._obtained = 0.0                      # clock() when the token was obtained or renewed
        self._renewable = False
        self._login_lease: float | None = None    # the lease a login gave: a renewal that gives less is capped
        # Whether this identity's tokens may read auth/token/lookup-self, which tells a token that is gone
        # from one that is denied; None until Vault has said.
        self._may_look_up: bool | None = None

    # --- plumbing -----------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Vault-Request": "true"}
        if self._token:
            headers["X-Vault-Token"] = self._token
        if self._cfg.namespace:
            headers["X-Vault-Namespace"] = self._cfg.namespace
        return headers

    def _send(self, index: int, method: str, path: str, body: Mapping[str, Any] | None) -> _Reply:
        data = None if body is None else msgspec.json.encode(body)
        url = f"{self._addrs[index]}/v1/{path}"
        if self._direct[index]:
            parts = urlsplit(url)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            status, headers, raw = self._wire(index).request(method, target, data, list(self._headers().items()))
            if not (300 <= status < 400 and "location" in headers):
                return _Reply.of(status, raw)
            # A standby that does not forward: urllib3 follows its redirect (and any further one) with the
            # method, the body and the token.
            url = urljoin(url, headers["location"])
        import urllib3

        response = self._pool(index).request(
            method, url, body=data, headers=self._headers(),
            timeout=urllib3.Timeout(connect=self._cfg.timeout, read=self._cfg.timeout), retries=redirects_only())
        return _Reply.of(response.status, response.data)

    def _wire(self, index: int) -> Wire:
        with self._wire_lock:
            wire = self._wires[index]
            if wire is None:
                parts = urlsplit(self._addrs[index])
                https = parts.scheme == "https"
                try:
                    tls = self._tls_context() if https else None
                except (OSError, ValueError) as exc:      # ssl.SSLError is an OSError
                    raise _TlsFailure(f"TLS set-up for Vault at {self._addrs[index]} failed: {one_line(str(exc))}") from exc
                wire = Wire(parts.hostname or "", parts.port or (443 if https else 80), tls, self._cfg.timeout)
                self._wires[index] = wire
            return wire

    def _pool(self, index: int) -> urllib3.PoolManager:
        with self._wire_lock:
            pool = self._pools[index]
            if pool is None:
                pool = self._pools[index] = _pool(self._cfg, self._addrs[index], self._env)
            return pool

    def _call(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One request to the first address that answers, transient failures retried with backoff;
        the decoded JSON (None when Vault answered with no body)."""
        def attempt() -> Any:
            failure: VaultUnavailable | None = None
            for offset in range(len(self._pools)):
                index = (self._active + offset) % len(self._pools)
                addr = self._addrs[index]
                try:
                    result = _judge(_transport_errors(addr, what, partial(self._send, index, method, path, body)),
                                    addr, what)
                except VaultUnavailable as exc:
                    failure = exc
                    continue
                self._active = index
                return result
            assert failure is not None
            raise failure
        try:
            return attempt()
        except VaultUnavailable as exc:
            if not _is_transient(exc):
                raise
            pending: list[BaseException] = [exc]
        # Only now load tenacity (~5 ms of a cold command, which as a rule never needs it), and hand
        # it the failure that already happened as its first attempt, so that it backs off before the next.
        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

        def again() -> Any:
            if pending:
                raise pending.pop()
            return attempt()
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            # Bounded by time, not by a count: an HA election takes seconds to tens of seconds.
            stop=stop_after_delay(self._cfg.retry_for),
            wait=wait_exponential_jitter(initial=0.25, max=self._max_wait),
            reraise=True,
        )
        return retrying(again)

    def _login(self) -> None:
        cfg = self._cfg
        mount = cfg.approle_mount if cfg.auth == "approle" else cfg.cert_mount
        body = self._approle_body() if cfg.auth == "approle" else ({"name": cfg.cert_role} if cfg.cert_role else {})
        self._token = None
        response = self._call(f"logging in with {cfg.auth} auth at auth/{mount}", "POST", f"auth/{mount}/login", body)
        self._take_auth(response, f"Vault's {cfg.auth} login at auth/{mount}")
        self._login_lease = self._lease

    def _take_auth(self, response: Any, what: str) -> None:
        try:
            auth = response["auth"]
            token = str(auth["client_token"])
        except (KeyError, TypeError) as exc:
            raise VaultDenied(f"{what} returned no token") from exc
        if not header_safe(token):
            raise VaultDenied(f"{what} returned a token that {HEADER_UNSAFE}")
        self._token = token
        lease = float(auth.get("lease_duration") or 0)
        self._lease = lease if lease > 0 else None
        self._renewable = bool(auth.get("renewable"))
        self._obtained = self._clock()

    def _static_token(self) -> None:
        """A token from the environment or a file: learn whether and when it expires."""
        if self._cfg.token_file:
            token = _read_secret(self._cfg.token_file, "vault.token_file")
            if not header_safe(token):             # (checked before it is set: another thread may be waiting to use it)
                raise ConfigError(f"vault.token_file {self._cfg.token_file} {HEADER_UNSAFE}")
            self._token = token
        elif self._cfg.token:
            self._token = self._cfg.token
        else:
            raise ConfigError("no Vault token: set $VAULT_TOKEN or vault.token_file (or use approle/cert auth)")
        if self._one_shot:
            return                 # lease unknown: never renewed, which a one-shot command never needs
        try:
            data = (self._call("looking up the token", "GET", "auth/token/lookup-self") or {}).get("data") or {}
        except VaultDenied:
            # A least-privilege token need not be allowed to look itself up: its expiry is then
            # unknown, and a request that fails because it expired says so itself.
            self._lease, self._renewable = None, False
            return
        ttl = float(data.get("ttl") or 0)
        self._lease = ttl if ttl > 0 else None
        self._renewable = bool(data.get("renewable"))
        self._obtained = self._clock()

    def seconds_until_token_refresh(self) -> float | None:
        """When the token should be renewed or replaced (a third of its lease left); None: never."""
        if self._token is None or self._lease is None:
            return None
        if self._cfg.auth == "token" and not self._renewable:
            return None            # nothing can be done for it before it expires; requests will then say so
        return max(0.0, self._obtained + self._lease * 2 / 3 - self._clock())

    def ensure_token(self) -> None:
        """Have a usable token: obtain one, renew a renewable one that is getting old, or log in again."""
        with self._token_lock:       # requests in parallel must not log in once each
            self._ensure_token()

    def _ensure_token(self) -> None:
        if self._token is None:
            self._static_token() if self._cfg.auth == "token" else self._login()
            return
        if (left := self.seconds_until_token_refresh()) is None or left > 0:
            return
        if self._renewable and self._renew():
            return
        if self._cfg.auth != "token":
            self._login()

    def _renew(self) -> bool:
        """Renew the token; False when a login token is better replaced by a new login: its renewal was
        denied, or came back shorter than the login's lease (the token nears its max TTL, and renewing it
        again would only wake the daemon ever more often until it expires)."""
        try:
            response = self._call("renewing the token", "POST", "auth/token/renew-self", {})
        except VaultDenied:
            if self._cfg.auth == "token":
                raise
            return False
        self._take_auth(response, "Vault's token renewal")
        if self._cfg.auth == "token" or self._login_lease is None:
            return True
        return self._lease is not None and self._lease >= self._login_lease

    def _approle_body(self) -> dict[str, str]:
        cfg = self._cfg
        role_id = cfg.role_id or _read_secret(cfg.role_id_file or "", "vault.role_id_file")
        return {"role_id": role_id, "secret_id": _read_secret(cfg.secret_id_file or "", "vault.secret_id_file")}

    def _data(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self.ensure_token()
        used = self._token
        try:
            response = self._call(what, method, path, body)
        except VaultDenied:
            # A denial is the policy's unless the login token is really gone (expired or revoked): only
            # then log in again, once, and ask again. Logging in on every 403 would use up secret-ids
            # and turn the real denial into a login error.
            if self._cfg.auth == "token" or not self._replaced_if_gone(used):
                raise
            try:
                response = self._call(what, method, path, body)
            except VaultDenied:
                self._learn_whether_tokens_may_look_up()
                raise
        return _payload(response, what)

    def _replaced_if_gone(self, used: str | None) -> bool:
        """After a request made with ``used`` was denied: if that token is gone, log in again (once for
        all threads) and say True; if Vault still knows it, the denial stands: False."""
        with self._token_lock:
            if self._token != used:
                return True                   # another thread has already logged in again
            if not self._token_is_gone():
                return False
            self._login()
            return True

    def _token_is_gone(self) -> bool:
        """Ask Vault (auth/token/lookup-self): a token it no longer knows is refused even that. Where this
        identity's tokens have been seen unable to look themselves up, only the known expiry can tell."""
        if self._may_look_up is False:
            return self._lease is not None and self._clock() >= self._obtained + self._lease
        try:
            self._call("looking up the token", "GET", "auth/token/lookup-self")
        except VaultDenied:
            return True
        self._may_look_up = True
        return False

    def _learn_whether_tokens_may_look_up(self) -> None:
        """A request was denied again with the token of a fresh login: if even that token may not look
        itself up, the policy lacks the grant, and lookups can no longer tell a gone token from a denial."""
        if self._may_look_up is not None:
            return
        with self._token_lock:
            try:
                self._call("looking up the token", "GET", "auth/token/lookup-self")
                self._may_look_up = True
            except VaultDenied:
                self._may_look_up = False

    # --- the port -----------------------------------------------------------

    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert:
        what = _signing(mount, role)
        return _issued(self._data(what, "POST", f"{mount}/sign/{role}", _sign_body(csr, common_name, ttl)), what)

    def sign_many(
        self, requests: Iterable[tuple[K, SignRequest]], parallel: int,
    ) -> Iterator[tuple[K, IssuedCert | VaultpkiError]]:
        """Sign many CSRs from this thread, ``parallel`` in flight over as many keep-alive connections to
        the active address (``stream``: no thread per request, see there why).

        Only a certificate or a definite refusal (a 4xx other than 401/403/429) is settled that way; any
        other answer, a failed connection or a timeout sends the request (and every later one) through
        ``sign``, in a worker thread, which retries, fails over, follows redirects and logs in again.
        So the results and error messages are exactly those of ``sign``.
        """
        from . import stream

        self.ensure_token()
        index = self._active
        addr = self._addrs[index]
        tls, direct = None, self._direct[index]
        if direct:
            try:
                tls = self._wire(index).tls       # the address's one TLS context (the CA reads made it)
            except _TlsFailure:                   # sign() will say what is wrong
                direct = False
        endpoint = stream.Endpoint.at(addr, tls, self._cfg.timeout, direct)

        def posts() -> Iterator[Post[tuple[K, SignRequest]]]:
            for tag, request in requests:
                body = msgspec.json.encode(_sign_body(request.csr, request.common_name, request.ttl))
                yield stream.Post((tag, request), f"v1/{request.mount}/sign/{request.role}", body,
                                  tuple(self._headers().items()))

        def judge(post: Post[tuple[K, SignRequest]], status: int, raw: bytes) -> IssuedCert | VaultpkiError | _Slow:
            if not (200 <= status < 300 or (400 <= status < 500 and status not in (401, 403, 429))):
                return stream.SLOW            # a redirect, a login to renew, a node away or busy: sign() knows what to do
            what = _signing(post.tag[1].mount, post.tag[1].role)
            try:
                return _issued(_payload(_judge(_Reply.of(status, raw), addr, what), what), what)
            except VaultpkiError as exc:
                return exc

        def slow(post: Post[tuple[K, SignRequest]]) -> IssuedCert | VaultpkiError:
            r = post.tag[1]
            try:
                return self.sign(r.mount, r.role, r.csr, r.common_name, r.ttl)
            except VaultpkiError as exc:
                return exc

        for (tag, _), result in stream.exchange(endpoint, posts(), parallel, judge, slow):
            yield tag, result

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS settings of the urllib3 pools, for ``wire`` (and through it ``stream``): the configured CA
        (else the system's), the host name checked, the client certificate for cert auth."""
        import ssl

        context = ssl.create_default_context(cafile=self._cfg.ca_cert)
        if self._cfg.auth == "cert" and self._cfg.cert_file and self._cfg.key_file:
            context.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        return context

    def issue(
        self, mount: str, role: str, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...],
        ttl: str | None, key_type: str, key_bits: int,
    ) -> IssuedCert:
        body: dict[str, Any] = {
            "common_name": common_name, "private_key_format": "pkcs8",
            "key_type": key_type, "key_bits": key_bits,
        }
        if dns:
            body["alt_names"] = ",".join(dns)
        if ips:
            body["ip_sans"] = ",".join(ips)
        if ttl is not None:
            body["ttl"] = ttl
        what = f"issuing with {mount}/issue/{role}"
        data = self._data(what, "POST", f"{mount}/issue/{role}", body)
        issued = _issued(data, what)
        key = data.get("private_key")
        if not isinstance(key, str):
            raise VaultRequestError(f"Vault returned no private key while {what}")
        return IssuedCert(issued.certificate, issued.ca_chain, issued.serial, key)

    def ca_material(self, mount: str) -> CaMaterial:
        """The default issuer, and the other keyed issuers whose usage still includes issuing.

        Issuers without a key (a root imported with an intermediate) are never anchors by
        themselves; an issuer retired to read-only usage leaves the trust bundle.
        """
        what = f"reading the CA of mount {mount}"
        with Parallel(1) as pool:     # the two reads are independent: one round trip
            listing = pool.submit(self._data, f"listing the issuers of mount {mount}", "LIST", f"{mount}/issuers")
            data = self._data(what, "GET", f"{mount}/issuer/default/json")
            issuer = data.get("certificate")
            if not isinstance(issuer, str) or not issuer.strip():
                raise VaultRequestError(f"mount {mount} has no default issuer (is the CA set up?)")
            default_id = str(data.get("issuer_id", ""))
            chain = tuple(c for c in data.get("ca_chain") or [] if isinstance(c, str))
            try:
                listed = listing.result()
            except VaultRequestError:
                return CaMaterial(issuer, chain)      # a server without multiple issuers
        others = []
        for issuer_id, info in (listed.get("key_info") or {}).items():
            if issuer_id == default_id or not (info or {}).get("key_id"):
                continue
            detail = self._issuer(mount, issuer_id)
            if detail is not None:
                others.append(detail)
        return CaMaterial(issuer, chain, tuple(others))

    def _issuer(self, mount: str, issuer_id: str) -> tuple[str, tuple[str, ...]] | None:
        """(certificate, chain) of an issuer that may still issue; None for a retired one."""
        what = f"reading issuer {issuer_id} of mount {mount}"
        try:
            data = self._data(what, "GET", f"{mount}/issuer/{issuer_id}")
        except VaultDenied:
            # A token that may not read issuer settings: count it as usable (the json view is public).
            data = self._data(what, "GET", f"{mount}/issuer/{issuer_id}/json")
            data.setdefault("usage", "issuing-certificates")
        if "issuing-certificates" not in str(data.get("usage", "")):
            return None
        return str(data["certificate"]), tuple(c for c in data.get("ca_chain") or [] if isinstance(c, str))

    # --- revocation ---------------------------------------------------------

    def list_serials(self, mount: str) -> tuple[str, ...]:
        """Every serial the mount has stored (colon-hex)."""
        try:
            data = self._data(f"listing the certificates of mount {mount}", "LIST", f"{mount}/certs")
        except VaultRequestError:
            return ()                                 # a mount that has issued nothing yet
        return tuple(str(k) for k in data.get("keys") or [])

    def read_cert(self, mount: str, serial: str) -> tuple[str, int]:
        """(PEM, revocation time or 0) of one stored certificate."""
        data = self._data(f"reading certificate {serial} of mount {mount}", "GET", f"{mount}/cert/{serial}")
        return str(data.get("certificate", "")), int(data.get("revocation_time") or 0)

    def revoke(self, mount: str, serial: str) -> int:
        """Revoke by serial; returns the revocation time (unix seconds)."""
        data = self._data(f"revoking {serial} on mount {mount}", "POST", f"{mount}/revoke",
                          {"serial_number": serial})
        return int(data.get("revocation_time") or 0)

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int:
        """Revoke a certificate by proving possession of its key (no `revoke` capability needed)."""
        body = {"certificate": certificate, "private_key": private_key}
        data = self._data(f"revoking a replaced certificate on mount {mount}", "POST",
                          f"{mount}/revoke-with-key", body)
        return int(data.get("revocation_time") or 0)


def _transport_errors(addr: str, what: str, send: Callable[[], _Reply]) -> _Reply:
    """Run ``send``, re-raising the transport's failures (wire's or urllib3's) as VaultUnavailable chained
    to their cause; a TLS failure as _TlsFailure, which is never retried."""
    try:
        return send()
    except Exception as exc:
        failure = _transport_failure(exc)
        if failure is None:
            raise
        kind, reason = failure
    if kind == "tls":
        raise _TlsFailure(f"TLS connection to Vault at {addr} failed while {what}: {ssl_reason(reason)}") from reason
    if kind == "redirects":
        raise VaultUnavailable(f"request to Vault at {addr} failed while {what}: {one_line(str(reason))}") from reason
    raise VaultUnavailable(f"cannot reach Vault at {addr} while {what}: {conn_reason(reason)}") from reason


def _transport_failure(exc: Exception) -> tuple[str, Exception] | None:
    """("tls" | "redirects" | "connection", the underlying error) for a failure below HTTP, from wire or
    urllib3 (loaded only if it was used); None for anything else."""
    if isinstance(exc, WireError):
        reason = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        ssl = sys.modules.get("ssl")
        tls = ssl is not None and isinstance(reason, ssl.SSLError) and not isinstance(reason, ssl.SSLEOFError)
        return ("tls" if tls else "connection"), reason
    urllib3 = sys.modules.get("urllib3")
    if urllib3 is None or not isinstance(exc, urllib3.exceptions.HTTPError):
        return None
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
    if isinstance(reason, urllib3.exceptions.SSLError):
        return "tls", reason
    if isinstance(reason, urllib3.exceptions.ResponseError):              # too many redirects
        return "redirects", reason
    return "connection", reason                                           # refused, timed out, dropped mid-answer


def _judge(reply: _Reply, addr: str, what: str) -> Any:
    """The decoded body of a successful answer; otherwise the most specific vaultpki error."""
    if reply.status < 400:
        return reply.body
    if reply.status in (401, 403):
        raise VaultDenied(f"Vault denied {what}: {reply.errors()}")
    if reply.status in _TRANSIENT_STATUS:
        raise VaultUnavailable(f"Vault at {addr} is unavailable while {what}: {reply.errors()}")
    if reply.status == 404:
        raise VaultRequestError(f"Vault has no such path while {what} (is the mount or role provisioned?)")
    raise VaultRequestError(f"Vault refused {what}: {reply.errors()}")


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: Vault away, sealed, electing or overloaded; never a TLS verification failure."""
    return isinstance(exc, VaultUnavailable) and not isinstance(exc, _TlsFailure)


def _payload(response: Any, what: str) -> dict[str, Any]:
    """The ``data`` object of a decoded answer."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise VaultRequestError(f"Vault returned no data while {what}")
    return data


def _signing(mount: str, role: str) -> str:
    return f"signing with {mount}/sign/{role}"


def _sign_body(csr: str, common_name: str | None, ttl: str | None) -> dict[str, str]:
    # common_name only when the spec sends one: a least-privilege policy (allowed_parameters =
    # csr, ttl) refuses it, which is also why hvac's sign_certificate() (always sending it) was never used.
    body = {"csr": csr}
    if common_name is not None:
        body["common_name"] = common_name
    if ttl is not None:
        body["ttl"] = ttl
    return body


def _issued(data: dict[str, Any], what: str) -> IssuedCert:
    cert = data.get("certificate")
    if not isinstance(cert, str):
        raise VaultRequestError(f"Vault returned no certificate while {what}")
    chain = data.get("ca_chain") or ([data["issuing_ca"]] if isinstance(data.get("issuing_ca"), str) else [])
    return IssuedCert(certificate=cert, ca_chain=tuple(chain), serial=str(data.get("serial_number", "")))


MAX_SECRET_BYTES = 1 << 16       # a token, role-id or secret-id is a few dozen bytes


def _read_secret(path: str, key: str) -> str:
    """Read a token or secret-id file, refusing one that others can read. Judged by what was opened
    (``files.read_regular``): a regular file of at most MAX_SECRET_BYTES, never a FIFO (whose open
    would wait for a writer forever) or a device."""
    try:
        data, st = read_regular(path, MAX_SECRET_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{key} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror}") from exc
    except NotReadable as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{key} {path} is empty")
    return value


def conn_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker.lower()
    return one_line(text)[:200]


def ssl_reason(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"certificate verify failed: ([^(')]+)", text)
    return match.group(1).strip() if match else one_line(text)[:200]


