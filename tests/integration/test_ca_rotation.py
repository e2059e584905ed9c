"""CA rotation without downtime, against real OpenBao and PostgreSQL.

The mount is its own root CA (as in the CockroachDB Vault tutorial), so CA files hold
roots, which PostgreSQL/libpq can use directly. Through the whole flow
(rotate -> nodes and clients pick up the bundle -> activate -> leaves re-issued ->
old leaves revoked -> retire) a background loop keeps connecting as every client,
with whatever that client's certs-dir holds at that moment; not one connection may
fail. During the overlap a client with a certificate from the old CA and one from the
new CA both connect; after clean-up only the new one does.

Clients read their cert, key and ca.crt from one generation directory (resolved once
per connection): a reader that opened client.X.crt and client.X.key through the
top-level links at the very instant of a switch could pair two generations.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import NODE_HOSTS, run_cli, toml_dump

PKI = PkiNames(mount="rot-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = make_shared_tempdir("vaultpki-rot-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Connector:
    """Connects as each client in a loop and records every failure."""

    def __init__(self, pg: PostgresServer, clients: dict[str, Path]) -> None:
        self.pg, self.clients = pg, clients
        self.failures: list[tuple[str, str]] = []
        self.successes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def connect(self, user: str, certs: Path) -> tuple[bool, str]:
        generation = Path(os.path.realpath(certs / ".vaultpki" / "current"))
        result = self.pg.connect_as(user, generation / f"client.{user}.crt", generation / f"client.{user}.key",
                                    generation / "ca.crt")
        return result.returncode == 0 and result.stdout.strip() == user, result.stderr.strip()

    def _run(self) -> None:
        while not self._stop.is_set():
            for user, certs in list(self.clients.items()):
                ok, why = self.connect(user, certs)
                if ok:
                    self.successes[user] = self.successes.get(user, 0) + 1
                else:
                    self.failures.append((user, why))
            time.sleep(0.05)

    def __enter__(self) -> Connector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def settle(self) -> None:
        """Let every client connect at least twice more."""
        start = dict(self.successes)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(self.successes.get(u, 0) < start.get(u, 0) + 2 for u in self.clients):
            time.sleep(0.05)


def bundle(path: Path) -> list[str]:
    return [crypto.describe(c).subject for c in crypto.load_certs(path.read_bytes())]


@pytest.mark.slow
def test_rotation_without_a_moment_of_downtime(bao: DevServer, shared_dir: Path) -> None:
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    provision(admin, bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=NODE_HOSTS, intermediate=False))
    token = {"VAULT_TOKEN": bao.root_token}
    certs = shared_dir / "certs"
    (shared_dir / "pg").mkdir(mode=0o755)
    doc = {
        "certs_dir": str(certs), "mode": "standard", "ttl": "1h", "ca_trust": "root", "owner": "postgres",
        "group": "postgres", "vault": {"addr": bao.addr}, "pki": {"mount": PKI.mount},
        "node": {"hosts": list(NODE_HOSTS)}, "renew": {"revoke_replaced": True, "ca_check": "0"},
    }
    config = shared_dir / "vaultpki.toml"
    config.write_text(toml_dump(doc))

    def cli(*args: str) -> str:
        result = run_cli(["--config", str(config), *args], token)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def user_certs(user: str) -> Path:
        cli("issue-user", user, "--certs-dir", str(shared_dir / user))
        return shared_dir / user

    cli("sync", "--once")
    alice = user_certs("alice")
    old_ca = bundle(certs / "ca.crt")
    assert len(old_ca) == 1
    with PostgresServer(shared_dir / "pg", certs / "node.crt", certs / "node.key", certs / "ca.crt") as pg:
        for user in ("alice", "bob", "carol"):
            pg.create_user(user)
        doc["reload"] = {"pidfile": str(pg.data_dir / "postmaster.pid"), "verify": f"postgres://127.0.0.1:{pg.port}",
                         "verify_timeout": "5s"}
        config.write_text(toml_dump(doc))
        with Connector(pg, {"alice": alice}) as loop:
            loop.settle()
            # 1. A new CA, not yet the default: the node and its clients get the bundle new + old.
            cli("ca", "rotate", "--mount", PKI.mount)
            cli("sync", "--once")
            assert bundle(certs / "ca.crt")[1:] == old_ca and len(bundle(certs / "ca.crt")) == 2
            user_certs("alice")                                       # clients refresh ca.crt (still an old-CA leaf)
            assert len(bundle(alice / "ca.crt")) == 2
            old_alice = shared_dir / "alice-old"
            shutil.copytree(Path(os.path.realpath(alice / ".vaultpki" / "current")), old_alice)
            loop.settle()
            # 2. Activate: new leaves come from the new CA; the node re-issues by itself at its next pass.
            denied = run_cli(["--config", str(config), "ca", "activate", "--mount", PKI.mount], token)
            assert denied.returncode == 2 and "wait until every node and client" in denied.stderr
            cli("ca", "activate", "--mount", PKI.mount, "--min-age", "0")
            bob = user_certs("bob")
            loop.clients["bob"] = bob
            assert "(CA rotation)" in run_cli(["--config", str(config), "sync", "--once", "--log-format", "json"],
                                               token).stderr
            node = crypto.load_certs((certs / "node.crt").read_bytes())[0]
            assert node.issuer.rfc4514_string() == bundle(certs / "ca.crt")[0]          # from the new CA now
            loop.settle()
            # The overlap: an old-CA client and a new-CA client both get in.
            assert loop.connect("alice", alice)[0] and loop.connect("bob", bob)[0]
            assert crypto.load_certs((alice / "client.alice.crt").read_bytes())[0].issuer.rfc4514_string() == old_ca[0]
            status = json.loads(run_cli(["status", "--json", "--certs-dir", str(alice)]).stdout)
            assert any("ca.crt #2 of 2" in (row["chains_to"] or "") for row in status["files"])
            # 3. Retire: refused while an old-CA leaf is still valid...
            refused = run_cli(["--config", str(config), "ca", "retire", "--mount", PKI.mount], token)
            assert refused.returncode == 2 and "still has" in refused.stderr and "alice" in refused.stderr
            assert "--revoke-leaves" in refused.stderr
            # ...so alice is re-issued from the new CA, then retire revokes her old certificates first.
            user_certs("alice")
            issuers = json.loads(cli("ca", "status", "--mount", PKI.mount, "--json"))["issuers"]
            assert [i["is_default"] for i in issuers] == [True, False]          # newest first: the new one
            assert [i["state"] for i in issuers] == ["active", "superseded"]
            old_leaves = []
            for line in admin.list(f"{PKI.mount}/certs")["data"]["keys"]:
                data = admin.read(f"{PKI.mount}/cert/{line}")["data"]
                cert = crypto.load_certs(data["certificate"].encode())[0]
                if not crypto.is_ca(cert) and cert.issuer.rfc4514_string() == old_ca[0] and not data["revocation_time"]:
                    old_leaves.append(line)
            retired = json.loads(cli("ca", "retire", "--mount", PKI.mount, "--revoke-leaves", "--json"))
            assert sorted(r["serial"] for r in retired["revoked"]) == sorted(old_leaves) and retired["retired"]
            cli("sync", "--once")
            assert bundle(certs / "ca.crt") != old_ca and len(bundle(certs / "ca.crt")) == 1
            user_certs("alice")
            user_certs("bob")
            loop.settle()
        assert loop.failures == [], loop.failures[:5]
        assert loop.successes["alice"] > 10 and loop.successes["bob"] > 2
        # After clean-up only the new CA's clients get in: the old CA is gone from the server's bundle.
        old = pg.connect_as("alice", old_alice / "client.alice.crt", old_alice / "client.alice.key", alice / "ca.crt")
        assert old.returncode != 0
        assert pg.connect_as("alice", alice / "client.alice.crt", alice / "client.alice.key",
                             alice / "ca.crt").stdout.strip() == "alice"
