"""Revocation and CA rotation: operator commands over Vault's stored certificates and multiple issuers.

Revocation finds certificates *in Vault* (by serial), not only in a local file:
everything unexpired and unrevoked that names the user is revoked.

CA rotation is a flow of small commands, each safe to re-run:

1. ``ca rotate``   - a new issuer on the mount (a new root, or a new intermediate signed by the
                     root mount); NOT yet the default. Every node's daemon then writes CA files
                     holding new + old (newest first) at its next CA check.
2. ``ca activate`` - once the bundle has had time to reach every node and client, the new
                     issuer becomes the default; daemons re-issue their leaves from it at
                     their next pass (a leaf not from the default issuer is due).
3. ``ca retire``   - once no unexpired, unrevoked leaf issued by the old issuer remains, the
                     old issuer is set read-only (it still signs CRLs and OCSP answers); it
                     then leaves every CA file at the next check.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import hvac
import msgspec
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.layout import Eku
from vaultpki.errors import InputError, VaultRequestError
from vaultpki.vault.admin import VaultAdmin
from vaultpki.vault.client import HttpVault

__all__ = ["IssuerStatus", "Revoked", "activate", "ca_status", "retire", "revoke_serial", "revoke_user", "rotate"]

RETIRED_USAGE = "read-only,crl-signing,ocsp-signing"
_STAMP = re.compile(r"\s+\d{8}T\d{6}Z$")


class Revoked(msgspec.Struct, frozen=True):
    mount: str
    serial: str
    common_name: str | None
    not_after: dt.datetime
    revocation_time: int


def _names(cert: x509.Certificate) -> set[str]:
    info = crypto.describe(cert)
    return {info.common_name or "", *info.dns_sans} - {""}


def revoke_user(vault: HttpVault, mounts: Sequence[str], user: str, now: dt.datetime) -> list[Revoked]:
    """Revoke every unexpired, unrevoked certificate that authenticates as ``user`` (CN or DNS SAN of a
    client-only certificate: CockroachDB accepts both as the SQL identity)."""
    revoked = []
    for mount in mounts:
        for serial in vault.list_serials(mount):
            pem, revoked_at = vault.read_cert(mount, serial)
            if revoked_at or not pem:
                continue
            cert = crypto.load_certs(pem.encode())[0]
            info = crypto.describe(cert)
            is_client = info.ekus is not None and Eku.SERVER_AUTH not in info.ekus
            if cert.not_valid_after_utc <= now or not is_client or user not in _names(cert):
                continue
            when = vault.revoke(mount, serial)
            revoked.append(Revoked(mount, serial, info.common_name, cert.not_valid_after_utc, when))
    return revoked


def revoke_serial(vault: HttpVault, mounts: Sequence[str], serial: str) -> Revoked:
    """Revoke one serial, on whichever of ``mounts`` issued it."""
    wanted = _normal_serial(serial)
    for mount in mounts:
        try:
            pem, _ = vault.read_cert(mount, wanted)
        except VaultRequestError:
            continue
        if not pem:
            continue
        cert = crypto.load_certs(pem.encode())[0]
        when = vault.revoke(mount, wanted)
        return Revoked(mount, wanted, crypto.describe(cert).common_name, cert.not_valid_after_utc, when)
    raise InputError(f"no certificate with serial {wanted} on mount(s) {', '.join(mounts)}")


def _normal_serial(text: str) -> str:
    raw = text.strip().lower().replace(":", "").replace("-", "")
    if not raw or not re.fullmatch(r"[0-9a-f]+", raw):
        raise InputError(f"{text!r} is not a certificate serial (hex, optionally colon-separated)")
    return crypto.format_serial(int(raw, 16))


# --- CA rotation (admin token) -------------------------------------------------------------------

class IssuerStatus(msgspec.Struct, frozen=True):
    issuer_id: str
    name: str
    is_default: bool
    usage: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    valid_leaves: int


def _issuers(admin: VaultAdmin, mount: str) -> list[tuple[str, dict[str, Any], x509.Certificate]]:
    """(id, settings, certificate) of every keyed issuer of the mount, newest first."""
    out = []
    for issuer_id, info in (admin.listing(f"{mount}/issuers").get("key_info") or {}).items():
        if not (info or {}).get("key_id"):
            continue
        data = admin.read(f"{mount}/issuer/{issuer_id}")
        data["is_default"] = bool(info.get("is_default"))
        out.append((issuer_id, data, crypto.load_certs(str(data["certificate"]).encode())[0]))
    return sorted(out, key=lambda i: i[2].not_valid_before_utc, reverse=True)


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def rotate(client: hvac.Client, addr: str, mount: str, root_mount: str | None, ttl: str, now: dt.datetime) -> str:
    """Add a new issuer to ``mount`` (not the default yet); returns its id."""
    admin = VaultAdmin(client, addr)
    current = admin.read(f"{mount}/issuer/default/json")
    if not current.get("certificate"):
        raise VaultRequestError(f"mount {mount} has no default issuer to rotate")
    old = crypto.load_certs(str(current["certificate"]).encode())[0]
    base = _STAMP.sub("", crypto.describe(old).common_name or mount)
    name = f"{base} {_stamp(now)}"
    if crypto.is_self_signed(old):
        made = admin.write(f"{mount}/issuers/generate/root/internal", common_name=name, ttl=ttl,
                           key_type="ec", key_bits=256, issuer_name=f"ca-{_stamp(now).lower()}")
        return str(made["issuer_id"])
    if root_mount is None:
        raise InputError(f"the CA of {mount} is an intermediate: pass --root-mount, the mount whose issuer signs it")
    csr = admin.write(f"{mount}/issuers/generate/intermediate/internal", common_name=name,
                      key_type="ec", key_bits=256)["csr"]
    signed = admin.write(f"{root_mount}/issuer/default/sign-intermediate", csr=csr, common_name=name, ttl=ttl,
                         format="pem_bundle")
    mapping = admin.write(f"{mount}/intermediate/set-signed", certificate=signed["certificate"]).get("mapping") or {}
    keyed = [issuer for issuer, key in mapping.items() if key]
    if not keyed:
        raise VaultRequestError(f"importing the new intermediate into {mount} created no keyed issuer")
    admin.patch(f"{mount}/issuer/{keyed[0]}", issuer_name=f"ca-{_stamp(now).lower()}",
                leaf_not_after_behavior="truncate")
    return str(keyed[0])


def activate(client: hvac.Client, addr: str, mount: str, min_age: dt.timedelta, now: dt.datetime) -> str:
    """Make the newest issuer the default, once it has existed for ``min_age`` (the bundle must have spread)."""
    admin = VaultAdmin(client, addr)
    usable = [i for i in _issuers(admin, mount) if "issuing-certificates" in str(i[1].get("usage"))]
    if not usable:
        raise VaultRequestError(f"mount {mount} has no issuer that may issue")
    newest_id, newest, cert = usable[0]
    if newest["is_default"]:
        raise InputError(f"the newest issuer of {mount} ({newest_id}) is already the default: nothing to activate")
    age = now - cert.not_valid_before_utc
    if age < min_age:
        raise InputError(f"issuer {newest_id} of {mount} is only {int(age.total_seconds())}s old: wait until every "
                         f"node and client has the new CA bundle ({int(min_age.total_seconds())}s), or pass --min-age 0")
    admin.write(f"{mount}/config/issuers", default=newest_id)
    return newest_id


def _valid_leaves(admin: VaultAdmin, mount: str, issuer: x509.Certificate, now: dt.datetime) -> list[str]:
    left = []
    for serial in admin.listing(f"{mount}/certs").get("keys") or []:
        data = admin.read(f"{mount}/cert/{serial}")
        if int(data.get("revocation_time") or 0) or not data.get("certificate"):
            continue
        cert = crypto.load_certs(str(data["certificate"]).encode())[0]
        if crypto.is_ca(cert) or cert.not_valid_after_utc <= now or not crypto.is_issued_by(cert, issuer):
            continue
        left.append(f"{serial} ({crypto.describe(cert).common_name})")
    return left


def retire(client: hvac.Client, addr: str, mount: str, now: dt.datetime, force: bool) -> list[str]:
    """Set every non-default issuer read-only once none of its leaves is still valid; returns their ids."""
    admin = VaultAdmin(client, addr)
    retired = []
    for issuer_id, settings, cert in _issuers(admin, mount):
        if settings["is_default"] or "issuing-certificates" not in str(settings.get("usage")):
            continue
        left = _valid_leaves(admin, mount, cert, now)
        if left and not force:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise InputError(f"issuer {issuer_id} of {mount} still has {len(left)} valid certificate(s): {shown}; "
                             "re-issue them (or revoke them) first, or pass --force")
        admin.patch(f"{mount}/issuer/{issuer_id}", usage=RETIRED_USAGE)
        retired.append(issuer_id)
    return retired


def ca_status(client: hvac.Client, addr: str, mount: str, now: dt.datetime) -> list[IssuerStatus]:
    admin = VaultAdmin(client, addr)
    return [IssuerStatus(issuer_id, str(s.get("issuer_name") or ""), bool(s["is_default"]), str(s.get("usage")),
                         cert.subject.rfc4514_string(), cert.not_valid_before_utc, cert.not_valid_after_utc,
                         len(_valid_leaves(admin, mount, cert, now)))
            for issuer_id, s, cert in _issuers(admin, mount)]
