"""OCSP exactly as CockroachDB does it (``pkg/security/ocsp.go``), so we can ask before it does: the pure part,
building the request and judging the answer (the HTTP query is ``vaultpki.vault.ocsp``).

CockroachDB (``security.ocsp.mode`` lax/strict) POSTs a DER request with SHA-256
CertID hashing to every AIA ``id-ad-ocsp`` URL in order, wants HTTP 200 with
``Content-Type: application/ocsp-response``, and takes the first GOOD or REVOKED
answer.

We verify more than Go's ``ocsp.ParseResponseForCert`` does (issuer hashes of the
CertID, freshness, a delegated responder's EKU and validity): a check that is
laxer than the consumer would be worthless, a stricter one only costs an alarm.
"""

from __future__ import annotations

import datetime as dt
import enum

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from vaultpki.core.crypto import format_serial
from vaultpki.errors import VaultpkiError

__all__ = [
    "CLOCK_SKEW",
    "REQUEST_TYPE",
    "HttpAnswer",
    "OcspError",
    "OcspResult",
    "OcspStatus",
    "build_request",
    "judge_answer",
    "parse_response",
    "responder_urls",
]

REQUEST_TYPE = "application/ocsp-request"
RESPONSE_TYPE = "application/ocsp-response"
CLOCK_SKEW = dt.timedelta(minutes=5)


class OcspError(VaultpkiError):
    """An OCSP question could not be asked, or its answer cannot be trusted."""

    exit_code = 1


class OcspStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class OcspResult(msgspec.Struct, frozen=True):
    """One verified answer about one certificate."""

    status: OcspStatus
    revocation_time: dt.datetime | None
    revocation_reason: str | None      # RFC 5280 reason name, e.g. "keyCompromise"; None when not given
    this_update: dt.datetime
    next_update: dt.datetime | None    # None: the responder promises nothing about freshness
    responder: str                     # the URL that answered ("" when parsed without one)
    serial: int


class HttpAnswer(msgspec.Struct, frozen=True):
    """The three things CockroachDB looks at in an OCSP HTTP response."""

    status: int
    content_type: str | None
    body: bytes


_STATUS = {
    ocsp.OCSPCertStatus.GOOD: OcspStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: OcspStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: OcspStatus.UNKNOWN,
}


def responder_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The AIA id-ad-ocsp URLs in certificate order: Go's ``cert.OCSPServer``, all CockroachDB consults."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError as exc:
        raise OcspError(f"certificate's AIA extension does not parse: {exc}") from exc
    return tuple(
        str(d.access_location.value) for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    )


def _cert_id_request(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> ocsp.OCSPRequest:
    try:
        return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OcspError(f"cannot build an OCSP CertID with {algorithm.name}: {exc}") from exc


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """DER of Go's ``ocsp.CreateRequest(cert, issuer, {Hash: SHA256})``: one CertID, no nonce, no extensions."""
    return _cert_id_request(cert, issuer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _verify_with(public_key: object, response: ocsp.OCSPResponse) -> bool:
    """True when ``public_key`` produced the BasicOCSPResponse signature."""
    try:
        signature, data = response.signature, response.tbs_response_bytes
        algorithm = response.signature_hash_algorithm
        if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(signature, data)
        elif algorithm is None:
            return False
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            public_key.verify(signature, data, pad, algorithm)
        elif isinstance(public_key, dsa.DSAPublicKey):
            public_key.verify(signature, data, algorithm)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _responder_problem(responder: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> str | None:
    """Why an included certificate may not speak for ``issuer`` (RFC 6960 §4.2.2.2), or None if it may."""
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return "is not issued by the certificate's issuer"
    try:
        ekus = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "has no extended key usage (id-kp-OCSPSigning required)"
    if ExtendedKeyUsageOID.OCSP_SIGNING not in ekus:
        return "lacks the id-kp-OCSPSigning extended key usage"
    if not responder.not_valid_before_utc - CLOCK_SKEW <= now <= responder.not_valid_after_utc + CLOCK_SKEW:
        return f"is not valid at {now.isoformat()}"
    return None


def _check_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> None:
    """The issuer signed it, or an included responder certificate that the issuer authorised did."""
    if _verify_with(issuer.public_key(), response):
        return
    for included in response.certificates:
        if not _verify_with(included.public_key(), response):
            continue
        problem = _responder_problem(included, issuer, now)
        if problem is None:
            return
        raise OcspError(f"OCSP response is signed by {included.subject.rfc4514_string()!r}, which {problem}")
    raise OcspError("OCSP response signature verifies with neither the issuer's key nor an included responder certificate")


def _single_for(response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is this certificate's, in the hash algorithm the responder chose."""
    serial = cert.serial_number
    other_issuer = False
    for single in response.responses:
        if single.serial_number != serial:
            continue
        try:
            algorithm = single.hash_algorithm
        except UnsupportedAlgorithm as exc:
            raise OcspError(f"OCSP response uses an unsupported CertID hash: {exc}") from exc
        expected = _cert_id_request(cert, issuer, algorithm)
        if (single.issuer_name_hash, single.issuer_key_hash) == (expected.issuer_name_hash, expected.issuer_key_hash):
            return single
        other_issuer = True
    if other_issuer:
        raise OcspError(f"OCSP response's CertID for serial {format_serial(serial)} names another issuer")
    raise OcspError(f"OCSP response does not cover serial {format_serial(serial)}")


def parse_response(
    der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime, responder: str = "",
) -> OcspResult:
    """Parse and verify one DER OCSP response about ``cert``; every reason not to trust it is an OcspError."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OcspError(f"OCSP response does not parse: {exc}") from exc
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"OCSP responder answered {response.response_status.name}, not SUCCESSFUL")
    single = _single_for(response, cert, issuer)
    _check_signature(response, issuer, now)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise OcspError(f"OCSP response's thisUpdate {this_update.isoformat()} is in the future")
    if next_update is not None and next_update < now - CLOCK_SKEW:
        raise OcspError(f"OCSP response's nextUpdate {next_update.isoformat()} has passed")
    status = _STATUS[single.certificate_status]
    revoked = status is OcspStatus.REVOKED
    reason = single.revocation_reason if revoked else None
    return OcspResult(
        status=status,
        revocation_time=single.revocation_time_utc if revoked else None,
        revocation_reason=reason.value if reason is not None else None,
        this_update=this_update,
        next_update=next_update,
        responder=responder,
        serial=cert.serial_number,
    )


def judge_answer(
    answer: HttpAnswer, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime, responder: str,
) -> OcspResult:
    """What one responder's HTTP answer says about ``cert``, judged as CockroachDB judges it: HTTP 200 with
    the OCSP content type, then the response itself (``parse_response``)."""
    if answer.status != 200:
        raise OcspError(f"HTTP {answer.status}")
    if answer.content_type != RESPONSE_TYPE:
        raise OcspError(f"Content-Type {answer.content_type!r}, not {RESPONSE_TYPE!r}")
    return parse_response(answer.body, cert, issuer, now, responder=responder)
