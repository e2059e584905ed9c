"""Sets that Go refuses at every handshake are refused before writing and named by ``verify``; a Vault role's
default EKUs are accepted (issue 19, sections 1 and 2). Real OpenBao, the real CLI, and the Go consumer
(``tests/support/gotls.py``) as the judge of what CockroachDB's TLS stack does.

Each CA is a mount of the session's OpenBao:
- name constraints: a root made by ``root/generate`` with ``permitted_dns_domains``;
- path length: a root made by ``root/generate/exported`` with ``max_path_length = 0``, over an intermediate
  mount whose CSR it signs outside OpenBao (``sign-intermediate`` refuses under pathLen 0, as a CA that
  does not check would not), set with ``intermediate/set-signed``;
- an unhandled critical extension: OpenBao makes none, so a root made in memory is imported into the
  mount as its issuer (``issuers/import/bundle``).

Each refused case has an allowed twin. For each, a set built by hand from the same mount (what an older
vaultpki wrote) is judged by ``verify`` and by Go: both must agree, with Go's own words in ``verify``'s.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, split_hosts
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import role_body

from ..support import gotls
from .conftest import NODE_HOSTS, Deployment, run_cli, toml_dump, tree

pytestmark = pytest.mark.integration

UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
NAME_REFUSED = 'x509: a root or intermediate certificate is not authorized to sign for this name: DNS name "node" ' \
               "is not permitted by any constraint"
PATH_REFUSED = "x509: too many intermediates for path length constraint"
CRITICAL_REFUSED = "x509: unhandled critical extension"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    return (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True))


def _dated(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1)) \
        .not_valid_after(now + dt.timedelta(days=30))


def _pem(*items: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    return out.decode()


class Cas:
    """The CA mounts of this module, each made once, on the session's OpenBao."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.admin = hvac.Client(url=server.addr, token=server.root_token)

    def _mount(self, name: str) -> str:
        self.admin.sys.enable_secrets_engine("pki", path=name, config={"max_lease_ttl": "87600h"})
        return name

    def _roles(self, mount: str) -> None:
        """vaultpki's own roles (data/roles.json), for the standard and split-node layouts."""
        dns, ips = split_hosts(NODE_HOSTS)
        cidrs = [f"{ip}/32" for ip in ips]
        for role, domains, role_cidrs in (("node", ["node", *dns], cidrs), ("node-server", list(dns), cidrs),
                                          ("client-node", ["node"], []), ("user", [], [])):
            self.admin.write_data(f"{mount}/roles/{role}", data=role_body(role, domains, openbao=True, ip_cidrs=role_cidrs))

    def constrained(self, name: str, permitted: list[str]) -> str:
        mount = self._mount(name)
        self.admin.write_data(f"{mount}/root/generate/internal", data={
            "common_name": f"Org CA ({name})", "ttl": "8760h", "key_type": "ec", "key_bits": 256,
            "permitted_dns_domains": permitted})
        self._roles(mount)
        return mount

    def under_path_length_zero(self, name: str) -> str:
        root_mount = self._mount(f"{name}-root")
        made = self.admin.write_data(f"{root_mount}/root/generate/exported", data={
            "common_name": f"Root with pathLen 0 ({name})", "ttl": "8760h", "key_type": "ec", "key_bits": 256,
            "max_path_length": 0})["data"]
        root = x509.load_pem_x509_certificate(made["certificate"].encode())
        root_key = serialization.load_pem_private_key(made["private_key"].encode(), None)
        assert isinstance(root_key, ec.EllipticCurvePrivateKey)
        mount = self._mount(name)
        csr = x509.load_pem_x509_csr(self.admin.write_data(f"{mount}/intermediate/generate/internal", data={
            "common_name": f"Issuing CA ({name})", "key_type": "ec", "key_bits": 256})["data"]["csr"].encode())
        intermediate = _dated(_ca_extensions(x509.CertificateBuilder().subject_name(csr.subject).issuer_name(root.subject)
                                             .public_key(csr.public_key()))).sign(root_key, hashes.SHA256())
        mapping = self.admin.write_data(f"{mount}/intermediate/set-signed",
                                        data={"certificate": _pem(intermediate, root)})["data"]["mapping"]
        self.admin.write_data(f"{mount}/config/issuers", data={"default": next(i for i, k in mapping.items() if k)})
        self._roles(mount)
        return mount

    def with_extension(self, name: str, critical: bool) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _dated(_ca_extensions(x509.CertificateBuilder().subject_name(_name(f"Root ({name})"))
                                        .issuer_name(_name(f"Root ({name})")).public_key(key.public_key())))
        root = builder.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=critical) \
            .sign(key, hashes.SHA256())
        mount = self._mount(name)
        self.admin.write_data(f"{mount}/issuers/import/bundle", data={"pem_bundle": _pem(root, key)})
        self._roles(mount)
        return mount


