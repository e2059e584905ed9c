"""OCSP (core: requests and judging; vault: the HTTP query) against a tiny in-memory PKI: requests as CockroachDB sends them,
responses we must trust or refuse."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from vaultpki.core import ocsp as cocsp
from vaultpki.core.ocsp import HttpAnswer, OcspError, OcspResult, OcspStatus
from vaultpki.errors import VaultpkiError
from vaultpki.vault import ocsp as vocsp

NOW = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
URL1 = "http://ocsp.test/x"
URL2 = "http://ocsp2.test/y"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Party:
    cert: x509.Certificate
    key: Key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _alg(key: Key) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(cn: str, key: Key | None = None) -> Party:
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - 365 * DAY).not_valid_after(NOW + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, _alg(key))
    )
    return Party(cert, key)


def make_leaf(
    cn: str, issuer: Party, *, ocsp_urls: tuple[str, ...] = (URL1,), ekus: tuple[x509.ObjectIdentifier, ...] | None = None,
    not_after: dt.datetime = NOW + 90 * DAY,
) -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - DAY).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    access = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier("http://ca.test/ca"))]
    access += [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)) for u in ocsp_urls]
    if ocsp_urls:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return Party(builder.sign(issuer.key, _alg(issuer.key)), key)


@dataclass(frozen=True)
class World:
    issuer: Party
    leaf: Party              # AIA: caIssuers, then OCSP URL1, URL2
    sibling: Party           # another leaf of the same issuer
    responder: Party         # delegated responder: issued by issuer, id-kp-OCSPSigning
    responder_no_eku: Party  # issued by issuer, serverAuth only
    rogue_responder: Party   # OCSPSigning, but issued by the unrelated CA
    expired_responder: Party
    unrelated: Party         # a CA with nothing to do with the leaf


@pytest.fixture(scope="module")
def world() -> World:
    issuer = make_ca("Issuing CA")
    unrelated = make_ca("Unrelated CA")
    signing = (ExtendedKeyUsageOID.OCSP_SIGNING,)
    return World(
        issuer=issuer,
        leaf=make_leaf("node", issuer, ocsp_urls=(URL1, URL2)),
        sibling=make_leaf("other", issuer),
        responder=make_leaf("OCSP responder", issuer, ocsp_urls=(), ekus=signing),
        responder_no_eku=make_leaf("not a responder", issuer, ocsp_urls=(), ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        rogue_responder=make_leaf("rogue responder", unrelated, ocsp_urls=(), ekus=signing),
        expired_responder=make_leaf("old responder", issuer, ocsp_urls=(), ekus=signing, not_after=NOW - DAY),
        unrelated=unrelated,
    )


@dataclass(frozen=True)
class Resp:
    """How to build one OCSP response about ``world.leaf``; every field a knob a test turns."""

    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD
    this_update: dt.datetime = NOW - HOUR
    next_update: dt.datetime | None = NOW + 11 * HOUR
    revocation_time: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None
    algorithm: hashes.HashAlgorithm = field(default_factory=hashes.SHA256)
    signer: str = "issuer"                   # a World attribute
    include: tuple[str, ...] = ()            # World attributes whose certificates go into the response
    about: str = "leaf"                      # whose serial (and issuer) the CertID names
    cert_id_issuer: str = "issuer"           # whose name/key hashes the CertID carries

    def der(self, w: World) -> bytes:
        about: Party = getattr(w, self.about)
        id_issuer: Party = getattr(w, self.cert_id_issuer)
        signer: Party = getattr(w, self.signer)
        builder = ocsp.OCSPResponseBuilder().add_response(
            about.cert, id_issuer.cert, self.algorithm, self.status, self.this_update, self.next_update,
            self.revocation_time, self.reason,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        if self.include:
            builder = builder.certificates([getattr(w, name).cert for name in self.include])
        return builder.sign(signer.key, _alg(signer.key)).public_bytes(serialization.Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- responder_urls


def test_responder_urls_are_the_ocsp_access_descriptions_in_order(world: World) -> None:
    assert cocsp.responder_urls(world.leaf.cert) == (URL1, URL2)


def test_responder_urls_empty_without_aia(world: World) -> None:
    assert cocsp.responder_urls(world.responder.cert) == ()


# ---------------------------------------------------------------- build_request


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def go_create_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """What Go's ocsp.CreateRequest(cert, issuer, &RequestOptions{Hash: crypto.SHA256}) marshals, written out by hand."""
    name_hash = hashlib.sha256(issuer.subject.public_bytes()).digest()
    point = issuer.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    key_hash = hashlib.sha256(point).digest()
    sha256_oid = bytes.fromhex("0609608648016503040201")
    serial = cert.serial_number.to_bytes(cert.serial_number.bit_length() // 8 + 1, "big", signed=True)
    cert_id = _der(0x30, _der(0x30, sha256_oid + b"\x05\x00") + _der(0x04, name_hash) + _der(0x04, key_hash) + _der(0x02, serial))
    return _der(0x30, _der(0x30, _der(0x30, _der(0x30, cert_id))))   # OCSPRequest{TBSRequest{[Request{CertID}]}}


def test_build_request_is_sha256_certid_matching_the_certificate(world: World) -> None:
    der = cocsp.build_request(world.leaf.cert, world.issuer.cert)
    request = ocsp.load_der_ocsp_request(der)
    assert isinstance(request.hash_algorithm, hashes.SHA256)
    assert request.serial_number == world.leaf.cert.serial_number
    assert request.issuer_name_hash == hashlib.sha256(world.issuer.cert.subject.public_bytes()).digest()
    point = world.issuer.cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert request.issuer_key_hash == hashlib.sha256(point).digest()
    assert len(request.extensions) == 0    # no nonce: CockroachDB sends none


def test_build_request_is_byte_for_byte_what_go_sends(world: World) -> None:
    assert cocsp.build_request(world.leaf.cert, world.issuer.cert) == go_create_request(world.leaf.cert, world.issuer.cert)


# ---------------------------------------------------------------- parse_response: accepted


REVOKED_AT = NOW - 2 * HOUR


@pytest.mark.parametrize(("resp", "status", "reason"), [
    pytest.param(Resp(), OcspStatus.GOOD, None, id="good-signed-by-issuer"),
    pytest.param(Resp(status=ocsp.OCSPCertStatus.REVOKED, revocation_time=REVOKED_AT, reason=x509.ReasonFlags.key_compromise),
                 OcspStatus.REVOKED, "keyCompromise", id="revoked-with-time-and-reason"),
    pytest.param(Resp(status=ocsp.OCSPCertStatus.REVOKED, revocation_time=REVOKED_AT),
                 OcspStatus.REVOKED, None, id="revoked-without-reason"),
    pytest.param(Resp(status=ocsp.OCSPCertStatus.UNKNOWN), OcspStatus.UNKNOWN, None, id="unknown"),
    pytest.param(Resp(signer="responder", include=("responder",)), OcspStatus.GOOD, None, id="delegated-responder-included"),
    pytest.param(Resp(include=("issuer",)), OcspStatus.GOOD, None, id="issuer-signed-with-issuer-included"),
    pytest.param(Resp(signer="responder", include=("rogue_responder", "responder")), OcspStatus.GOOD, None,
                 id="delegated-responder-not-first"),
    pytest.param(Resp(algorithm=hashes.SHA1()), OcspStatus.GOOD, None, id="certid-in-sha1"),
    pytest.param(Resp(algorithm=hashes.SHA384()), OcspStatus.GOOD, None, id="certid-in-sha384"),
    pytest.param(Resp(this_update=NOW + dt.timedelta(minutes=4)), OcspStatus.GOOD, None, id="this-update-within-skew"),
    pytest.param(Resp(next_update=None), OcspStatus.GOOD, None, id="no-next-update"),
])
def test_parse_response_accepts(world: World, resp: Resp, status: OcspStatus, reason: str | None) -> None:
    result = cocsp.parse_response(resp.der(world), world.leaf.cert, world.issuer.cert, NOW, responder=URL1)
    assert result == OcspResult(
        status=status,
        revocation_time=REVOKED_AT if status is OcspStatus.REVOKED else None,
        revocation_reason=reason,
        this_update=resp.this_update,
        next_update=resp.next_update,
        responder=URL1,
        serial=world.leaf.cert.serial_number,
    )


def test_parse_response_works_with_rsa_and_ed25519_issuers() -> None:
    for key in (rsa.generate_private_key(public_exponent=65537, key_size=2048), ed25519.Ed25519PrivateKey.generate()):
        issuer = make_ca(f"{type(key).__name__} CA", key)
        leaf = make_leaf("node", issuer)
        der = (ocsp.OCSPResponseBuilder()
               .add_response(leaf.cert, issuer.cert, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD, NOW - HOUR, None, None, None)
               .responder_id(ocsp.OCSPResponderEncoding.NAME, issuer.cert)
               .sign(key, _alg(key)).public_bytes(serialization.Encoding.DER))
        assert cocsp.parse_response(der, leaf.cert, issuer.cert, NOW).status is OcspStatus.GOOD


# ---------------------------------------------------------------- parse_response: refused


@pytest.mark.parametrize(("make", "match"), [
    pytest.param(lambda w: Resp(signer="unrelated").der(w), "verifies with neither", id="signed-by-unrelated-key"),
    pytest.param(lambda w: Resp(signer="unrelated", include=("unrelated",)).der(w), "not issued by", id="unrelated-ca-included"),
    pytest.param(lambda w: Resp(signer="responder").der(w), "verifies with neither", id="delegated-responder-not-included"),
    pytest.param(lambda w: Resp(signer="responder_no_eku", include=("responder_no_eku",)).der(w), "lacks the id-kp-OCSPSigning",
                 id="delegated-responder-without-eku"),
    pytest.param(lambda w: Resp(signer="sibling", include=("sibling",)).der(w), "no extended key usage",
                 id="delegated-responder-without-eku-extension"),
    pytest.param(lambda w: Resp(signer="rogue_responder", include=("rogue_responder",)).der(w), "not issued by",
                 id="delegated-responder-from-another-ca"),
    pytest.param(lambda w: Resp(signer="expired_responder", include=("expired_responder",)).der(w), "is not valid at",
                 id="delegated-responder-expired"),
    pytest.param(lambda w: Resp(about="sibling").der(w), "does not cover serial", id="certid-for-another-serial"),
    pytest.param(lambda w: Resp(cert_id_issuer="unrelated").der(w), "names another issuer", id="certid-for-another-issuer"),
    pytest.param(lambda w: Resp(this_update=NOW + 6 * dt.timedelta(minutes=1)).der(w), "in the future", id="this-update-in-future"),
    pytest.param(lambda w: Resp(this_update=NOW - DAY, next_update=NOW - HOUR).der(w), "has passed", id="next-update-in-past"),
    pytest.param(lambda w: unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), "UNAUTHORIZED", id="unsuccessful-unauthorized"),
    pytest.param(lambda w: unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER), "TRY_LATER", id="unsuccessful-try-later"),
    pytest.param(lambda w: unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR), "INTERNAL_ERROR", id="unsuccessful-internal"),
    pytest.param(lambda w: b"<html>not ocsp</html>", "does not parse", id="garbage"),
])
def test_parse_response_refuses(world: World, make: Callable[[World], bytes], match: str) -> None:
    with pytest.raises(OcspError, match=match) as info:
        cocsp.parse_response(make(world), world.leaf.cert, world.issuer.cert, NOW)
    assert "\n" not in str(info.value)


