"""Admin calls to Vault for the dev/test provisioner and the CA-rotation commands.

These run with an operator's or an admin's token, never on a node; every call is
translated into the vaultpki error hierarchy by the same ``failures.translate_errors`` as the node side's.
"""

from __future__ import annotations

from typing import Any

import hvac

from vaultpki.vault.failures import translate_errors

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
            self.client.adapter.request("patch", f"/v1/{path}", json=data,
                                        headers={"Content-Type": "application/merge-patch+json"})

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
