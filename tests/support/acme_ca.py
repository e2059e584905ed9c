"""OpenBao's own ACME server as the CA of the ACME tests: a pki mount per scenario on a dedicated dev server.

What a mount needs before ``/acme/directory`` answers a client (OpenBao 2.7.2): a CA, ``config/cluster``
(``path`` and ``aia_path``: the URLs the server puts in its directory and links), ``config/acme`` enabled, and
the mount tuned so the ACME headers pass (``allowed_response_headers`` Replay-Nonce, Location, Link,
Last-Modified; ``passthrough_request_headers`` If-Modified-Since). ``dns_resolver`` is where the server looks
up dns-01 TXT records (and the names of http-01 identifiers); ``eab_policy`` "always-required" makes it refuse
an account without an external account binding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hvac

from vaultpki.dev.devserver import DevServer

__all__ = ["AcmeCA", "acme_ca"]

ACME_HEADERS = ["Replay-Nonce", "Location", "Link", "Last-Modified"]


class AcmeCA:
    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.client = hvac.Client(url=server.addr, token=server.root_token)

    def mount(self, name: str, *, dns_resolver: str | None = None, eab_policy: str | None = None,
              roles: dict[str, dict[str, Any]] | None = None) -> str:
        """A pki mount with its own root CA and ACME enabled; the directory URL of its default directory."""
        adapter = self.client.adapter
        adapter.post(f"/v1/sys/mounts/{name}", json={"type": "pki", "config": {"max_lease_ttl": "87600h"}})
        adapter.post(f"/v1/sys/mounts/{name}/tune", json={
            "allowed_response_headers": ACME_HEADERS, "passthrough_request_headers": ["If-Modified-Since"]})
        adapter.post(f"/v1/{name}/root/generate/internal", json={
            "common_name": f"{name} test ACME root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"})
        base = f"{self.server.addr}/v1/{name}"
        adapter.post(f"/v1/{name}/config/cluster", json={"path": base, "aia_path": base})
        acme: dict[str, Any] = {"enabled": True}
        if dns_resolver is not None:
            acme["dns_resolver"] = dns_resolver
        if eab_policy is not None:
            acme["eab_policy"] = eab_policy
        for role, body in (roles or {}).items():
            adapter.post(f"/v1/{name}/roles/{role}", json=body)
        if roles:
            acme["allowed_roles"] = ["*"]
        adapter.post(f"/v1/{name}/config/acme", json=acme)
        return f"{base}/acme/directory"

    def role_directory(self, mount: str, role: str) -> str:
        return f"{self.server.addr}/v1/{mount}/roles/{role}/acme/directory"

    def new_eab(self, mount: str) -> tuple[str, str]:
        """A fresh external account binding of *mount*: (key id, base64url HMAC key)."""
        data = self.client.adapter.post(f"/v1/{mount}/acme/new-eab", json={})["data"]
        return str(data["id"]), str(data["key"])

    def acme_certificates(self, mount: str) -> list[str]:
        """Serials the mount has issued (its ``certs`` list, the CA's own included)."""
        response = self.client.adapter.request("LIST", f"/v1/{mount}/certs")
        return list(response["data"]["keys"])


@contextmanager
def acme_ca() -> Iterator[AcmeCA]:
    """A dedicated OpenBao dev server: the session's server is left untouched."""
    with DevServer() as server:
        yield AcmeCA(server)