def test_tampered_response_is_refused(world: World) -> None:
    der = bytearray(Resp().der(world))
    der[-1] ^= 0x01   # last byte of the signature
    with pytest.raises(OcspError, match="verifies with neither"):
        cocsp.parse_response(bytes(der), world.leaf.cert, world.issuer.cert, NOW)


def test_ocsp_error_is_a_vaultpki_error_with_exit_code_1() -> None:
    assert issubclass(OcspError, VaultpkiError)
    assert OcspError.exit_code == 1


# ---------------------------------------------------------------- query


@dataclass
class FakePost:
    """Answers per URL; records every call (url, body, timeout)."""

    answers: dict[str, HttpAnswer | OcspError]
    calls: list[tuple[str, bytes, float]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, timeout: float) -> HttpAnswer:
        self.calls.append((url, body, timeout))
        answer = self.answers[url]
        if isinstance(answer, OcspError):
            raise answer
        return answer


def ok(der: bytes, content_type: str | None = "application/ocsp-response") -> HttpAnswer:
    return HttpAnswer(200, content_type, der)


REVOKED = Resp(status=ocsp.OCSPCertStatus.REVOKED, revocation_time=REVOKED_AT, reason=x509.ReasonFlags.superseded)
UNKNOWN = Resp(status=ocsp.OCSPCertStatus.UNKNOWN)


