"""A database node as docs/deployment.md sets one up, in a container that boots a real systemd.

What comes from the repository, unchanged: vaultpki installed by docs/install.md's ``install-venv``
block (``tests/system/conftest.py``, once per session, as a layer under every container), the shipped
units from ``deploy/systemd/`` byte for byte, and the steps of deployment.md's "Running it under
systemd", run word for word (its marked ``sh`` blocks, and its ``unit-config`` example as the
configuration). What a test must change is said where it is changed: a few configuration values (the
test's Vault, what the database stand-in needs, short lifetimes) and a drop-in for the unit.

The database is PostgreSQL 15 standing in for CockroachDB (which cannot be installed here), as
``cockroach.service`` running as the ``cockroach`` user, so the shipped unit's ``User=``, ``Before=``
and ``ReadWritePaths=`` fit it as they are: it serves TLS from the certs-dir vaultpki writes and
re-reads its files on SIGHUP (see ``tests/support/postgres.py`` for why it is a faithful stand-in).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
from cryptography import x509

from tests.support.doc_blocks import doc_block
from tests.support.nspawn import Container
from tests.support.postgres import SSL_REQUEST_CODE, find_psql
from vaultpki.config import dumps
from vaultpki.dev.devserver import DevServer, free_port

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
CERTS = "/var/lib/cockroach/certs"           # the shipped unit's ReadWritePaths=, and the docs' certs_dir
SETUP = "/root/setup"                        # the folder the docs' steps run in: what an operator copied to the node
PG_DATA = "/var/lib/cockroach/pgdata"
PG_BIN = "/usr/lib/postgresql/15/bin"
# The SQL user the host connects as: standard mode's node.crt has CN=node and serves as a client certificate too.
SQL_USER = "node"
PENDING = Path(".vaultpki") / "pending-reload.json"     # in the certs-dir: a reload vaultpki still owes


@dataclass
class Vault:
    """The test's OpenBao (TLS, on the host's loopback), provisioned as docs/vault-setup.md says, and one
    node's AppRole credentials."""

    server: DevServer
    admin: hvac.Client
    node: str
    role_id: str
    secret_id: str
    mount: str

    def serials(self) -> set[str]:
        """Every serial the node mount has issued: Vault's own record, for "nothing issued" checks."""
        listed = self.admin.list(f"{self.mount}/certs")          # None while the mount has issued nothing
        return set(listed["data"]["keys"]) if listed else set()


