"""kubernetes auth (issue 18) against a real OpenBao, with a stand-in for the one part of a cluster it calls.

OpenBao's kubernetes auth is real here: its config, its role, its checks of the token (expiry, service
account, namespace, audience) and its TokenReview call. What stands in is the kube-apiserver, which cannot
run here (Debian ships no kube-apiserver; only kubectl): ``TokenReviewer`` is a small HTTPS server that
answers ``POST /apis/authentication.k8s.io/v1/tokenreviews`` as the API server does, for the tokens it was
told about: authenticated, with the service account's ``system:serviceaccount:<ns>:<name>`` and uid, or not
authenticated once its pod is gone. It checks the reviewer's bearer token, and records every review.

What this does not show: the API server's own judgement of a token (its signature, its binding to a live
pod); that a real cluster's RBAC lets the reviewer call TokenReview (``system:auth-delegator``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.jwt_auth import JwtAuthSpec, provision_jwt_auth
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import run_cli, toml_dump, tree
from .test_auth_jwt import NAMESPACE, SERVICE_ACCOUNT, Signer, assert_no_jwt
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

PKI = PkiNames(mount="kube-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
HOSTS = ("n.db.internal", "localhost", "127.0.0.1")
SA_UID = "5d6c2f1e-sa"
ROLE = "cockroachdb"


def _tls_pair(base: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kubernetes CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = base / "ca.pem", base / "server.pem", base / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class TokenReviewer:
    """The kube-apiserver's TokenReview endpoint, and nothing else of it."""

    base: Path
    reviewer_jwt: str
    known: dict[str, dict[str, Any]] = field(default_factory=dict)     # token -> {"ns", "sa", "audiences"}
    reviews: list[dict[str, Any]] = field(default_factory=list)         # {"bearer", "token", "audiences"}

    def __post_init__(self) -> None:
        self.ca_pem, cert, key = _tls_pair(self.base)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _review(self, bearer: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        spec = body.get("spec") or {}
        token, audiences = str(spec.get("token", "")), list(spec.get("audiences") or [])
        self.reviews.append({"bearer": bearer, "token": token, "audiences": audiences})
        if bearer != self.reviewer_jwt:
            return 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}
        answer: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        who = self.known.get(token)
        if who is None:
            answer["status"] = {"authenticated": False, "error": "[invalid bearer token, service account token is not valid]"}
        else:
            answer["status"] = {"authenticated": True, "audiences": who["audiences"], "user": {
                "username": f"system:serviceaccount:{who['ns']}:{who['sa']}", "uid": SA_UID,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{who['ns']}", "system:authenticated"]}}
        return 201, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reviewer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:            # noqa: N802  (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    status, answer = 404, {"kind": "Status", "status": "Failure", "code": 404}
                else:
                    bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    status, answer = reviewer._review(bearer, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:      # noqa: A002  (quiet)
                pass

        return Handler


@dataclass
class Kube:
    server: DevServer
    api: TokenReviewer
    signer: Signer
    base: Path

    def pod_token(self, pod: str, namespace: str = NAMESPACE) -> str:
        """The token the kubelet mounts into ``pod``, known to the API server."""
        token = self.signer.token(pod, namespace=namespace)
        self.api.known[token] = {"ns": namespace, "sa": SERVICE_ACCOUNT, "audiences": ["vault"]}
        return token

    def config(self, name: str, token: str) -> Path:
        home = self.base / name
        home.mkdir()
        (home / "token").write_text(token)
        (home / "token").chmod(0o600)
        doc = {"certs_dir": str(home / "certs"), "mode": "standard", "ttl": "1h",
               "vault": {"addr": self.server.addr, "auth": "kubernetes", "kubernetes_role": ROLE,
                         "jwt_file": str(home / "token"), "retry_for": "5s"},
               "pki": {"mount": PKI.mount, "node_role": "node-kube"}, "node": {"hosts": list(HOSTS)}}
        (home / "vaultpki.toml").write_text(toml_dump(doc))
        return home / "vaultpki.toml"


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    base = tmp_path_factory.mktemp("kube")
    signer = Signer()
    api = TokenReviewer(base, reviewer_jwt=signer.token("vault-reviewer"))
    try:
        with DevServer() as server:
            admin = hvac.Client(url=server.addr, token=server.root_token)
            prov = ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=(), root_mount="kube-root",
                                 nodes={"kube": HOSTS}, access=True)
            provision(admin, server.addr, prov)
            # The node's static policy (crdb-node-kube), as jwt auth per node makes it; its jwt role is unused.
            provision_jwt_auth(admin, server.addr, prov, JwtAuthSpec(validation_pubkeys=signer.public_pems()))
            admin.sys.enable_auth_method("kubernetes")
            admin.write_data("auth/kubernetes/config", data={
                "kubernetes_host": api.url, "kubernetes_ca_cert": api.ca_pem.read_text(),
                "token_reviewer_jwt": api.reviewer_jwt, "disable_local_ca_jwt": True})
            admin.write_data(f"auth/kubernetes/role/{ROLE}", data={
                "bound_service_account_names": [SERVICE_ACCOUNT], "bound_service_account_namespaces": [NAMESPACE],
                "audience": "vault", "token_policies": ["crdb-node-kube"], "token_no_default_policy": True,
                "token_ttl": "1h"})
            yield Kube(server, api, signer, base)
    finally:
        api.close()


def test_issue_node_with_kubernetes_auth_asks_the_api_server_about_the_pods_token(kube: Kube) -> None:
    token = kube.pod_token("cockroachdb-0")
    config = kube.config("issued", token)
    before = len(kube.api.reviews)
    result = run_cli(["--config", str(config), "issue-node"])
    assert result.returncode == 0, result.stderr
    assert (config.parent / "certs" / "node.crt").exists()
    # OpenBao asked the API server, as the reviewer, about exactly the pod's token, for the role's audience.
    assert kube.api.reviews[before:] == [{"bearer": kube.api.reviewer_jwt, "token": token, "audiences": ["vault"]}]
    assert_no_jwt(result.stdout + result.stderr, token)


def test_a_token_the_api_server_no_longer_accepts_is_one_line_naming_the_role_and_the_mount(kube: Kube) -> None:
    """The pod was deleted: its token is still signed and unexpired, but the API server says it is not valid."""
    token = kube.pod_token("cockroachdb-9")
    del kube.api.known[token]
    config = kube.config("deleted-pod", token)
    result = run_cli(["--config", str(config), "issue-node"])
    one_error_line(result, 1, f"Vault denied logging in with kubernetes auth as role {ROLE} at auth/kubernetes",
                   "permission denied")
    assert kube.api.reviews[-1]["token"] == token
    assert_no_jwt(result.stderr, token)
    assert tree(config.parent / "certs") == {}


def test_a_service_account_of_another_namespace_is_refused_before_any_review(kube: Kube) -> None:
    token = kube.pod_token("intruder", namespace="default")
    config = kube.config("other-namespace", token)
    reviews = len(kube.api.reviews)
    result = run_cli(["--config", str(config), "issue-node"])
    one_error_line(result, 1, f"logging in with kubernetes auth as role {ROLE} at auth/kubernetes",
                   "namespace not authorized")
    assert len(kube.api.reviews) == reviews
    assert_no_jwt(result.stderr, token)
