"""Every set vaultpki issues, judged by CockroachDB's own TLS stack: Go, set up as CockroachDB sets it up.

The consumer is ``tests/consumers/crdbtls`` (built and run by ``tests/support/gotls.py``); its source
cites the CockroachDB function each setting mirrors. For every layout × ``ca_trust`` × hierarchy (an
intermediate mount under a root, or a mount that is its own root), the real CLI issues two nodes
(``issue-node``, node A with ``client.root``) and a user (``issue-user marc``) on the session OpenBao;
then one Go process runs every handshake below, each side verifying the other, and CockroachDB's
identity check after it:

- node A dials node B and B dials A (RPC: ``kvAuth`` wants ``node`` or ``root``);
- ``marc`` and ``root`` log in over SQL, ``root`` makes an RPC (``cockroach node status``);
- the DB Console serves ``ui.crt`` to a browser trusting the UI CA, and to CockroachDB's own HTTPS
  client, which trusts ``ca-ui.crt``, else ``ca.crt``;
- the refusals: marc's certificate logging in as another user, or used for an RPC; a foreign
  cluster's node (the other hierarchy's mounts) dialling in or being dialled, and its user; a
  split-ca node without ``client.node.crt`` (cockroachdb/cockroach#47603), which ``verify`` names too.

On sets made here (``tests/support/gotls_pki.py``), the defects of issue 19 §1 that only Go sees (a
CA's name constraints, a root's path length, a critical extension Go does not know): Go refuses them
at the handshake, and ``vaultpki verify`` must refuse them too, quoting Go's reason.

PostgreSQL (``test_postgres_consumer.py``) still covers what only a real server shows: a reload on
SIGHUP, a database mapping the CN to a user, and libpq's ``verify-full``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode

from ..support import gotls
from ..support.gotls_pki import CLIENT, HOST, SERVER, Ca, make_ca, standard_node, write_ca, write_leaf
from .conftest import NODE_HOSTS, UI_HOSTS, Deployment, run_cli

pytestmark = pytest.mark.integration

TRUSTS = ("issuer", "root")
COMBOS = [(mode, intermediate, trust) for mode in Mode for intermediate in (True, False) for trust in TRUSTS]
Combo = tuple[Mode, bool, str]


def combo_id(combo: Combo) -> str:
    mode, intermediate, trust = combo
    return f"{mode.value}-{'intermediate' if intermediate else 'self-rooted'}-{trust}"


@dataclass(frozen=True)
class Sets:
    """One combination's issued certs-dirs."""

    node_a: Path
    node_b: Path
    marc: Path
    ui_ca: Path            # what a browser trusts for the console: the UI mount's CA at this ca_trust


def _issue(dep: Deployment, base: Path, trust: str) -> Sets:
    env = {"VAULT_TOKEN": dep.server.root_token}
    base.mkdir()
    dirs = {name: base / name for name in ("node-a", "node-b", "marc")}
    configs = {name: dep.write_config(base / f"{name}.toml", path, ca_trust=trust) for name, path in dirs.items()}
    for args in (["--config", str(configs["node-a"]), "issue-node", "--user", "root"],
                 ["--config", str(configs["node-b"]), "issue-node"],
                 ["--config", str(configs["marc"]), "issue-user", "marc", "--certs-dir", str(dirs["marc"])]):
        result = run_cli(args, env)
        assert result.returncode == 0, f"{args}: {result.stderr}"
    assert dep.pki.ui_mount
    issuer = dep.admin.read(f"{dep.pki.ui_mount}/issuer/default")["data"]
    ui_ca = base / "browser-trust.pem"
    ui_ca.write_text(issuer["certificate"] if trust == "issuer" else issuer["ca_chain"][-1])
    return Sets(dirs["node-a"], dirs["node-b"], dirs["marc"], ui_ca)


def _derived(target: Path, files: dict[str, Path]) -> str:
    """A certs-dir of copies of other dirs' files (links followed, modes kept), each under its new name;
    a source that does not exist is left out."""
    target.mkdir()
    for name, source in files.items():
        if source.exists():
            shutil.copy(source, target / name)
    return str(target)


