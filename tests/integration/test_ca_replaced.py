"""A CA replaced outside ``ca rotate`` (issue 19 §5), under a running ``vaultpki sync``, on the session OpenBao.

The mount's CA is deleted and a new root generated on it (a Vault rebuilt, say). Before, each daemon swapped
its ``ca.crt`` and leaves at its own CA check, with no overlap, and the nodes split: one with the new CA refuses
the peers still presenting the old one's certificates. Now the daemon keeps serving the set on disk and says so
(a log line each pass, ``vaultpki_ca_mismatch``, ``/healthz``); Go, set up as CockroachDB sets it up
(``tests/support/gotls.py``), shows the nodes still talk. It moves when the overlap is back (the old CA restored
on the mount, as the default, the new one beside it: the state ``ca rotate`` leaves), and a node whose operator
runs ``issue-node`` takes the new set at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hvac
import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.vault.admin import ROOT_TTL, VaultAdmin

from ..support import gotls
from .conftest import NODE_HOSTS, run_cli, toml_dump
from .daemon_proc import SyncDaemon, msg

pytestmark = pytest.mark.integration

MOUNT = "carep-crdb"
PKI = PkiNames(mount=MOUNT, client_mount=None, node_role="node", client_node_role="client-node", user_role="user",
               ui_mount=None, ui_role=None)
HELD = "CA replaced without an overlap: keeping the set on disk"


def config(bao: DevServer, path: Path, certs: Path) -> Path:
    path.write_text(toml_dump({
        "certs_dir": str(certs), "mode": "standard", "ttl": "1h", "vault": {"addr": bao.addr, "auth": "token"},
        "pki": {"mount": MOUNT}, "node": {"hosts": list(NODE_HOSTS)},
        "renew": {"ca_check": "1s", "ocsp_check": False, "retry_initial": "1s", "retry_max": "2s"}}))
    return path


def rpc(a: Path, b: Path) -> dict[str, gotls.Result]:
    """Node B dials node A and A dials B, as CockroachDB's RPC listener and dialer set up TLS."""
    cases = [gotls.Case(name="b-dials-a", kind="rpc", server_dir=str(a), client_dir=str(b), server_name=NODE_HOSTS[0]),
             gotls.Case(name="a-dials-b", kind="rpc", server_dir=str(b), client_dir=str(a), server_name=NODE_HOSTS[0])]
    return {r.name: r for r in gotls.check(cases)}


def subjects(path: Path) -> list[str]:
    return [c.subject.rfc4514_string() for c in crypto.load_certs(path.read_bytes())]


def poll(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def test_a_replaced_ca_is_held_until_the_overlap_is_back(bao: DevServer, tmp_path: Path) -> None:
    gotls.binary()                         # a missing `go` fails here, before anything is issued
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    env = {"VAULT_TOKEN": bao.root_token}
    # The mount's own root, its key kept outside Vault: the backup an operator restores it from.
    VaultAdmin(admin, bao.addr).enable_pki(MOUNT)
    old = admin.write_data(f"{MOUNT}/issuers/generate/root/exported", data={
        "common_name": "carep old CA", "ttl": ROOT_TTL, "key_type": "ec", "key_bits": 256})["data"]
    provision(admin, bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=NODE_HOSTS, intermediate=False))

    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for node in (b, c):
        result = run_cli(["--config", str(config(bao, tmp_path / f"{node.name}.toml", node)), "issue-node"], env)
        assert result.returncode == 0, result.stderr
    with SyncDaemon(config(bao, tmp_path / "a.toml", a), env) as daemon:
        assert daemon.wait_for(msg("pass complete"), 30)["renewed"] == ["node.crt"]
        before = {n: (a / n).read_bytes() for n in ("ca.crt", "node.crt", "node.key")}

        # The CA replaced: every issuer and key of the mount gone, a new root generated on it.
        admin.delete(f"{MOUNT}/root")
        new_id = admin.write_data(f"{MOUNT}/issuers/generate/root/internal", data={
            "common_name": "carep new CA", "ttl": ROOT_TTL, "key_type": "ec", "key_bits": 256})["data"]["issuer_id"]
        admin.write_data(f"{MOUNT}/config/issuers", data={"default": new_id})

        first = daemon.wait_for(lambda e: e.get("msg") in (HELD, "renewed"), 30)
        assert first["msg"] == HELD, f"the daemon swapped the CA at its check: {first}"
        assert first["mount"] == MOUNT and first["trusted"] == ["CN=carep old CA"] and first["offered"] == ["CN=carep new CA"]
        daemon.wait_for(msg(HELD), 30)                                       # and again at the next pass
        assert {n: (a / n).read_bytes() for n in before} == before
        assert daemon.metric(f'vaultpki_ca_mismatch{{mount="{MOUNT}"}}') == 1
        code, body = daemon.get("/healthz")
        assert code == 503 and json.loads(body)["ca_mismatch"][0]["mount"] == MOUNT, body
        results = rpc(a, b)
        assert all(r.ok and r.peer_identity == "node" for r in results.values()), results

        # Node C: `sync --once` holds and says why; its operator accepts the new CA with issue-node.
        conf_c = tmp_path / "c.toml"
        held = run_cli(["--config", str(conf_c), "sync", "--once"], env)
        assert held.returncode == 1 and "ca.crt: held (" in held.stderr and "vaultpki issue-node" in held.stderr, held.stderr
        assert run_cli(["--config", str(conf_c), "issue-node"], env).returncode == 0
        assert subjects(c / "ca.crt") == ["CN=carep new CA"]
        assert run_cli(["--config", str(conf_c), "sync", "--once"], env).returncode == 0

        # The overlap restored: the old CA back from its backup as the default, the new one beside it.
        restored = admin.write_data(f"{MOUNT}/issuers/import/bundle",
                                    data={"pem_bundle": old["certificate"] + "\n" + old["private_key"]})["data"]
        admin.write_data(f"{MOUNT}/config/issuers", data={"default": restored["imported_issuers"][0]})
        poll(lambda: daemon.metric(f'vaultpki_ca_mismatch{{mount="{MOUNT}"}}') == 0, "the hold ended")
        poll(lambda: daemon.get("/healthz")[0] == 200, "healthy again")
        assert sorted(subjects(a / "ca.crt")) == ["CN=carep new CA", "CN=carep old CA"]
        assert (a / "node.crt").read_bytes() == before["node.crt"]       # still from the default issuer
        results = rpc(a, b)
        assert all(r.ok for r in results.values()), results
        assert daemon.stop() == 0
