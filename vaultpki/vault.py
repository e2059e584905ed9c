"""The Vault adapter: hvac underneath, vaultpki errors and plain values on top.

Vault's JSON never leaves this module. Transient failures (connection refused,
timeouts, 5xx, sealed, 429) are retried with capped exponential backoff and
jitter; everything else is translated once into the vaultpki hierarchy.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions as hvac_errors
import requests
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from .config import VaultConfig
from .errors import ConfigError, VaultDenied, VaultRequestError, VaultUnavailable

__all__ = ["CaMaterial", "HvacVault", "IssuedCert", "VaultPort", "translate_errors"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """What Vault returned for one leaf, as PEM strings; ``private_key`` only from ``issue``."""

    certificate: str
    ca_chain: tuple[str, ...]
    serial: str
    private_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CaMaterial:
    """A mount's default issuer and the chain above it (issuer first), plus every other issuer of the
    mount that may still issue (during a CA rotation: the new one before activation, the old one after)."""

    issuer: str
    chain: tuple[str, ...]
    others: tuple[tuple[str, tuple[str, ...]], ...] = ()


class VaultPort(Protocol):
    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert: ...

    def issue(
        self, mount: str, role: str, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...],
        ttl: str | None, key_type: str, key_bits: int,
    ) -> IssuedCert: ...

    def ca_material(self, mount: str) -> CaMaterial: ...

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int: ...


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" .*")


def _vault_reason(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc.args[0]) if exc.args else type(exc).__name__]
    return _one_line("; ".join(str(e) for e in errors)).replace("1 error occurred: ", "")


class HvacVault:
    """VaultPort over keep-alive HTTP sessions, one per configured address.

    - Addresses are tried in order on transient failures (HA: a dead or sealed node
      is skipped; standbys forward to the active node), and the last good one is
      used first next time.
    - The token is obtained lazily: from the environment or a file, or by logging in
      (AppRole, TLS certificate). A renewable token is renewed when a third of its
      lease is left; an expired login token is replaced by logging in again.
    """

    def __init__(self, cfg: VaultConfig, *, max_wait: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._max_wait = max_wait
        self._clock = clock
        self._addrs = cfg.addrs or (cfg.addr,)
        self._clients = [self._make_client(addr) for addr in self._addrs]
        self._active = 0
        self._token: str | None = None
        self._lease: float | None = None          # seconds; None: the token never expires
        self._obtained = 0.0                      # clock() when the token was obtained or renewed
        self._renewable = False

    def _make_client(self, addr: str) -> hvac.Client:
        cfg = self._cfg
        verify: bool | str = cfg.ca_cert if cfg.ca_cert else True
        cert = (cfg.cert_file, cfg.key_file) if cfg.auth == "cert" and cfg.cert_file and cfg.key_file else None
        # hvac lets a passed session's own verify/cert override its arguments, so set them on the session.
        session = requests.Session()
        session.verify = verify
        session.cert = cert
        return hvac.Client(url=addr, verify=verify, cert=cert, timeout=cfg.timeout,
                           namespace=cfg.namespace, session=session)

    # --- plumbing -----------------------------------------------------------

    def _call(self, what: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn`` on the first address that answers; retry transient failures with backoff."""
        def attempt() -> T:
            failure: VaultUnavailable | None = None
            for offset in range(len(self._clients)):
                index = (self._active + offset) % len(self._clients)
                client = self._clients[index]
                client.token = self._token
                try:
                    with translate_errors(self._addrs[index], what):
                        result = fn(client)
                except VaultUnavailable as exc:
                    failure = exc
                    continue
                self._active = index
                return result
            assert failure is not None
            raise failure
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            # Bounded by time, not by a count: an HA election takes seconds to tens of seconds.
            stop=stop_after_delay(self._cfg.retry_for),
            wait=wait_exponential_jitter(initial=0.25, max=self._max_wait),
            reraise=True,
        )
        return retrying(attempt)

    def _login(self) -> None:
        cfg = self._cfg
        mount = cfg.approle_mount if cfg.auth == "approle" else cfg.cert_mount
        body = self._approle_body() if cfg.auth == "approle" else ({"name": cfg.cert_role} if cfg.cert_role else {})
        self._token = None
        response = self._call(f"logging in with {cfg.auth} auth at auth/{mount}",
                              lambda c: c.write_data(f"auth/{mount}/login", data=body))
        self._take_auth(response, f"Vault's {cfg.auth} login at auth/{mount}")

    def _take_auth(self, response: Any, what: str) -> None:
        try:
            auth = response["auth"]
            token = str(auth["client_token"])
        except (KeyError, TypeError) as exc:
            raise VaultDenied(f"{what} returned no token") from exc
        self._token = token
        lease = float(auth.get("lease_duration") or 0)
        self._lease = lease if lease > 0 else None
        self._renewable = bool(auth.get("renewable"))
        self._obtained = self._clock()

    def _static_token(self) -> None:
        """A token from the environment or a file: learn whether and when it expires."""
        if self._cfg.token_file:
            self._token = _read_secret(self._cfg.token_file, "vault.token_file")
        elif self._cfg.token:
            self._token = self._cfg.token
        else:
            raise ConfigError("no Vault token: set $VAULT_TOKEN or vault.token_file (or use approle/cert auth)")
        try:
            data = self._call("looking up the token", lambda c: c.auth.token.lookup_self())["data"]
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
        if self._token is None:
            self._static_token() if self._cfg.auth == "token" else self._login()
            return
        if (left := self.seconds_until_token_refresh()) is None or left > 0:
            return
        if self._renewable:
            try:
                response = self._call("renewing the token", lambda c: c.auth.token.renew_self())
                self._take_auth(response, "Vault's token renewal")
                return
            except VaultDenied:
                if self._cfg.auth == "token":
                    raise
        if self._cfg.auth != "token":
            self._login()

    def _approle_body(self) -> dict[str, str]:
        cfg = self._cfg
        role_id = cfg.role_id or _read_secret(cfg.role_id_file or "", "vault.role_id_file")
        return {"role_id": role_id, "secret_id": _read_secret(cfg.secret_id_file or "", "vault.secret_id_file")}

    def _data(self, what: str, fn: Callable[[hvac.Client], Any]) -> dict[str, Any]:
        self.ensure_token()
        try:
            response = self._call(what, fn)
        except VaultDenied:
            if self._cfg.auth == "token":
                raise
            self._login()              # a login token may have expired under us: once more, freshly logged in
            response = self._call(what, fn)
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise VaultRequestError(f"Vault returned no data while {what}")
        return data

    # --- the port -----------------------------------------------------------

    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert:
        # Written by hand, not hvac's sign_certificate(): that always sends common_name,
        # which a least-privilege policy (allowed_parameters = csr, ttl) refuses.
        body: dict[str, Any] = {"csr": csr}
        if common_name is not None:
            body["common_name"] = common_name
        if ttl is not None:
            body["ttl"] = ttl
        what = f"signing with {mount}/sign/{role}"
        return _issued(self._data(what, lambda c: c.write_data(f"{mount}/sign/{role}", data=body)), what)

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
        data = self._data(what, lambda c: c.write_data(f"{mount}/issue/{role}", data=body))
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
        data = self._data(what, lambda c: c.read(f"{mount}/issuer/default/json"))
        issuer = data.get("certificate")
        if not isinstance(issuer, str) or not issuer.strip():
            raise VaultRequestError(f"mount {mount} has no default issuer (is the CA set up?)")
        default_id = str(data.get("issuer_id", ""))
        chain = tuple(c for c in data.get("ca_chain") or [] if isinstance(c, str))
        try:
            listed = self._data(f"listing the issuers of mount {mount}", lambda c: c.list(f"{mount}/issuers"))
        except VaultRequestError:
            return CaMaterial(issuer, chain)          # a server without multiple issuers
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
            data = self._data(what, lambda c: c.read(f"{mount}/issuer/{issuer_id}"))
        except VaultDenied:
            # A token that may not read issuer settings: count it as usable (the json view is public).
            data = self._data(what, lambda c: c.read(f"{mount}/issuer/{issuer_id}/json"))
            data.setdefault("usage", "issuing-certificates")
        if "issuing-certificates" not in str(data.get("usage", "")):
            return None
        return str(data["certificate"]), tuple(c for c in data.get("ca_chain") or [] if isinstance(c, str))

    # --- revocation ---------------------------------------------------------

    def list_serials(self, mount: str) -> tuple[str, ...]:
        """Every serial the mount has stored (colon-hex)."""
        try:
            data = self._data(f"listing the certificates of mount {mount}", lambda c: c.list(f"{mount}/certs"))
        except VaultRequestError:
            return ()                                 # a mount that has issued nothing yet
        return tuple(str(k) for k in data.get("keys") or [])

    def read_cert(self, mount: str, serial: str) -> tuple[str, int]:
        """(PEM, revocation time or 0) of one stored certificate."""
        data = self._data(f"reading certificate {serial} of mount {mount}", lambda c: c.read(f"{mount}/cert/{serial}"))
        return str(data.get("certificate", "")), int(data.get("revocation_time") or 0)

    def revoke(self, mount: str, serial: str) -> int:
        """Revoke by serial; returns the revocation time (unix seconds)."""
        data = self._data(f"revoking {serial} on mount {mount}",
                          lambda c: c.write_data(f"{mount}/revoke", data={"serial_number": serial}))
        return int(data.get("revocation_time") or 0)

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int:
        """Revoke a certificate by proving possession of its key (no `revoke` capability needed)."""
        body = {"certificate": certificate, "private_key": private_key}
        data = self._data(f"revoking a replaced certificate on mount {mount}",
                          lambda c: c.write_data(f"{mount}/revoke-with-key", data=body))
        return int(data.get("revocation_time") or 0)


