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
                     then leaves every CA file at the next check. Re-issuing a leaf does not
                     invalidate the old one, so ``--revoke-leaves`` revokes what is left first.

Each keyed issuer of a mount is in one state: ``active`` (the default), ``pending`` (newer than the
default: waiting for ``ca activate``), ``superseded`` (older than the default, still able to issue:
waiting for ``ca retire``) or ``retired`` (read-only). Only a superseded issuer is ever retired: retiring
a pending one would throw the rotation away and leave ``ca activate`` nothing to activate.
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
from vaultpki.vault.failures import translate_errors

__all__ = [
    "IssuerStatus", "Retirement", "Revoked", "activate", "ca_status", "retire", "revoke_serial", "revoke_user", "rotate",
]

RETIRED_USAGE = "read-only,crl-signing,ocsp-signing"
BACKDATE_SECONDS = 30       # Vault's own default notBefore backdate for a CA: room for clock skew
_STAMP = re.compile(r"\s+\d{8}T\d{6}Z(?:-\d+)?$")


class Revoked(msgspec.Struct, frozen=True):
    mount: str
    serial: str
    common_name: str | None
    not_after: dt.datetime
    revocation_time: int | None      # None: a dry run's "would be revoked"


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
    state: str          # active | pending | superseded | retired (the module's docstring)
    is_default: bool
    usage: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    valid_leaves: int


class Retirement(msgspec.Struct, frozen=True):
    """What ``ca retire`` did, or in a dry run would do."""

    retired: list[str]
    revoked: list[Revoked]
    pending: list[str]          # newer than the default, left alone


_Issuer = tuple[str, dict[str, Any], x509.Certificate]


def _issuers(admin: VaultAdmin, mount: str) -> list[_Issuer]:
    """(id, settings, certificate) of every keyed issuer of the mount, newest first."""
    out = []
    for issuer_id, info in (admin.listing(f"{mount}/issuers").get("key_info") or {}).items():
        if not (info or {}).get("key_id"):
            continue
        data = admin.read(f"{mount}/issuer/{issuer_id}")
        data["is_default"] = bool(info.get("is_default"))
        out.append((issuer_id, data, crypto.load_certs(str(data["certificate"]).encode())[0]))
    return sorted(out, key=lambda i: i[2].not_valid_before_utc, reverse=True)


def _can_issue(settings: dict[str, Any]) -> bool:
    return "issuing-certificates" in str(settings.get("usage"))


def _with_states(issuers: list[_Issuer]) -> list[tuple[str, _Issuer]]:
    """Each issuer with its state, in the same order. Newer and older are by ``notBefore``, the order
    ``_issuers`` sorts by and ``activate`` picks the newest by."""
    default = next((cert for _, settings, cert in issuers if settings["is_default"]), None)
    out = []
    for issuer in issuers:
        _, settings, cert = issuer
        if settings["is_default"]:
            state = "active"
        elif not _can_issue(settings):
            state = "retired"
        elif default is None or cert.not_valid_before_utc >= default.not_valid_before_utc:
            state = "pending"
        else:
            state = "superseded"
        out.append((state, issuer))
    return out


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def _backdate(admin: VaultAdmin, mount: str, issuers: list[_Issuer]) -> str:
    """The new CA's notBefore backdate: Vault's default, shortened so that the new CA still starts after every issuer
    of the mount. Newer and older are by notBefore (``_with_states``), at one-second resolution, and a CA made within
    Vault's default backdate of the previous one would tie with it (a mount provisioned and rotated at once)."""
    if not issuers:
        return f"{BACKDATE_SECONDS}s"
    newest_id, _, newest = issuers[0]            # newest first
    with translate_errors(admin.addr, "reading the server's clock"):
        clock = admin.client.sys.read_health_status(method="GET").get("server_time_utc")
    now = dt.datetime.fromtimestamp(int(clock), dt.UTC) if clock else dt.datetime.now(dt.UTC)
    room = int((now - newest.not_valid_before_utc).total_seconds()) - 1
    if room < 1:
        raise VaultRequestError(f"issuer {newest_id} of {mount} starts at {newest.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}, "
                                f"not before Vault's clock ({now:%H:%M:%SZ}): a new CA would not start after it, and that "
                                "order is what tells a pending issuer from a superseded one; run ca rotate again after "
                                "that time")
    return f"{min(BACKDATE_SECONDS, room)}s"


