"""A real nginx (Debian's) serving a webroot on loopback, as the web server an http-01 webroot lives under.

Its configuration, pid file, logs and temp directories are private to the test (``-p``, ``-e``); its workers
run as ``nobody``, so a challenge file only an owner could read is a 403, as on a real server. Stopped by
its pid. Missing nginx fails the test with the apt-get line, never skips it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Nginx", "nginx_server"]

INSTALL = "apt-get install nginx"


def find_nginx() -> str:
    for path in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if path and Path(path).exists():
            return path
    pytest.fail(f"nginx is missing: {INSTALL}", pytrace=False)


@dataclass
class Nginx:
    prefix: Path
    webroot: Path
    port: int

    def log_tail(self, name: str = "error.log") -> str:
        try:
            return " | ".join((self.prefix / name).read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def access_log(self) -> str:
        try:
            return (self.prefix / "access.log").read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def nginx_server(port: int = 80, address: str = "127.0.0.1", timeout: float = 15.0) -> Iterator[Nginx]:
    nginx = find_nginx()
    prefix = Path(tempfile.mkdtemp(prefix="vaultpki-nginx-"))
    webroot = Path(tempfile.mkdtemp(prefix="vaultpki-webroot-"))
    webroot.chmod(0o755)                     # the workers (nobody) walk into it, as into any document root
    conf = prefix / "nginx.conf"
    temps = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(
        "user nobody nogroup;\nworker_processes 1;\ndaemon off;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n{temps}\n"
        "    default_type text/plain;\n"
        f"    server {{\n        listen {address}:{port};\n        root {webroot};\n"
        "        location / { try_files $uri =404; }\n    }\n}\n"
    )
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Nginx(prefix, webroot, port)
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"nginx exited with {proc.returncode}: {err.strip()} {server.log_tail()}")
            try:
                with socket.create_connection((address, port), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"nginx did not listen on {address}:{port} in {timeout:.0f}s: {server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(prefix, ignore_errors=True)
        shutil.rmtree(webroot, ignore_errors=True)