def test_query_posts_cockroachdbs_request_and_first_good_wins(world: World) -> None:
    post = FakePost({URL1: ok(Resp().der(world)), URL2: ok(REVOKED.der(world))})
    result = vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)
    assert (result.status, result.responder) == (OcspStatus.GOOD, URL1)
    assert [c[0] for c in post.calls] == [URL1]
    assert post.calls[0][1] == go_create_request(world.leaf.cert, world.issuer.cert)
    assert 0 < post.calls[0][2] <= 3.0


def test_query_first_revoked_wins(world: World) -> None:
    post = FakePost({URL1: ok(REVOKED.der(world)), URL2: ok(Resp().der(world))})
    result = vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)
    assert (result.status, result.revocation_time, result.revocation_reason) == (OcspStatus.REVOKED, REVOKED_AT, "superseded")
    assert len(post.calls) == 1


@pytest.mark.parametrize("first", [
    pytest.param(HttpAnswer(500, "text/plain", b"boom"), id="http-500"),
    pytest.param(ok(b"", content_type="application/octet-stream"), id="wrong-content-type"),
    pytest.param(ok(b"", content_type=None), id="no-content-type"),
    pytest.param(ok(b"", content_type="application/ocsp-response; charset=binary"), id="content-type-with-parameter"),
    pytest.param(OcspError("ConnectionError: refused"), id="connection-refused"),
])
def test_query_falls_through_to_the_second_url(world: World, first: HttpAnswer | OcspError) -> None:
    post = FakePost({URL1: first, URL2: ok(Resp().der(world))})
    result = vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)
    assert (result.status, result.responder) == (OcspStatus.GOOD, URL2)
    assert [c[0] for c in post.calls] == [URL1, URL2]


