"""``vaultpki sync`` and Vault's availability and tokens, against real servers.

- Outage: a persistent OpenBao (on-disk storage, so the PKI survives a stop) is stopped
  mid-life; the daemon must stay up, leave the files alone and report unhealthy, then
  renew within one backoff step once Vault is back.
- Tokens: a renewable token that would expire long before the next renewal must be
  renewed by the daemon; an AppRole login token that expires must be replaced by
  logging in again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support.openbao import PersistentOpenBao
from .conftest import SHORT, Deployment, standard_sync_config, toml_dump, tree
from .daemon_proc import SyncDaemon, msg

# Issued lifetime 90 s (60 s TTL + OpenBao's 30 s backdate); renewal ~15 s after issuance.


def serial_of(path: Path) -> int:
    return crypto.load_certs(path.read_bytes())[0].serial_number


@pytest.fixture
def outage_bao(tmp_path: Path) -> Iterator[PersistentOpenBao]:
    (tmp_path / "bao").mkdir()
    with PersistentOpenBao(tmp_path / "bao") as server:
        yield server


@pytest.mark.slow
def test_vault_outage_daemon_stays_up_untouched_then_renews(outage_bao: PersistentOpenBao, tmp_path: Path) -> None:
    config, certs = standard_sync_config(outage_bao.addr, outage_bao.root_token, "out", tmp_path)
    with SyncDaemon(config, {"VAULT_TOKEN": outage_bao.root_token}) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(certs / "node.crt")
        before = tree(certs)
        renew_at = daemon.metric('vaultpki_certificate_renewal_timestamp_seconds{file="node.crt"}')
        assert renew_at is not None and renew_at > time.time()
        outage_bao.stop()
        event = daemon.wait_for(msg("pass failed; retrying"), 60)     # the renewal time came while Vault was away
        assert "node.crt" in event["error"] and "cannot reach Vault" in event["error"]
        daemon.wait_for(msg("pass failed; retrying"), 15)             # ...and it keeps trying, with backoff
        assert daemon.proc.poll() is None                             # never exits because Vault is down
        assert tree(certs) == before                                  # files untouched while Vault is away
        status, body = daemon.get("/healthz")
        assert status == 503 and '"node.crt"' in body
        assert daemon.metric("vaultpki_vault_up") == 0
        outage_bao.start()
        back = time.monotonic()
        daemon.wait_for(msg("renewed"), 30)
        # One backoff step (retry_max 2 s) plus one pass with its in-request retries.
        assert time.monotonic() - back < 2 + 8
        daemon.wait_for(msg("pass complete"), 10)
        assert serial_of(certs / "node.crt") != first
        status, _ = daemon.get("/healthz")
        assert status == 200 and daemon.metric("vaultpki_vault_up") == 1
        assert daemon.stop() == 0


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sync_config(dep: Deployment, base: Path, vault: dict[str, object]) -> Path:
    doc = dep.config_doc(base / "certs", **SHORT)
    doc["vault"] = {"addr": dep.server.addr, **vault}
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


NODE_SIGN_POLICY = """
path "{mount}/sign/{role}" {{ capabilities = ["update"] }}
path "{mount}/issuer/default/json" {{ capabilities = ["read"] }}
"""


@pytest.mark.slow
def test_renewable_token_is_renewed_before_it_expires(deploy: Callable[..., Deployment], shared: Path) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    dep.admin.sys.create_or_update_acl_policy(
        "sync-node", NODE_SIGN_POLICY.format(mount=dep.pki.mount, role=dep.pki.node_role))
    # Lives 6 s unless renewed; the next certificate renewal is ~15 s away.
    token = dep.admin.auth.token.create(policies=["sync-node"], ttl="6s", explicit_max_ttl="10m",
                                        renewable=True)["auth"]["client_token"]
    config = sync_config(dep, shared, {})
    with SyncDaemon(config, {"VAULT_TOKEN": token}) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(shared / "certs" / "node.crt")
        daemon.wait_for(msg("renewed"), 60)
        daemon.wait_for(msg("pass complete"), 10)
        assert serial_of(shared / "certs" / "node.crt") != first
        # The token outlived its original 6 s only because the daemon renewed it.
        looked_up = dep.admin.auth.token.lookup(token)["data"]
        assert looked_up["ttl"] > 0 and looked_up["creation_ttl"] == 6
        assert daemon.stop() == 0


@pytest.mark.slow
def test_expired_approle_login_is_replaced(deploy: Callable[..., Deployment], shared: Path) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    admin = dep.admin
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_acl_policy(
        "sync-node", NODE_SIGN_POLICY.format(mount=dep.pki.mount, role=dep.pki.node_role))
    # Login tokens die after 4 s and cannot be renewed past that.
    admin.write_data("auth/approle/role/sync-node", data={"token_policies": ["sync-node"], "token_ttl": "4s",
                                                          "token_max_ttl": "4s"})
    role_id = admin.read("auth/approle/role/sync-node/role-id")["data"]["role_id"]
    secret_id = admin.write_data("auth/approle/role/sync-node/secret-id", data={})["data"]["secret_id"]
    secret = shared / "secret-id"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, secret_id.encode())
    os.close(fd)
    config = sync_config(dep, shared, {"auth": "approle", "role_id": role_id, "secret_id_file": str(secret)})
    with SyncDaemon(config) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(shared / "certs" / "node.crt")
        daemon.wait_for(msg("renewed"), 60)                 # ~15 s later: the first login token is long gone
        daemon.wait_for(msg("pass complete"), 10)
        assert serial_of(shared / "certs" / "node.crt") != first
        assert not [e for e in daemon.events if e.get("level") == "error"], daemon.events
        assert daemon.stop() == 0
