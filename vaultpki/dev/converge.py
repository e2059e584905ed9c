"""Provisioning that can be run again: each mount, CA, role, policy and auth method is read first, written
only when it differs from what is wanted, and reported as created, updated or unchanged.

A lab operator re-runs ``vaultpki provision`` after a failed run, after changing a host list, or just to
be sure; a second run against the same Vault must change nothing and say so. A CA is never replaced: a
mount that already has an issuer keeps it (a new CA would orphan every certificate it signed; rotating is
``vaultpki ca rotate``'s job).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from vaultpki.config.values import parse_duration
from vaultpki.errors import ConfigError
from vaultpki.vault.admin import ROOT_TTL, VaultAdmin

__all__ = ["CREATED", "UNCHANGED", "UPDATED", "Change", "Converger", "same"]

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"

# Fields Vault takes as a duration ("720h") and reads back in seconds.
_DURATIONS = frozenset({"ttl", "max_ttl", "token_ttl", "token_max_ttl", "token_explicit_max_ttl", "max_lease_ttl"})


class Change(msgspec.Struct, frozen=True):
    """One thing provisioning looked at: what became of it (created, updated, unchanged), where, what it is."""

    action: str
    path: str
    what: str


def _normal(key: str, value: Any) -> Any:
    """A value as Vault reads it back: durations in seconds, lists as lists."""
    if key in _DURATIONS and isinstance(value, str) and value and not value.isdigit():
        return parse_duration(value, key)
    if isinstance(value, (list, tuple)):
        return [_normal(key, v) for v in value]
    if key in _DURATIONS and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def same(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether Vault already holds every field of ``wanted`` (fields Vault adds with their defaults are not ours)."""
    return all(key in current and _normal(key, value) == _normal(key, current[key]) for key, value in wanted.items())


def _empty(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Nothing of ours there yet: a new path, or one Vault shows with empty defaults (a new mount's config/urls)."""
    return not any(current.get(key) not in (None, "", [], {}, False, 0) for key in wanted)


class Converger:
    """The working state of one provisioning run: an admin connection, and what each step came to."""

    def __init__(self, admin: VaultAdmin) -> None:
        self.admin = admin
        self.changes: list[Change] = []

    def note(self, action: str, path: str, what: str) -> None:
        self.changes.append(Change(action, path, what))

    def ensure(self, path: str, what: str, wanted: Mapping[str, Any]) -> str:
        """``path`` holds ``wanted``: written only when it does not already."""
        current = self.admin.read(path)
        if same(wanted, current):
            action = UNCHANGED
        else:
            action = CREATED if _empty(wanted, current) else UPDATED
            self.admin.write(path, **wanted)
        self.note(action, path, what)
        return action

    def pki_mount(self, mount: str) -> None:
        """A PKI secrets engine at ``mount`` whose leases may last as long as the root CA."""
        mounted = self.admin.read("sys/mounts").get(f"{mount}/")
        if mounted is None:
            self.admin.enable_pki(mount)
            self.note(CREATED, mount, "PKI mount")
            return
        if mounted.get("type") != "pki":
            raise ConfigError(f"mount {mount} exists and is a {mounted.get('type')!r} secrets engine, not PKI: "
                              "choose another mount name")
        if _normal("max_lease_ttl", (mounted.get("config") or {}).get("max_lease_ttl")) == _normal("max_lease_ttl", ROOT_TTL):
            self.note(UNCHANGED, mount, "PKI mount")
            return
        self.admin.write(f"sys/mounts/{mount}/tune", max_lease_ttl=ROOT_TTL)
        self.note(UPDATED, mount, "PKI mount (max_lease_ttl)")

    def has_ca(self, mount: str, what: str) -> bool:
        """Whether ``mount`` already has a default issuer (then it is kept, and noted as unchanged)."""
        issuers = self.admin.listing(f"{mount}/issuers").get("keys") or []
        default = self.admin.read(f"{mount}/config/issuers").get("default") if issuers else None
        if default:
            self.note(UNCHANGED, f"{mount}/issuers", what)
        return bool(default)

    def auth(self, kind: str) -> str:
        """An auth method at its default path; its accessor."""
        action = UNCHANGED if f"{kind}/" in self.admin.read("sys/auth") else CREATED
        accessor = self.admin.enable_auth(kind)
        self.note(action, f"auth/{kind}", f"{kind} auth method")
        return accessor

    def policy(self, name: str, text: str) -> None:
        current = self.admin.read(f"sys/policy/{name}").get("rules")
        if current == text:
            action = UNCHANGED
        else:
            action = CREATED if current is None else UPDATED
            self.admin.policy(name, text)
        self.note(action, f"sys/policy/{name}", "ACL policy")