def test_query_content_type_must_be_exact(world: World) -> None:
    post = FakePost({URL1: ok(Resp().der(world), "application/octet-stream"), URL2: ok(Resp().der(world), "text/html")})
    with pytest.raises(OcspError, match="Content-Type 'application/octet-stream', not 'application/ocsp-response'"):
        vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)


def test_query_unknown_then_revoked(world: World) -> None:
    post = FakePost({URL1: ok(UNKNOWN.der(world)), URL2: ok(REVOKED.der(world))})
    result = vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)
    assert (result.status, result.responder) == (OcspStatus.REVOKED, URL2)


def test_query_all_failing_is_one_line_naming_each_url(world: World) -> None:
    post = FakePost({URL1: HttpAnswer(500, "text/plain", b"boom"), URL2: ok(Resp(signer="unrelated").der(world))})
    with pytest.raises(OcspError) as info:
        vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no OCSP responder gave a definitive answer for serial ")
    assert f"{URL1}: HTTP 500; {URL2}: OCSP response signature verifies with neither" in message


def test_query_all_unknown_fails(world: World) -> None:
    post = FakePost({URL1: ok(UNKNOWN.der(world)), URL2: ok(UNKNOWN.der(world))})
    with pytest.raises(OcspError, match=f"{URL1}: status unknown; {URL2}: status unknown"):
        vocsp.query(world.leaf.cert, world.issuer.cert, now=NOW, post=post)


