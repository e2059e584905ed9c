"""Keys, CSRs and certificates: pure functions over bytes, no I/O.

PEM is parsed the way CockroachDB (Go's ``encoding/pem``) parses it (``gopem``): text
outside blocks is ignored, every block of a ``.crt`` must be a ``CERTIFICATE``, and the
first certificate is the leaf. A block Go passes over (CockroachDB never sees it) is an
error here, named with the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import TypeVar

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vaultpki.core import gopem
from vaultpki.core.layout import Eku
from vaultpki.errors import CertificateError, ConfigError

__all__ = [
    "CertInfo",
    "KeyType",
    "PrivateKey",
    "build_csr",
    "can_sign_certs",
    "check_key_params",
    "certs_to_pem",
    "describe",
    "generate_key",
    "fingerprint",
    "format_serial",
    "is_ca",
    "is_issued_by",
    "is_self_signed",
    "key_matches",
    "key_to_pem",
    "load_certs",
    "load_key",
    "pem_blocks",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: Eku.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH: Eku.CLIENT_AUTH,
}


class KeyType(enum.StrEnum):
    EC = "ec"
    RSA = "rsa"


KEY_BITS = {KeyType.EC: (256, 384), KeyType.RSA: (2048, 3072, 4096)}
DEFAULT_BITS = {KeyType.EC: 256, KeyType.RSA: 2048}


def check_key_params(key_type: str, bits: int | None) -> tuple[KeyType, int]:
    """Validate a configured key type and size; ECDSA P-256 unless told otherwise."""
    try:
        kt = KeyType(key_type)
    except ValueError:
        raise ConfigError(f"key_type {key_type!r} is not one of: ec, rsa") from None
    size = DEFAULT_BITS[kt] if bits is None else bits
    if size not in KEY_BITS[kt]:
        allowed = ", ".join(map(str, KEY_BITS[kt]))
        raise ConfigError(f"key_bits {size} is not valid for {kt.value} keys (allowed: {allowed})")
    return kt, size


def generate_key(key_type: KeyType, bits: int) -> PrivateKey:
    """A fresh private key; it never leaves this machine."""
    if key_type is KeyType.EC:
        return ec.generate_private_key(ec.SECP384R1() if bits == 384 else ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: what CockroachDB, PostgreSQL and libpq all read."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def build_csr(key: PrivateKey, common_name: str, dns: Sequence[str], ips: Sequence[str]) -> bytes:
    """A PEM CSR carrying only the subject CN and the SANs we intend to get back."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(type, DER) of every PEM block, as Go's pem.Decode loop sees them; a block Go passes over is refused."""
    return [(block.type, block.der) for block in _go_blocks(data)]


def _go_blocks(data: bytes) -> list[gopem.Block]:
    blocks, skipped = gopem.decode(data)
    if skipped:
        raise CertificateError(str(skipped[0]))
    return blocks


def load_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a ``.crt`` file, leaf first; raises CertificateError like CockroachDB's loader."""
    if not data.strip():
        raise CertificateError("empty certificate file")
    certs = []
    for i, (kind, der) in enumerate(pem_blocks(data)):
        if kind != "CERTIFICATE":
            raise CertificateError(f"block #{i} is of type {kind}, not CERTIFICATE")
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise CertificateError(f"block #{i} does not parse as a certificate: {exc}") from exc
    if not certs:
        raise CertificateError("no certificates found")
    return certs


def load_key(data: bytes) -> PrivateKey:
    """The first ``* PRIVATE KEY`` block (PKCS#1, SEC1 or PKCS#8, unencrypted), as Go's X509KeyPair takes it."""
    for block in _go_blocks(data):
        kind, der = block.type, block.der
        if not kind.endswith("PRIVATE KEY"):
            continue
        if "ENCRYPTED" in kind or "ENCRYPTED" in block.headers.get("Proc-Type", ""):
            raise CertificateError("private key is encrypted")
        pem = b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
            kind.encode(), base64.encodebytes(der).strip(), kind.encode())
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"private key does not parse: {exc}") from exc
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            raise CertificateError(f"unsupported private key type {type(key).__name__}")
        return key
    raise CertificateError("no private key found")


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(map(_pem, certs))


@functools.lru_cache(maxsize=64)
def _pem(cert: x509.Certificate) -> bytes:
    """Cached: a bulk run writes the same intermediates after each of a thousand leaves."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of the certificate's public key (keys of another type never are)."""
    return bool(cert.public_key() == key.public_key())


def is_issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """True when ``parent``'s key signed ``child`` and the names chain."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return is_issued_by(cert, cert)


@functools.lru_cache(maxsize=1024)
def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER (cached: a bulk issuance asks about the same CAs for every leaf)."""
    return cert.fingerprint(hashes.SHA256()).hex()


class CertInfo(msgspec.Struct, frozen=True):
    """What a person (or ``status --json``) wants to know about one certificate."""

    subject: str
    common_name: str | None
    issuer: str
    serial: str                      # colon-hex, as Vault's cert/<serial> paths take it
    not_before: dt.datetime
    not_after: dt.datetime
    dns_sans: tuple[str, ...]
    ip_sans: tuple[str, ...]
    uri_sans: tuple[str, ...]
    other_sans: tuple[str, ...]      # email, directory names, other names: never expected
    ekus: frozenset[Eku] | None      # None: no EKU extension (Go accepts it for any use)
    other_ekus: tuple[str, ...]
    is_ca: bool
    ou: tuple[str, ...]


def format_serial(serial: int) -> str:
    """Colon-separated hex bytes, as Vault prints serials (``0a:1b:...``)."""
    sign, serial = ("-", -serial) if serial < 0 else ("", serial)
    return sign + serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex(":")


@functools.lru_cache(maxsize=1024)
def describe(cert: x509.Certificate) -> CertInfo:
    """Names, dates, SANs, EKUs (cached: certificates are immutable, and the CAs recur for every leaf)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    other: tuple[str, ...] = ()
    if (san := extension(cert, x509.SubjectAlternativeName)) is not None:
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        other = tuple(
            str(n.value) for n in san
            if not isinstance(n, (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier))
        )
    ekus: frozenset[Eku] | None = None
    other_ekus: tuple[str, ...] = ()
    if (eku_ext := extension(cert, x509.ExtendedKeyUsage)) is not None:
        ekus = frozenset(_EKU_NAMES[o] for o in eku_ext if o in _EKU_NAMES)
        other_ekus = tuple(o.dotted_string for o in eku_ext if o not in _EKU_NAMES)
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        common_name=str(cns[0].value) if cns else None,
        issuer=cert.issuer.rfc4514_string(),
        serial=format_serial(cert.serial_number),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_sans=dns, ip_sans=ips, uri_sans=uris, other_sans=other,
        ekus=ekus, other_ekus=other_ekus, is_ca=is_ca(cert),
        ou=tuple(str(o.value) for o in ous),
    )


def extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    """The value of the certificate's extension of this kind, or None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def can_sign_certs(cert: x509.Certificate) -> bool:
    """Go's rule for a parent: CA:TRUE, and keyCertSign if a KeyUsage extension is present."""
    if not is_ca(cert):
        return False
    usage = extension(cert, x509.KeyUsage)
    return usage is None or usage.key_cert_sign


def is_ca(cert: x509.Certificate) -> bool:
    constraints = extension(cert, x509.BasicConstraints)
    return constraints is not None and bool(constraints.ca)