@dataclass(frozen=True)
class Case:
    mount: str
    mode: Mode
    ca_trust: str
    refused: tuple[str, ...]          # fragments of issue-node's error; () when Go accepts the set


@pytest.fixture(scope="module")
def cases(bao: DevServer) -> dict[str, Case]:
    gotls.binary()                    # a missing `go` fails here, before any mount is made
    cas = Cas(bao)
    strict = cas.constrained("gorules-nc", ["test.internal", "localhost"])
    permits_node = cas.constrained("gorules-nc-node", ["test.internal", "localhost", "node"])
    path = cas.under_path_length_zero("gorules-pathlen")
    critical = cas.with_extension("gorules-critical", critical=True)
    plain = cas.with_extension("gorules-not-critical", critical=False)
    return {
        "name-constraints-standard": Case(strict, Mode.STANDARD, "issuer", (
            "refusing node.crt", NAME_REFUSED, 'use mode = "split-node"')),
        # split-node's node.crt needs no 'node' name, and client.node.crt names node in its CN alone: vaultpki
        # asks Vault not to copy the CN into a DNS SAN (exclude_cn_from_sans), which the constraints would refuse.
        "name-constraints-split-node": Case(strict, Mode.SPLIT_NODE, "issuer", ()),
        "name-constraints-permit-node": Case(permits_node, Mode.STANDARD, "issuer", ()),
        "path-length-root-in-ca-crt": Case(path, Mode.STANDARD, "root", (
            "refusing node.crt", PATH_REFUSED, 'set ca_trust = \\"issuer\\"')),
        "path-length-issuer-in-ca-crt": Case(path, Mode.STANDARD, "issuer", ()),
        "critical-extension": Case(critical, Mode.STANDARD, "issuer", (
            "refusing node.crt", CRITICAL_REFUSED, UNKNOWN_OID.dotted_string)),
        "not-critical-extension": Case(plain, Mode.STANDARD, "issuer", ()),
    }


def _config(server: DevServer, case: Case, path: Path, certs: Path) -> Path:
    pki = {"mount": case.mount, "node_role": "node" if case.mode is Mode.STANDARD else "node-server",
           "client_node_role": "client-node", "user_role": "user"}
    path.write_text(toml_dump({
        "certs_dir": str(certs), "mode": case.mode.value, "ttl": "1h", "ca_trust": case.ca_trust,
        "vault": {"addr": server.addr, "auth": "token"}, "pki": pki, "node": {"hosts": list(NODE_HOSTS)}}))
    return path


def _rpc(certs: Path, name: str) -> gotls.Case:
    """The node dialling itself: each side verifies the other with CockroachDB's configs."""
    return gotls.Case(name=name, kind="rpc", server_dir=str(certs), client_dir=str(certs), server_name=NODE_HOSTS[0])


@pytest.mark.parametrize("label", ["name-constraints-standard", "name-constraints-split-node", "name-constraints-permit-node",
                                   "path-length-root-in-ca-crt", "path-length-issuer-in-ca-crt", "critical-extension",
                                   "not-critical-extension"])
def test_issue_node_refuses_what_go_refuses(bao: DevServer, cases: dict[str, Case], tmp_path: Path, label: str) -> None:
    case = cases[label]
    certs = tmp_path / "certs"
    config = _config(bao, case, tmp_path / "vaultpki.toml", certs)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": bao.root_token})
    if case.refused:
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        for fragment in case.refused:
            assert fragment.replace('\\"', '"') in lines[0], lines[0]
        assert tree(certs) == {}                    # nothing written
        return
    assert result.returncode == 0, result.stderr
    verified = run_cli(["--config", str(config), "verify"])
    assert verified.returncode == 0, verified
    go = gotls.check_one(_rpc(certs, label))
    assert go.ok, go


