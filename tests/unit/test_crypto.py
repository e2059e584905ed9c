"""crypto: keys, CSRs, PEM parsing the way Go's encoding/pem does, describe()."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vaultpki.core import crypto
from vaultpki.core.crypto import KeyType
from vaultpki.core.layout import Eku
from vaultpki.errors import CertificateError, ConfigError


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return crypto.generate_key(KeyType.RSA, 2048)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return crypto.generate_key(KeyType.EC, 256)  # type: ignore[return-value]


# --- key generation and parameters ----------------------------------------------

def test_generate_ec_p256(ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    assert isinstance(ec_key.curve, ec.SECP256R1)


def test_generate_ec_p384() -> None:
    key = crypto.generate_key(KeyType.EC, 384)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)


def test_generate_rsa_2048(rsa_key: rsa.RSAPrivateKey) -> None:
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert rsa_key.key_size == 2048
    assert rsa_key.public_key().public_numbers().e == 65537


def test_generate_gives_fresh_keys() -> None:
    a, b = crypto.generate_key(KeyType.EC, 256), crypto.generate_key(KeyType.EC, 256)
    assert a.private_numbers() != b.private_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key_type", "bits", "expected"),
    [
        pytest.param("ec", None, (KeyType.EC, 256), id="ec-default"),
        pytest.param("ec", 384, (KeyType.EC, 384), id="ec-384"),
        pytest.param("rsa", None, (KeyType.RSA, 2048), id="rsa-default"),
        pytest.param("rsa", 4096, (KeyType.RSA, 4096), id="rsa-4096"),
    ],
)
def test_check_key_params(key_type: str, bits: int | None, expected: tuple[KeyType, int]) -> None:
    assert crypto.check_key_params(key_type, bits) == expected


@pytest.mark.parametrize(
    ("key_type", "bits"),
    [
        pytest.param("ec", 2048, id="ec-2048"),
        pytest.param("ec", 521, id="ec-521"),
        pytest.param("rsa", 256, id="rsa-256"),
        pytest.param("rsa", 1024, id="rsa-1024"),
        pytest.param("ed25519", None, id="ed25519"),
        pytest.param("EC", None, id="uppercase"),
    ],
)
def test_check_key_params_refuses(key_type: str, bits: int | None) -> None:
    with pytest.raises(ConfigError):
        crypto.check_key_params(key_type, bits)


# --- CSR ---------------------------------------------------------------------------

def test_build_csr_has_cn_and_sans(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = crypto.build_csr(ec_key, "node", ["db1.example.com", "localhost"], ["10.0.0.1", "::1"])
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    csr = x509.load_pem_x509_csr(pem)
    assert csr.is_signature_valid
    assert [a.value for a in csr.subject] == ["node"]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db1.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")]
    assert csr.public_key().public_numbers() == ec_key.public_key().public_numbers()


def test_build_csr_without_sans_has_no_san_extension(rsa_key: rsa.RSAPrivateKey) -> None:
    csr = x509.load_pem_x509_csr(crypto.build_csr(rsa_key, "marc", [], []))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "marc"
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert csr.is_signature_valid


def test_build_csr_ed25519() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = x509.load_pem_x509_csr(crypto.build_csr(key, "x", ["x"], []))
    assert csr.is_signature_valid


# --- key PEM round trips ----------------------------------------------------------

def _pem(key: crypto.PrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _same_key(a: crypto.PrivateKey, b: crypto.PrivateKey) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(*der) == b.public_key().public_bytes(*der)


def test_key_to_pem_is_unencrypted_pkcs8(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = crypto.key_to_pem(ec_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert b"ENCRYPTED" not in pem
    assert _same_key(crypto.load_key(pem), ec_key)


@pytest.mark.parametrize("which", ["ec", "rsa", "ed25519"])
def test_roundtrip(which: str, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    key, cls = {
        "ec": (ec_key, ec.EllipticCurvePrivateKey),
        "rsa": (rsa_key, rsa.RSAPrivateKey),
        "ed25519": (ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey),
    }[which]
    loaded = crypto.load_key(crypto.key_to_pem(key))
    assert isinstance(loaded, cls)
    assert _same_key(loaded, key)


def test_load_pkcs1_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = crypto.load_key(pem)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert _same_key(loaded, rsa_key)


def test_load_sec1_ec(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = _pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    loaded = crypto.load_key(pem)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert _same_key(loaded, ec_key)


def test_load_key_skips_ec_parameters_block(ec_key: ec.EllipticCurvePrivateKey) -> None:
    # what `openssl ecparam -genkey -name prime256v1` writes
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    pem = params + _pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert _same_key(crypto.load_key(pem), ec_key)


def test_load_key_takes_the_first_private_key(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = b"junk before\n" + crypto.key_to_pem(rsa_key) + crypto.key_to_pem(ec_key)
    assert _same_key(crypto.load_key(pem), rsa_key)


def test_load_key_crlf(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = crypto.key_to_pem(ec_key).replace(b"\n", b"\r\n")
    assert _same_key(crypto.load_key(pem), ec_key)


def test_pkcs8_encrypted_key_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"),
    )
    assert b"ENCRYPTED PRIVATE KEY" in pem
    with pytest.raises(CertificateError, match="encrypted"):
        crypto.load_key(pem)


def test_legacy_encrypted_pem_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"hunter2"),
    )
    assert b"Proc-Type: 4,ENCRYPTED" in pem
    with pytest.raises(CertificateError):
        crypto.load_key(pem)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a key\n", id="text"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", id="certificate-only"),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", id="garbage-der"),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n", id="bad-base64"),
    ],
)
def test_load_key_refuses(data: bytes) -> None:
    with pytest.raises(CertificateError):
        crypto.load_key(data)


# --- certificates -----------------------------------------------------------------

def test_load_certs_leaf_first(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    certs = crypto.load_certs(leaf.chain_pem(cas.inter))
    assert certs == [leaf.cert, cas.inter.cert]


def test_load_certs_tolerates_text_outside_blocks(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root)
    data = b"Certificate:\n    Data: openssl -text output\n" + leaf.cert_pem + b"\ntrailing words\n"
    assert crypto.load_certs(data) == [leaf.cert]


def test_load_certs_refuses_private_key_block(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root)
    with pytest.raises(CertificateError, match="not CERTIFICATE") as info:
        crypto.load_certs(leaf.cert_pem + leaf.key_pem)
    assert "PRIVATE KEY" in str(info.value)
    assert "#1" in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"  \n\t\n", "empty", id="whitespace-only"),
        pytest.param(b"hello, no pem here\n", "no certificates", id="no-blocks"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\n!!!!notbase64@@@@\n-----END CERTIFICATE-----\n",
                     "", id="garbage-base64"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n", "", id="bad-padding"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b"\x30\x03\x02\x01\x01")
                     + b"-----END CERTIFICATE-----\n", "does not parse", id="valid-base64-bad-der"),
        pytest.param(b"-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n",
                     "not CERTIFICATE", id="trusted-certificate"),
        pytest.param(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "not CERTIFICATE", id="crl"),
    ],
)
def test_load_certs_refuses(data: bytes, fragment: str) -> None:
    with pytest.raises(CertificateError) as info:
        crypto.load_certs(data)
    assert fragment in str(info.value)


def test_load_certs_second_block_bad_fails_whole_file(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root)
    bad = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b"\x30\x00") + b"-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError, match="#1"):
        crypto.load_certs(leaf.cert_pem + bad)


def test_certs_to_pem_roundtrip(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    assert crypto.load_certs(crypto.certs_to_pem([leaf.cert, cas.inter.cert])) == [leaf.cert, cas.inter.cert]


def test_pem_blocks_types_in_order(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root)
    blocks = crypto.pem_blocks(leaf.cert_pem + leaf.key_pem)
    assert [t for t, _ in blocks] == ["CERTIFICATE", "PRIVATE KEY"]
    assert blocks[0][1] == leaf.cert.public_bytes(serialization.Encoding.DER)


def test_key_matches(pki, cas) -> None:  # type: ignore[no-untyped-def]
    a = pki.leaf("a", cas.root)
    b = pki.leaf("b", cas.root)
    assert crypto.key_matches(a.cert, a.key) is True
    assert crypto.key_matches(a.cert, b.key) is False
    assert crypto.key_matches(a.cert, crypto.load_key(a.key_pem)) is True


def test_key_matches_other_algorithm(pki, cas, rsa_key) -> None:  # type: ignore[no-untyped-def]
    a = pki.leaf("a", cas.root)
    assert crypto.key_matches(a.cert, rsa_key) is False


@pytest.mark.parametrize(
    ("key_type", "bits"),
    [pytest.param(KeyType.RSA, 2048, id="rsa"), pytest.param(KeyType.EC, 384, id="ec-p384")],
)
def test_key_matches_each_key_type(pki, cas, key_type, bits) -> None:  # type: ignore[no-untyped-def]
    key = crypto.generate_key(key_type, bits)
    a = pki.leaf("a", cas.root, key=key)
    assert crypto.key_matches(a.cert, key) is True
    assert crypto.key_matches(a.cert, crypto.load_key(crypto.key_to_pem(key))) is True
    assert crypto.key_matches(a.cert, crypto.generate_key(key_type, bits)) is False
    assert crypto.key_matches(pki.leaf("b", cas.root).cert, key) is False


def test_key_matches_key_on_another_curve(pki, cas) -> None:  # type: ignore[no-untyped-def]
    p256 = pki.leaf("a", cas.root)
    assert crypto.key_matches(p256.cert, crypto.generate_key(KeyType.EC, 384)) is False


def test_is_issued_by_and_self_signed(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    assert crypto.is_issued_by(leaf.cert, cas.inter.cert)
    assert not crypto.is_issued_by(leaf.cert, cas.root.cert)
    assert not crypto.is_issued_by(leaf.cert, cas.other.cert)
    assert crypto.is_issued_by(cas.inter.cert, cas.root.cert)
    assert crypto.is_self_signed(cas.root.cert)
    assert not crypto.is_self_signed(cas.inter.cert)
    assert not crypto.is_self_signed(leaf.cert)


def test_is_issued_by_same_name_different_key(pki, cas) -> None:  # type: ignore[no-untyped-def]
    impostor = pki.ca("Test Root CA")   # same subject as cas.root, other key
    leaf = pki.leaf("node", cas.root)
    assert not crypto.is_issued_by(leaf.cert, impostor.cert)


def test_can_sign_and_is_ca(pki, cas) -> None:  # type: ignore[no-untyped-def]
    assert crypto.is_ca(cas.root.cert) and crypto.can_sign_certs(cas.root.cert)
    no_certsign = pki.ca("No CertSign", cas.root, key_cert_sign=False)
    assert crypto.is_ca(no_certsign.cert) and not crypto.can_sign_certs(no_certsign.cert)
    leaf = pki.leaf("x", cas.root)
    assert not crypto.is_ca(leaf.cert) and not crypto.can_sign_certs(leaf.cert)
    no_bc = pki.leaf("y", cas.root, is_ca=None)
    assert not crypto.is_ca(no_bc.cert)


# --- describe / serials ----------------------------------------------------------

def test_describe_fields(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf(
        "client-x", cas.inter, dns=["a.example.com", "b"], ips=["10.1.2.3", "::1"],
        uris=["crdb://tenant/5/user/x"], ou="Tenants",
        ekus=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING],
    )
    info = crypto.describe(leaf.cert)
    assert info.common_name == "client-x"
    assert info.subject == "CN=client-x,OU=Tenants"
    assert info.issuer == "CN=Test Intermediate CA"
    assert info.serial == crypto.format_serial(leaf.cert.serial_number)
    assert info.not_before == now - dt.timedelta(days=1)
    assert info.not_after == now + dt.timedelta(days=90)
    assert info.not_before.tzinfo is not None
    assert info.dns_sans == ("a.example.com", "b")
    assert info.ip_sans == ("10.1.2.3", "::1")
    assert info.uri_sans == ("crdb://tenant/5/user/x",)
    assert info.other_sans == ()
    assert info.ekus == frozenset({Eku.CLIENT_AUTH})
    assert info.other_ekus == (ExtendedKeyUsageOID.CODE_SIGNING.dotted_string,)
    assert info.is_ca is False
    assert info.ou == ("Tenants",)


def test_describe_minimal_cert(pki, cas) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf(None, cas.root, ekus=None)
    info = crypto.describe(leaf.cert)
    assert info.common_name is None
    assert (info.dns_sans, info.ip_sans, info.uri_sans, info.other_sans) == ((), (), (), ())
    assert info.ekus is None
    assert info.other_ekus == ()
    assert info.ou == ()


def test_describe_ca(cas) -> None:  # type: ignore[no-untyped-def]
    info = crypto.describe(cas.root.cert)
    assert info.is_ca is True
    assert info.subject == info.issuer == "CN=Test Root CA"


@pytest.mark.parametrize(
    ("serial", "text"),
    [
        pytest.param(0, "00", id="zero"),
        pytest.param(1, "01", id="one"),
        pytest.param(255, "ff", id="ff"),
        pytest.param(256, "01:00", id="odd-length-padded"),
        pytest.param(0x3A5F00C1, "3a:5f:00:c1", id="inner-zero-byte"),
        pytest.param(2**159 - 1, ":".join(["7f"] + ["ff"] * 19), id="160-bit"),
        pytest.param(2**160 - 1, ":".join(["ff"] * 20), id="160-bit-high-bit-set"),
        pytest.param(-0x0102, "-01:02", id="negative-as-written-by-a-broken-ca"),
    ],
)
def test_format_serial(serial: int, text: str) -> None:
    assert crypto.format_serial(serial) == text
