"""A minimal Debian root file system, made once with debootstrap and cached, for the deployment tests.

The systemd tests boot it with systemd-nspawn; the Kubernetes tests import it into podman as the
``debian`` base image the Containerfile names (no registry is reachable here). It is made from the
same Debian archive the host's apt uses (read from its sources, so nothing here names a mirror), and
kept in ``/var/cache/vaultpki-tests`` under a name derived from the suite and the package list: a
second session, or CI on the same machine, finds it there; a changed list makes a new one. A lock
keeps two test runs from building the same tree at once, and a tree is only published (renamed into
place) once debootstrap has finished, so an interrupted build never passes for a cached one.

Missing tooling is a failure with the package to install, never a skip (``.ci/run`` installs it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CACHE", "SUITE", "apt_mirror", "debian_rootfs", "writable_cache"]

CACHE = Path("/var/cache/vaultpki-tests")
SUITE = "bookworm"
_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def writable_cache(what: str) -> Path:
    """The shared cache when it can be written, else one of this user's own under the temp dir (for the
    consumers the tests build once: ``what`` names one in the error)."""
    for path in (CACHE, Path(tempfile.gettempdir()) / f"vaultpki-tests-{os.getuid()}"):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    raise RuntimeError(f"no writable cache directory for {what} ({CACHE})")


def apt_mirror() -> str:
    """The Debian archive URL the host's apt uses for the main suite."""
    for path in _SOURCES:
        if not path.is_file():
            continue
        text = path.read_text()
        # deb822 ("URIs: http://…/debian") or one-line ("deb http://…/debian bookworm main")
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            url = match.group(1).rstrip("/")
            if not url.endswith("-security"):
                return url
    raise RuntimeError("no Debian archive found in the host's apt sources (/etc/apt/sources.list.d/debian.sources)")


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"`{tool}` is missing: apt-get install {package} (.ci/run installs it)")
    return found


def debian_rootfs(packages: tuple[str, ...], name: str) -> Path:
    """A ``SUITE`` minbase tree with ``packages`` installed: built on first use, then reused as it is.

    Callers must not change the tree (boot it ``--volatile``/read-only, or copy it): it is shared
    by every test and every later run.
    """
    debootstrap = _require("debootstrap", "debootstrap")
    wanted = sorted(set(packages))
    digest = hashlib.sha256("\n".join([SUITE, *wanted]).encode()).hexdigest()[:12]
    target = CACHE / f"{name}-{SUITE}-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(wanted)}", SUITE, str(building), apt_mirror()],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            shutil.rmtree(building, ignore_errors=True)
            raise RuntimeError(f"debootstrap {SUITE} failed (exit {proc.returncode}):\n{tail}")
        (building / ".complete").write_text("\n".join(wanted) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
        return target
