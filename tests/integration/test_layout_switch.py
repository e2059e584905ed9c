"""A layout switch (issue 19 §5): a split-ca node re-issued as split-node, against the session OpenBao, judged by
CockroachDB's own TLS stack (the Go consumer, ``tests/support/gotls.py``).

The node CA stays; the client CA goes. Before, the split-ca dir kept its ``ca-client.crt`` through
``issue-node`` and every ``sync``: CockroachDB then checks every client certificate, the other nodes'
``client.node.crt`` from the node CA included, against that stale file, and ``verify`` failed without naming
why. Now a file of vaultpki's under a name the layout no longer has leaves the next set (the previous
generation keeps it, so ``rollback`` restores it), and ``verify --config`` names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hvac
import pytest

from vaultpki.core.layout import FileContent, Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.store.certs_dir import CertsDir

from ..support import gotls
from .conftest import NODE_HOSTS, run_cli, toml_dump

pytestmark = pytest.mark.integration

SPLIT_CA = PkiNames(mount="lsw-crdb", client_mount="lsw-client", node_role="node-server",
                    client_node_role="client-node", user_role="user", ui_mount=None, ui_role=None)
SPLIT_NODE = PkiNames(mount="lsw-crdb", client_mount=None, node_role="node-server", client_node_role="client-node",
                      user_role="user", ui_mount=None, ui_role=None)
STALE = ("ca-client.crt: is not part of split-node: CockroachDB verifies every client certificate against it; "
         "vaultpki removes it at the next issue-node/sync")


@pytest.fixture(scope="module")
def env(bao: DevServer) -> dict[str, str]:
    """One node CA (lsw-crdb) provisioned for split-ca (with its client CA, lsw-client), then for split-node
    (client.node from the node CA): the cluster dropping its client CA."""
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    for mode, pki in ((Mode.SPLIT_CA, SPLIT_CA), (Mode.SPLIT_NODE, SPLIT_NODE)):
        provision(admin, bao.addr, ProvisionSpec(mode=mode, pki=pki, node_hosts=NODE_HOSTS, root_mount="lsw-root"))
    return {"VAULT_TOKEN": bao.root_token}


def config(bao: DevServer, path: Path, certs: Path, mode: Mode) -> Path:
    pki: dict[str, Any] = {"mount": "lsw-crdb", "node_role": "node-server", "client_node_role": "client-node"}
    if mode is Mode.SPLIT_CA:
        pki["client_mount"] = "lsw-client"
    path.write_text(toml_dump({"certs_dir": str(certs), "mode": mode.value, "ttl": "1h",
                               "vault": {"addr": bao.addr, "auth": "token"}, "pki": pki,
                               "node": {"hosts": list(NODE_HOSTS)}, "renew": {"ocsp_check": False}}))
    return path


def cli(env: dict[str, str], conf: Path, *args: str) -> str:
    result = run_cli(["--config", str(conf), *args], env)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def handshakes(a: Path, b: Path) -> dict[str, gotls.Result]:
    """Node B dials node A and A dials B, as CockroachDB's RPC listener and dialer set up TLS."""
    cases = [gotls.Case(name="b-dials-a", kind="rpc", server_dir=str(a), client_dir=str(b), server_name=NODE_HOSTS[0]),
             gotls.Case(name="a-dials-b", kind="rpc", server_dir=str(b), client_dir=str(a), server_name=NODE_HOSTS[0])]
    return {r.name: r for r in gotls.check(cases)}


@pytest.fixture(scope="module")
def peer(bao: DevServer, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Node B: already split-node."""
    base = tmp_path_factory.mktemp("peer")
    cli(env, config(bao, base / "b.toml", base / "certs", Mode.SPLIT_NODE), "issue-node")
    return base / "certs"


def test_issue_node_after_the_switch_leaves_out_ca_client(bao: DevServer, env: dict[str, str], peer: Path,
                                                           tmp_path: Path) -> None:
    gotls.binary()                         # a missing `go` fails here, before anything is issued
    certs = tmp_path / "certs"
    cli(env, config(bao, tmp_path / "a.toml", certs, Mode.SPLIT_CA), "issue-node")
    client_ca = (certs / "ca-client.crt").read_bytes()
    switched = config(bao, tmp_path / "a.toml", certs, Mode.SPLIT_NODE)
    cli(env, switched, "issue-node")
    assert not (certs / "ca-client.crt").exists(), "ca-client.crt survived the switch to split-node"
    assert (certs / ".vaultpki" / "previous" / "ca-client.crt").read_bytes() == client_ca
    assert "ok:" in cli(env, switched, "verify")
    results = handshakes(certs, peer)
    assert all(r.ok and r.peer_identity == "node" for r in results.values()), results
    CertsDir(certs).rollback()             # the previous set, ca-client.crt with it
    assert (certs / "ca-client.crt").read_bytes() == client_ca


def test_sync_takes_out_a_stale_ca_client(bao: DevServer, env: dict[str, str], peer: Path, tmp_path: Path) -> None:
    """A split-node set beside the ca-client.crt an earlier vaultpki left there (what issue-node used to leave
    after the switch): Go refuses the peers, verify names the file, one sync pass mends it."""
    certs = tmp_path / "certs"
    switched = config(bao, tmp_path / "a.toml", certs, Mode.SPLIT_NODE)
    cli(env, switched, "issue-node")
    client_ca = hvac.Client(url=bao.addr, token=bao.root_token).read("lsw-client/issuer/default")["data"]["certificate"]
    CertsDir(certs).write_set([FileContent("ca-client.crt", client_ca.encode(), secret=False)])

    before = handshakes(certs, peer)
    assert not before["b-dials-a"].ok, before             # A checks B's client.node.crt against the client CA
    verify = run_cli(["--config", str(switched), "verify"], env)
    assert verify.returncode == 1 and STALE in verify.stderr, verify.stderr

    once = run_cli(["--config", str(switched), "sync", "--once", "--json"], env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert not (certs / "ca-client.crt").exists()
    assert (certs / ".vaultpki" / "previous" / "ca-client.crt").exists()
    after = handshakes(certs, peer)
    assert all(r.ok and r.peer_identity == "node" for r in after.values()), after
    assert "ok:" in cli(env, switched, "verify")
    assert "nothing due" in cli(env, switched, "sync", "--once")      # and it stays gone
