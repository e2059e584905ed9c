"""A node's certificate logs in as that node and no other (issue 16, section 1), against a real OpenBao.

The server has a TLS listener and TLS-certificate auth, set up by the embedded provisioner from
roles.json, the data the Terraform module reads (tests/terraform/test_module.py shows Terraform makes
the same cert-auth roles). The nodes are the hard case for names: n1 and n2 share ``localhost``,
``127.0.0.1`` and a load balancer name; n3 has only an IP. Every node certificate has CN=node.

What tells nodes apart is the subject OU ``crdb-node-<name>``: each node's PKI role sets it (OpenBao
builds the subject's OU from the role, never from the CSR), and each node's cert-auth role requires it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.errors import ConfigError

from .conftest import run_cli, toml_dump, tree
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

NODES = {
    "n1": ("n1.db.internal", "lb.db.internal", "localhost", "127.0.0.1"),
    "n2": ("n2.db.internal", "lb.db.internal", "localhost", "127.0.0.1"),
    "n3": ("10.0.0.3",),
}
PKI = PkiNames(mount="id-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
PAIRS = [pytest.param(a, v, id=f"{a}-as-{v}") for a, v in itertools.permutations(NODES, 2)]
DENIED_LOGIN = "no chain matching all constraints"


@dataclass
class Cluster:
    server: DevServer
    admin: hvac.Client
    root: Path

    def certs(self, node: str) -> Path:
        return self.root / f"certs-{node}"

    def config(self, node: str, path: Path, **vault: Any) -> Path:
        """``node``'s vaultpki configuration: its own PKI role; ``vault`` overrides the [vault] table."""
        doc = {
            "certs_dir": str(self.certs(node)), "mode": "standard", "ttl": "1h",
            "vault": {"addr": self.server.addr, "ca_cert": self.server.ca_cert, "auth": "token", **vault},
            "pki": {"mount": PKI.mount, "node_role": f"node-{node}"},
            "node": {"hosts": list(NODES[node])},
        }
        path.write_text(toml_dump(doc))
        return path

    def cert_auth(self, node: str, path: Path, cert_role: str | None) -> Path:
        """``node``'s configuration logging in with its own node.crt, against ``cert_role``."""
        certs = self.certs(node)
        role = {"cert_role": cert_role} if cert_role else {}
        return self.config(node, path, auth="cert", cert_file=str(certs / "node.crt"),
                           key_file=str(certs / "node.key"), **role)

    def login(self, cert: Path, key: Path, role: str | None) -> requests.Response:
        """A raw cert-auth login (the TLS handshake presents ``cert``), against ``role`` or any role."""
        return requests.post(f"{self.server.addr}/v1/auth/cert/login", json={"name": role} if role else {},
                             cert=(str(cert), str(key)), verify=self.server.ca_cert, timeout=30)

    def node_login(self, node: str, role: str | None) -> requests.Response:
        return self.login(self.certs(node) / "node.crt", self.certs(node) / "node.key", role)

    def token(self, node: str) -> str:
        """A token from ``node``'s own certificate login."""
        response = self.node_login(node, f"node-{node}")
        assert response.status_code == 200, response.text
        return str(response.json()["auth"]["client_token"])

    def call(self, token: str, method: str, path: str, body: dict[str, Any] | None = None,
             cert: str | None = None) -> requests.Response:
        """A request with ``token``; ``cert`` names the node whose certificate the handshake presents (as vaultpki
        does with auth = "cert": renewing a cert-auth token needs the same certificate)."""
        pair = (str(self.certs(cert) / "node.crt"), str(self.certs(cert) / "node.key")) if cert else None
        return requests.request(method, f"{self.server.addr}/v1/{path}", json=body, verify=self.server.ca_cert,
                                headers={"X-Vault-Token": token}, cert=pair, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, each with a certs-dir issued under its own PKI role (bootstrap with an admin token)."""
    with DevServer(tls=True) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token, verify=server.ca_cert)
        done = provision(admin, server.addr, ProvisionSpec(
            mode=Mode.STANDARD, pki=PKI, node_hosts=(), root_mount="id-root", nodes=NODES, access=True, cert_auth=True))
        assert done.cert_roles == tuple(f"auth/cert/certs/node-{n}" for n in NODES)
        found = Cluster(server, admin, tmp_path_factory.mktemp("identity"))
        for node in NODES:
            config = found.config(node, found.root / f"{node}-bootstrap.toml")
            result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": server.root_token})
            assert result.returncode == 0, result.stderr
        yield found


def node_cert(certs: Path) -> x509.Certificate:
    return crypto.load_certs((certs / "node.crt").read_bytes())[0]


def ous(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]


def csr(common_name: str, dns: list[str], ou: str | None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A CSR that asks for a subject OU of its choosing (which the role must ignore)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if ou:
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    return key, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def write_pair(directory: Path, issued: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "minted.crt"
    cert.write_text("\n".join([issued["certificate"], *issued["ca_chain"]]) + "\n")
    key_path = directory / "minted.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert, key_path


@pytest.mark.parametrize("node", list(NODES))
def test_each_node_logs_in_with_its_own_certificate_and_renews(cluster: Cluster, tmp_path: Path, node: str) -> None:
    """Its own node.crt logs in as itself (IP-only n3 too), and the renewed node.crt carries its own OU and passes
    vaultpki's validator and ``verify``."""
    before = node_cert(cluster.certs(node))
    assert ous(before) == [f"crdb-node-{node}"] and crypto.describe(before).common_name == "node"
    config = cluster.cert_auth(node, tmp_path / "vaultpki.toml", f"node-{node}")
    renewed = run_cli(["--config", str(config), "issue-node"])
    assert renewed.returncode == 0, renewed.stderr
    after = node_cert(cluster.certs(node))
    assert after.serial_number != before.serial_number
    assert ous(after) == [f"crdb-node-{node}"]
    verified = run_cli(["verify", "--certs-dir", str(cluster.certs(node))])
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(("attacker", "victim"), PAIRS)
def test_no_node_certificate_logs_in_as_another_node(cluster: Cluster, attacker: str, victim: str) -> None:
    """Shared names, an IP-only node, CN=node on all: still no login as another node's role; a login naming
    no role can only ever be the certificate's own node."""
    refused = cluster.node_login(attacker, f"node-{victim}")
    assert refused.status_code == 400 and DENIED_LOGIN in refused.text, refused.text
    assert "auth" not in refused.json() or not refused.json()["auth"]
    unnamed = cluster.node_login(attacker, None)
    assert unnamed.status_code == 200, unnamed.text
    auth = unnamed.json()["auth"]
    assert auth["metadata"]["cert_name"] == f"node-{attacker}"
    assert auth["policies"] == [f"crdb-node-{attacker}"]


def test_vaultpki_with_another_nodes_cert_role_is_refused_and_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    """The same attack through vaultpki itself: n2's configuration pointing cert_role at node-n1."""
    before = tree(cluster.certs("n2"))
    config = cluster.cert_auth("n2", tmp_path / "vaultpki.toml", "node-n1")
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 1, "cert", DENIED_LOGIN)
    assert tree(cluster.certs("n2")) == before


