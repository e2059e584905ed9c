"""The Vault client a node uses: the PKI endpoints (signing, CA material, revocation) over an authenticated
``session.VaultSession``, as the core's ``VaultPort`` and plain values. Vault's JSON never leaves this
package; every failure is translated once (``failures.translate_errors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from vaultpki.core.ports import Answers, CaMaterial, IssuedCert, IssueRequest, SignRequest
from vaultpki.errors import VaultDenied, VaultRequestError
from vaultpki.vault import bulk
from vaultpki.vault.session import VaultSession

__all__ = ["HttpVault"]

K = TypeVar("K")


class HttpVault(VaultSession):
    """VaultPort over hvac: the PKI endpoints, each request through the session (failover, retries, the
    token's lifecycle), the bulk ones over a thread pool that shares the session's keep-alive connections."""

    # --- signing --------------------------------------------------------------

    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None,
             exclude_cn_from_sans: bool = False) -> IssuedCert:
        what = _signing(mount, role)
        body = _sign_body(csr, common_name, ttl, exclude_cn_from_sans)
        return _issued(self._data(what, "POST", f"{mount}/sign/{role}", body), what)

    def sign_many(self, requests: Iterable[tuple[K, SignRequest]], parallel: int) -> Answers[K]:
        """Sign many CSRs, ``parallel`` at a time over the session's keep-alive connections (``bulk.in_flight``);
        each through ``sign`` (retries, failover, redirects, re-login), so results and errors are ``sign``'s.

        ``requests`` is drawn in this thread, one more each time one completes; an exception from it stops
        the run (what is queued is cancelled) and propagates, as does closing the generator.
        """
        self.ensure_token()                   # one login before the workers start, not one each
        yield from bulk.in_flight(self._sign, requests, parallel, "vaultpki-sign")

    def _sign(self, r: SignRequest) -> IssuedCert:
        return self.sign(r.mount, r.role, r.csr, r.common_name, r.ttl, r.exclude_cn_from_sans)

    def issue_many(self, requests: Iterable[tuple[K, IssueRequest]], parallel: int) -> Answers[K]:
        """As ``sign_many``, through ``issue``: Vault makes each key."""
        self.ensure_token()
        yield from bulk.in_flight(self._issue, requests, parallel, "vaultpki-issue")

    def _issue(self, r: IssueRequest) -> IssuedCert:
        return self.issue(r.mount, r.role, r.common_name, r.dns, r.ips, r.ttl, r.key_type, r.key_bits,
                          r.exclude_cn_from_sans)

    def issue(
        self, mount: str, role: str, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...],
        ttl: str | None, key_type: str, key_bits: int, exclude_cn_from_sans: bool = False,
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
        if exclude_cn_from_sans:
            body["exclude_cn_from_sans"] = True
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

    def ca_materials(self, mounts: Sequence[str]) -> Mapping[str, CaMaterial]:
        """Every mount's CA material, the mounts read in parallel."""
        return dict(zip(mounts, bulk.each(self.ca_material, mounts), strict=True))

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


def _signing(mount: str, role: str) -> str:
    return f"signing with {mount}/sign/{role}"


def _sign_body(csr: str, common_name: str | None, ttl: str | None, exclude_cn_from_sans: bool) -> dict[str, str | bool]:
    # common_name only when the spec sends one: a least-privilege policy (allowed_parameters =
    # csr, ttl) refuses it, which is also why hvac's sign_certificate() (always sending it) was never used.
    # exclude_cn_from_sans likewise only for the requests that set it (client certificates), as JSON true:
    # the policies allow exactly that value.
    body: dict[str, str | bool] = {"csr": csr}
    if common_name is not None:
        body["common_name"] = common_name
    if ttl is not None:
        body["ttl"] = ttl
    if exclude_cn_from_sans:
        body["exclude_cn_from_sans"] = True
    return body


def _issued(data: dict[str, Any], what: str) -> IssuedCert:
    cert = data.get("certificate")
    if not isinstance(cert, str):
        raise VaultRequestError(f"Vault returned no certificate while {what}")
    chain = data.get("ca_chain") or ([data["issuing_ca"]] if isinstance(data.get("issuing_ca"), str) else [])
    return IssuedCert(certificate=cert, ca_chain=tuple(chain), serial=str(data.get("serial_number", "")))