def _cases(combo: Combo, sets: dict[Combo, Sets], base: Path) -> list[gotls.Case]:
    mode, intermediate, trust = combo
    own, foreign = sets[combo], sets[(mode, not intermediate, trust)]    # another mount's CA: another cluster
    a, b, marc = str(own.node_a), str(own.node_b), str(own.marc)
    name = combo_id(combo)

    def case(label: str, kind: str, server: str, client: str, **fields: str) -> gotls.Case:
        fields.setdefault("server_name", NODE_HOSTS[0])
        return gotls.Case(name=f"{name}/{label}", kind=kind, server_dir=server, client_dir=client, **fields)

    # The foreign cluster's node and user, each holding this cluster's ca.crt: they trust our nodes, so
    # the refusal is our node's, of their certificates.
    foreign_node = _derived(base / f"{name}-foreign-node", {
        "ca.crt": own.node_a / "ca.crt",
        **{f: foreign.node_a / f for f in ("node.crt", "node.key", "client.node.crt", "client.node.key")}})
    foreign_marc = _derived(base / f"{name}-foreign-marc", {
        "ca.crt": own.node_a / "ca.crt",
        **{f: foreign.marc / f for f in ("client.marc.crt", "client.marc.key")}})
    cases = [
        case("rpc-a-dials-b", "rpc", b, a),
        case("rpc-b-dials-a", "rpc", a, b),
        case("rpc-a-dials-b-by-ip", "rpc", b, a, server_name="127.0.0.1"),
        case("rpc-root", "rpc", a, a, user="root"),
        case("sql-marc", "sql", a, marc, user="marc"),
        case("sql-root", "sql", a, a, user="root"),
        case("ui-browser", "ui", a, b, server_name=UI_HOSTS[0], client_ca=str(own.ui_ca)),
        case("ui-cockroach-client", "ui", a, b, server_name=UI_HOSTS[0]),
        case("refuse-marc-as-eve", "sql", a, marc, user="eve", cert_user="marc"),
        case("refuse-marc-as-root", "sql", a, marc, user="root", cert_user="marc"),
        case("refuse-marc-rpc", "rpc", a, marc, user="marc"),
        case("refuse-foreign-node-dials", "rpc", a, foreign_node),
        case("refuse-foreign-node-dialled", "rpc", str(foreign.node_a), a),
        case("refuse-foreign-user", "sql", a, foreign_marc, user="marc"),
        case("refuse-wrong-host", "rpc", b, a, server_name="node2.test.internal"),
    ]
    if mode is Mode.SPLIT_CA:
        # The v24.1 Vault tutorial's layout: ca-client.crt, and no client.node.crt beside node.crt.
        without = _derived(base / f"{name}-no-client-node", {
            f: own.node_a / f for f in ("ca.crt", "ca-client.crt", "node.crt", "node.key")})
        cases.append(case("refuse-split-ca-without-client-node", "rpc", b, without))
    return cases


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gotls")


@pytest.fixture(scope="module")
def results(deploy: Callable[..., Deployment], workdir: Path) -> dict[str, gotls.Result]:
    """Every combination issued (in parallel: each is three CLI runs), then every case in one Go process."""
    gotls.binary()                      # a missing `go` fails here, before anything is issued
    deployments = {(mode, intermediate): deploy(mode, intermediate) for mode in Mode for intermediate in (True, False)}
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {combo: pool.submit(_issue, deployments[combo[:2]], workdir / combo_id(combo), combo[2])
                   for combo in COMBOS}
        sets = {combo: future.result() for combo, future in futures.items()}
    cases = [c for combo in COMBOS for c in _cases(combo, sets, workdir)]
    return {r.name: r for r in gotls.check(cases)}


ACCEPTED = {                 # case -> the principal CockroachDB's identity check settles on
    "rpc-a-dials-b": "node", "rpc-b-dials-a": "node", "rpc-a-dials-b-by-ip": "node", "rpc-root": "root",
    "sql-marc": "marc", "sql-root": "root",
}


@pytest.mark.parametrize("label", list(ACCEPTED))
@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_accepted(results: dict[str, gotls.Result], combo: Combo, label: str) -> None:
    result = results[f"{combo_id(combo)}/{label}"]
    assert result.ok, result
    assert result.peer_identity == ACCEPTED[label]
    assert result.client_sent_certificate


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_console_to_a_browser_trusting_the_ui_ca(results: dict[str, gotls.Result], combo: Combo) -> None:
    result = results[f"{combo_id(combo)}/ui-browser"]
    assert result.ok, result
    assert result.peer_identity == UI_HOSTS[0]         # ui.crt, not node.crt, is what the console serves
    assert not result.client_sent_certificate          # the console asks for no client certificate


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_console_to_cockroachdbs_own_https_client(results: dict[str, gotls.Result], combo: Combo) -> None:
    """GetUIClientTLSConfig trusts ca-ui.crt, else ca.crt: it must accept the console vaultpki sets up."""
    result = results[f"{combo_id(combo)}/ui-cockroach-client"]
    assert result.ok, result
    assert result.peer_identity == UI_HOSTS[0]


NO_CERT_RPC = ("identity", "server", "TLSInfo is not available in request context")


def expected_refusal(combo: Combo, label: str) -> tuple[str, str, str]:
    """(stage, who refused, what the error says) for a refusal case. Go's x509 text is matched, not the
    prefix crypto/tls puts before it (which newer Go releases reword)."""
    mode, intermediate, trust = combo
    return {
        "refuse-marc-as-eve": ("identity", "server", 'certificate authentication failed for user "eve": '),
        "refuse-marc-as-root": ("identity", "server", 'certificate authentication failed for user "root": '),
        "refuse-marc-rpc": ("identity", "server", "need root or node client cert to perform RPCs on this server "),
        # Go's client sends no certificate that no CA the server names has issued: the foreign node's
        # and user's arrive as none, and the authentication code refuses the certificate-less peer.
        "refuse-foreign-node-dials": NO_CERT_RPC,
        "refuse-foreign-user": ("identity", "server", "no client certificates in request"),
        "refuse-foreign-node-dialled": ("handshake", "client", "x509: certificate signed by unknown authority"),
        "refuse-wrong-host": ("handshake", "client", "x509: certificate is valid for "),
        # Behind a shared root that ca-client.crt holds (ca_trust = "root"), node.crt is sent, and only
        # its EKU (serverAuth alone) stops it; behind a client CA of its own, it is not even sent.
        "refuse-split-ca-without-client-node": (
            ("handshake", "server", "x509: certificate specifies an incompatible key usage")
            if intermediate and trust == "root" else NO_CERT_RPC),
    }[label]