def test_sync_refuses_it_too(bao: DevServer, cases: dict[str, Case], tmp_path: Path) -> None:
    """The daemon's pass goes through the same judgement: nothing written, the cause named."""
    config = _config(bao, cases["name-constraints-standard"], tmp_path / "vaultpki.toml", tmp_path / "certs")
    synced = run_cli(["--config", str(config), "sync", "--once"], {"VAULT_TOKEN": bao.root_token})
    assert synced.returncode == 1 and NAME_REFUSED in synced.stderr.splitlines()[-1], synced.stderr
    assert tree(tmp_path / "certs") == {}


def _san_free(path: Path) -> tuple[str | None, tuple[str, ...]]:
    info = crypto.describe(crypto.load_certs(path.read_bytes())[0])
    return info.common_name, info.dns_sans + info.ip_sans


def test_client_certificates_pass_an_organisation_cas_name_constraints(bao: DevServer, cases: dict[str, Case],
                                                                       tmp_path: Path) -> None:
    """Under a CA that permits only the node's domains, split-node is issued and so is a user's certificate: each
    client certificate names its user in the CN alone (Vault used to copy the CN into a DNS SAN, which Go refused
    there), and Go accepts the node dialling itself and marc logging in."""
    case = cases["name-constraints-split-node"]
    config = _config(bao, case, tmp_path / "vaultpki.toml", tmp_path / "certs")
    env = {"VAULT_TOKEN": bao.root_token}
    node = run_cli(["--config", str(config), "issue-node"], env)
    assert node.returncode == 0, node.stderr
    user = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(tmp_path / "marc")], env)
    assert user.returncode == 0, user.stderr
    assert _san_free(tmp_path / "certs" / "client.node.crt") == ("node", ())
    assert _san_free(tmp_path / "marc" / "client.marc.crt") == ("marc", ())
    certs, marc = str(tmp_path / "certs"), str(tmp_path / "marc")
    rpc, sql = gotls.check([_rpc(tmp_path / "certs", "split-node-rpc"),
                            gotls.Case(name="marc", kind="sql", server_dir=certs, client_dir=marc, user="marc",
                                       server_name=NODE_HOSTS[0])])
    assert rpc.ok and rpc.peer_identity == "node", rpc
    assert sql.ok and sql.peer_identity == "marc", sql


