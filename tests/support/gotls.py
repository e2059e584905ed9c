"""A Go TLS consumer set up as CockroachDB sets up TLS: ``tests/consumers/crdbtls``, built once and run.

CockroachDB verifies with Go's ``crypto/x509`` and ``crypto/tls``, which differ from OpenSSL (the
PostgreSQL consumer) exactly where vaultpki's choices rest: an intermediate as a trust anchor, EKUs
checked down the chain, SAN-only host names, name and path-length constraints. The Go program builds
the ``tls.Config`` values CockroachDB builds from a certs-dir, runs a real handshake over loopback and
applies CockroachDB's identity check afterwards; its source cites what each setting mirrors.

The binary is built with Debian's ``golang-go`` (standard library only, offline) into
``/var/cache/vaultpki-tests`` under a name derived from the source and the Go version, so a session,
or a later run, builds it once. A missing ``go`` is a failure naming the package, never a skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.rootfs import writable_cache

__all__ = ["SOURCE", "Case", "Result", "binary", "check", "check_one"]

SOURCE = Path(__file__).resolve().parents[1] / "consumers" / "crdbtls"
BUILD_TIMEOUT = 300          # a cold build compiles crypto/tls and net; later builds hit GOCACHE
RUN_TIMEOUT = 120


@dataclass(frozen=True)
class Case:
    """One handshake: ``kind`` is ``rpc`` (node listener + kvAuth), ``sql`` (same listener + SQL
    certificate login of ``user``) or ``ui`` (the DB Console); see main.go for every field."""

    name: str
    kind: str
    server_dir: str
    client_dir: str
    user: str = ""
    cert_user: str = ""
    server_name: str = "localhost"
    client_ca: str = ""


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    error: str
    stage: str
    refused_by: str
    server_error: str
    client_error: str
    peer_identity: str
    client_sent_certificate: bool


def _go_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update({
        "GOPROXY": "off",                 # standard library only: nothing may come from the network
        "GOFLAGS": "-buildvcs=false",     # the tree's git state is not the program's business
        "GOCACHE": str(cache / "gocache"),
        "GOPATH": str(cache / "gopath"),
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",               # no C compiler needed; Go's own resolver and crypto
    })
    return env


@functools.cache
def binary() -> Path:
    """The built consumer, keyed by the hash of its source and of ``go version``."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("`go` is missing: apt-get install golang-go (.ci/run installs it)")
    cache = writable_cache("the Go consumer")
    env = _go_env(cache)
    version = subprocess.run([go, "version"], env=env, capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    for path in sorted(SOURCE.iterdir()):
        if path.suffix in (".go", ".mod"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = cache / f"crdbtls-{digest.hexdigest()[:16]}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    # Built under a unique name and renamed into place: a concurrent session never runs half a file.
    fd, tmp = tempfile.mkstemp(prefix=".crdbtls-", dir=cache)
    os.close(fd)
    try:
        built = subprocess.run([go, "build", "-trimpath", "-o", tmp, "."], cwd=SOURCE, env=env,
                               capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
        if built.returncode != 0:
            raise RuntimeError(f"building {SOURCE} failed:\n{built.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def check(cases: Sequence[Case]) -> list[Result]:
    """Run every case in one process; one result per case, in order."""
    if not cases:
        return []
    proc = subprocess.run([str(binary()), "batch"], input=json.dumps([asdict(c) for c in cases]),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"crdbtls batch exited {proc.returncode}: {proc.stderr.strip()}")
    results = [Result(**json.loads(line)) for line in proc.stdout.splitlines() if line.strip()]
    if [r.name for r in results] != [c.name for c in cases]:
        raise RuntimeError(f"crdbtls answered {len(results)} of {len(cases)} cases: {proc.stderr.strip()}")
    return results


def check_one(case: Case) -> Result:
    return check([case])[0]
