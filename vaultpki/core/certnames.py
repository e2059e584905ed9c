"""Classify certs-dir entries by name exactly as CockroachDB's loader does (pure).

Mirrors ``CertInfoFromFilename`` in cockroachdb/cockroach ``pkg/security``: only
names ending in ``.crt`` (case-sensitive) are looked at; the name is split on
``.``; ``client``/``client-tenant``/``tenant-signing`` join their middle parts.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["CertName", "PemUsage", "classify", "key_for_cert"]

MAX_UINT64 = 2**64 - 1


class PemUsage(enum.StrEnum):
    CA = "ca"
    CLIENT_CA = "ca-client"
    TENANT_CA = "ca-client-tenant"
    UI_CA = "ca-ui"
    NODE = "node"
    UI = "ui"
    CLIENT = "client"
    TENANT = "client-tenant"
    TENANT_SIGNING = "tenant-signing"

    @property
    def is_ca(self) -> bool:
        return self in (PemUsage.CA, PemUsage.CLIENT_CA, PemUsage.TENANT_CA, PemUsage.UI_CA)


_SINGLE = {
    "ca": PemUsage.CA,
    "ca-client": PemUsage.CLIENT_CA,
    "ca-client-tenant": PemUsage.TENANT_CA,
    "ca-ui": PemUsage.UI_CA,
    "node": PemUsage.NODE,
    "ui": PemUsage.UI,
}
_NAMED = {
    "client": PemUsage.CLIENT,
    "client-tenant": PemUsage.TENANT,
    "tenant-signing": PemUsage.TENANT_SIGNING,
}


class CertName(msgspec.Struct, frozen=True):
    """A recognised ``.crt``; ``name`` is the user (``client``) or tenant id; ``error`` is set when
    CockroachDB would reject the whole load (a non-numeric tenant id)."""

    filename: str
    usage: PemUsage
    name: str | None = None
    error: str | None = None

    @property
    def key_file(self) -> str | None:
        return None if self.usage.is_ca else key_for_cert(self.filename)


class BadFilename(ValueError):
    """A ``.crt`` name CockroachDB logs as 'bad filename' and skips."""


def key_for_cert(filename: str) -> str:
    return filename[: -len(".crt")] + ".key"


def classify(filename: str) -> CertName | None:
    """The CertName for ``filename``; None when CockroachDB ignores it silently.

    Raises BadFilename for a ``.crt`` that CockroachDB skips with a warning.
    """
    if not filename.endswith(".crt"):
        return None
    parts = filename.split(".")
    prefix = parts[0]
    if prefix in _SINGLE:
        if len(parts) != 2:
            raise BadFilename(f"{filename}: expected exactly 2 parts for {prefix}.crt, found {len(parts)}")
        return CertName(filename, _SINGLE[prefix])
    if prefix in _NAMED:
        if len(parts) < 3:
            raise BadFilename(f"{filename}: expected at least 3 parts for {prefix}.<name>.crt")
        name = ".".join(parts[1:-1])
        if not name:
            raise BadFilename(f"{filename}: empty name between {prefix}. and .crt")
        usage = _NAMED[prefix]
        error = None
        if usage is not PemUsage.CLIENT and not _is_uint64(name):
            error = f"invalid tenant id {name!r}: CockroachDB refuses to load the whole certs-dir"
        return CertName(filename, usage, name, error)
    raise BadFilename(f"{filename}: unknown prefix {prefix!r}")


def _is_uint64(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= MAX_UINT64
