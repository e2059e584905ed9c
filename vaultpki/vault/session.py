"""An authenticated session with Vault: the adapter (and its connections) made on first use, retries of
transient failures with tenacity, and the token's lifecycle (static tokens, logins, renewal, and the rule
for logging in again). The PKI endpoints on top are ``client.HttpVault``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import hvac
import msgspec
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from vaultpki.config import HEADER_UNSAFE, VaultConfig, header_safe
from vaultpki.config.records import HOME_TOKEN_FILE
from vaultpki.errors import ConfigError, VaultDenied, VaultRequestError, VaultUnavailable
from vaultpki.vault.failover import VaultAdapter
from vaultpki.vault.failures import Refused, translate_errors
from vaultpki.vault.http_session import new_session, tls_context
from vaultpki.vault.login import login_request, read_secret
from vaultpki.vault.retry_log import gave_up, started_retrying
from vaultpki.vault.transport import one_line

__all__ = ["NO_TOKEN", "VaultSession", "admin_config", "static_token"]

POOL_SIZE = 16      # keep-alive connections per address: as many as a bulk run keeps in flight


class VaultSession:
    """One authenticated session with Vault: hvac over one keep-alive ``requests`` session for all the
    configured addresses, transient failures retried, and the token's lifecycle.

    - Addresses are tried in order on transient failures (HA: a dead or sealed node
      is skipped; standbys forward to the active node), and the last good one is
      used first next time (``failover.VaultAdapter``); what still fails is retried
      with backoff for up to ``vault.retry_for``.
    - The token is obtained lazily: from the environment or a file, or by logging in
      (AppRole, TLS certificate, JWT, Kubernetes: ``login``, which reads the credential
      files anew at every login). A renewable token is renewed when a third of its
      lease is left; a login token is replaced by logging in again when its renewal
      is denied or capped by its max TTL, or when a request is denied and Vault no
      longer knows the token (``auth/token/lookup-self``). A request denied with a
      token Vault still knows is a denial: reported as such, with no new login.
    - ``one_shot``: a command that ends within seconds does not look its static token
      up to learn its lease (one round trip less); the daemon does.
    - Thread-safe: many requests may run over it in parallel.
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
                    tls = tls_context(cfg.ca_cert, *cert)
                except (OSError, ValueError) as exc:          # ssl.SSLError is an OSError
                    raise Refused(f"TLS set-up for Vault at {self._addrs[0]} failed: "
                                            f"{one_line(str(exc))}") from exc
                session = new_session(tls, POOL_SIZE, len(self._addrs))
                self._adapter = VaultAdapter(self._addrs, session, cfg.timeout, self._env, self._token_value,
                                             cfg.namespace)
            return self._adapter

    def client(self) -> hvac.Client:
        """An hvac client over this adapter, for the admin commands' use of hvac's API (token: ``ensure_token``)."""
        return self._over(self.adapter())

    def _active_addr(self) -> str:
        """The address the last request went to (for the retry log lines)."""
        adapter = self._adapter
        return adapter.addrs[adapter.active] if adapter is not None else self._addrs[0]

    def _call(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One request (failover inside the adapter), transient failures retried with backoff for up to
        ``vault.retry_for``; the decoded JSON (None when Vault answered with no body)."""
        return self._retried(what, lambda adapter: adapter.request(method, f"/v1/{path}", json=body))

    def _retried(self, what: str, send: Callable[[VaultAdapter], Any]) -> Any:
        """``send`` over the adapter, its failures translated, transient ones retried as ``_call`` says."""
        def attempt() -> Any:
            adapter = self.adapter()
            with translate_errors(adapter.addrs[adapter.active], what):
                return send(adapter)
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            # Bounded by time, not by a count: an HA election takes seconds to tens of seconds.
            stop=stop_after_delay(self._cfg.retry_for),
            wait=wait_exponential_jitter(multiplier=0.25, max=self._max_wait),
            reraise=True,
            before_sleep=started_retrying(what, self._active_addr, self._cfg.retry_for),
            retry_error_callback=gave_up(what, self._active_addr, self._cfg.retry_for),
        )
        return retrying(attempt)

    def _login(self) -> None:
        login = login_request(self._cfg)            # the credential files, read now: a bad one is sent nowhere
        self._token = None
        response = self._retried(login.what, lambda adapter: login.send(self._over(adapter)))
        self._take_auth(response, f"Vault's {self._cfg.auth} login at auth/{login.mount}")
        self._login_lease = self._lease

    @staticmethod
    def _over(adapter: VaultAdapter) -> hvac.Client:
        """An hvac client whose every request goes through ``adapter`` (for hvac's auth API)."""
        # token="": hvac would otherwise read $VAULT_TOKEN or ~/.vault-token for the adapter it makes first
        client = hvac.Client(url=adapter.addrs[0], token="", session=adapter.session)
        client.adapter = adapter
        return client

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
        """A token from a file or the environment (``static_token``): learn whether and when it expires."""
        self._token = static_token(self._cfg)
        if self._one_shot:
            return                 # lease unknown: never renewed, which a one-shot command never needs
        try:
            data = self._look_up_self()
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
            self._look_up_self()
        except VaultDenied:
            return True
        return False

    def _learn_whether_tokens_may_look_up(self) -> None:
        """A request was denied again with the token of a fresh login: if even that token may not look
        itself up, the policy lacks the grant, and lookups can no longer tell a gone token from a denial."""
        if self._may_look_up is not None:
            return
        with self._token_lock:
            try:
                self._look_up_self()
            except VaultDenied:
                self._may_look_up = False

    def _look_up_self(self) -> dict[str, Any]:
        """``auth/token/lookup-self``'s data; that the token could ask is itself worth knowing (see
        ``_may_look_up``). Raises VaultDenied when the token is gone or the policy lacks the grant."""
        data = (self._call("looking up the token", "GET", "auth/token/lookup-self") or {}).get("data") or {}
        self._may_look_up = True
        return dict(data)


def admin_config(cfg: VaultConfig) -> VaultConfig:
    """``cfg`` for an admin command (``provision``, ``ca …``): always a static token from the same sources
    (the operator's own, whatever login method the node's configuration names for itself)."""
    return msgspec.structs.replace(cfg, auth="token")


NO_TOKEN = ("no Vault token: set vault.token_file, $BAO_TOKEN or $VAULT_TOKEN, or log in with `bao login` or "
            "`vault login` (~/.vault-token)")


def static_token(cfg: VaultConfig) -> str:
    """The token ``cfg.token_source`` names (``config.build.token_source`` chose it, in the one documented
    order): a file read now, under the same rules whichever file it is, or the environment's value."""
    source = cfg.token_source
    if source.value is not None:
        return source.value                    # judged when the configuration was parsed
    if source.path is None or (source.origin == HOME_TOKEN_FILE and not os.path.lexists(source.path)):
        raise ConfigError(NO_TOKEN)
    token = read_secret(source.path, source.origin)
    if not header_safe(token):      # (checked before it is used: another thread may be waiting to use it)
        raise ConfigError(f"{source.origin} {source.path} {HEADER_UNSAFE}")
    return token


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: Vault away, sealed, electing or overloaded; never a TLS or hostile-answer failure."""
    return isinstance(exc, VaultUnavailable) and not isinstance(exc, Refused)


def _payload(response: Any, what: str) -> dict[str, Any]:
    """The ``data`` object of a decoded answer."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise VaultRequestError(f"Vault returned no data while {what}")
    return data

