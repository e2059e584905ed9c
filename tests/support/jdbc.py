"""A Java client with the PostgreSQL JDBC driver: ``tests/consumers/jdbc``, compiled once and run.

CockroachDB's docs connect Java applications through pgjdbc with a client certificate, whose key pgjdbc
reads only as PKCS#8 DER: the ``client.<user>.key.pk8`` that ``cockroach cert create-client
--also-generate-pkcs8-key`` writes, and ``vaultpki issue-user --pk8`` too. The program logs in to the
test PostgreSQL (``tests/support/postgres.py``) with ``sslmode=verify-full`` and prints ``current_user``.

It is compiled with Debian's ``default-jdk-headless`` against ``libpostgresql-jdbc-java``'s jar into
``/var/cache/vaultpki-tests`` under a name derived from the source, the ``javac`` version and the jar, so
a session, or a later run, compiles it once. A missing ``javac``, ``java`` or jar is a failure naming the
packages, never a skip.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.rootfs import writable_cache

__all__ = ["JAR", "PACKAGES", "SOURCE", "Login", "classes", "login", "tools"]

SOURCE = Path(__file__).resolve().parents[1] / "consumers" / "jdbc"
JAR = Path("/usr/share/java/postgresql.jar")
PACKAGES = "apt-get install default-jdk-headless libpostgresql-jdbc-java (.ci/run installs them)"
COMPILE_TIMEOUT = 180
RUN_TIMEOUT = 60
MAIN = "JdbcLogin"


@dataclass(frozen=True)
class Login:
    """One login attempt: ``user`` is what ``SELECT current_user`` printed (empty when it failed)."""

    ok: bool
    user: str
    error: str


def tools(path: str | None = None, jar: Path = JAR) -> tuple[str, str]:
    """(javac, java) on ``path`` (default: $PATH), with the driver's jar present; else RuntimeError naming the packages."""
    javac, java = shutil.which("javac", path=path), shutil.which("java", path=path)
    missing = [name for name, found in (("javac", javac), ("java", java)) if found is None]
    if not jar.is_file():
        missing.append(str(jar))
    if missing or javac is None or java is None:
        raise RuntimeError(f"the Java JDBC consumer needs {', '.join(missing)}: {PACKAGES}")
    return javac, java


def _env() -> dict[str, str]:
    """The environment without anything that would change what the JVM or libpq-minded code does."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PG", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH"))}


@functools.cache
def classes() -> Path:
    """The compiled consumer's class directory, keyed by the hash of its source, ``javac -version`` and the jar."""
    javac, _ = tools()
    version = subprocess.run([javac, "-version"], env=_env(), capture_output=True, text=True, check=True)
    digest = hashlib.sha256((version.stdout + version.stderr).encode())
    digest.update(JAR.read_bytes())
    for path in sorted(SOURCE.glob("*.java")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    cache = writable_cache("the Java consumer")
    target = cache / f"jdbc-{digest.hexdigest()[:16]}"
    if (target / f"{MAIN}.class").is_file():
        return target
    # Compiled into a directory of its own and renamed into place: a concurrent session never sees half of it.
    tmp = Path(tempfile.mkdtemp(prefix=".jdbc-", dir=cache))
    try:
        built = subprocess.run([javac, "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(tmp),
                                *map(str, sorted(SOURCE.glob("*.java")))],
                               env=_env(), capture_output=True, text=True, timeout=COMPILE_TIMEOUT, check=False)
        if built.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{built.stderr}")
        tmp.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / f"{MAIN}.class").is_file():     # not a concurrent session's copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def login(host: str, port: int, user: str, sslcert: Path, sslkey: Path, sslrootcert: Path) -> Login:
    """Connect as ``user`` with ``sslmode=verify-full`` and these files; what ``SELECT current_user`` said."""
    _, java = tools()
    proc = subprocess.run(
        [java, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-Xmx128m", "-cp", f"{classes()}{os.pathsep}{JAR}", MAIN,
         host, str(port), user, str(sslcert), str(sslkey), str(sslrootcert)],
        env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return Login(False, "", proc.stderr.strip() or f"exit {proc.returncode}")
    return Login(True, proc.stdout.strip(), "")