def rotate(client: hvac.Client, addr: str, mount: str, root_mount: str | None, ttl: str, now: dt.datetime) -> str:
    """Add a new issuer to ``mount`` (not the default yet), starting after every other; returns its id."""
    admin = VaultAdmin(client, addr)
    current = admin.read(f"{mount}/issuer/default/json")
    if not current.get("certificate"):
        raise VaultRequestError(f"mount {mount} has no default issuer to rotate")
    old = crypto.load_certs(str(current["certificate"]).encode())[0]
    issuers = _issuers(admin, mount)
    # Issuer names are unique on a mount: a second rotation within the same second gets a suffix.
    taken = {str(settings.get("issuer_name")) for _, settings, _ in issuers}
    stamp = next(f"{_stamp(now)}{suffix}" for suffix in ["", *(f"-{n}" for n in range(2, len(taken) + 3))]
                 if f"ca-{_stamp(now)}{suffix}".lower() not in taken)
    name = f"{_STAMP.sub('', crypto.describe(old).common_name or mount)} {stamp}"
    backdate = _backdate(admin, mount, issuers)
    if crypto.is_self_signed(old):
        made = admin.write(f"{mount}/issuers/generate/root/internal", common_name=name, ttl=ttl, key_type="ec",
                           key_bits=256, issuer_name=f"ca-{stamp.lower()}", not_before_duration=backdate)
        return str(made["issuer_id"])
    if root_mount is None:
        raise InputError(f"the CA of {mount} is an intermediate: pass --root-mount, the mount whose issuer signs it")
    csr = admin.write(f"{mount}/issuers/generate/intermediate/internal", common_name=name,
                      key_type="ec", key_bits=256)["csr"]
    signed = admin.write(f"{root_mount}/issuer/default/sign-intermediate", csr=csr, common_name=name, ttl=ttl,
                         format="pem_bundle", not_before_duration=backdate)
    mapping = admin.write(f"{mount}/intermediate/set-signed", certificate=signed["certificate"]).get("mapping") or {}
    keyed = [issuer for issuer, key in mapping.items() if key]
    if not keyed:
        raise VaultRequestError(f"importing the new intermediate into {mount} created no keyed issuer")
    admin.patch(f"{mount}/issuer/{keyed[0]}", issuer_name=f"ca-{stamp.lower()}",
                leaf_not_after_behavior="truncate")
    return str(keyed[0])


def activate(client: hvac.Client, addr: str, mount: str, min_age: dt.timedelta, now: dt.datetime) -> str:
    """Make the newest issuer the default, once it has existed for ``min_age`` (the bundle must have spread)."""
    admin = VaultAdmin(client, addr)
    issuers = _issuers(admin, mount)
    usable = [i for i in issuers if _can_issue(i[1])]
    if not usable:
        raise VaultRequestError(f"mount {mount} has no issuer that may issue")
    newest_id, newest, cert = usable[0]
    if newest["is_default"]:
        newer = [i for i, s, c in issuers if not _can_issue(s) and c.not_valid_before_utc > cert.not_valid_before_utc]
        why = (f"; issuer {newer[0]}, newer, is retired (read-only): start again with vaultpki ca rotate --mount {mount}"
               if newer else "")
        raise InputError(f"the newest issuer of {mount} ({newest_id}) is already the default: nothing to activate{why}")
    age = now - cert.not_valid_before_utc
    if age < min_age:
        raise InputError(f"issuer {newest_id} of {mount} is only {int(age.total_seconds())}s old: wait until every "
                         f"node and client has the new CA bundle ({int(min_age.total_seconds())}s), or activate it now "
                         f"with: vaultpki ca activate --mount {mount} --min-age 0s")
    admin.write(f"{mount}/config/issuers", default=newest_id)
    return newest_id