def database_unit(port: int) -> str:
    """PostgreSQL as cockroach.service: TLS from the certs-dir, its log in the journal, reloaded by SIGHUP."""
    settings = {
        "listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": "/run/cockroach",
        "ssl": "on", "ssl_cert_file": f"{CERTS}/node.crt", "ssl_key_file": f"{CERTS}/node.key",
        "ssl_ca_file": f"{CERTS}/ca.crt", "log_connections": "on",
        "fsync": "off", "shared_buffers": "16MB", "max_connections": "20",
    }
    options = " ".join(f"-c {k}={v}" for k, v in settings.items())
    return (
        "[Unit]\n"
        "Description=PostgreSQL standing in for CockroachDB (tests/system)\n"
        "[Service]\n"
        "Type=notify\n"
        "User=cockroach\n"
        "Group=cockroach\n"
        "RuntimeDirectory=cockroach\n"
        f"ExecStart={PG_BIN}/postgres -D {PG_DATA} {options}\n"
        "KillSignal=SIGINT\n"
        "KillMode=mixed\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def drop_in(metrics_port: int, extra: str = "") -> str:
    """What the tests change in vaultpki-sync.service, and nothing else.

    The container shares the host's network (it reaches the test's OpenBao on the host's loopback), so
    the unit's fixed metrics port would collide with another container or another test run: the same
    command line, on a free port (which the host then reads /healthz on).
    """
    shipped = next(line for line in (UNITS / "vaultpki-sync.service").read_text().splitlines()
                   if line.startswith("ExecStart="))
    moved = shipped.replace("127.0.0.1:9101", f"127.0.0.1:{metrics_port}")
    assert moved != shipped, shipped
    return f"[Service]\nExecStart=\n{moved}\n{extra}"


# What the database stand-in needs changed in the docs' configuration: its process name, and CA files that end
# at the self-signed root (OpenSSL, in PostgreSQL and libpq, takes no intermediate as a trust anchor; Go, in
# CockroachDB, does: see docs/configuration.md, ca_trust).
STAND_IN = {"reload__process": "postgres", "ca_trust": "root"}


def node_config(vault: Vault, **changes: Any) -> str:
    """The docs' ``unit-config`` example, with only the test's Vault address, the stand-in's needs and
    ``changes`` (``table__key`` for a key in a table; None takes a key out) put in."""
    doc = tomllib.loads(doc_block("deployment.md", "unit-config"))
    doc["vault"]["addr"] = vault.server.addr
    for dotted, value in {**STAND_IN, **changes}.items():
        table, _, key = dotted.rpartition("__")
        where = doc.setdefault(table, {}) if table else doc
        if value is None:
            where.pop(key, None)
        else:
            where[key] = value
    return dumps(doc)


class Node:
    """A booted node: ``container``, and the certs-dir as the host sees it (bound in at CERTS)."""

    def __init__(self, container: Container, certs: Path, vault: Vault, pg_port: int, metrics_port: int) -> None:
        self.container = container
        self.certs = certs
        self.vault = vault
        self.pg_port = pg_port
        self.metrics_port = metrics_port

    # --- the journal --------------------------------------------------------------------------------

    def messages(self, unit: str) -> list[str]:
        """Every journal message of ``unit`` so far, in order."""
        out = []
        for entry in self.container.journal("--unit", unit, "--output-fields=MESSAGE"):
            message = entry.get("MESSAGE")
            if isinstance(message, list):          # journald gives non-UTF-8 messages as bytes
                message = bytes(message).decode(errors="replace")
            if isinstance(message, str):
                out.append(message)
        return out

    def events(self, unit: str = "vaultpki-sync.service") -> list[dict[str, Any]]:
        """vaultpki's JSON log lines (the daemon's ``--log-format json``) in ``unit``'s journal."""
        found = []
        for message in self.messages(unit):
            if message.startswith("{"):
                try:
                    found.append(json.loads(message))
                except ValueError:
                    pass
        return found

    def wait_for_event(self, msg: str, after: int, timeout: float, **fields: Any) -> dict[str, Any]:
        """The first daemon event ``msg`` (with ``fields``) after the first ``after`` events; polled."""
        def probe() -> dict[str, Any] | None:
            return next((e for e in self.events()[after:] if e.get("msg") == msg
                         and all(e.get(k) == v for k, v in fields.items())), None)
        found: dict[str, Any] = self.container.wait_for(f"vaultpki event {msg!r} {fields}", probe, timeout)
        return found

    # --- state --------------------------------------------------------------------------------------

    def show(self, unit: str = "vaultpki-sync.service") -> dict[str, str]:
        return self.container.show(unit, "ActiveState", "SubState", "Result", "MainPID", "NRestarts",
                                   "ExecMainStatus", "ExecMainCode")

    def status_json(self) -> dict[str, Any]:
        """``vaultpki status --json`` inside, as the service's user (the docs' "Then" step)."""
        out = self.container.check(["runuser", "-u", "cockroach", "--", "vaultpki", "--config",
                                    "/etc/vaultpki/vaultpki.toml", "status", "--json"])
        doc: dict[str, Any] = json.loads(out)
        return doc

    def healthz(self) -> tuple[int, dict[str, Any]] | None:
        """The daemon's ``/healthz`` from the host (status and JSON), None while nothing listens yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return None

    def uid(self, user: str = "cockroach") -> int:
        return int(self.container.check(["id", "-u", user]).strip())

    # --- the database, from the host ---------------------------------------------------------------

    def served_certificate(self) -> x509.Certificate:
        """The certificate the database serves to a client on the host that checks it fully (chain to
        the certs-dir's ca.crt, host name ``localhost``): PostgreSQL's SSLRequest, then TLS."""
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        with socket.create_connection(("127.0.0.1", self.pg_port), timeout=5) as raw:
            raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
            if raw.recv(1) != b"S":
                raise AssertionError("the database refused TLS")
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def psql(self, query: str = "SELECT current_user") -> subprocess.CompletedProcess[str]:
        """``query`` through libpq from the host: ``sslmode=verify-full``, node.crt as the client certificate."""
        conninfo = (f"host=localhost port={self.pg_port} user={SQL_USER} dbname=postgres sslmode=verify-full "
                    f"sslrootcert={self.certs}/ca.crt sslcert={self.certs}/node.crt sslkey={self.certs}/node.key")
        return subprocess.run([str(find_psql()), "-X", "-w", "-d", conninfo, "-Atc", query], capture_output=True,
                              text=True, timeout=30, check=False, env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"})


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def run_block(container: Container, page: str, name: str) -> None:
    """A marked block of a docs page, word for word, as root in the (not yet booted) tree, in SETUP."""
    done = container.execute(doc_block(page, name), cwd=SETUP)
    assert done.returncode == 0, f"docs/{page} block {name!r} exited {done.returncode}:\n{done.stdout}{done.stderr}"


@contextmanager
def booted_node(rootfs: Path, layer: Path, workdir: Path, vault: Vault, name: str, config: str, *,
                drop_ins: Mapping[str, str] = {}, files: Mapping[str, str] = {}, pre_boot: str = "",
                pg_port: int | None = None) -> Iterator[Node]:
    """A node prepared as the docs say (all but the last step, which starts the service), then booted.

    ``drop_ins`` maps a unit to what the test changes in it (for vaultpki-sync.service, added to the
    metrics port's drop-in); ``files`` are written into the tree (a test's own script, say), and
    ``pre_boot`` is run in it, before it boots. The caller starts the service, usually with the docs'
    ``enable`` block (``start``), so that what the first start does is the test's to look at.
    """
    certs = workdir / name / "certs"
    certs.mkdir(parents=True)
    pg_port, metrics_port = pg_port or free_port(), free_port()
    with Container(rootfs, name, workdir, layers=[layer], binds={certs: CERTS}) as container:
        setup = container.root / SETUP.lstrip("/")
        assert vault.server.ca_cert is not None
        write(setup / "vault-ca.pem", Path(vault.server.ca_cert).read_text())
        write(setup / "vaultpki.toml", config)
        write(setup / "role-id", vault.role_id, 0o600)
        write(setup / "secret-id", vault.secret_id, 0o600)
        for shipped in UNITS.iterdir():                                 # byte for byte, as shipped
            shutil.copyfile(shipped, setup / shipped.name)
        for path, text in files.items():
            write(container.root / path.lstrip("/"), text, 0o755)
        systemd = container.root / "etc/systemd/system"
        write(systemd / "cockroach.service", database_unit(pg_port))
        write(systemd / "vaultpki-sync.service.d/test.conf", drop_in(metrics_port, drop_ins.get("vaultpki-sync.service", "")))
        for unit, text in drop_ins.items():
            if unit != "vaultpki-sync.service":
                write(systemd / f"{unit}.d/test.conf", text)
        # Debian's own cluster would listen on 5432 of the host's network: not this test's database.
        (systemd / "postgresql@15-main.service").symlink_to("/dev/null")
        for block in ("service-user", "config", "credentials"):
            run_block(container, "deployment.md", block)
        initdb = container.execute(
            f"runuser -u cockroach -- {PG_BIN}/initdb -D {PG_DATA} -U {SQL_USER} --auth-local=trust "
            f"--auth-host=reject --no-sync --encoding=UTF8 --locale=C >/dev/null\n"
            f"printf '%s\\n' 'local all all trust' 'hostssl all all 127.0.0.1/32 cert' > {PG_DATA}/pg_hba.conf\n")
        assert initdb.returncode == 0, initdb.stdout + initdb.stderr
        assert sorted(p.name for p in setup.iterdir() if p.name in ("role-id", "secret-id")) == [], \
            "the credentials block leaves no copy of the credentials behind"
        if pre_boot:
            done = container.execute(pre_boot, cwd=SETUP)
            assert done.returncode == 0, done.stdout + done.stderr
        container.boot()
        yield Node(container, certs, vault, pg_port, metrics_port)


def start(node: Node, block: str = "enable") -> subprocess.CompletedProcess[str]:
    """The docs' last step (``enable``, or ``enable-timer``), word for word, in the running container."""
    return node.container.sh(doc_block("deployment.md", block), cwd=SETUP, timeout=120)