def test_query_needs_a_responder_url(world: World) -> None:
    post = FakePost({})
    with pytest.raises(OcspError, match=r"^certificate has no OCSP responder URL \(AIA\)$"):
        vocsp.query(world.responder.cert, world.issuer.cert, now=NOW, post=post)
    assert post.calls == []


def test_query_timeout_bounds_the_whole_check(world: World) -> None:
    post = FakePost({URL1: ok(UNKNOWN.der(world)), URL2: ok(Resp().der(world))})
    with pytest.raises(OcspError, match=f"{URL1}: not tried, 0s timeout spent; {URL2}: not tried"):
        vocsp.query(world.leaf.cert, world.issuer.cert, timeout=0, now=NOW, post=post)
    assert post.calls == []


# ---------------------------------------------------------------- http_post (against a loopback server)


def test_http_post_sends_post_with_ocsp_request_content_type(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (200, {"Content-Type": "application/ocsp-response"}, b"\x30\x03\x0a\x01\x00"))
    answer = vocsp.http_post(f"{addr}/ocsp", b"req", 2.5)
    assert answer == HttpAnswer(200, "application/ocsp-response", b"\x30\x03\x0a\x01\x00")
    [(method, path, headers, body)] = rec.requests
    assert (method, path, body) == ("POST", "/ocsp", b"req")
    assert headers["content-type"] == "application/ocsp-request"


def test_http_post_follows_a_redirect(server: Any) -> None:
    target, _ = server(lambda m, p, h, b: (200, {"Content-Type": "application/ocsp-response"}, b"\x30\x00"))
    moved, _ = server(lambda m, p, h, b: (307, {"Location": f"{target}/real"}, None))
    assert vocsp.http_post(f"{moved}/ocsp", b"req", 2.5).body == b"\x30\x00"


# A child process: the environment (a proxy, or none) is handed to it, never written here.
POST_IN_CHILD = """
import sys
from vaultpki.vault import ocsp
answer = ocsp.http_post(sys.argv[1], b"req", 5.0)
print(answer.status, answer.body.hex())
"""


def post_in_child(url: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    done = subprocess.run([sys.executable, "-c", POST_IN_CHILD, url], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.split()


def test_http_post_with_no_proxy_variables_goes_to_the_responder(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (200, {"Content-Type": "application/ocsp-response"}, b"\x30\x00"))
    assert post_in_child(f"{addr}/ocsp") == ["200", "3000"]
    assert [(m, p) for m, p, _, _ in rec.requests] == [("POST", "/ocsp")]


def test_http_post_goes_through_the_proxy_the_environment_names(server: Any) -> None:
    proxy, rec = server(lambda m, p, h, b: (200, {"Content-Type": "application/ocsp-response"}, b"\x30\x00"))
    assert post_in_child("http://ocsp.responder.invalid/ocsp", http_proxy=proxy) == ["200", "3000"]
    [(method, target, headers, body)] = rec.requests
    assert (method, target, body) == ("POST", "http://ocsp.responder.invalid/ocsp", b"req")
    assert headers["content-type"] == "application/ocsp-request"


def test_http_post_translates_transport_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OcspError, match="Connection refused") as info:
        vocsp.http_post(f"http://127.0.0.1:{port}/ocsp", b"req", 1.0)
    assert "\n" not in str(info.value)


def test_http_post_refuses_a_runaway_body(server: Any) -> None:
    addr, _ = server(lambda m, p, h, b: (200, {}, b"\0" * (vocsp.MAX_RESPONSE_BYTES + 1)))
    with pytest.raises(OcspError, match="exceeds"):
        vocsp.http_post(f"{addr}/ocsp", b"req", 5.0)


def test_http_post_is_bounded_by_its_timeout_against_a_responder_that_drips() -> None:
    """One byte a second never trips a per-read timeout; the deadline covers the whole exchange."""
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 100\r\n\r\n")
            for _ in range(30):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.5)

    threading.Thread(target=drip, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(OcspError, match="within 1.5s") as info:
        vocsp.http_post(f"http://127.0.0.1:{listener.getsockname()[1]}/ocsp", b"req", 1.5)
    assert time.monotonic() - start < 4 and "\n" not in str(info.value)
    listener.close()