def test_a_node_logged_in_as_itself_cannot_sign_for_another_node(cluster: Cluster, tmp_path: Path) -> None:
    """n2's configuration naming n1's PKI role: n2's own login, then a denial; nothing written."""
    before = tree(cluster.certs("n2"))
    config = cluster.cert_auth("n2", tmp_path / "vaultpki.toml", None)
    config.write_text(config.read_text().replace('node_role = "node-n2"', 'node_role = "node-n1"'))
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 1, "denied")
    assert tree(cluster.certs("n2")) == before


def test_no_node_obtains_a_certificate_with_another_nodes_unique_names(cluster: Cluster, tmp_path: Path) -> None:
    """With its own token, n2 asks in every way it may for n1's OU or name; what it gets (only for shared names)
    carries n2's OU, and cannot log in as n1."""
    token = cluster.token("n2")
    key, request = csr("node", ["localhost", "lb.db.internal"], ou="crdb-node-n1")
    # n1's role, sign-verbatim (which would copy the CSR's subject) and an extra "ou" parameter: the ACL.
    for path, body in [("id-crdb/sign/node-n1", {"csr": request}), ("id-crdb/sign-verbatim", {"csr": request}),
                       ("id-crdb/sign-verbatim/node-n2", {"csr": request}),
                       ("id-crdb/sign/node-n2", {"csr": request, "ou": "crdb-node-n1"}),
                       ("id-crdb/issue/node-n2", {"common_name": "node", "ou": "crdb-node-n1"})]:
        denied = cluster.call(token, "POST", path, body)
        assert denied.status_code == 403, (path, denied.status_code, denied.text)
    # n1's own DNS name: the role refuses it.
    _, n1_name = csr("node", ["n1.db.internal"], ou="crdb-node-n1")
    refused = cluster.call(token, "POST", "id-crdb/sign/node-n2", {"csr": n1_name})
    assert refused.status_code == 400 and "n1.db.internal" in refused.text, refused.text
    # Shared names only: issued, but the OU is the role's (n2's), not the CSR's.
    issued = cluster.call(token, "POST", "id-crdb/sign/node-n2", {"csr": request})
    assert issued.status_code == 200, issued.text
    data = issued.json()["data"]
    minted = x509.load_pem_x509_certificate(data["certificate"].encode())
    assert ous(minted) == ["crdb-node-n2"]
    cert, key_path = write_pair(tmp_path, data, key)
    refused_login = cluster.login(cert, key_path, "node-n1")
    assert refused_login.status_code == 400 and DENIED_LOGIN in refused_login.text, refused_login.text
    own = cluster.login(cert, key_path, None)
    assert own.status_code == 200 and own.json()["auth"]["policies"] == ["crdb-node-n2"], own.text