def test_a_client_node_crt_with_its_cn_as_a_san_is_named_and_renewed(bao: DevServer, cases: dict[str, Case],
                                                                      tmp_path: Path) -> None:
    """What an older vaultpki wrote under such a CA (client.node.crt with DNS:node, as the role signs it when the
    request does not say exclude_cn_from_sans): verify and Go refuse it, verify with the advice; the next pass
    of ``sync`` finds it due and replaces it with one Go accepts."""
    case = cases["name-constraints-split-node"]
    config = _config(bao, case, tmp_path / "vaultpki.toml", tmp_path / "certs")
    env = {"VAULT_TOKEN": bao.root_token}
    assert run_cli(["--config", str(config), "issue-node"], env).returncode == 0
    certs = tmp_path / "certs"
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    for name in ("ca.crt", "node.crt", "node.key"):
        (old / name).write_bytes((certs / name).read_bytes())
    (old / "node.key").chmod(0o600)
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    signed = hvac.Client(url=bao.addr, token=bao.root_token).write_data(f"{case.mount}/sign/client-node", data={
        "csr": crypto.build_csr(key, "node", (), ()).decode(), "ttl": "1h"})["data"]
    (old / "client.node.crt").write_bytes(signed["certificate"].encode() + b"\n")
    fd = os.open(old / "client.node.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(crypto.key_to_pem(key))
    assert _san_free(old / "client.node.crt") == ("node", ("node",))

    verified = run_cli(["verify", "--certs-dir", str(old)])
    go = gotls.check_one(_rpc(old, "old-client-node"))
    assert not go.ok and NAME_REFUSED in go.error, go
    assert verified.returncode == 1, verified
    line = next(ln for ln in verified.stderr.splitlines() if ln.startswith("client.node.crt: "))
    assert NAME_REFUSED in line and "exclude_cn_from_sans = true" in line, line

    old_config = _config(bao, case, tmp_path / "old.toml", old)
    synced = run_cli(["--config", str(old_config), "sync", "--once"], env)
    assert synced.returncode == 0, synced.stderr
    assert _san_free(old / "client.node.crt") == ("node", ())
    assert run_cli(["verify", "--certs-dir", str(old)]).returncode == 0
    renewed = gotls.check_one(_rpc(old, "renewed-client-node"))
    assert renewed.ok, renewed


def _hand_built(admin: hvac.Client, case: Case, certs: Path) -> None:
    """The standard set an older vaultpki wrote from ``case``'s mount, without judging it."""
    dns, ips = split_hosts(NODE_HOSTS)
    issued = admin.write_data(f"{case.mount}/issue/node", data={
        "common_name": "node", "alt_names": ",".join(dns), "ip_sans": ",".join(ips), "ttl": "1h",
        "key_type": "ec", "key_bits": 256})["data"]
    chain = [c for pem in issued["ca_chain"] for c in crypto.load_certs(pem.encode())]
    above = [c for c in chain if not crypto.is_self_signed(c)]
    anchor = crypto.load_certs(issued["issuing_ca"].encode())[0] if case.ca_trust == "issuer" else \
        next(c for c in chain if crypto.is_self_signed(c))
    certs.mkdir(mode=0o700)
    (certs / "ca.crt").write_bytes(crypto.certs_to_pem([anchor]))
    (certs / "node.crt").write_bytes(crypto.certs_to_pem([*crypto.load_certs(issued["certificate"].encode()), *above]))
    fd = os.open(certs / "node.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as key:
        key.write(issued["private_key"])


@pytest.mark.parametrize("label", ["name-constraints-standard", "name-constraints-permit-node", "path-length-root-in-ca-crt",
                                   "path-length-issuer-in-ca-crt", "critical-extension", "not-critical-extension"])
def test_verify_agrees_with_go(bao: DevServer, cases: dict[str, Case], tmp_path: Path, label: str) -> None:
    case = cases[label]
    certs = tmp_path / "certs"
    _hand_built(hvac.Client(url=bao.addr, token=bao.root_token), case, certs)
    verified = run_cli(["verify", "--certs-dir", str(certs)])
    go = gotls.check_one(_rpc(certs, label))
    if not case.refused:
        assert verified.returncode == 0, verified
        assert go.ok, go
        return
    go_error = case.refused[1]
    assert not go.ok and go_error in go.error, go
    assert verified.returncode == 1, verified
    assert f"node.crt: {go_error}" in verified.stderr, verified.stderr


# --- section 2: a role that sets both serverAuth and clientAuth, in split-node ------------------------

@pytest.fixture(scope="module")
def both_flags(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    """split-node with node.crt from a role made as CockroachDB's Vault tutorial makes one (server_flag and
    client_flag both true, Vault's defaults), issued by the real CLI."""
    dep = deploy(Mode.SPLIT_NODE)
    dns, ips = split_hosts(NODE_HOSTS)
    body: dict[str, Any] = role_body("node-server", dns, openbao=True, ip_cidrs=[f"{ip}/32" for ip in ips])
    body["client_flag"] = True
    dep.admin.write_data(f"{dep.pki.mount}/roles/node-server-both", data=body)
    base = tmp_path_factory.mktemp("both-flags")
    config = dep.write_config(base / "vaultpki.toml", base / "certs")
    config.write_text(config.read_text().replace('node_role = "node-server"', 'node_role = "node-server-both"'))
    yield dep, config


WARNING = "node.crt: extended key usage also allows clientAuth, which this file does not need"


def test_a_role_with_both_flags_is_issued_and_only_warned_about(both_flags: tuple[Deployment, Path]) -> None:
    dep, config = both_flags
    env = {"VAULT_TOKEN": dep.server.root_token}
    issued = run_cli(["--config", str(config), "issue-node"], env)
    assert issued.returncode == 0, issued.stderr
    certs = config.parent / "certs"
    leaf = crypto.load_certs((certs / "node.crt").read_bytes())[0]
    assert {e.value for e in crypto.describe(leaf).ekus or ()} == {"serverAuth", "clientAuth"}
    verified = run_cli(["--config", str(config), "verify"])
    assert verified.returncode == 0, verified
    assert f"warning: {WARNING}" in verified.stdout
    status = run_cli(["--config", str(config), "status"])
    assert status.returncode == 0, status
    assert "extended key usage also allows clientAuth" in status.stdout
    # A second issue-node is what a renewal does: it must not be refused either.
    again = run_cli(["--config", str(config), "issue-node"], env)
    assert again.returncode == 0, again.stderr
    go = gotls.check_one(_rpc(certs, "both-flags"))
    assert go.ok and go.peer_identity == "node", go
