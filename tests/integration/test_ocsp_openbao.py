"""OpenBao's OCSP responder, asked exactly the way CockroachDB asks (``security.ocsp.mode``).

The mount is provisioned by vaultpki's own provisioner (root mount -> intermediate
mount, ``config/urls`` with ``ocsp_servers``), so the leaf's issuer is the
intermediate, as in every intermediate layout. What OpenBao 2.7.2 was found to do
is written down in ``test_good_then_revoked_as_cockroachdb_asks`` and pinned by
the tests after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from vaultpki.core import crypto
from vaultpki.core import ocsp as cocsp
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.ocsp import OcspStatus
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.vault import ocsp as vocsp

pytestmark = pytest.mark.integration  # real OpenBao server

MOUNT = "ocsp-crdb"
ROOT_MOUNT = "ocsp-root"
OCSP_EXPIRY = dt.timedelta(hours=12)   # config/crl ocsp_expiry, the default


@dataclass(frozen=True)
class OcspPki:
    addr: str
    admin: hvac.Client

    @property
    def ocsp_url(self) -> str:
        return f"{self.addr}/v1/{MOUNT}/ocsp"


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    issuer: x509.Certificate          # the mount's intermediate
    root: x509.Certificate


@pytest.fixture(scope="module")
def pki(bao: DevServer) -> Iterator[OcspPki]:
    """A standard-layout node CA of our own (intermediate under a root), so revocations touch no other test."""
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    names = PkiNames(mount=MOUNT, client_mount=None, node_role="node", client_node_role="client-node",
                     user_role="user", ui_mount=None, ui_role=None)
    provision(admin, bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=names, node_hosts=("localhost",),
                                             root_mount=ROOT_MOUNT, intermediate=True))
    yield OcspPki(bao.addr, admin)


def sign_leaf(pki: OcspPki, user: str) -> Leaf:
    """client.<user>.crt the way vaultpki gets it: key generated here, CSR to <mount>/sign/user."""
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    csr = crypto.build_csr(key, user, (), ())
    data = pki.admin.write_data(f"{MOUNT}/sign/user", data={"csr": csr.decode(), "common_name": user, "ttl": "1h"})["data"]
    chain = [x509.load_pem_x509_certificate(pem.encode()) for pem in data["ca_chain"]]
    leaf = Leaf(x509.load_pem_x509_certificate(data["certificate"].encode()), chain[0], chain[-1])
    assert crypto.is_issued_by(leaf.cert, leaf.issuer) and not crypto.is_self_signed(leaf.issuer)
    assert crypto.is_issued_by(leaf.issuer, leaf.root) and crypto.is_self_signed(leaf.root)
    return leaf


def revoke(pki: OcspPki, cert: x509.Certificate) -> dt.datetime:
    data = pki.admin.write_data(f"{MOUNT}/revoke", data={"serial_number": crypto.format_serial(cert.serial_number)})["data"]
    assert data["state"] == "revoked"
    return dt.datetime.fromtimestamp(data["revocation_time"], dt.UTC)


def cockroach_post(url: str, der: bytes) -> requests.Response:
    """pkg/security/ocsp.go: http.DefaultClient POST, Content-Type application/ocsp-request, DER body."""
    return requests.post(url, data=der, headers={"Content-Type": "application/ocsp-request"}, timeout=3)


def ask(pki: OcspPki, leaf: Leaf) -> tuple[requests.Response, ocsp.OCSPResponse, cocsp.OcspResult]:
    """CockroachDB's exact request; CockroachDB's acceptance checks; then our full verification."""
    request = cocsp.build_request(leaf.cert, leaf.issuer)
    assert isinstance(ocsp.load_der_ocsp_request(request).hash_algorithm, hashes.SHA256)
    answer = cockroach_post(pki.ocsp_url, request)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/ocsp-response"
    raw = ocsp.load_der_ocsp_response(answer.content)
    result = cocsp.parse_response(answer.content, leaf.cert, leaf.issuer, dt.datetime.now(dt.UTC), responder=pki.ocsp_url)
    return answer, raw, result


def test_issued_leaf_carries_aia_ocsp_and_crl_distribution_point(pki: OcspPki) -> None:
    leaf = sign_leaf(pki, "aia")
    assert cocsp.responder_urls(leaf.cert) == (pki.ocsp_url,)
    cdp = leaf.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for point in cdp for n in point.full_name or ()] == [f"{pki.addr}/v1/{MOUNT}/crl"]
    aia = leaf.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS] \
        == [f"{pki.addr}/v1/{MOUNT}/ca"]
    # The root mount has no config/urls, so the intermediate names no responder: CockroachDB checks only the leaf.
    assert cocsp.responder_urls(leaf.issuer) == ()


def test_good_then_revoked_as_cockroachdb_asks(pki: OcspPki) -> None:
    """GOOD, then REVOKED after ``<mount>/revoke``, for CockroachDB's exact request; query() agrees.

    Found on OpenBao 2.7.2 (``<mount>/ocsp``, unauthenticated):
    - POST with ``Content-Type: application/ocsp-request`` and a SHA-256 CertID works:
      HTTP 200, ``Content-Type: application/ocsp-response`` exactly, ``Cache-Control: no-store``.
      It answers in whatever CertID hash the request used (SHA-1/256/384/512 all work);
      GET ``<mount>/ocsp/<base64 DER>`` works too.
    - The issuer itself signs: the key of the intermediate that issued the leaf
      (ecdsa-with-SHA256 for our EC P-256 CA), ResponderID by name = that
      intermediate's subject, no certificates in the response, so no delegated responder.
    - next_update is present: this_update + ``ocsp_expiry`` (12 h by default);
      this_update is the moment of the request (a fresh answer per query, no nonce
      extension, none needed), produced_at is truncated to the minute.
    - A revocation shows up at once (no CRL rebuild needed): REVOKED with
      revocation_time equal to the revoke API's, to the second; no revocation reason.
    - A serial OpenBao never issued is answered GOOD (only the revoked list is
      consulted); a CertID naming another issuer is UNKNOWN, answered with a CertID that
      names the mount's own issuer rather than echoing the request's; a request with
      another Content-Type gets HTTP 400 (JSON): see the tests below.
    - The intermediate carries no OCSP URL (the root mount sets no config/urls), so
      CockroachDB's chain walk checks only the leaf.
    """
    leaf = sign_leaf(pki, "marc")
    answer, raw, result = ask(pki, leaf)
    assert result.status is OcspStatus.GOOD
    assert (result.revocation_time, result.revocation_reason) == (None, None)
    assert result.serial == leaf.cert.serial_number and result.responder == pki.ocsp_url
    assert answer.headers.get("Cache-Control") == "no-store"
    # Who signs: the issuing intermediate's own key, named by subject, nothing included.
    assert raw.certificates == []
    assert raw.responder_name == leaf.issuer.subject and raw.responder_key_hash is None
    issuer_key = leaf.issuer.public_key()
    assert isinstance(issuer_key, ec.EllipticCurvePublicKey) and raw.signature_hash_algorithm is not None
    issuer_key.verify(raw.signature, raw.tbs_response_bytes, ec.ECDSA(raw.signature_hash_algorithm))
    assert isinstance(raw.hash_algorithm, hashes.SHA256)   # answered in the request's CertID hash
    assert len(raw.extensions) == 0 and len(raw.single_extensions) == 0
    assert result.next_update is not None and result.next_update - result.this_update == OCSP_EXPIRY
    assert abs(result.this_update - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert vocsp.query(leaf.cert, leaf.issuer).status is OcspStatus.GOOD

    revoked_at = revoke(pki, leaf.cert)
    _, _, result = ask(pki, leaf)
    assert result.status is OcspStatus.REVOKED
    assert result.revocation_time == revoked_at
    assert result.revocation_reason is None
    end_to_end = vocsp.query(leaf.cert, leaf.issuer)
    assert (end_to_end.status, end_to_end.revocation_time, end_to_end.responder) == (OcspStatus.REVOKED, revoked_at, pki.ocsp_url)


@pytest.mark.parametrize("algorithm", [
    pytest.param(hashes.SHA1(), id="sha1"),
    pytest.param(hashes.SHA256(), id="sha256"),
    pytest.param(hashes.SHA384(), id="sha384"),
    pytest.param(hashes.SHA512(), id="sha512"),
])
def test_responder_answers_in_the_requests_certid_hash(pki: OcspPki, algorithm: hashes.HashAlgorithm) -> None:
    leaf = sign_leaf(pki, f"hash-{algorithm.name}")
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, leaf.issuer, algorithm).build()
    answer = cockroach_post(pki.ocsp_url, request.public_bytes(serialization.Encoding.DER))
    assert answer.status_code == 200
    assert type(ocsp.load_der_ocsp_response(answer.content).hash_algorithm) is type(algorithm)
    result = cocsp.parse_response(answer.content, leaf.cert, leaf.issuer, dt.datetime.now(dt.UTC))
    assert result.status is OcspStatus.GOOD


def test_responder_says_good_for_a_serial_it_never_issued(pki: OcspPki) -> None:
    """OCSP 'good' from OpenBao means 'not on the revoked list', not 'issued by us'."""
    leaf = sign_leaf(pki, "forger-template")
    key = ec.generate_private_key(ec.SECP256R1())
    forged = (x509.CertificateBuilder().subject_name(leaf.cert.subject).issuer_name(leaf.issuer.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(leaf.cert.not_valid_before_utc).not_valid_after(leaf.cert.not_valid_after_utc)
              .sign(key, hashes.SHA256()))
    answer = cockroach_post(pki.ocsp_url, cocsp.build_request(forged, leaf.issuer))
    result = cocsp.parse_response(answer.content, forged, leaf.issuer, dt.datetime.now(dt.UTC))
    assert result.status is OcspStatus.GOOD


def test_responder_says_unknown_for_another_issuer(pki: OcspPki) -> None:
    leaf = sign_leaf(pki, "wrong-issuer")
    answer = cockroach_post(pki.ocsp_url, cocsp.build_request(leaf.cert, leaf.root))
    raw = ocsp.load_der_ocsp_response(answer.content)
    assert (answer.status_code, raw.response_status) == (200, ocsp.OCSPResponseStatus.SUCCESSFUL)
    assert raw.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # The answer's CertID does not echo the request: it names the mount's own issuer (the intermediate),
    # which also signs it; so it is not an answer about the root's certificate and we refuse it.
    own = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, leaf.issuer, hashes.SHA256()).build()
    assert (raw.issuer_name_hash, raw.issuer_key_hash) == (own.issuer_name_hash, own.issuer_key_hash)
    with pytest.raises(cocsp.OcspError, match="names another issuer"):
        cocsp.parse_response(answer.content, leaf.cert, leaf.root, dt.datetime.now(dt.UTC))


def test_responder_refuses_another_request_content_type(pki: OcspPki) -> None:
    leaf = sign_leaf(pki, "content-type")
    answer = requests.post(pki.ocsp_url, data=cocsp.build_request(leaf.cert, leaf.issuer),
                           headers={"Content-Type": "application/octet-stream"}, timeout=3)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/json")
