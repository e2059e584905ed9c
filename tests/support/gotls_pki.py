"""A tiny PKI for the Go consumer's own tests and the cross-checks with ``vaultpki verify``: CAs with the
constraints real organisation CAs carry (name constraints, path lengths, EKUs, critical extensions) and
certs-dirs laid out as CockroachDB reads them. In memory, then written; nothing here needs Vault."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLIENT", "HOST", "SERVER", "Ca", "make_ca", "standard_node", "write_ca", "write_leaf"]

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
HOST = "node1.test.internal"


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)     # itself and its parents, roots excluded

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1)))


def make_ca(cn: str, parent: Ca | None = None, path_length: int | None = None,
            permitted_dns: Sequence[str] = (), ekus: Sequence[x509.ObjectIdentifier] = ()) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = parent.cert.subject if parent else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (_builder(cn, issuer, key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
    if permitted_dns:
        builder = builder.add_extension(
            x509.NameConstraints([x509.DNSName(d) for d in permitted_dns], None), critical=True)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    cert = builder.sign(parent.key if parent else key, hashes.SHA256())
    return Ca(cert, key, [cert, *parent.chain] if parent else [])


def write_leaf(certs_dir: Path, stem: str, ca: Ca, cn: str, ekus: Sequence[x509.ObjectIdentifier],
               dns: Sequence[str] = (), ip: Sequence[str] = (), critical_extension: bool = False) -> None:
    """<stem>.crt (leaf, then the intermediates up to, not including, a self-signed root) and <stem>.key."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(cn, ca.cert.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if critical_extension:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"), critical=True)
    leaf = builder.sign(ca.key, hashes.SHA256())
    certs_dir.mkdir(exist_ok=True)
    (certs_dir / f"{stem}.crt").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                                     for c in (leaf, *ca.chain)))
    (certs_dir / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (certs_dir / f"{stem}.key").chmod(0o600)


def write_ca(certs_dir: Path, name: str, *cas: Ca) -> None:
    certs_dir.mkdir(exist_ok=True)
    (certs_dir / name).write_bytes(b"".join(ca.pem() for ca in cas))


def standard_node(certs_dir: Path, ca: Ca, trust: Ca | None = None) -> Path:
    """A standard-layout node: ca.crt, dual-purpose node.crt (CN=node, the host, `node`, 127.0.0.1)."""
    write_ca(certs_dir, "ca.crt", trust or ca)
    write_leaf(certs_dir, "node", ca, "node", [SERVER, CLIENT], dns=[HOST, "localhost", "node"], ip=["127.0.0.1"])
    return certs_dir