REFUSALS = ["refuse-marc-as-eve", "refuse-marc-as-root", "refuse-marc-rpc", "refuse-foreign-node-dials",
            "refuse-foreign-user", "refuse-foreign-node-dialled", "refuse-wrong-host"]


@pytest.mark.parametrize("label", REFUSALS)
@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_refused(results: dict[str, gotls.Result], combo: Combo, label: str) -> None:
    result = results[f"{combo_id(combo)}/{label}"]
    stage, refused_by, error = expected_refusal(combo, label)
    assert not result.ok, result
    assert (result.stage, result.refused_by) == (stage, refused_by), result
    assert error in result.error, result
    if label.startswith("refuse-marc-"):
        # marc's certificate names marc alone (its CN, and a DNS SAN when the role adds one), nothing else
        assert result.client_sent_certificate and 'valid for "marc" on all tenants' in result.error, result
        assert set(re.findall(r'"([^"]*)" on ', result.error)) == {"marc"}, result


@pytest.mark.parametrize("combo", [c for c in COMBOS if c[0] is Mode.SPLIT_CA], ids=combo_id)
def test_split_ca_node_without_client_node_is_refused(results: dict[str, gotls.Result], combo: Combo,
                                                       workdir: Path) -> None:
    """cockroachdb/cockroach#47603: with ca-client.crt, peers check node.crt against it. Go refuses the
    node, and vaultpki's ``verify`` says so of the same directory."""
    result = results[f"{combo_id(combo)}/refuse-split-ca-without-client-node"]
    stage, refused_by, error = expected_refusal(combo, "refuse-split-ca-without-client-node")
    assert not result.ok and (result.stage, result.refused_by) == (stage, refused_by), result
    assert error in result.error, result
    certs_dir = workdir / f"{combo_id(combo)}-no-client-node"
    verify = run_cli(["verify", "--certs-dir", str(certs_dir)])
    assert verify.returncode == 1 and "client.node.crt: is missing" in verify.stdout + verify.stderr, verify


def _split_node(certs_dir: Path, ca: Ca) -> Path:
    """split-node as vaultpki's roles issue it: client.node.crt carries its CN as a DNS SAN too."""
    write_ca(certs_dir, "ca.crt", ca)
    write_leaf(certs_dir, "node", ca, HOST, [SERVER], dns=[HOST, "localhost"])
    write_leaf(certs_dir, "client.node", ca, "node", [CLIENT], dns=["node"])
    return certs_dir


def _defective(kind: str, *certs_dirs: Path) -> None:
    """Nodes of one CA with one of issue 19 §1's defects, which no loader check sees and Go refuses."""
    org = make_ca("org", permitted_dns=["test.internal", "localhost"])      # permits its own domains only
    root = make_ca("root", path_length=0)
    issuing = make_ca("issuing", parent=root)
    plain = make_ca("ca")
    for certs_dir in certs_dirs:
        if kind == "name-constraints":
            standard_node(certs_dir, org)
        elif kind == "name-constraints-split-node":
            _split_node(certs_dir, org)
        elif kind == "path-length":           # trusted as the root (ca_trust = "root"): 1 intermediate > 0
            standard_node(certs_dir, issuing, root)
        else:
            write_ca(certs_dir, "ca.crt", plain)
            write_leaf(certs_dir, "node", plain, "node", [SERVER, CLIENT], dns=[HOST, "node"], critical_extension=True)


@pytest.mark.parametrize("kind", ["name-constraints", "name-constraints-split-node", "path-length", "critical-extension"])
def test_verify_refuses_what_go_refuses(tmp_path: Path, kind: str) -> None:
    """Issue 19 §1: a set Go refuses at every handshake is not "ok". The Go consumer refuses it between two
    such nodes, and ``vaultpki verify`` of the same directory fails quoting Go's own reason."""
    a, b = tmp_path / "a", tmp_path / "b"
    _defective(kind, a, b)
    go = gotls.check_one(gotls.Case(name=kind, kind="rpc", server_dir=str(b), client_dir=str(a), server_name=HOST))
    assert not go.ok and go.stage == "handshake" and "x509: " in go.error, go
    reason = go.error[go.error.index("x509: "):]
    verify = run_cli(["verify", "--certs-dir", str(a)])
    assert verify.returncode == 1 and reason in verify.stdout + verify.stderr, (reason, verify)
