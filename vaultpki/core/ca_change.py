"""When a mount's CAs may replace a CA file on disk: never dropping a CA the file still trusts without the
overlap a rotation gives (pure).

``vaultpki ca rotate`` adds the new CA to the mount beside the old one, so every node's CA file first
grows (new and old), and shrinks only when ``ca retire`` takes the old CA away, after every node has
trusted the new one for a while. A CA replaced outside it (a new root generated on the mount, a Vault
rebuilt from nothing) arrives without that overlap: what the mount offers shares no CA with the file,
and lacks a CA the file still trusts. Written as it comes, each node would swap its file at its own CA
check, and a node holding the new CA refuses the peers still presenting certificates from the old one:
the cluster splits. Such a change is held (``vaultpki.daemon.ca_hold``) until an operator acts.

A CA the mount still knows (the root above its issuer, its issuer when ``ca_trust`` changed) is not lost,
and an expired one is trusted by nobody: neither makes a change a replacement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto

__all__ = ["CaReplaced", "replacement"]


class CaReplaced(msgspec.Struct, frozen=True):
    """A CA file that must stay as it is: its mount's CAs were replaced with no overlap."""

    mount: str
    file: str
    trusted: tuple[str, ...]      # the still-valid CAs of the file the mount no longer has (subjects)
    offered: tuple[str, ...]      # what the mount offers instead (subjects)

    def describe(self) -> str:
        return (f"mount {self.mount} now offers {'; '.join(self.offered)} and no longer {'; '.join(self.trusted)}, "
                f"which {self.file} trusts and the cluster's certificates chain to: a CA replaced outside `vaultpki "
                f"ca rotate`, with no overlap; {self.file} and the mount's certificates are kept as they are until "
                "the old CA is back on the mount or an operator runs `vaultpki issue-node` on this node "
                "(docs/sync.md, a CA replaced outside ca rotate)")


def replacement(mount: str, file: str, on_disk: Sequence[x509.Certificate], offered: Sequence[x509.Certificate],
                known: Sequence[x509.Certificate], now: dt.datetime) -> CaReplaced | None:
    """Whether writing ``offered`` (the mount's anchors) over ``on_disk`` (the file's CAs) would drop a trusted
    CA without an overlap; ``known`` is every certificate the mount's issuers and their chains hold."""
    trusted = [c for c in on_disk if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
    kept = {crypto.fingerprint(c) for c in [*offered, *known]}
    lost = [c for c in trusted if crypto.fingerprint(c) not in kept]
    overlap = {crypto.fingerprint(c) for c in offered} & {crypto.fingerprint(c) for c in trusted}
    if not lost or overlap:
        return None
    return CaReplaced(mount, file, tuple(_name(c) for c in lost), tuple(_name(c) for c in offered))


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {crypto.format_serial(cert.serial_number)}"
