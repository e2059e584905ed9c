"""http-01 (RFC 8555 8.3): the key authorization at ``http://<name>/.well-known/acme-challenge/<token>``.

Two ways to serve it: a listener of our own (``Standalone``: port 80 by default, or another port a load
balancer forwards ``/.well-known/acme-challenge/`` to), running only while the order runs and answering
only the tokens of that order; or files in the document root of a web server that is already there
(``Webroot``), removed after the order together with the directories we had to make.
"""

from __future__ import annotations

import errno
import http.server
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaultpki.acme.challenge import Task, check_token
from vaultpki.acme.problems import AcmeError
from vaultpki.errors import ConfigError

__all__ = ["CHALLENGE_DIR", "Standalone", "Webroot"]

CHALLENGE_DIR = ".well-known/acme-challenge"
_PREFIX = f"/{CHALLENGE_DIR}/"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tokens: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10                      # a client that stalls does not hold a thread for the whole order
    server_version = "vaultpki-acme"
    sys_version = ""

    def do_GET(self) -> None:        # noqa: N802 (the name http.server calls)
        self._answer(body=True)

    def do_HEAD(self) -> None:       # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        found = self.server.tokens.get(path[len(_PREFIX):]) if path.startswith(_PREFIX) else None
        self.send_response(200 if found is not None else 404)
        payload = found if found is not None else b"not found\n"
        self.send_header("Content-Type", "text/plain" if found is not None else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 (http.server's name)
        pass                          # the CA's validation requests are not worth a log line each


class Standalone:
    """A listener on ``address:port`` for the length of one order (``address`` "::" is IPv6 and IPv4)."""

    challenge_type = "http-01"

    def __init__(self, port: int = 80, address: str = "::") -> None:
        if not 0 < port < 65536:
            raise ConfigError(f"http-01 port {port} is not a TCP port")
        self.port = port
        self.address = address
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"http-01 standalone listener on {shown}:{self.port}"

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        tokens = {check_token(t.token): t.key_authorization.encode("ascii") for t in tasks}
        server = self._bind()
        server.tokens = tokens
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="acme-http01", daemon=True)
        self._thread.start()

    def _bind(self) -> _Server:
        try:
            return self._bind_to(self.address)
        except AcmeError:
            # "::" on a host without IPv6 (a container, ipv6.disable=1): IPv4 is all there is to listen on.
            if self.address == "::" and (not socket.has_ipv6 or not _ipv6_works()):
                return self._bind_to("0.0.0.0")
            raise

    def _bind_to(self, address: str) -> _Server:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("_Bound", (_Server,), {"address_family": family, "allow_reuse_address": True})
        try:
            server = server_class((address, self.port), _Handler, bind_and_activate=False)
            try:
                if family == socket.AF_INET6:
                    server.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                server.server_bind()
                server.server_activate()
            except BaseException:
                server.server_close()
                raise
        except OSError as exc:
            where = f"{self.describe()}: cannot listen ({exc.strerror or exc})"
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise ConfigError(f"{where}: ports below 1024 need root or CAP_NET_BIND_SERVICE") from None
            if exc.errno == errno.EADDRINUSE:
                raise AcmeError(f"{where}: another process holds the port (a web server? use webroot)") from None
            raise AcmeError(where) from None
        return server   # type: ignore[no-any-return]   # the class made above is a _Server

    def cleanup(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class Webroot:
    """Files under ``<webroot>/.well-known/acme-challenge/``, which an existing web server serves."""

    challenge_type = "http-01"

    def __init__(self, webroot: Path) -> None:
        self.webroot = webroot
        self._files: list[Path] = []
        self._made_dirs: list[Path] = []

    def describe(self) -> str:
        return f"http-01 webroot {self.webroot}"

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        if not self.webroot.is_dir():
            raise ConfigError(f"{self.describe()}: not a directory")
        directory = self.webroot
        for part in CHALLENGE_DIR.split("/"):
            directory = directory / part
            try:
                os.mkdir(directory, 0o755)
                os.chmod(directory, 0o755)         # the web server's user reads it whatever our umask
                self._made_dirs.append(directory)
            except FileExistsError:
                if directory.is_symlink() or not directory.is_dir():
                    raise AcmeError(f"{self.describe()}: {directory} is not a plain directory") from None
            except OSError as exc:
                raise AcmeError(f"{self.describe()}: cannot make {directory}: {exc.strerror or exc}") from None
        for task in tasks:
            path = directory / check_token(task.token)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                self._files.append(path)
                try:
                    os.fchmod(fd, 0o644)
                    os.write(fd, task.key_authorization.encode("ascii"))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise AcmeError(f"{self.describe()}: cannot write {path}: {exc.strerror or exc}") from None

    def cleanup(self) -> None:
        for path in self._files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for directory in reversed(self._made_dirs):
            try:
                os.rmdir(directory)                # only if empty: a file somebody else put there stays
            except OSError:
                pass
        self._files, self._made_dirs = [], []
