"""OCSP exactly as CockroachDB does it (``pkg/security/ocsp.go``), so we can ask before it does.

CockroachDB (``security.ocsp.mode`` lax/strict) POSTs a DER request with SHA-256
CertID hashing to every AIA ``id-ad-ocsp`` URL in order, wants HTTP 200 with
``Content-Type: application/ocsp-response``, and takes the first GOOD or REVOKED
answer. ``build_request``/``parse_response`` are pure; ``query`` is the adapter
that does the HTTP, with the transport injectable so tests need no network.

We verify more than Go's ``ocsp.ParseResponseForCert`` does (issuer hashes of the
CertID, freshness, a delegated responder's EKU and validity): a check that is
laxer than the consumer would be worthless, a stricter one only costs an alarm.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import time
from collections.abc import Callable

import msgspec
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from vaultpki.core.crypto import format_serial
from vaultpki.errors import VaultpkiError
from vaultpki.vault import transport

__all__ = [
    "CLOCK_SKEW",
    "HttpAnswer",
    "OcspError",
    "OcspResult",
    "OcspStatus",
    "Post",
    "build_request",
    "http_post",
    "parse_response",
    "query",
    "responder_urls",
]

REQUEST_TYPE = "application/ocsp-request"
RESPONSE_TYPE = "application/ocsp-response"
CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_RESPONSE_BYTES = 1 << 20        # an OCSP answer is a few KiB; refuse to buffer a runaway body


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


# (url, DER request, timeout in seconds) -> answer; raises OcspError when no answer arrives.
Post = Callable[[str, bytes, float], HttpAnswer]

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


def http_post(url: str, body: bytes, timeout: float) -> HttpAnswer:
    """POST like Go's ``http.DefaultClient`` (proxy variables honoured, 307/308 redirects followed, never
    from https to http), over the same HTTP as Vault's (``transport.send``): the whole exchange within
    ``timeout``, the body capped at ``MAX_RESPONSE_BYTES``. An OCSP request carries nothing secret, so a
    redirect may lead to any host."""
    session = transport.new_session(transport.tls_context())
    try:
        answer = transport.send(session, "POST", url, timeout=timeout, limit=MAX_RESPONSE_BYTES, env=os.environ,
                                allowed=None, headers={"Content-Type": REQUEST_TYPE}, body=body)
    except transport.BodyTooLarge as exc:
        raise OcspError(f"response body exceeds {MAX_RESPONSE_BYTES} bytes") from exc
    except requests.exceptions.RequestException as exc:
        raise OcspError(f"{type(exc).__name__}: {transport.one_line(str(exc))[:300]}") from exc
    except (OSError, ValueError) as exc:              # the system trust store unreadable
        raise OcspError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        session.close()
    return HttpAnswer(answer.status, answer.headers.get("Content-Type"), answer.body)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def query(
    cert: x509.Certificate, issuer: x509.Certificate, timeout: float = 3.0, now: dt.datetime | None = None,
    post: Post = http_post,
) -> OcspResult:
    """Ask the certificate's responders in order; the first GOOD/REVOKED wins, as in CockroachDB.

    ``timeout`` bounds the whole check (``security.ocsp.timeout``), not each URL.
    """
    urls = responder_urls(cert)
    if not urls:
        raise OcspError("certificate has no OCSP responder URL (AIA)")
    request = build_request(cert, issuer)
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for url in urls:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{url}: not tried, {timeout:g}s timeout spent")
            continue
        try:
            answer = post(url, request, remaining)
            if answer.status != 200:
                raise OcspError(f"HTTP {answer.status}")
            if answer.content_type != RESPONSE_TYPE:
                raise OcspError(f"Content-Type {answer.content_type!r}, not {RESPONSE_TYPE!r}")
            result = parse_response(answer.body, cert, issuer, now or dt.datetime.now(dt.UTC), responder=url)
        except OcspError as exc:
            failures.append(f"{url}: {_one_line(str(exc))}")
            continue
        if result.status is OcspStatus.UNKNOWN:
            failures.append(f"{url}: status unknown")
            continue
        return result
    raise OcspError(
        f"no OCSP responder gave a definitive answer for serial {format_serial(cert.serial_number)}: " + "; ".join(failures)
    )
