"""``client.<user>.key.pk8``: a user's key as PKCS#8 DER, for Java clients (pure).

Java's JDBC driver for PostgreSQL (pgjdbc, which CockroachDB's docs use for Java) reads ``sslkey`` as
DER-encoded PKCS#8, not PEM; CockroachDB's ``cert create-client --also-generate-pkcs8-key`` writes it
beside the pair, mode 0600 (``CreateClientPair`` and ``writePKCS8KeyToFile`` in pkg/security/certs.go).
CockroachDB itself never reads it: its loader skips every name that does not end in ``.crt``
(``CertificateLoader.Load`` in pkg/security/certificate_loader.go), so the file cannot stop a start or a
reload. It is a second copy of a secret, so it is judged like its key: the same key, and never readable
by more than the key is.
"""

from __future__ import annotations

import stat

from cryptography.hazmat.primitives import serialization

from vaultpki.core import crypto

__all__ = ["content_problem", "mode_problem", "to_der"]

_SEQUENCE, _INTEGER = 0x30, 0x02


def to_der(key: crypto.PrivateKey) -> bytes:
    """The unencrypted PKCS#8 DER of ``key``: the bytes inside the PEM of its ``.key`` file."""
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def content_problem(data: bytes, key: crypto.PrivateKey | None, key_file: str) -> str | None:
    """What is wrong with a ``.key.pk8`` whose bytes are ``data``, beside ``key`` (the parsed ``key_file``;
    None when that is missing or unusable): not PKCS#8 DER, encrypted, or another key."""
    if not _is_private_key_info(data):
        return ("is not an unencrypted PKCS#8 DER private key (a PEM file, PKCS#1 or SEC1 DER, or an encrypted key "
                "is what Java's JDBC driver cannot read as sslkey)")
    try:
        copy = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        return f"does not parse as a PKCS#8 private key: {exc}"
    if key is None:
        return f"has no usable {key_file} beside it: a PKCS#8 copy of no key in the set"
    if copy.public_key() != key.public_key():
        return f"holds another key than {key_file} (a copy of a replaced key: re-issue the pair)"
    return None


def mode_problem(mode: int, uid: int, gid: int, service_gid: int) -> str | None:
    """A PKCS#8 copy may be read by no one who may not read the key: 0600, or 0640 when it is root's and
    the service's group's (the one case CockroachDB's rule lets a key be group-readable)."""
    perm = stat.S_IMODE(mode) & 0o777
    allowed = 0o640 if uid == 0 and gid == service_gid else 0o600
    if perm & ~allowed:
        return (f"mode {perm:04o} is too open for a private key (at most {allowed:04o}, as vaultpki writes it "
                "beside its .key; chmod it or re-issue)")
    return None


def _is_private_key_info(data: bytes) -> bool:
    """Whether ``data`` starts as a PKCS#8 PrivateKeyInfo does: SEQUENCE { INTEGER version, SEQUENCE
    algorithm, ... }. PKCS#1 (RSA) and SEC1 (EC) DER also open with a SEQUENCE and an INTEGER, but what
    follows their version is an INTEGER or an OCTET STRING, not the algorithm's SEQUENCE."""
    at = _skip_header(data, 0, _SEQUENCE)
    if at is None:
        return False
    version = _skip_header(data, at, _INTEGER)
    if version is None or version != at + 2:      # the version is a short INTEGER (0 or 1): one length byte
        return False
    after = version + data[at + 1]
    return after < len(data) and data[after] == _SEQUENCE


def _skip_header(data: bytes, at: int, tag: int) -> int | None:
    """The offset of the contents of the DER element at ``at``, if it has the ``tag`` (None otherwise)."""
    if at + 2 > len(data) or data[at] != tag:
        return None
    first = data[at + 1]
    if first < 0x80:
        return at + 2
    count = first & 0x7F
    if count == 0 or count > 4 or at + 2 + count > len(data):
        return None
    return at + 2 + count
