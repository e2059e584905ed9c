"""vaultpki against a real 3-node OpenBao Raft cluster, and ``sync`` against a sealed Vault.

- HA: every node's address is in ``vault.addr``, the active node's first (so the
  address vaultpki remembers as good is the one that dies). The active node is
  SIGKILLed; ``issue-node`` and the ``sync`` daemon must carry on through the
  election, failing over to the surviving nodes (standbys forward writes to the
  active node), with exactly one certificate minted per renewed file (Vault's own
  list of serials) and the newest one on disk.
- Sealed: a single-node OpenBao is sealed while ``sync`` runs; the daemon must stay
  up, leave the files alone and report unhealthy, then renew within one backoff
  step of the unseal.

The cluster runs with OpenBao's default Raft timing (``performance_multiplier``
left out, as an operator gets it from the documentation's example config): from
SIGKILL of the active node to a new active node took 18-26 s here. In that window a
standby answers writes with a 307 redirect to the dead node's address, so every
request fails at once with "connection refused": the per-request timeout
(``vault.timeout``) plays no part, only how long vaultpki keeps retrying.
See tests/support/raft.py for what OpenBao 2.7.2 standbys do with requests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from vaultpki.core import crypto
from vaultpki.core.issue import BULK_IN_FLIGHT
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.provision import ProvisionSpec, provision

from ..support.openbao import PersistentOpenBao
from ..support.raft import RaftCluster
from .conftest import NODE_HOSTS, SHORT, run_cli, standard_sync_config, toml_dump, tree
from .daemon_proc import SyncDaemon, msg

pytestmark = pytest.mark.integration  # real OpenBao servers

HA_PKI = PkiNames(mount="ha-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                  user_role="user", ui_mount=None, ui_role=None)
# Issued lifetime 90 s (60 s TTL + OpenBao's 30 s backdate); renewal ~15 s after issuance.
#: Upper bound for an election with OpenBao's default Raft timing (measured 18-26 s).
ELECTION_BOUND = 60.0
#: One daemon backoff step (retry_max) plus one pass with its in-request retries (at most ~5 s).
ONE_STEP = 2 + 8


def serial_int(serial: str) -> int:
    """Vault lists serials as aa-bb-..., returns them as aa:bb:...; compare them as numbers."""
    return int(serial.replace(":", "").replace("-", ""), 16)


def serial_of(path: Path) -> int:
    return crypto.load_certs(path.read_bytes())[0].serial_number


def poll(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def event_time(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["ts"])).timestamp()


# --------------------------------------------------------------------------- the cluster


def serves_pki(cluster: RaftCluster, i: int) -> bool:
    """Node *i* knows the PKI mount and its role (a standby learns of a new mount ~0.1 s after the active node)."""
    try:
        return bool(cluster.api(i, "GET", f"/v1/{HA_PKI.mount}/roles/{HA_PKI.node_role}")["data"])
    except RuntimeError:
        return False


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    """Three nodes with OpenBao's default Raft timing, and the standard-mode PKI provisioned through the active node."""
    with RaftCluster(tmp_path_factory.mktemp("raft"), performance_multiplier=None) as cluster:
        addr = cluster.addrs[cluster.active_index()]
        provision(hvac.Client(url=addr, token=cluster.root_token), addr, ProvisionSpec(
            mode=Mode.STANDARD, pki=HA_PKI, node_hosts=NODE_HOSTS, root_mount="ha-root"))
        poll("every node serves the new PKI mount", lambda: all(serves_pki(cluster, i) for i in range(cluster.size)))
        yield cluster


@pytest.fixture
def cluster(ha: RaftCluster) -> RaftCluster:
    """The module's cluster with every node back up (an earlier test killed one) and one active node."""
    ha.heal()
    poll("every node serves the PKI mount", lambda: all(serves_pki(ha, i) for i in range(ha.size)))
    return ha


def minted(cluster: RaftCluster) -> set[int]:
    """Every serial the node mount has issued, as the active node lists it (standby reads may lag)."""
    try:
        keys = cluster.api(cluster.active_index(), "GET", f"/v1/{HA_PKI.mount}/certs?list=true")["data"]["keys"]
    except RuntimeError as exc:
        if "HTTP 404" in str(exc):
            return set()
        raise
    return {serial_int(k) for k in keys}


def write_config(cluster: RaftCluster, base: Path, **top: Any) -> Path:
    """vault.addr lists every node, the active one first."""
    active = cluster.active_index()
    addrs = [cluster.addrs[active]] + [a for i, a in enumerate(cluster.addrs) if i != active]
    doc: dict[str, Any] = {
        "certs_dir": str(base / "certs"), "mode": "standard", "ttl": "1h",
        "vault": {"addr": addrs, "auth": "token"},
        "pki": {"mount": HA_PKI.mount, "node_role": HA_PKI.node_role, "client_node_role": HA_PKI.client_node_role,
                "user_role": HA_PKI.user_role},
        "node": {"hosts": list(NODE_HOSTS)},
    }
    doc.update(top)
    path = base / "vaultpki.toml"
    path.write_text(toml_dump(doc))
    return path


