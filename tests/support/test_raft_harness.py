"""Tests for tests/support/raft.py against the real ``bao`` binary.

They prove what the HA tests rely on: three voters and exactly one active node;
a standby that serves reads itself and forwards writes; a killed active node
replaced by an election within a bounded time (and what a standby answers in the
meantime); a killed node that comes back as a standby and catches up; sealing one
node; and a cluster that cannot come up failing loudly without leaving a process.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from .openbao import refuses_connections
from .raft import ACTIVE, SEALED, STANDBY, RaftCluster

pytestmark = pytest.mark.integration  # real OpenBao servers

#: Harness default (performance_multiplier 1): elections measured at 1.3-4.0 s; allow generously more.
ELECTION_BOUND = 20.0


def servers_of(cluster: RaftCluster) -> list[int]:
    """Pids of every process started with one of this cluster's config files."""
    configs = {f"-config={node.config_path}" for node in cluster.nodes}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if configs & set(proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def poll(what: str, ready: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until *ready* holds; AssertionError after *timeout*."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
def test_cluster_elects_again_after_the_active_node_is_killed_and_the_node_rejoins(tmp_path: Path) -> None:
    cluster = RaftCluster(tmp_path)
    s = http()
    try:
        cluster.start()
        root = {"X-Vault-Token": cluster.root_token}
        assert sorted(servers_of(cluster)) == sorted(cluster.pids())
        assert len(set(cluster.addrs)) == 3
        ports = [p for n in cluster.nodes for p in (n.api_port, n.cluster_port)]
        assert len(set(ports)) == 6

        servers = cluster.raft_servers()
        assert sorted(srv["node_id"] for srv in servers) == ["node0", "node1", "node2"]
        assert all(srv["voter"] for srv in servers)
        assert [srv["node_id"] for srv in servers if srv["leader"]] == ["node0"]
        assert cluster.active_indexes() == [0] and cluster.active_index() == 0
        assert [cluster.health(i) for i in range(3)] == [ACTIVE, STANDBY, STANDBY]

        # A standby forwards writes (no redirect) and serves reads from its own replica.
        answer = s.post(f"{cluster.addrs[1]}/v1/sys/mounts/kv", json={"type": "kv"}, headers=root,
                        allow_redirects=False, timeout=10)
        assert answer.status_code == 204, answer.text

        def put_on(i: int, value: str) -> int:
            return s.put(f"{cluster.addrs[i]}/v1/kv/probe", json={"v": value}, headers=root,
                         allow_redirects=False, timeout=10).status_code

        def read_on(i: int) -> str | None:
            got = s.get(f"{cluster.addrs[i]}/v1/kv/probe", headers=root, allow_redirects=False, timeout=10)
            return str(got.json()["data"]["v"]) if got.status_code == 200 else None

        poll("standby 1 knows the new mount", lambda: put_on(1, "via standby") == 204)
        poll("standby 2 reads what standby 1 wrote", lambda: read_on(2) == "via standby")
        assert read_on(0) == "via standby"

        # Sealing a standby seals that node only.
        cluster.seal(2)
        assert [cluster.health(i) for i in range(3)] == [ACTIVE, STANDBY, SEALED]
        cluster.unseal(2)
        assert cluster.health(2) == STANDBY

        cluster.kill(0)
        killed_at = time.monotonic()
        assert refuses_connections(cluster.nodes[0].api_port)
        # No active node yet: a standby redirects writes to the dead leader's api_addr.
        during = s.put(f"{cluster.addrs[1]}/v1/kv/probe", json={"v": "during"}, headers=root,
                       allow_redirects=False, timeout=10)
        assert during.status_code == 307, during.text
        assert during.headers["Location"] == f"{cluster.addrs[0]}/v1/kv/probe"

        new = cluster.wait_for_active(ELECTION_BOUND, other_than=0)
        elapsed = time.monotonic() - killed_at
        assert new in (1, 2) and elapsed < ELECTION_BOUND
        assert cluster.active_index() == new
        other = 3 - new
        assert cluster.health(other) == STANDBY
        poll("a standby forwards writes to the new active node", lambda: put_on(other, "while node0 is down") == 204)

        cluster.restart(0)
        assert cluster.health(0) == STANDBY
        assert cluster.active_index() == new                      # a returning node does not disturb the leader
        servers = cluster.raft_servers()
        assert sorted(srv["node_id"] for srv in servers if srv["voter"]) == ["node0", "node1", "node2"]
        assert [srv["node_id"] for srv in servers if srv["leader"]] == [f"node{new}"]
        # node0 serves reads itself, so this proves it caught up with what was written while it was down.
        poll("node0 catches up", lambda: read_on(0) == "while node0 is down")
        assert "starting node0" in cluster.nodes[0].log_path.read_text()
        assert cluster.nodes[0].log_path.read_text().count("--- tests/support/raft.py") == 2
    finally:
        cluster.stop()
    cluster.stop()  # idempotent
    assert servers_of(cluster) == []
    assert all(refuses_connections(n.api_port) for n in cluster.nodes)
    assert list(cluster.pids()) == []


def test_a_node_that_cannot_listen_fails_with_log_tails_and_leaves_nothing(tmp_path: Path) -> None:
    cluster = RaftCluster(tmp_path)
    cluster.stop()  # safe before start
    with socket.create_server(("127.0.0.1", cluster.nodes[1].api_port)):
        with pytest.raises(RuntimeError, match="bao server exited") as caught:
            cluster.start()
    assert "address already in use" in str(caught.value)
    assert "--- node1" in str(caught.value)
    assert servers_of(cluster) == []
    assert not any(node.running for node in cluster.nodes)
    with pytest.raises(RuntimeError, match="has not been initialised yet"):
        _ = cluster.root_token


def test_kill_and_restart_refuse_the_wrong_state(tmp_path: Path) -> None:
    with RaftCluster(tmp_path, size=1) as cluster:
        assert cluster.active_index() == 0
        with pytest.raises(RuntimeError, match="still running"):
            cluster.restart(0)
        cluster.kill(0)
        with pytest.raises(RuntimeError, match="not running"):
            cluster.kill(0)
        cluster.restart(0)                      # a single node elects itself again
        assert cluster.wait_for_active(ELECTION_BOUND) == 0
    assert servers_of(cluster) == []
