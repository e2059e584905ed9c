"""Admin calls to Vault for the dev/test provisioner and the CA-rotation commands.

These run with an operator's or an admin's token, never on a node; every call is
translated into the vaultpki error hierarchy like the node-side adapter's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import hvac
import hvac.exceptions as hvac_errors
import requests

from .errors import VaultDenied, VaultRequestError, VaultUnavailable
from .vault import conn_reason, one_line, ssl_reason

__all__ = ["VaultAdmin"]

ROOT_TTL = "87600h"


class VaultAdmin:
    def __init__(self, client: hvac.Client, addr: str) -> None:
        self.client = client
        self.addr = addr

    def read(self, path: str) -> dict[str, Any]:
        with translate_errors(self.addr, f"reading {path}"):
            return dict((self.client.read(path) or {}).get("data") or {})

    def listing(self, path: str) -> dict[str, Any]:
        with translate_errors(self.addr, f"listing {path}"):
            return dict((self.client.list(path) or {}).get("data") or {})

    def write(self, path: str, **data: Any) -> dict[str, Any]:
        with translate_errors(self.addr, f"writing {path}"):
            response = self.client.write_data(path, data=data)
        return dict(response.get("data") or {}) if isinstance(response, dict) else {}

    def patch(self, path: str, **data: Any) -> None:
        """A partial update: a POST to issuer/<ref> resets every field it does not name."""
        with translate_errors(self.addr, f"updating {path}"):
            response = self.client.session.patch(
                f"{self.addr}/v1/{path}", json=data, timeout=30,
                headers={"X-Vault-Token": self.client.token or "", "Content-Type": "application/merge-patch+json"})
        if not response.ok:
            raise VaultRequestError(f"Vault refused updating {path}: HTTP {response.status_code} {response.text[:200]}")

    def enable_pki(self, mount: str) -> None:
        with translate_errors(self.addr, f"mounting {mount}"):
            self.client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": ROOT_TTL})

    def enable_auth(self, kind: str) -> str:
        """Mount an auth method at its default path (once); returns its accessor."""
        with translate_errors(self.addr, f"enabling {kind} auth"):
            mounts = self.client.sys.list_auth_methods()["data"]
            if f"{kind}/" not in mounts:
                self.client.sys.enable_auth_method(kind)
                mounts = self.client.sys.list_auth_methods()["data"]
        return str(mounts[f"{kind}/"]["accessor"])

    def policy(self, name: str, text: str) -> None:
        with translate_errors(self.addr, f"writing policy {name}"):
            self.client.sys.create_or_update_acl_policy(name, text)

    def is_openbao(self) -> bool:
        with translate_errors(self.addr, "reading the server version"):
            version = str(self.client.sys.read_health_status(method="GET").get("version", ""))
        return version.startswith("2.")


def _vault_reason(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc.args[0]) if exc.args else type(exc).__name__]
    return one_line("; ".join(str(e) for e in errors)).replace("1 error occurred: ", "")


@contextlib.contextmanager
def translate_errors(addr: str, what: str) -> Iterator[None]:
    """Re-raise hvac/requests failures as the most specific vaultpki error, chained (as the node side does)."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise VaultUnavailable(f"TLS connection to Vault at {addr} failed while {what}: {ssl_reason(exc)}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise VaultUnavailable(f"cannot reach Vault at {addr} while {what}: {conn_reason(exc)}") from exc
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
        raise VaultUnavailable(f"request to Vault at {addr} failed while {what}: {one_line(str(exc))}") from exc
