"""A persistent OpenBao server for outage tests: stop it, start it again, its PKI is still there.

The dev server (``vaultpki.dev.devserver``) keeps everything in memory, so it cannot
play "Vault was down for a while and came back". This one is a real, sealed-at-boot
server with on-disk storage. The first :meth:`PersistentOpenBao.start` initialises it
(one unseal key, threshold 1) and every start unseals it, all through the HTTP API.

Things this module deals with (and why):

* OpenBao 2.7 removed the ``file`` storage backend (openbao/openbao#2846) and
  rejects ``disable_mlock``. ``pebbledb`` is its single-node, non-HA on-disk
  backend: no Raft, no leader election, active within milliseconds of unseal.
* Once unsealed, the server opens a cluster listener on *port + 1* unless told
  otherwise, which can collide with another test's port. ``disable_clustering``
  keeps it from opening one.
* A sealed or uninitialised server answers ``/v1/sys/health`` with 503 or 501, so
  "answers HTTP at all" means up; "200" means unsealed and active.
* The unseal key and root token are kept in memory and in ``init.json`` (0600)
  under *base_dir*, so a second instance on the same directory can take over.
* The server gets a private HOME and no VAULT_*/BAO_* variables, and the HTTP
  client ignores proxy variables: loopback requests must never go through a proxy.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from vaultpki.dev.devserver import find_bao, free_port

__all__ = ["PersistentOpenBao"]

#: How long one HTTP request to the server may take while it comes up.
_REQUEST_TIMEOUT = 2.0
_POLL = 0.02


def refuses_connections(port: int) -> bool:
    """Nothing listens on loopback ``port`` any more (a stopped or killed server has really gone)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def launch_bao(config: Path, home: Path, cwd: Path, log_path: Path, banner: str) -> subprocess.Popen[bytes]:
    """``bao server -config=...`` with a private HOME, no VAULT_*/BAO_* variables, appending to its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(home)
    with open(log_path, "ab") as log:
        log.write(f"--- {banner} ---\n".encode())
        log.flush()
        return subprocess.Popen([find_bao(), "server", f"-config={config}"], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


class PersistentOpenBao:
    """``bao server`` with pebbledb storage under *base_dir*, on 127.0.0.1:*port*, plain HTTP.

    Layout under *base_dir*: ``bao.hcl`` (config), ``data/`` (storage), ``home/``
    (the server's HOME), ``bao.log`` (stdout+stderr of every start, appended) and
    ``init.json`` (unseal key and root token, mode 0600).
    """

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port if port is not None else free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.config_path = self.base_dir / "bao.hcl"
        self.data_dir = self.base_dir / "data"
        self.home_dir = self.base_dir / "home"
        self.log_path = self.base_dir / "bao.log"
        self.keys_path = self.base_dir / "init.json"
        self._unseal_key: str | None = None
        self._root_token: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # no HTTP(S)_PROXY, no .netrc

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> PersistentOpenBao:
        """Start unless already running; ``__exit__`` always stops (the data stays)."""
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> PersistentOpenBao:
        """Launch the server, initialise it the first time, unseal it, and wait until it is active.

        Raises RuntimeError with the log tail if it is not active within *timeout*
        seconds; a half-started server is stopped first, so nothing is leaked.
        """
        if self.running:
            raise RuntimeError(f"OpenBao on {self.addr} is already running (pid {self.pid})")
        deadline = time.monotonic() + timeout
        self._prepare()
        self._proc = launch_bao(self.config_path, self.home_dir, self.base_dir, self.log_path,
                                f"tests/support/openbao.py: starting on {self.addr}")
        atexit.register(self.stop)
        try:
            self._wait(deadline, "answer HTTP", lambda: self._health() is not None)
            if not self._get("/v1/sys/init")["initialized"]:
                self._initialise()
            self._unseal()
            self._wait(deadline, "become active after unseal", lambda: self._health() == 200)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to *timeout*, then SIGKILL. Safe to call repeatedly or before start()."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, timeout: float = 30.0) -> PersistentOpenBao:
        self.stop()
        return self.start(timeout)

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("OpenBao is not running")
        return self._proc.pid

    @property
    def root_token(self) -> str:
        """The root token from the first initialisation (this instance's, or one before it on *base_dir*)."""
        self._load_keys()
        if self._root_token is None:
            raise RuntimeError(f"OpenBao under {self.base_dir} has not been initialised yet: start() it first")
        return self._root_token

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request as root, e.g. ``api("POST", "/v1/sys/mounts/pki", {"type": "pki"})``; {} for 204."""
        response = self._http.request(method, self.addr + path, json=body, timeout=10,
                                      headers={"X-Vault-Token": self.root_token})
        if not response.ok:
            raise RuntimeError(f"{method} {path} -> HTTP {response.status_code}: {response.text.strip()}")
        return dict(response.json()) if response.content else {}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    def _prepare(self) -> None:
        if not self.base_dir.is_dir():
            raise RuntimeError(f"base_dir {self.base_dir} does not exist")
        for directory in (self.data_dir, self.home_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
        # json.dumps gives HCL-compatible double-quoted strings.
        self.config_path.write_text(
            f'storage "pebbledb" {{\n  path = {json.dumps(str(self.data_dir))}\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\n'
            "disable_clustering = true\n"
            "ui = false\n",
            encoding="utf-8",
        )

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc is not None else None
                raise RuntimeError(f"bao server exited with {code} before it could {what}; "
                                   f"log tail ({self.log_path}):\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"OpenBao on {self.addr} did not {what} in time; "
                                   f"log tail ({self.log_path}):\n{self.log_tail()}")
            time.sleep(_POLL)

    def _health(self) -> int | None:
        """HTTP status of /v1/sys/health (200 active, 429 standby, 501 uninitialised, 503 sealed); None if no answer."""
        try:
            return self._http.get(f"{self.addr}/v1/sys/health", timeout=_REQUEST_TIMEOUT).status_code
        except requests.RequestException:
            return None

    def _get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        response = self._http.request(method, self.addr + path, json=body, timeout=10)
        if not response.ok:
            raise RuntimeError(f"{method} {path} -> HTTP {response.status_code}: {response.text.strip()}\n"
                               f"log tail ({self.log_path}):\n{self.log_tail()}")
        return dict(response.json())

    def _initialise(self) -> None:
        answer = self._call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self._unseal_key, self._root_token = answer["keys"][0], answer["root_token"]
        temporary = self.keys_path.with_name(self.keys_path.name + ".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"unseal_key": self._unseal_key, "root_token": self._root_token}, handle)
        os.replace(temporary, self.keys_path)

    def _load_keys(self) -> None:
        if self._unseal_key is not None or not self.keys_path.exists():
            return
        saved = json.loads(self.keys_path.read_text(encoding="utf-8"))
        self._unseal_key, self._root_token = saved["unseal_key"], saved["root_token"]

    def _unseal(self) -> None:
        self._load_keys()
        if self._unseal_key is None:
            raise RuntimeError(f"OpenBao under {self.base_dir} is initialised but {self.keys_path} is missing: "
                               "cannot unseal")
        answer = self._call("PUT", "/v1/sys/unseal", {"key": self._unseal_key})
        if answer.get("sealed") is not False:
            raise RuntimeError(f"OpenBao is still sealed after the unseal key was given: {answer}")
