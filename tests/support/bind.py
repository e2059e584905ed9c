"""A real BIND 9 (Debian's ``named``) on loopback: one primary zone that takes TSIG-signed dynamic updates.

Started in the foreground (``named -g``) as a test process, with its configuration, zone, journal and pid
file in a private directory, no rndc channel, no recursion; stopped by its pid. Missing ``named`` fails the
test with the apt-get line, never skips it.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from vaultpki.dev.devserver import free_port

__all__ = ["Bind", "bind_server", "find_named"]

INSTALL = "apt-get install bind9 bind9-dnsutils"
KEY_NAME = "acme-update."


def find_named() -> str:
    for path in (shutil.which("named"), "/usr/sbin/named"):
        if path and Path(path).exists():
            return path
    pytest.fail(f"BIND's named is missing: {INSTALL}", pytrace=False)


def find_nsupdate() -> str:
    found = shutil.which("nsupdate")
    if not found:
        pytest.fail(f"nsupdate is missing: {INSTALL}", pytrace=False)
    return found


@dataclass
class Bind:
    directory: Path
    zone: str
    port: int
    secret: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secret_file(self) -> Path:
        return self.directory / "tsig.secret"

    @property
    def key_file(self) -> Path:
        """The key in BIND's own syntax, for ``nsupdate -k``."""
        return self.directory / "tsig.key"

    def txt(self, name: str) -> set[str]:
        """The TXT strings the server holds at *name* now."""
        response = dns.query.udp(dns.message.make_query(name, dns.rdatatype.TXT), "127.0.0.1", port=self.port, timeout=3)
        return {b"".join(r.strings).decode() for rrset in response.answer for r in rrset if rrset.rdtype == dns.rdatatype.TXT}

    def log_tail(self) -> str:
        try:
            return " | ".join((self.directory / "named.log").read_text(errors="replace").splitlines()[-8:])
        except OSError:
            return "(no log)"


def _configure(directory: Path, zone: str, port: int, secret: str) -> Path:
    key = f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
    (directory / "tsig.key").write_text(key)
    (directory / "tsig.secret").write_text(secret + "\n")
    (directory / "tsig.secret").chmod(0o600)
    (directory / f"{zone}.zone").write_text(
        "$TTL 60\n"
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 60\n"
        f"@ IN NS ns1.{zone}.\n"
        "ns1 IN A 127.0.0.1\n"
        "console IN A 127.0.0.1\n"
    )
    conf = directory / "named.conf"
    conf.write_text(
        f"options {{\n  directory \"{directory}\";\n  pid-file \"{directory}/named.pid\";\n"
        f"  session-keyfile \"{directory}/session.key\";\n  managed-keys-directory \"{directory}\";\n"
        f"  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
        "  recursion no;\n  dnssec-validation no;\n  allow-query { any; };\n  notify no;\n};\n"
        "controls { };\n"
        + key
        + f"zone \"{zone}\" {{\n  type primary;\n  file \"{directory}/{zone}.zone\";\n"
        f"  journal \"{directory}/{zone}.jnl\";\n  allow-update {{ key \"{KEY_NAME}\"; }};\n}};\n"
    )
    return conf


@contextmanager
def bind_server(zone: str = "acme.test", timeout: float = 20.0) -> Iterator[Bind]:
    named = find_named()
    directory = Path(tempfile.mkdtemp(prefix="vaultpki-bind-"))
    port = free_port()
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    conf = _configure(directory, zone, port, secret)
    server = Bind(directory, zone, port, secret)
    log = open(directory / "named.log", "wb")
    try:
        server.proc = subprocess.Popen([named, "-g", "-4", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"named exited with {server.proc.returncode}: {server.log_tail()}")
            try:
                response = dns.query.udp(dns.message.make_query(zone, dns.rdatatype.SOA), "127.0.0.1", port=port,
                                         timeout=0.5)
                if response.answer:
                    break
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"named did not answer for {zone} in {timeout:.0f}s: {server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
