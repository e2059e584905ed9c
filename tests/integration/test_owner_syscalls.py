"""``owner``/``group`` under the shipped unit's syscall filter (issue 18), with the real CLI and OpenBao.

The unit runs as the service user with ``SystemCallFilter=~@privileged``, which kills a process that
calls ``chown``/``fchown``/``fchownat``/``lchown`` at all (SIGSYS, status 159), even a call that would
change nothing. There is no systemd here, so the filter is stood in for by ``strace``: it records every
chown-family call of the CLI and its children and, where the test says so, answers each one with SIGSYS
exactly like the filter's kill. The CLI runs as ``nobody`` through ``setpriv`` (the unit's ``User=`` and
``Group=``), with a config whose owner and group are that same user: nothing needs changing, so
nothing may be called. When the owner really differs (root writing for the service user), the call is
made and the files get the owner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode

from .conftest import Deployment

pytestmark = pytest.mark.integration

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
CHOWNS = "chown,fchown,fchownat,lchown"
NODE_SET = ("ca.crt", "node.crt", "node.key")
CHOWN_CALL = re.compile(r"\b(?:f|l)?chown(?:at)?\(")


@pytest.fixture
def service_home() -> Iterator[Path]:
    """A directory the service user owns (like ``/var/lib/cockroach``), under a root-owned 0755 scratch dir."""
    scratch = Path(tempfile.mkdtemp(prefix="vaultpki-owner-", dir="/tmp"))
    scratch.chmod(0o755)
    home = scratch / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)
    try:
        yield home
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def traced(argv: list[str], log: Path, env: dict[str, str], kill: bool) -> subprocess.CompletedProcess[str]:
    """``argv`` under strace: every chown-family call logged, and with ``kill`` answered by SIGSYS."""
    strace = shutil.which("strace")
    assert strace, "strace is missing (Debian package 'strace'; .ci/run installs it)"
    inject = ["-e", f"inject={CHOWNS}:signal=SIGSYS"] if kill else []
    return subprocess.run([strace, "-f", "-qq", "-o", str(log), "-e", f"trace={CHOWNS}", *inject, *argv],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def issue_node(dep: Deployment, config: Path, log: Path, as_nobody: bool, kill: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env.update({"VAULT_TOKEN": dep.server.root_token, "HOME": str(config.parent)})
    argv = [sys.executable, "-m", "vaultpki", "--config", str(config), "issue-node"]
    return traced([*AS_NOBODY, *argv] if as_nobody else argv, log, env, kill)


def chown_calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if CHOWN_CALL.search(line)]


def test_owner_equal_to_the_service_user_makes_no_chown_call(deploy: Callable[..., Deployment],
                                                            service_home: Path) -> None:
    """The unit's case: run as the configured owner/group, under a filter that kills on any chown. Before
    the fix the first fchown killed the CLI and left an empty certs-dir behind; now nothing is called,
    the set is written with the service user's owner, and a second run (a new generation) is the same."""
    dep = deploy(Mode.STANDARD, ui=False)
    certs = service_home / "certs"
    config = dep.write_config(service_home / "vaultpki.toml", certs, owner="nobody", group="nogroup")
    for attempt in (1, 2):
        log = service_home.parent / f"strace-{attempt}.log"
        result = issue_node(dep, config, log, as_nobody=True, kill=True)
        assert result.returncode == 0, (attempt, result.returncode, result.stderr, log.read_text())
        assert chown_calls(log) == [], (attempt, chown_calls(log))
        for name in NODE_SET:
            st = os.stat(certs / name)
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (name, st.st_uid, st.st_gid)
    assert (os.stat(certs / "node.key").st_mode & 0o777) == 0o600


def test_an_owner_that_differs_is_still_given(deploy: Callable[..., Deployment], service_home: Path) -> None:
    """Root writing for the service user: the chown is needed, is made, and the files are the service user's."""
    dep = deploy(Mode.STANDARD, ui=False)
    certs = service_home.parent / "certs"
    config = dep.write_config(service_home.parent / "vaultpki.toml", certs, owner="nobody", group="nogroup")
    log = service_home.parent / "strace.log"
    result = issue_node(dep, config, log, as_nobody=False, kill=False)
    assert result.returncode == 0, result.stderr
    assert any("fchown(" in line for line in chown_calls(log)), log.read_text()
    for path in (certs, *(certs / name for name in NODE_SET)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (path, st.st_uid, st.st_gid)


def test_a_chown_that_fails_leaves_no_certs_dir(deploy: Callable[..., Deployment], service_home: Path) -> None:
    """The service user cannot give its files to root: one error line, exit 1, and the certs-dir this run
    created is gone again (nothing was written, so nothing is left half-made)."""
    dep = deploy(Mode.STANDARD, ui=False)
    certs = service_home / "certs"
    config = dep.write_config(service_home / "vaultpki.toml", certs, owner="root", group="nogroup")
    log = service_home.parent / "strace.log"
    result = issue_node(dep, config, log, as_nobody=True, kill=False)
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaultpki: error: "), result.stderr
    assert not os.path.lexists(certs), sorted(os.listdir(certs))
    assert sorted(os.listdir(service_home)) == ["vaultpki.toml"]
