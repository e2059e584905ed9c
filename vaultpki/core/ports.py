"""What the core needs from the world, in the core's own words: the Vault port, the records that cross it,
and the callables (clock, progress, sink) a caller hands in.

The core plans and judges; the adapters (``vaultpki.vault``, the daemon, the CLI) implement these. Keeping
them here, not in the adapter, is what lets the core be read and tested without loading hvac or threads:
the Vault adapter imports this module, never the other way round.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

import msgspec

from vaultpki.core.layout import FileContent
from vaultpki.errors import VaultpkiError
from vaultpki.redact import redacted_repr

__all__ = [
    "Answers", "CaMaterial", "Clock", "IssueRequest", "IssuedCert", "Progress", "SignRequest", "Sink", "VaultPort",
]

K = TypeVar("K")

# The time now (UTC); the daemon's and the tests' clocks stand in for the wall clock.
Clock = Callable[[], dt.datetime]
# Told each certificate file's name once its answer has been judged (a bulk run's progress line).
Progress = Callable[[str], object]
# Handed validated files as soon as they are judged, so that a bulk run writes while the rest are signed.
Sink = Callable[[Sequence[FileContent]], object]


class IssuedCert(msgspec.Struct, frozen=True):
    """What Vault returned for one leaf, as PEM strings; ``private_key`` only from ``issue``."""

    certificate: str
    ca_chain: tuple[str, ...]
    serial: str
    private_key: str | None = None

    def __repr__(self) -> str:
        return redacted_repr(self, "private_key")


class CaMaterial(msgspec.Struct, frozen=True):
    """A mount's default issuer and the chain above it (issuer first), plus every other issuer of the
    mount that may still issue (during a CA rotation: the new one before activation, the old one after)."""

    issuer: str
    chain: tuple[str, ...]
    others: tuple[tuple[str, tuple[str, ...]], ...] = ()


class SignRequest(msgspec.Struct, frozen=True):
    """One CSR for ``VaultPort.sign_many``: the key was made here and never leaves."""

    mount: str
    role: str
    csr: str
    common_name: str | None
    ttl: str | None
    # Client certificates: Vault would copy the CN into a DNS SAN, which CockroachDB does not need (it takes the
    # identity from the CN) and which a CA's name constraints refuse. A request parameter: no role field sets it.
    exclude_cn_from_sans: bool = False


class IssueRequest(msgspec.Struct, frozen=True):
    """One leaf for ``VaultPort.issue_many``: Vault makes the key (``method = "issue"``)."""

    mount: str
    role: str
    common_name: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    ttl: str | None
    key_type: str
    key_bits: int
    exclude_cn_from_sans: bool = False   # as for SignRequest


# (tag, certificate or error) as each request completes; closing it stops the run and cancels what is queued.
Answers = Generator[tuple[K, IssuedCert | VaultpkiError], None, None]


class VaultPort(Protocol):
    """Vault as the core and the daemon use it. Each answer is one request's; a failure of one request is
    its own error, never the others'. Doing several at once is the adapter's business."""

    def sign_many(self, requests: Iterable[tuple[K, SignRequest]], parallel: int) -> Answers[K]:
        """Sign each request, ``parallel`` in flight; yield (tag, certificate or error) as each completes.
        ``requests`` is drawn lazily, in the caller's thread."""
        ...

    def issue_many(self, requests: Iterable[tuple[K, IssueRequest]], parallel: int) -> Answers[K]:
        """As ``sign_many``, for leaves whose key Vault makes."""
        ...

    def ca_materials(self, mounts: Sequence[str]) -> Mapping[str, CaMaterial]:
        """Every mount's CA material; the first failure is raised."""
        ...

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int: ...
