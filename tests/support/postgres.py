"""Throwaway PostgreSQL server used as a stand-in TLS consumer in integration tests.

CockroachDB cannot be installed in the test environment, so integration tests
point a real PostgreSQL 15 server at the certificates ``vaultpki`` writes.
PostgreSQL is a faithful stand-in for the parts that matter to us:

* ``hostssl ... cert`` authentication maps the client certificate's CN to the
  SQL user, exactly like CockroachDB's ``client.<user>.crt`` convention, so a
  wrong CN, an unknown user or a certificate from a foreign CA is rejected;
* the postmaster re-reads ``ssl_cert_file``/``ssl_key_file``/``ssl_ca_file`` on
  SIGHUP, so certificate rotation can be checked by looking at which
  certificate the server serves after :meth:`PostgresServer.reload`.

Constraints this module deals with (and why):

* PostgreSQL refuses to run as root, and the tests run as root, so every
  server-side command goes through ``runuser -u postgres --``.
* The ``postgres`` user must be able to traverse/read the base dir and the
  certificate files.  pytest's ``tmp_path`` lives under a 0700 directory, so use
  :func:`make_shared_tempdir` (or any dir whose whole chain is traversable).
* The server refuses a private key unless it is owned by ``postgres`` with mode
  0600 or less, or owned by root with group ``postgres`` and mode 0640 or less;
  :func:`install_server_key_permissions` applies the former.
* libpq (the client, run as the current user, i.e. root) refuses a client key
  with group/world access: mode 0600 or less, or 0640 or less if root-owned.
  Keep client keys at 0600.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cryptography import x509

__all__ = [
    "PG_USER",
    "PostgresServer",
    "find_bindir",
    "find_psql",
    "free_port",
    "install_server_key_permissions",
    "make_shared_tempdir",
]

#: OS account the server runs as (Debian's package creates it).
PG_USER = "postgres"

#: Magic request code PostgreSQL expects before a TLS handshake (1234 << 16 | 5679).
SSL_REQUEST_CODE = 80877103

_MISSING_SERVER = (
    "PostgreSQL server binaries not found: install the Debian package 'postgresql'"
)
_MISSING_CLIENT = "psql not found: install the Debian package 'postgresql-client'"
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# sockaddr_un.sun_path is 108 bytes on Linux, including the NUL terminator.
_MAX_SOCKET_PATH = 107


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The kernel picks the port (bind to port 0), so parallel test runs do not
    collide on a hard-coded port.  There is an unavoidable race between closing
    the probe socket and the server binding it; it is negligible in practice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_BINARIES)


def _version_key(bindir: str) -> tuple[int, float]:
    # /usr/lib/postgresql/<version>/bin: prefer 15 (what CI pins), then newest.
    version = Path(bindir).parent.name
    try:
        number = float(version)
    except ValueError:
        number = -1.0
    return (1 if version == "15" else 0, number)


@functools.cache
def find_bindir() -> Path:
    """Locate the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Debian does not put the server binaries on PATH, so ask ``pg_config
    --bindir`` first (its answer is only trusted if the binaries are actually
    there: with only libpq-dev installed it points at /usr/bin), then fall back
    to ``/usr/lib/postgresql/*/bin`` preferring version 15.

    Raises RuntimeError rather than skipping: a missing PostgreSQL means a
    broken test environment, and silently skipping would hide that.
    """
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server_binaries(Path(out)):
            return Path(out)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True
    )
    for candidate in candidates:
        if _has_server_binaries(Path(candidate)):
            return Path(candidate)
    raise RuntimeError(_MISSING_SERVER)


@functools.cache
def find_psql() -> Path:
    """Locate the ``psql`` client (``/usr/bin/psql`` on Debian)."""
    for candidate in ("/usr/bin/psql", shutil.which("psql")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    try:
        bundled = find_bindir() / "psql"
    except RuntimeError:
        bundled = None
    if bundled is not None and os.access(bundled, os.X_OK):
        return bundled
    raise RuntimeError(_MISSING_CLIENT)


def _runuser() -> str:
    path = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(path, os.X_OK):
        raise RuntimeError("runuser not found: install the Debian package 'util-linux'")
    return path


def _as_pg_user(argv: list[str]) -> list[str]:
    """Wrap *argv* so it runs as the postgres OS user (the server refuses root)."""
    return [_runuser(), "-u", PG_USER, "--", *argv]


def _pg_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        raise RuntimeError(
            f"OS user {PG_USER!r} does not exist: install the Debian package 'postgresql'"
        ) from None
    return entry.pw_uid, entry.pw_gid


def make_shared_tempdir(prefix: str = "pgtest-") -> Path:
    """Create a temp dir the postgres user can traverse and read.

    ``tempfile.mkdtemp`` creates 0700 directories; the server (running as
    ``postgres``) must reach its data dir and the certificate files, so open the
    new dir up to 0755.  The parent (``$TMPDIR``, normally /tmp) must already be
    traversable; that is checked when the server starts.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def install_server_key_permissions(key_file: Path) -> None:
    """Make *key_file* acceptable to the server: owned by postgres, mode 0600.

    PostgreSQL refuses to start (and refuses to reload SSL) with "private key
    file ... has group or world access" otherwise.  The alternative it accepts
    is root:postgres 0640.
    """
    uid, gid = _pg_ids()
    os.chown(key_file, uid, gid)
    os.chmod(key_file, 0o600)


def _quote_conf(value: str) -> str:
    """Quote a postgresql.conf string value (single quotes, doubled to escape)."""
    return "'" + value.replace("'", "''") + "'"


def _quote_conninfo(value: str) -> str:
    """Quote a libpq conninfo value (single quotes; backslash escapes ' and \\)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _clean_env(**extra: str) -> dict[str, str]:
    """Copy of os.environ without PG* variables, so an outer PGHOST/PGSSLMODE
    etc. cannot silently change what a test connects to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


class PostgresServer:
    """A private PostgreSQL cluster serving TLS from caller-provided files.

    Layout under *base_dir*: ``pgdata/`` (cluster), ``run/`` (unix socket),
    ``postgres.log`` (server log, see :attr:`log_file`).

    Authentication: ``local all all trust`` (admin access over the unix socket
    via :meth:`sql`) and ``hostssl all all 127.0.0.1/32 cert``; nothing else, so
    any TCP connection without a valid client certificate whose CN equals the
    requested user is rejected.

    The certificate paths are written into postgresql.conf as given (absolute,
    not resolved), so they may be symlinks into a certs dir: PostgreSQL opens
    them by name, following symlinks, at start and on every reload.
    """

    def __init__(
        self,
        base_dir: Path,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        port: int | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.cert_file = Path(cert_file).absolute()
        self.key_file = Path(key_file).absolute()
        self.ca_file = Path(ca_file).absolute()
        self.port = port if port is not None else free_port()
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "run"
        #: Server log (stderr of the postmaster, written via ``pg_ctl -l``).
        self.log_file = self.base_dir / "postgres.log"
        self.bindir = find_bindir()
        self._running = False
        self._postmaster_pid: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> PostgresServer:
        """Start the server unless already started; ``__exit__`` always stops it.

        So ``with PostgresServer(...) as pg:`` and ``pg.start(); with pg:`` both work.
        """
        if not self._running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """initdb, configure TLS + cert auth, and start the server (waits until ready).

        Raises RuntimeError (with the log tail) if anything fails; a partially
        started server is stopped before raising so nothing is leaked.
        """
        if self._running:
            raise RuntimeError("server already started")
        if os.geteuid() != 0:
            raise RuntimeError("PostgresServer must run as root (it uses runuser)")
        find_psql()  # fail early and clearly if the client is missing
        self._prepare_dirs()
        self._check_access()
        self._initdb()
        self._write_config()
        atexit.register(self.stop)
        self._running = True
        try:
            self._run_pg(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D", str(self.data_dir),
                    "-l", str(self.log_file),
                    "-w", "-t", "30",
                    "start",
                ],
                timeout=60,
                what="pg_ctl start",
            )
            # Remembered so stop() can still kill the server if the data dir
            # (and its postmaster.pid) was deleted under our feet.
            self._postmaster_pid = self._read_pid()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown). Safe to call repeatedly or if never started.

        Falls back to SIGQUIT on the remembered postmaster PID when ``pg_ctl
        stop`` cannot do it (e.g. the base dir was removed before stop()), and
        waits for the postmaster to exit, so no server outlives its test.
        """
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        pid = self._postmaster_pid
        if pid is None:
            try:
                pid = self._read_pid()
            except (OSError, ValueError, IndexError):
                pid = None
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                _as_pg_user(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D", str(self.data_dir),
                        "-m", "fast", "-w", "-t", "30",
                        "stop",
                    ]
                ),
                capture_output=True,
                cwd="/",
                env=_clean_env(LC_ALL="C"),
                stdin=subprocess.DEVNULL,
                timeout=60,
            )
        if pid is not None and self._is_our_postmaster(pid):
            try:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while self._is_our_postmaster(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _is_our_postmaster(self, pid: int) -> bool:
        """True if *pid* is alive and is the postmaster for our data dir
        (guards against signalling a recycled PID)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.data_dir).encode() in cmdline

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pid(self) -> int:
        """PID of the postmaster (first line of ``postmaster.pid``)."""
        if not self._running:
            raise RuntimeError("server is not running")
        return self._read_pid()

    def reload(self) -> None:
        """Send SIGHUP to the postmaster.

        The postmaster re-reads postgresql.conf/pg_hba.conf and re-loads the
        SSL cert, key and CA files.  This is asynchronous: the signal only sets a
        flag that the postmaster's main loop handles shortly afterwards, so poll
        (e.g. :meth:`served_certificate`) rather than assuming it is instant.
        If the new files are unusable (bad key permissions, key/cert mismatch)
        the server logs "SSL configuration was not reloaded" and keeps serving
        the old certificate.
        """
        os.kill(self.pid, signal.SIGHUP)

    # ------------------------------------------------------------------ clients

    def sql(self, query: str) -> str:
        """Run *query* as the postgres superuser over the unix socket; return stdout.

        For admin work (``CREATE ROLE ...``); it bypasses TLS entirely thanks to
        ``local all all trust``.  Raises RuntimeError on any SQL error.
        """
        proc = subprocess.run(
            _as_pg_user(
                [
                    str(find_psql()),
                    "-h", str(self.socket_dir),
                    "-p", str(self.port),
                    "-U", PG_USER,
                    "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1",
                    "-X", "-w",
                    "-Atc", query,
                ]
            ),
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql failed ({proc.returncode}) for {query!r}: {proc.stderr.strip()}"
            )
        return proc.stdout.strip()

    def create_user(self, name: str) -> None:
        """Create a login role *name* (no password: it can only log in by certificate)."""
        self.sql(f"CREATE ROLE {_quote_ident(name)} LOGIN")

    def connect_as(
        self,
        user: str,
        sslcert: Path,
        sslkey: Path,
        sslrootcert: Path,
        host: str = "localhost",
        sslmode: str = "verify-full",
    ) -> subprocess.CompletedProcess[str]:
        """Connect over TCP with a client certificate and run ``SELECT current_user``.

        Returns the completed psql process without checking it, so tests can
        assert on ``stdout`` (``"marc\\n"``) for success or on ``returncode`` and
        ``stderr`` for a rejection.  With the default ``verify-full`` the
        server certificate must chain to *sslrootcert* and carry *host* in its
        SANs (libpq >= 14 matches IP SANs too).

        libpq refuses *sslkey* if it has group/world access: it must be mode
        0600 or less, or 0640 or less if owned by root.
        """
        conninfo = " ".join(
            f"{key}={_quote_conninfo(str(value))}"
            for key, value in (
                ("host", host),
                ("port", self.port),
                ("user", user),
                ("dbname", "postgres"),
                ("sslmode", sslmode),
                ("sslcert", sslcert),
                ("sslkey", sslkey),
                ("sslrootcert", sslrootcert),
            )
        )
        return subprocess.run(
            [str(find_psql()), "-X", "-w", "-d", conninfo, "-Atc", "SELECT current_user"],
            capture_output=True,
            text=True,
            env=_clean_env(PGCONNECT_TIMEOUT="5"),
            stdin=subprocess.DEVNULL,
            timeout=30,
        )

    def served_certificate(self, timeout: float = 5.0) -> x509.Certificate:
        """Return the leaf certificate the server presents on a new TLS connection.

        PostgreSQL does not start TLS directly: the client sends an 8-byte
        SSLRequest (length 8, code 80877103), the server answers ``S``, and only
        then the TLS handshake happens.  No verification is done here on
        purpose: the point is to see *which* certificate is served (e.g. after
        a rotation + :meth:`reload`), not whether it is trusted.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
            raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
            answer = raw.recv(1)
            if answer != b"S":
                raise RuntimeError(f"server refused SSLRequest (answered {answer!r})")
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(binary_form=True)
        if not der:
            raise RuntimeError("server presented no certificate")
        return x509.load_der_x509_certificate(der)

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        """Whole server log so far ('' if it does not exist yet)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """Poll the log until regex *pattern* matches after character offset *start*.

        Use ``start=len(server.log_text())`` taken before an action to only
        match lines that action produced.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), start)
            if match:
                return match
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{pattern!r} not in server log after {timeout}s; tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    # ------------------------------------------------------------------ internals

    def _read_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def _run_pg(self, argv: list[str], timeout: float, what: str) -> None:
        try:
            proc = subprocess.run(
                _as_pg_user(argv),
                capture_output=True,
                text=True,
                # initdb/pg_ctl call getcwd(); root's cwd may be unreadable to postgres.
                cwd=self.base_dir,
                env=_clean_env(LC_ALL="C"),
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{what} timed out after {timeout}s; server log tail:\n{self.log_tail()}"
            ) from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
                f"server log tail ({self.log_file}):\n{self.log_tail()}"
            )

    def _prepare_dirs(self) -> None:
        if not self.base_dir.is_dir():
            raise RuntimeError(f"base_dir {self.base_dir} does not exist")
        if self.data_dir.exists():
            raise RuntimeError(f"{self.data_dir} already exists; use a fresh base_dir")
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise RuntimeError(
                f"unix socket path {socket_path} is too long (> {_MAX_SOCKET_PATH} bytes); "
                "use a shorter base_dir"
            )
        uid, gid = _pg_ids()
        for directory in (self.data_dir, self.socket_dir):
            directory.mkdir(mode=0o700)
            os.chown(directory, uid, gid)
        self.log_file.touch(mode=0o640)
        os.chown(self.log_file, uid, gid)

    def _check_access(self) -> None:
        """Fail with a clear message if postgres cannot reach what it needs.

        Otherwise the symptom is an obscure initdb "Permission denied" or a
        start-up failure buried in the log.
        """

        def pg_test(flag: str, path: Path) -> bool:
            return (
                subprocess.run(
                    _as_pg_user(["test", flag, str(path)]),
                    cwd="/",
                    capture_output=True,
                    timeout=10,
                ).returncode
                == 0
            )

        if not pg_test("-w", self.data_dir):
            raise RuntimeError(
                f"user {PG_USER!r} cannot reach {self.base_dir}: every parent directory "
                "must be traversable (o+x); pytest's tmp_path is not, use make_shared_tempdir()"
            )
        for path in (self.cert_file, self.key_file, self.ca_file):
            if not pg_test("-r", path):
                raise RuntimeError(
                    f"user {PG_USER!r} cannot read {path} (missing file, mode, or a "
                    "non-traversable parent directory)"
                )

    def _initdb(self) -> None:
        self._run_pg(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.data_dir),
                "-U", PG_USER,
                "--auth-local=trust",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
            what="initdb",
        )

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": _quote_conf("127.0.0.1"),
            "port": str(self.port),
            "unix_socket_directories": _quote_conf(str(self.socket_dir)),
            "ssl": "on",
            "ssl_cert_file": _quote_conf(str(self.cert_file)),
            "ssl_key_file": _quote_conf(str(self.key_file)),
            "ssl_ca_file": _quote_conf(str(self.ca_file)),
            "ssl_min_protocol_version": _quote_conf("TLSv1.2"),
            # Useful when a connection assertion fails: the log says why.
            "log_connections": "on",
            # A test server: small and fast, durability irrelevant.
            "max_connections": "20",
            "shared_buffers": _quote_conf("16MB"),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# --- added by tests/support/postgres.py ---\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        # Replace pg_hba.conf entirely: only the unix socket (trust) and
        # certificate-authenticated TLS on loopback; everything else is rejected.
        # Written in place so the file keeps initdb's postgres ownership.
        (self.data_dir / "pg_hba.conf").write_text(
            "# TYPE   DATABASE USER ADDRESS       METHOD\n"
            "local    all      all                trust\n"
            "hostssl  all      all  127.0.0.1/32  cert\n",
            encoding="utf-8",
        )
