"""The Vault adapter: hvac over one ``requests`` session per configured address list, vaultpki errors
and plain values on top.

Every request goes through ``VaultAdapter.request`` (an hvac adapter): failover between the configured
addresses (the last good one first), and ``transport.send``'s whole-request deadline, body cap and
redirects kept to the configured addresses. ``HttpVault`` adds what a node needs on top: retries of
transient failures with tenacity (bounded by ``vault.retry_for``), the token's lifecycle, the PKI
endpoints, and bulk signing over a thread pool that shares the session's keep-alive connections.
Vault's JSON never leaves this module; every failure is translated once (``transport.translate_errors``).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlencode

import hvac
import hvac.adapters
import hvac.exceptions as hvac_errors
import msgspec
import msgspec.json
import requests
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from vaultpki.config import HEADER_UNSAFE, VaultConfig, header_safe
from vaultpki.errors import ConfigError, VaultDenied, VaultpkiError, VaultRequestError, VaultUnavailable
from vaultpki.files import NotReadable, read_regular
from vaultpki.redact import redacted_repr
from vaultpki.vault import transport

if TYPE_CHECKING:
    from vaultpki.core.issue import SignRequest

__all__ = ["CaMaterial", "HttpVault", "IssuedCert", "VaultAdapter", "VaultPort"]

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


# Vault's answers that mean "not now, here": sealed/standby/unavailable, overloaded, uninitialised, server errors.
_TRANSIENT_STATUS = frozenset({429, 500, 501, 502, 503, 504})
POOL_SIZE = 16      # keep-alive connections per address: as many as a bulk run keeps in flight


class VaultAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac is untyped
    """hvac's adapter, the one place every request to Vault goes through.

    Each request is tried at the configured addresses in turn, the last one that answered first; a
    connection failure or a transient status (sealed, standby, overloaded) moves on to the next. Each try
    is one ``transport.send``: the whole of it within ``timeout``, the body capped, redirects followed
    only to a configured address. Answers: the decoded JSON (None for an empty body); a refusal is
    raised as hvac's exception for its status (hvac's own methods rely on them), a transport failure
    as ``requests``'.
    """

    def __init__(self, addrs: Sequence[str], session: requests.Session, timeout: float, env: Mapping[str, str],
                 token: str | None = None, namespace: str | None = None) -> None:
        super().__init__(base_uri=addrs[0], token=token, session=session, timeout=timeout, namespace=namespace)
        self.addrs = tuple(a.rstrip("/") for a in addrs)
        self.active = 0
        self._timeout = timeout
        self._env = env
        self._allowed = frozenset(transport.origin(a) for a in self.addrs)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, raise_exception: bool = True,
                **kwargs: Any) -> Any:
        body = kwargs.get("json")
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (kwargs.get("params") or {}).items()}
        target = "/" + url.lstrip("/") + (f"?{urlencode(params)}" if params else "")
        sent = {"Content-Type": "application/json", "X-Vault-Request": "true", **(headers or {})}
        if self.token:
            sent["X-Vault-Token"] = self.token
        if self.namespace:
            sent["X-Vault-Namespace"] = self.namespace
        data = None if body is None else msgspec.json.encode(body)
        failure: Exception | None = None
        first = self.active
        for offset in range(len(self.addrs)):
            index = (first + offset) % len(self.addrs)
            try:
                answer = transport.send(self.session, method.upper(), self.addrs[index] + target, timeout=self._timeout,
                                        limit=transport.MAX_VAULT_BODY, env=self._env, allowed=self._allowed,
                                        headers=sent, body=data)
            except requests.exceptions.RequestException as exc:
                failure = exc
                continue
            decoded = _decode(answer)
            if answer.status in _TRANSIENT_STATUS:
                failure = _status_error(method, answer, decoded)
                continue
            self.active = index
            if answer.status >= 400 and raise_exception:
                raise _status_error(method, answer, decoded)
            return decoded
        assert failure is not None
        raise failure


def _decode(answer: transport.Answer) -> Any:
    """The JSON of an answer; a body that is not JSON becomes an ``errors`` list saying so."""
    if not answer.body.strip():
        return None
    try:
        return msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        return {"errors": [f"HTTP {answer.status} with a body that is not JSON: {answer.body[:120]!r}"]}


def _status_error(method: str, answer: transport.Answer, decoded: Any) -> hvac_errors.VaultError:
    errors = decoded.get("errors") if isinstance(decoded, dict) else None
    errors = [str(e) for e in errors] if isinstance(errors, list) and errors else [f"HTTP {answer.status}"]
    status = 502 if answer.status == 504 else answer.status       # hvac has no class for a gateway timeout
    error: hvac_errors.VaultError = hvac_errors.VaultError.from_status(status, errors=errors, method=method,
                                                                        url=answer.url)
    return error


class HttpVault:
    """VaultPort over hvac and one keep-alive session for all the configured addresses.

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
    - Thread-safe: the leaves of a set are signed in parallel over the same session.
    """

    def __init__(self, cfg: VaultConfig, *, max_wait: float = 8.0, clock: Callable[[], float] = time.monotonic,
                 one_shot: bool = False, env: Mapping[str, str] | None = None) -> None:
        self._cfg = cfg
        self._one_shot = one_shot
        self._max_wait = max_wait
        self._clock = clock
        self._addrs = tuple(cfg.addrs or (cfg.addr,))
        self._env = os.environ if env is None else env
        self._adapter: VaultAdapter | None = None         # made on first use: a bad ca_cert fails that request
        self._adapter_lock = threading.Lock()
        self._token_lock = threading.RLock()
        self._token_value: str | None = None
        self._lease: float | None = None          # seconds; None: the token never expires
        self._obtained = 0.0                      # clock() when the token was obtained or renewed
        self._renewable = False
        self._login_lease: float | None = None    # the lease a login gave: a renewal that gives less is capped
        # Whether this identity's tokens may read auth/token/lookup-self, which tells a token that is gone
        # from one that is denied; None until Vault has said.
        self._may_look_up: bool | None = None

    # --- plumbing -----------------------------------------------------------

    @property
    def _token(self) -> str | None:
        return self._token_value

    @_token.setter
    def _token(self, token: str | None) -> None:
        self._token_value = token
        if self._adapter is not None:
            self._adapter.token = token

    def adapter(self) -> VaultAdapter:
        """The hvac adapter (and with it the session), made on first use."""
        with self._adapter_lock:
            if self._adapter is None:
                cfg = self._cfg
                cert = (cfg.cert_file, cfg.key_file) if cfg.auth == "cert" else (None, None)
                try:
                    tls = transport.tls_context(cfg.ca_cert, *cert)
                except (OSError, ValueError) as exc:          # ssl.SSLError is an OSError
                    raise transport.Refused(f"TLS set-up for Vault at {self._addrs[0]} failed: "
                                            f"{transport.one_line(str(exc))}") from exc
                session = transport.new_session(tls, POOL_SIZE, len(self._addrs))
                self._adapter = VaultAdapter(self._addrs, session, cfg.timeout, self._env, self._token_value,
                                             cfg.namespace)
            return self._adapter

    def client(self) -> hvac.Client:
        """An hvac client over this adapter, for the admin commands' use of hvac's API (token: ``ensure_token``)."""
        adapter = self.adapter()
        # token="": hvac would otherwise read $VAULT_TOKEN or ~/.vault-token for the adapter it makes first
        client = hvac.Client(url=adapter.addrs[0], token="", session=adapter.session)
        client.adapter = adapter
        return client

    def close(self) -> None:
        """Close the session's connections."""
        if self._adapter is not None:
            self._adapter.close()

    def _call(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One request (failover inside the adapter), transient failures retried with backoff for up to
        ``vault.retry_for``; the decoded JSON (None when Vault answered with no body)."""
        def attempt() -> Any:
            adapter = self.adapter()
            with transport.translate_errors(adapter.addrs[adapter.active], what):
                return adapter.request(method, f"/v1/{path}", json=body)
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            # Bounded by time, not by a count: an HA election takes seconds to tens of seconds.
            stop=stop_after_delay(self._cfg.retry_for),
            wait=wait_exponential_jitter(multiplier=0.25, max=self._max_wait),
            reraise=True,
        )
        return retrying(attempt)

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
        """Sign many CSRs, ``parallel`` at a time in a thread pool over the session's keep-alive connections;
        each through ``sign`` (retries, failover, redirects, re-login), so results and errors are ``sign``'s.

        ``requests`` is drawn in this thread, one more each time one completes; an exception from it stops
        the run (what is queued is cancelled) and propagates, as does closing the generator.
        """
        self.ensure_token()                   # one login before the workers start, not one each
        source = iter(requests)
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="vaultpki-sign") as pool:
            pending: dict[Future[IssuedCert | VaultpkiError], K] = {}

            def draw() -> None:
                for tag, request in source:
                    pending[pool.submit(self._sign_or_error, request)] = tag
                    return

            try:
                for _ in range(max(1, parallel)):
                    draw()
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        tag = pending.pop(future)
                        draw()                # keep the pool busy while the caller handles this answer
                        yield tag, future.result()
            finally:
                for future in pending:
                    future.cancel()

    def _sign_or_error(self, r: SignRequest) -> IssuedCert | VaultpkiError:
        try:
            return self.sign(r.mount, r.role, r.csr, r.common_name, r.ttl)
        except VaultpkiError as exc:
            return exc

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
        with ThreadPoolExecutor(1) as pool:     # the two reads are independent: one round trip
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




def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: Vault away, sealed, electing or overloaded; never a TLS or hostile-answer failure."""
    return isinstance(exc, VaultUnavailable) and not isinstance(exc, transport.Refused)


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