@contextlib.contextmanager
def translate_errors(addr: str, what: str) -> Iterator[None]:
    """Re-raise hvac/requests failures as the most specific vaultpki error, chained."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise VaultUnavailable(f"TLS connection to Vault at {addr} failed while {what}: {_ssl_reason(exc)}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        target = str(getattr(getattr(exc, "request", None), "url", "") or "")
        via = "" if not target or target.startswith(addr) else f" (redirected to {target.split('/v1/')[0]})"
        raise VaultUnavailable(f"cannot reach Vault at {addr}{via} while {what}: {_conn_reason(exc)}") from exc
    except (hvac_errors.Forbidden, hvac_errors.Unauthorized) as exc:
        raise VaultDenied(f"Vault denied {what}: {_vault_reason(exc)}") from exc
    except (hvac_errors.VaultDown, hvac_errors.InternalServerError, hvac_errors.BadGateway,
            hvac_errors.RateLimitExceeded, hvac_errors.VaultNotInitialized) as exc:
        raise VaultUnavailable(f"Vault at {addr} is unavailable while {what}: {_vault_reason(exc)}") from exc
    except hvac_errors.InvalidPath as exc:
        raise VaultRequestError(f"Vault has no such path while {what} (is the mount or role provisioned?)") from exc
    except hvac_errors.VaultError as exc:
        raise VaultRequestError(f"Vault refused {what}: {_vault_reason(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise VaultUnavailable(f"request to Vault at {addr} failed while {what}: {_one_line(str(exc))}") from exc


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: Vault away, sealed, electing or overloaded; never a TLS verification failure."""
    return isinstance(exc, VaultUnavailable) and not isinstance(exc.__cause__, requests.exceptions.SSLError)


def _issued(data: dict[str, Any], what: str) -> IssuedCert:
    cert = data.get("certificate")
    if not isinstance(cert, str):
        raise VaultRequestError(f"Vault returned no certificate while {what}")
    chain = data.get("ca_chain") or ([data["issuing_ca"]] if isinstance(data.get("issuing_ca"), str) else [])
    return IssuedCert(certificate=cert, ca_chain=tuple(chain), serial=str(data.get("serial_number", "")))


def _read_secret(path: str, key: str) -> str:
    """Read a token or secret-id file, refusing one that others can read."""
    try:
        st = os.stat(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{key} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except FileNotFoundError:
        raise ConfigError(f"{key} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{key} {path} is empty")
    return value


def _conn_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker.lower()
    return _one_line(text)[:200]


def _ssl_reason(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"certificate verify failed: ([^(')]+)", text)
    return match.group(1).strip() if match else _one_line(text)[:200]


