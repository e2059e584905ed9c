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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions as hvac_errors
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

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
    """A mount's default issuer and the chain above it (issuer first)."""

    issuer: str
    chain: tuple[str, ...]


class VaultPort(Protocol):
    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert: ...

    def issue(
        self, mount: str, role: str, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...],
        ttl: str | None, key_type: str, key_bits: int,
    ) -> IssuedCert: ...

    def ca_material(self, mount: str) -> CaMaterial: ...


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" .*")


def _vault_reason(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc.args[0]) if exc.args else type(exc).__name__]
    return _one_line("; ".join(str(e) for e in errors)).replace("1 error occurred: ", "")


class HvacVault:
    """VaultPort over one keep-alive HTTP session; logs in lazily on first use."""

    def __init__(self, cfg: VaultConfig, *, max_attempts: int = 4, max_wait: float = 8.0) -> None:
        self._cfg = cfg
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        verify: bool | str = cfg.ca_cert if cfg.ca_cert else True
        cert = (cfg.cert_file, cfg.key_file) if cfg.auth == "cert" and cfg.cert_file and cfg.key_file else None
        # hvac lets a passed session's own verify/cert override its arguments, so set them on the session.
        session = requests.Session()
        session.verify = verify
        session.cert = cert
        self._client = hvac.Client(
            url=cfg.addr, verify=verify, cert=cert, timeout=cfg.timeout,
            namespace=cfg.namespace, session=session,
        )
        self._logged_in = False

    # --- plumbing -----------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with translation and retries of transient failures only."""
        def attempt() -> T:
            with translate_errors(self._cfg.addr, what):
                return fn()
        retrying = Retrying(
            retry=retry_if_exception_type(VaultUnavailable),
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(initial=0.25, max=self._max_wait),
            reraise=True,
        )
        return retrying(attempt)

    def _ensure_login(self) -> None:
        if self._logged_in:
            return
        cfg = self._cfg
        if cfg.auth == "token":
            self._client.token = self._token()
        else:
            mount = cfg.approle_mount if cfg.auth == "approle" else cfg.cert_mount
            body = self._approle_body() if cfg.auth == "approle" else ({"name": cfg.cert_role} if cfg.cert_role else {})
            response = self._call(f"logging in with {cfg.auth} auth at auth/{mount}",
                                  lambda: self._client.write_data(f"auth/{mount}/login", data=body))
            try:
                self._client.token = response["auth"]["client_token"]
            except (KeyError, TypeError) as exc:
                raise VaultDenied(f"Vault's {cfg.auth} login at auth/{mount} returned no token") from exc
        self._logged_in = True

    def _token(self) -> str:
        if self._cfg.token_file:
            return _read_secret(self._cfg.token_file, "vault.token_file")
        if self._cfg.token:
            return self._cfg.token
        raise ConfigError("no Vault token: set $VAULT_TOKEN or vault.token_file (or use approle/cert auth)")

    def _approle_body(self) -> dict[str, str]:
        cfg = self._cfg
        role_id = cfg.role_id or _read_secret(cfg.role_id_file or "", "vault.role_id_file")
        return {"role_id": role_id, "secret_id": _read_secret(cfg.secret_id_file or "", "vault.secret_id_file")}

    def _data(self, what: str, fn: Callable[[], Any]) -> dict[str, Any]:
        self._ensure_login()
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
        return _issued(self._data(what, lambda: self._client.write_data(f"{mount}/sign/{role}", data=body)), what)

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
        data = self._data(what, lambda: self._client.write_data(f"{mount}/issue/{role}", data=body))
        issued = _issued(data, what)
        key = data.get("private_key")
        if not isinstance(key, str):
            raise VaultRequestError(f"Vault returned no private key while {what}")
        return IssuedCert(issued.certificate, issued.ca_chain, issued.serial, key)

    def ca_material(self, mount: str) -> CaMaterial:
        what = f"reading the CA of mount {mount}"
        data = self._data(what, lambda: self._client.read(f"{mount}/issuer/default/json"))
        issuer = data.get("certificate")
        chain = data.get("ca_chain") or []
        if not isinstance(issuer, str) or not issuer.strip():
            raise VaultRequestError(f"mount {mount} has no default issuer (is the CA set up?)")
        return CaMaterial(issuer=issuer, chain=tuple(c for c in chain if isinstance(c, str)))


@contextlib.contextmanager
def translate_errors(addr: str, what: str) -> Iterator[None]:
    """Re-raise hvac/requests failures as the most specific vaultpki error, chained."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise VaultUnavailable(f"TLS connection to Vault at {addr} failed while {what}: {_ssl_reason(exc)}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise VaultUnavailable(f"cannot reach Vault at {addr} while {what}: {_conn_reason(exc)}") from exc
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