class _Leaf(msgspec.Struct, frozen=True):
    serial: str
    common_name: str | None
    not_after: dt.datetime


def _valid_leaves(admin: VaultAdmin, mount: str, issuer: x509.Certificate, now: dt.datetime) -> list[_Leaf]:
    left = []
    for serial in admin.listing(f"{mount}/certs").get("keys") or []:
        data = admin.read(f"{mount}/cert/{serial}")
        if int(data.get("revocation_time") or 0) or not data.get("certificate"):
            continue
        cert = crypto.load_certs(str(data["certificate"]).encode())[0]
        if crypto.is_ca(cert) or cert.not_valid_after_utc <= now or not crypto.is_issued_by(cert, issuer):
            continue
        left.append(_Leaf(serial, crypto.describe(cert).common_name, cert.not_valid_after_utc))
    return left


def retire(client: hvac.Client, addr: str, mount: str, now: dt.datetime, *, force: bool = False,
           revoke_leaves: bool = False, dry_run: bool = False) -> Retirement:
    """Set every superseded issuer (older than the default, still issuing) read-only once none of its leaves is
    still valid: with ``revoke_leaves`` they are revoked first; with ``force`` they are left valid. Every check is
    made before anything changes; ``dry_run`` stops there and says what would be done."""
    if force and revoke_leaves:
        raise InputError("--force and --revoke-leaves exclude each other: --force leaves the old certificates valid, "
                         "--revoke-leaves revokes them")
    admin = VaultAdmin(client, addr)
    issuers = _with_states(_issuers(admin, mount))
    pending = [i for state, (i, _, _) in issuers if state == "pending"]
    old = [(i, cert) for state, (i, _, cert) in issuers if state == "superseded"]
    if pending and not old:
        default = next((i for state, (i, _, _) in issuers if state == "active"), "none")
        raise InputError(f"issuer {pending[0]} of {mount} is newer than the default ({default}): it waits to be "
                         f"activated, not retired; run vaultpki ca activate --mount {mount} first, then retire the old one")
    leaves = {issuer_id: _valid_leaves(admin, mount, cert, now) for issuer_id, cert in old}
    for issuer_id, left in leaves.items():
        if left and not (force or revoke_leaves):
            shown = ", ".join(f"{leaf.serial} ({leaf.common_name})" for leaf in left[:5])
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            raise InputError(f"issuer {issuer_id} of {mount} still has {len(left)} valid certificate(s): {shown}{more}; "
                             "re-issuing does not invalidate them: once their holders have new ones, revoke them "
                             f"(vaultpki ca retire --mount {mount} --revoke-leaves --dry-run lists them, then without "
                             "--dry-run revokes them and retires), or pass --force to retire with them still valid")
    revoked = []
    for left in leaves.values() if revoke_leaves else ():
        for leaf in left:
            when = None if dry_run else int(admin.write(f"{mount}/revoke", serial_number=leaf.serial)
                                             .get("revocation_time") or 0)
            revoked.append(Revoked(mount, leaf.serial, leaf.common_name, leaf.not_after, when))
    for issuer_id in leaves if not dry_run else ():
        admin.patch(f"{mount}/issuer/{issuer_id}", usage=RETIRED_USAGE)
    return Retirement(list(leaves), revoked, pending)


def ca_status(client: hvac.Client, addr: str, mount: str, now: dt.datetime) -> list[IssuerStatus]:
    admin = VaultAdmin(client, addr)
    return [IssuerStatus(issuer_id, str(s.get("issuer_name") or ""), state, bool(s["is_default"]), str(s.get("usage")),
                         cert.subject.rfc4514_string(), cert.not_valid_before_utc, cert.not_valid_after_utc,
                         len(_valid_leaves(admin, mount, cert, now)))
            for state, (issuer_id, s, cert) in _with_states(_issuers(admin, mount))]