def test_a_cert_login_token_has_the_node_policy_and_not_the_default_one(cluster: Cluster) -> None:
    """token_no_default_policy: the node policy grants all vaultpki needs (lookup-self, renew-self); the default
    policy's extras (cubbyhole, sys/tools/hash, capabilities-self), which a default-policy token gets, are denied."""
    token = cluster.token("n3")
    looked_up = cluster.call(token, "GET", "auth/token/lookup-self")
    assert looked_up.status_code == 200, looked_up.text
    assert looked_up.json()["data"]["policies"] == ["crdb-node-n3"]
    renewed = cluster.call(token, "POST", "auth/token/renew-self", {}, cert="n3")
    assert renewed.status_code == 200, renewed.text
    default_only: list[tuple[str, dict[str, Any]]] = [
        ("cubbyhole/probe", {"x": "1"}), ("sys/tools/hash", {"input": "eA=="}),
        ("sys/capabilities-self", {"paths": ["id-crdb/sign/node-n1"]})]
    with_default = cluster.admin.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    for path, body in default_only:
        assert cluster.call(with_default, "POST", path, body).status_code in (200, 204), path
        assert cluster.call(token, "POST", path, body).status_code == 403, path


def test_a_dns_name_binding_cannot_tell_these_nodes_apart(cluster: Cluster) -> None:
    """Why the OU: a cert role bound by DNS SANs, as the module made them before, lets n2's own certificate in as
    n1 through the shared names, and as IP-only n3 through an empty allowed_dns_sans (which matches anything)."""
    chain = cluster.admin.read(f"{PKI.mount}/issuer/default/json")["data"]["ca_chain"]
    for node in ("n1", "n3"):
        dns = [h for h in NODES[node] if not h[0].isdigit()]
        cluster.admin.write_data(f"auth/cert/certs/dns-bound-{node}", data={
            "certificate": "\n".join(chain), "allowed_common_names": ["node"], "allowed_dns_sans": dns,
            "token_policies": [f"crdb-node-{node}"]})
    try:
        for node in ("n1", "n3"):
            stolen = cluster.node_login("n2", f"dns-bound-{node}")
            assert stolen.status_code == 200 and stolen.json()["auth"]["policies"] == ["crdb-node-" + node, "default"]
    finally:
        for node in ("n1", "n3"):
            cluster.admin.delete(f"auth/cert/certs/dns-bound-{node}")


@pytest.mark.parametrize(("change", "why"), [
    pytest.param({"mode": Mode.SPLIT_NODE}, "mode = standard", id="split-layout"),
    pytest.param({"nodes": {}}, "one role per node", id="no-per-node-roles"),
    pytest.param({"access": False}, "one role per node", id="no-policies"),
    pytest.param({"nodes": {"n*": ("n1.db.internal",)}}, "lower-case DNS labels", id="glob-in-node-name"),
])
def test_provisioner_refuses_a_cert_auth_that_cannot_tell_nodes_apart(
        cluster: Cluster, change: dict[str, Any], why: str) -> None:
    """Refused before anything is made: no mount, no role, no auth method."""
    pki = PkiNames(mount="id-refused", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    fields: dict[str, Any] = {"mode": Mode.STANDARD, "pki": pki, "node_hosts": (), "root_mount": "id-refused-root",
                              "nodes": {"x1": ("x1.db.internal",)}, "access": True, "cert_auth": True, **change}
    mounts_before = set(cluster.admin.sys.list_mounted_secrets_engines()["data"])
    with pytest.raises(ConfigError, match=why):
        provision(cluster.admin, cluster.server.addr, ProvisionSpec(**fields))
    assert set(cluster.admin.sys.list_mounted_secrets_engines()["data"]) == mounts_before
