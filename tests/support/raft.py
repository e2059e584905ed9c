"""A real multi-node OpenBao cluster (Integrated Storage / Raft) on loopback, for HA tests.

:class:`RaftCluster` runs *size* ``bao server`` processes on 127.0.0.1, each with
its own API and cluster port, and builds the cluster the way an operator does, all
through the HTTP API: initialise node 0 (one unseal key, threshold 1), unseal it,
wait until it is active, then join every other node to it and unseal them, and wait
until the leader's Raft configuration lists every node as a voter.

Things this module deals with (and why):

* OpenBao 2.7 rejects ``disable_mlock`` and has no ``file`` storage; Raft is its HA
  backend. Raft needs ``cluster_addr``, and its cluster traffic is always TLS (with
  certificates the cluster makes itself), so ``cluster_addr`` is ``https://`` even
  though the API listener is plain HTTP.
* Nodes are joined explicitly (``PUT /v1/sys/storage/raft/join``) rather than with
  ``retry_join`` stanzas: the order of events is then ours, not a background loop's,
  and a failure to join is an HTTP error with a reason instead of a silent retry.
  A restarted node needs no join: its Raft data already knows its peers.
* A node joins as a non-voter and Autopilot promotes it once it has been healthy
  for ``server_stabilization_time`` (10 s by default, checked every
  ``autopilot_reconcile_interval``, also 10 s). The harness sets the first to 1 s
  right after initialisation and the second to 1 s in the config, so ``start()``
  takes ~7 s instead of ~20 s.
* ``performance_multiplier`` scales Raft's timeouts (heartbeat, election, leader
  lease). Left out, OpenBao uses 5 (an explicit 0 is refused at init in 2.7.2:
  "HeartbeatTimeout is too low"). Measured here, from SIGKILL of the active node
  to a new active node: 1.3-4.0 s with 1 (the production recommendation, and this
  harness's default), 18-26 s with OpenBao's default. Pass ``None`` for the latter.
* What a standby does with API requests in OpenBao 2.7.2 (pinned by
  tests/support/test_raft_harness.py):

  - reads are answered by the standby itself, from its Raft replica ("entering
    read-enabled standby mode" in its log), so they may briefly lag a write made
    elsewhere; a mount created a moment ago is "no handler for route" (404) there
    for ~0.1 s;
  - writes are forwarded to the active node over the cluster port (request
    forwarding): the client gets the active node's answer, no redirect;
  - while there is no active node (an election), a write is answered with
    ``307 Temporary Redirect`` to the *dead* leader's ``api_addr``; a client that
    follows it (requests does) gets "connection refused" from that address;
  - ``/v1/sys/health`` is 429 on a standby, 200 on the active node, 503 when sealed;
    ``PUT /v1/sys/seal`` sent to a standby seals that standby only.
* The unseal key and root token live in memory and in ``init.json`` (0600) under
  *base_dir*. Every process gets a private HOME and no VAULT_*/BAO_* variables, and
  the HTTP client ignores proxy variables: loopback must never go through a proxy.
* Nothing may outlive the tests: ``stop()`` is idempotent and registered with
  ``atexit``, and a cluster that fails to come up is stopped before the error is
  raised (with every node's log tail).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from .openbao import launch_bao

__all__ = ["RaftCluster", "RaftNode", "free_ports"]

#: How long one HTTP request may take while nodes come up or fail over.
_REQUEST_TIMEOUT = 2.0
_POLL = 0.05
#: Everything the harness waits for must happen within this many seconds.
DEFAULT_TIMEOUT = 60.0
#: /v1/sys/health status codes (defaults): active, standby, performance standby, sealed, not initialised.
ACTIVE, STANDBY, PERF_STANDBY, SEALED, UNINITIALISED = 200, 429, 473, 503, 501


def free_ports(count: int) -> list[int]:
    """*count* distinct free loopback ports: all sockets are held open together, so none repeats."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class RaftNode:
    """One ``bao server`` of the cluster: its ports, files and process."""

    index: int
    api_port: int
    cluster_port: int
    base_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def node_id(self) -> str:
        return f"node{self.index}"

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def cluster_addr(self) -> str:
        return f"https://127.0.0.1:{self.cluster_port}"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "bao.hcl"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "raft"

    @property
    def home_dir(self) -> Path:
        return self.base_dir / "home"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "bao.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config_text(self, performance_multiplier: int | None) -> str:
        """The node's HCL; *performance_multiplier* None leaves OpenBao's default (5)."""
        # json.dumps gives HCL-compatible double-quoted strings. An explicit "performance_multiplier = 0"
        # is refused at init in 2.7.2 ("HeartbeatTimeout is too low"), so the default is spelled by omission.
        multiplier = f"  performance_multiplier = {performance_multiplier}\n" if performance_multiplier is not None else ""
        return (
            'storage "raft" {\n'
            f"  path = {json.dumps(str(self.data_dir))}\n"
            f'  node_id = "{self.node_id}"\n'
            f"{multiplier}"
            '  autopilot_reconcile_interval = "1s"\n'
            '  autopilot_update_interval = "500ms"\n'
            "}\n"
            'listener "tcp" {\n'
            f'  address = "127.0.0.1:{self.api_port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n'
            "  tls_disable = true\n"
            "}\n"
            f'api_addr = "{self.addr}"\n'
            f'cluster_addr = "{self.cluster_addr}"\n'
            "ui = false\n"
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class RaftCluster:
    """*size* OpenBao nodes with Raft storage under *base_dir*, plain HTTP on 127.0.0.1.

    Layout: ``init.json`` (unseal key and root token, 0600) and one ``nodeN/``
    directory per node with ``bao.hcl``, ``raft/`` (storage), ``home/`` and
    ``bao.log`` (stdout+stderr of every start of that node, appended).
    """

    def __init__(self, base_dir: Path, size: int = 3, *, performance_multiplier: int | None = 1,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(base_dir).absolute()
        self.size = size
        self.performance_multiplier = performance_multiplier
        self.timeout = timeout
        ports = free_ports(2 * size)
        self.nodes = [RaftNode(i, ports[2 * i], ports[2 * i + 1], self.base_dir / f"node{i}") for i in range(size)]
        self.keys_path = self.base_dir / "init.json"
        self._unseal_key: str | None = None
        self._root_token: str | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # no HTTP(S)_PROXY, no .netrc
        self._registered = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RaftCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> RaftCluster:
        """Launch every node, initialise and unseal node 0, join and unseal the rest; wait for N voters.

        Raises RuntimeError with every node's log tail if that does not happen within
        ``timeout`` seconds; whatever was started is stopped first.
        """
        if any(node.running for node in self.nodes):
            raise RuntimeError("the cluster is already (partly) running: stop() it first")
        deadline = time.monotonic() + self.timeout
        try:
            for node in self.nodes:
                self._launch(node)
            first = self.nodes[0]
            self._wait(deadline, "answer HTTP", lambda: all(self.health(n.index) is not None for n in self.nodes))
            if self._request(first, "GET", "/v1/sys/init")["initialized"]:
                raise RuntimeError(f"{self.base_dir} already holds an initialised cluster: RaftCluster builds a new one")
            self._initialise(first)
            self._unseal(first)
            self._wait(deadline, "make node0 active", lambda: self.health(0) == ACTIVE)
            # Promote joined nodes to voters after 1 s of health instead of Autopilot's default 10 s.
            self.api(0, "POST", "/v1/sys/storage/raft/autopilot/configuration", {"server_stabilization_time": "1s"})
            for node in self.nodes[1:]:
                joined = self._request(node, "PUT", "/v1/sys/storage/raft/join", {"leader_api_addr": first.addr})
                if joined.get("joined") is not True:
                    raise RuntimeError(f"{node.node_id} did not join {first.addr}: {joined}")
                self._unseal(node)
            self._wait(deadline, f"list {self.size} voters in the Raft configuration", self._all_voters)
            self._wait(deadline, "make every other node a standby",
                       lambda: all(self.health(n.index) in (STANDBY, PERF_STANDBY) for n in self.nodes[1:]))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node at once, wait up to *timeout*, then SIGKILL. Idempotent; safe before start().

        All nodes are signalled together: stopping them one by one would make the last
        ones lose quorum and spend their shutdown waiting for a leader.
        """
        procs = [node.proc for node in self.nodes if node.proc is not None]
        for node in self.nodes:
            node.proc = None
        if self._registered:
            atexit.unregister(self.stop)
            self._registered = False
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, i: int) -> None:
        """SIGKILL node *i* (a crash: no step-down, no seal) and reap it."""
        node = self.nodes[i]
        proc, node.proc = node.proc, None
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{node.node_id} is not running")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, i: int) -> None:
        """Start node *i* again on its old ports and storage, unseal it, and wait until it is active or a standby."""
        node = self.nodes[i]
        if node.running:
            raise RuntimeError(f"{node.node_id} is still running: kill() it first")
        deadline = time.monotonic() + self.timeout
        try:
            self._launch(node)
            self._wait(deadline, f"make {node.node_id} answer HTTP", lambda: self.health(i) is not None)
            self._unseal(node)
            self._wait(deadline, f"make {node.node_id} active or a standby",
                       lambda: self.health(i) in (ACTIVE, STANDBY, PERF_STANDBY))
        except BaseException:
            self._stop_node(node)
            raise

    def heal(self) -> int:
        """Restart every node that is down, unseal every sealed one, and wait for one active node and
        standbys everywhere else; the active node's index. For fixtures shared by tests that kill nodes."""
        for node in self.nodes:
            if not node.running:
                self.restart(node.index)
            elif self.health(node.index) == SEALED:
                self.unseal(node.index)
        active = self.wait_for_active()
        self._wait(time.monotonic() + self.timeout, "make every other node a standby",
                   lambda: all(self.health(n.index) in (STANDBY, PERF_STANDBY) for n in self.nodes if n.index != active))
        return active

    def seal(self, i: int) -> None:
        """Seal node *i* (``PUT /v1/sys/seal`` as root) and wait until its health says sealed."""
        self.api(i, "PUT", "/v1/sys/seal")
        self._wait(time.monotonic() + self.timeout, f"seal node{i}", lambda: self.health(i) == SEALED)

    def unseal(self, i: int) -> None:
        """Give node *i* the unseal key and wait until it is active or a standby."""
        self._unseal(self.nodes[i])
        self._wait(time.monotonic() + self.timeout, f"make node{i} active or a standby after unseal",
                   lambda: self.health(i) in (ACTIVE, STANDBY, PERF_STANDBY))

    # ------------------------------------------------------------------ state

    @property
    def addrs(self) -> list[str]:
        return [node.addr for node in self.nodes]

    @property
    def root_token(self) -> str:
        if self._root_token is None:
            raise RuntimeError(f"the cluster under {self.base_dir} has not been initialised yet: start() it first")
        return self._root_token

    def health(self, i: int) -> int | None:
        """HTTP status of node *i*'s /v1/sys/health (200 active, 429 standby, 503 sealed, 501 uninitialised); None: no answer."""
        try:
            return self._http.get(f"{self.nodes[i].addr}/v1/sys/health", timeout=_REQUEST_TIMEOUT).status_code
        except requests.RequestException:
            return None

    def active_indexes(self) -> list[int]:
        """Every running node whose /v1/sys/health says active (200): one in a healthy cluster, none during an election."""
        return [node.index for node in self.nodes if node.running and self.health(node.index) == ACTIVE]

    def active_index(self) -> int:
        """The one active node; RuntimeError if there is none or more than one."""
        active = self.active_indexes()
        if len(active) != 1:
            raise RuntimeError(f"expected exactly one active node, found {active}: {self._states()}")
        return active[0]

    def wait_for_active(self, timeout: float | None = None, *, other_than: int | None = None) -> int:
        """Poll until exactly one node (not *other_than*) is active; its index."""
        found: list[int] = []

        def one() -> bool:
            found[:] = self.active_indexes()
            return len(found) == 1 and found[0] != other_than
        self._wait(time.monotonic() + (self.timeout if timeout is None else timeout),
                   "elect an active node" + (f" other than node{other_than}" if other_than is not None else ""), one)
        return found[0]

    def raft_servers(self, i: int | None = None) -> list[dict[str, Any]]:
        """The Raft configuration's server list (node_id, address, leader, voter), as node *i* (default: the active one) sees it."""
        index = self.active_index() if i is None else i
        return list(self.api(index, "GET", "/v1/sys/storage/raft/configuration")["data"]["config"]["servers"])

    def api(self, i: int, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request as root to node *i*, e.g. ``api(0, "GET", "/v1/sys/leader")``; {} for 204."""
        return self._request(self.nodes[i], method, path, body, token=self.root_token)

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {node.node_id} ({node.log_path}):\n{node.log_tail(lines)}" for node in self.nodes)

    def pids(self) -> Iterator[int]:
        for node in self.nodes:
            if node.proc is not None and node.running:
                yield node.proc.pid

    # ------------------------------------------------------------------ internals

    def _launch(self, node: RaftNode) -> None:
        node.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (node.data_dir, node.home_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
        node.config_path.write_text(node.config_text(self.performance_multiplier), encoding="utf-8")
        node.proc = launch_bao(node.config_path, node.home_dir, node.base_dir, node.log_path,
                               f"tests/support/raft.py: starting {node.node_id} on {node.addr}")
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True

    def _stop_node(self, node: RaftNode) -> None:
        proc, node.proc = node.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _states(self) -> dict[str, int | str | None]:
        return {n.node_id: (self.health(n.index) if n.running else "down") for n in self.nodes}

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        """Poll *ready*; a node that exits on its own (not kill()ed) or the deadline is a RuntimeError with log tails."""
        while not ready():
            dead = [n for n in self.nodes if n.proc is not None and n.proc.poll() is not None]
            if dead:
                codes = {n.node_id: n.proc.returncode for n in dead if n.proc is not None}
                raise RuntimeError(f"bao server exited ({codes}) before the cluster could {what}; "
                                   f"log tails:\n{self.log_tails()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the OpenBao cluster did not {what} in time; node health {self._states()}; "
                                   f"log tails:\n{self.log_tails()}")
            time.sleep(_POLL)

    def _request(self, node: RaftNode, method: str, path: str, body: dict[str, Any] | None = None,
                 token: str | None = None) -> dict[str, Any]:
        headers = {"X-Vault-Token": token} if token else {}
        response = self._http.request(method, node.addr + path, json=body, timeout=10, headers=headers,
                                      allow_redirects=False)
        if not response.ok or response.is_redirect:
            raise RuntimeError(f"{method} {node.addr}{path} -> HTTP {response.status_code}: {response.text.strip()}\n"
                               f"log tail ({node.log_path}):\n{node.log_tail()}")
        return dict(response.json()) if response.content else {}

    def _initialise(self, node: RaftNode) -> None:
        answer = self._request(node, "PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self._unseal_key, self._root_token = answer["keys"][0], answer["root_token"]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.keys_path.with_name(self.keys_path.name + ".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"unseal_key": self._unseal_key, "root_token": self._root_token}, handle)
        os.replace(temporary, self.keys_path)

    def _unseal(self, node: RaftNode) -> None:
        if self._unseal_key is None:
            raise RuntimeError("the cluster has not been initialised: no unseal key")
        answer = self._request(node, "PUT", "/v1/sys/unseal", {"key": self._unseal_key})
        # A node joining with a Shamir seal reports sealed=true until the join completes; the callers
        # wait for the health state they need, so only a refused key is an error here.
        if "sealed" not in answer:
            raise RuntimeError(f"{node.node_id} did not accept the unseal key: {answer}")

    def _all_voters(self) -> bool:
        try:
            servers = self.raft_servers(0)
        except RuntimeError:
            return False
        voters = {s["node_id"] for s in servers if s.get("voter")}
        return voters == {n.node_id for n in self.nodes}