class Election:
    """Times, in a thread, how long the cluster goes without an active node after ``killed`` died."""

    def __init__(self, cluster: RaftCluster, killed: int) -> None:
        self.started = time.monotonic()
        self.seconds: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(cluster, killed), daemon=True)
        self._thread.start()

    def _run(self, cluster: RaftCluster, killed: int) -> None:
        try:
            cluster.wait_for_active(ELECTION_BOUND, other_than=killed)
            self.seconds = time.monotonic() - self.started
        except BaseException as exc:  # noqa: BLE001 - reported by result()
            self.error = exc

    def result(self) -> float:
        self._thread.join(ELECTION_BOUND + 10)
        if self.seconds is None:
            raise AssertionError(f"no new active node within {ELECTION_BOUND}s: {self.error}")
        return self.seconds


def issue_node(config: Path, token: str) -> tuple[Any, dict[str, Any] | None]:
    result = run_cli(["--config", str(config), "issue-node", "--json"], {"VAULT_TOKEN": token})
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


# --------------------------------------------------------------------------- issue-node


@pytest.mark.slow
def test_issue_node_rides_out_the_death_of_the_active_node(cluster: RaftCluster, tmp_path: Path) -> None:
    config = write_config(cluster, tmp_path)
    certs = tmp_path / "certs"
    before = minted(cluster)
    result, issued = issue_node(config, cluster.root_token)
    assert result.returncode == 0 and issued is not None, result.stderr
    first = {serial_int(c["serial"]) for c in issued["certificates"]}
    assert [c["file"] for c in issued["certificates"]] == ["node.crt"]  # standard mode: one leaf
    assert len(first) == 1
    assert minted(cluster) - before == first                         # one certificate per file, nothing more
    on_disk = tree(certs)

    active = cluster.active_index()
    cluster.kill(active)
    election = Election(cluster, active)
    result, issued = issue_node(config, cluster.root_token)
    took = time.monotonic() - election.started
    elected = election.result()
    if result.returncode != 0:
        # Giving up is at least clean: nothing half-written...
        assert tree(certs) == on_disk
    # ...but a client configured with every node's address must ride out one node's death.
    assert result.returncode == 0, (
        f"issue-node gave up {took:.1f}s after the active node was SIGKILLed; the new active node was up after "
        f"{elected:.1f}s: {result.stderr.strip()}")
    assert issued is not None
    second = {serial_int(c["serial"]) for c in issued["certificates"]}
    assert minted(cluster) - before - first == second                # exactly one new certificate per file: no duplicate
    for cert in issued["certificates"]:
        assert serial_of(certs / cert["file"]) == serial_int(cert["serial"])   # the newest is the one on disk
    verified = run_cli(["--config", str(config), "verify"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.slow
def test_bulk_issue_user_rides_out_the_death_of_the_active_node(cluster: RaftCluster, tmp_path: Path) -> None:
    """The active node is SIGKILLed while a bulk run has its requests in flight to it (a pool of workers over
    one session): each request fails over to the other nodes and retries until the election is over.
    Every user ends up with exactly one certificate on disk, matching its key; at most the requests that
    were in flight when the node died were signed twice (Vault may have stored a certificate whose answer
    never arrived), and only the newest of those is written."""
    config = write_config(cluster, tmp_path)
    users = [f"ha_user{i:04d}" for i in range(1500)]
    listing = tmp_path / "users.txt"
    listing.write_text("\n".join(users) + "\n")
    clients = tmp_path / "clients"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env["VAULT_TOKEN"] = cluster.root_token
    before = minted(cluster)
    proc = subprocess.Popen([sys.executable, "-m", "vaultpki", "--config", str(config), "issue-user", "--from-file",
                             str(listing), "--certs-dir", str(clients), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def under_way() -> bool:
            generations = list((clients / ".vaultpki").glob("gen-*")) if clients.exists() else []
            return any(len(os.listdir(g)) >= 100 for g in generations) or proc.poll() is not None
        poll("the bulk run has written its first certificates", under_way, timeout=60)
        active = cluster.active_index()
        cluster.kill(active)
        assert proc.poll() is None, "the run ended before the node was killed: the test proves nothing"
        out, err = proc.communicate(timeout=ELECTION_BOUND + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out)
    assert summary["failed"] == [], summary["failed"][:3]
    assert proc.returncode == 0 and err == "", err          # nothing on stderr
    assert sorted(i["user"] for i in summary["issued"]) == users
    for item in summary["issued"]:
        cert = crypto.load_certs((clients / f"client.{item['user']}.crt").read_bytes())[0]
        key = crypto.load_key((clients / f"client.{item['user']}.key").read_bytes())
        assert crypto.key_matches(cert, key) and crypto.format_serial(cert.serial_number) == item["serial"]
    new = minted(cluster) - before
    on_disk = {serial_int(i["serial"]) for i in summary["issued"]}
    assert on_disk <= new and len(new) - len(on_disk) <= BULK_IN_FLIGHT      # those in flight at the kill


# --------------------------------------------------------------------------- sync


@pytest.mark.slow
def test_sync_renews_through_the_death_of_the_active_node(cluster: RaftCluster, tmp_path: Path) -> None:
    config = write_config(cluster, tmp_path, **SHORT)
    certs = tmp_path / "certs"
    before = minted(cluster)
    with SyncDaemon(config, {"VAULT_TOKEN": cluster.root_token}) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(certs / "node.crt")
        renew_at = daemon.metric('vaultpki_certificate_renewal_timestamp_seconds{file="node.crt"}')
        assert renew_at is not None

        active = cluster.active_index()
        cluster.kill(active)                                            # the node vaultpki last used
        killed_at = time.time()
        assert killed_at < renew_at                                     # before the renewal is due
        election = Election(cluster, active)

        renewed = daemon.wait_for(msg("renewed"), ELECTION_BOUND + 30)
        daemon.wait_for(lambda e: msg("pass complete")(e) and e.get("failures") == 0 and bool(e.get("renewed")), 30)
        elected_at = killed_at + election.result()
        # Renewed as soon as both the renewal time and a new active node had come, plus one backoff step.
        assert event_time(renewed) - max(renew_at, elected_at) < ONE_STEP
        assert daemon.proc.poll() is None                               # it never exits because a node died
        assert serial_of(certs / "node.crt") != first
        status, _ = daemon.get("/healthz")
        assert status == 200 and daemon.metric("vaultpki_vault_up") == 1
        assert daemon.stop() == 0
        daemon.wait_for(msg("stopped"), 10)

    # Every certificate Vault minted is one the daemon wrote (the first pass's and each renewal's): none twice.
    written = [serial_int(str(e["serial"])) for e in daemon.events if msg("renewed")(e)]
    assert len(written) >= 2 and len(set(written)) == len(written)
    assert minted(cluster) - before == set(written)
    verified = run_cli(["--config", str(config), "verify"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --------------------------------------------------------------------------- sealed


@pytest.fixture
def sealable(tmp_path: Path) -> Iterator[PersistentOpenBao]:
    (tmp_path / "bao").mkdir()
    with PersistentOpenBao(tmp_path / "bao") as server:
        yield server


def health(addr: str) -> int | None:
    session = requests.Session()
    session.trust_env = False
    try:
        return session.get(f"{addr}/v1/sys/health", timeout=2).status_code
    except requests.RequestException:
        return None


@pytest.mark.slow
def test_sealed_vault_daemon_stays_up_untouched_then_renews_after_unseal(sealable: PersistentOpenBao,
                                                                        tmp_path: Path) -> None:
    config, certs = standard_sync_config(sealable.addr, sealable.root_token, "sealed", tmp_path)
    with SyncDaemon(config, {"VAULT_TOKEN": sealable.root_token}) as daemon:
        daemon.wait_for(msg("pass complete"), 30)
        first = serial_of(certs / "node.crt")
        before = tree(certs)
        renew_at = daemon.metric('vaultpki_certificate_renewal_timestamp_seconds{file="node.crt"}')
        assert renew_at is not None

        sealable.api("PUT", "/v1/sys/seal")
        assert time.time() < renew_at                                   # sealed before the renewal is due
        assert health(sealable.addr) == 503

        event = daemon.wait_for(msg("pass failed; retrying"), 60)       # the renewal time came while sealed
        assert "node.crt" in event["error"] and "sealed" in event["error"], event
        daemon.wait_for(msg("pass failed; retrying"), 15)               # ...and it keeps trying, with backoff
        assert daemon.proc.poll() is None                               # never exits because Vault is sealed
        assert tree(certs) == before                                    # files untouched while sealed
        status, body = daemon.get("/healthz")
        assert status == 503 and '"node.crt"' in body
        assert daemon.metric("vaultpki_vault_up") == 0

        key = json.loads(sealable.keys_path.read_text())["unseal_key"]
        assert sealable.api("PUT", "/v1/sys/unseal", {"key": key})["sealed"] is False
        back = time.monotonic()
        daemon.wait_for(msg("renewed"), 30)
        assert time.monotonic() - back < ONE_STEP
        daemon.wait_for(lambda e: msg("pass complete")(e) and e.get("failures") == 0, 10)
        assert serial_of(certs / "node.crt") != first
        status, _ = daemon.get("/healthz")
        assert status == 200 and daemon.metric("vaultpki_vault_up") == 1
        assert daemon.stop() == 0
