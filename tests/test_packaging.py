"""The package as pip builds and installs it: the editable install `make` does, and the wheel the install docs build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.doc_blocks import doc_block
from tests.support.rootfs import debian_rootfs
from tests.support.wheel import REPO, Wheels, build_wheels


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    return build_wheels(tmp_path_factory.mktemp("wheels"))


def test_the_editable_install_warns_of_nothing(tmp_path: Path) -> None:
    """`make demo` installs vaultpki editable; setuptools used to print a BuildBackendWarning (the
    working directory shadowing the package) on every fresh checkout. Any warning is an error here."""
    build = ("import sys, setuptools.build_meta as backend; "
             "print(backend.build_editable(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", build, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr
    (editable,) = tmp_path.glob("vaultpki-*.whl")
    with zipfile.ZipFile(editable) as zf:
        (pth,) = [name for name in zf.namelist() if name.endswith(".pth")]
        assert zf.read(pth).decode().strip() == str(REPO)        # one path line, no import hook


def test_the_wheel_holds_the_package_and_its_command(wheels: Wheels) -> None:
    with zipfile.ZipFile(wheels.vaultpki) as zf:
        names = zf.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    assert "vaultpki = vaultpki.__main__:run" in scripts
    assert "vaultpki/data/roles.json" in names                  # the provisioner's role definitions travel with it
    assert not [n for n in names if n.startswith(("tests/", "bench/", "demo/"))]


def test_the_documented_install_works_in_a_fresh_venv(wheels: Wheels, tmp_path: Path) -> None:
    """docs/install.md's pip line into a new virtual environment, offline from the wheel folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **wheels.pip_env()}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheels.vaultpki)], check=True, env=env)
    done = subprocess.run([str(venv / "bin" / "vaultpki"), "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("vaultpki, version ")


# docs/install.md's two install blocks, word for word, as root in a fresh Debian 12 (the systemd tests run
# `install-venv` again in the system they boot). nspawn runs them without booting, on a throw-away overlay of
# the cached root file system (--volatile=overlay), so the cache stays pristine.
INSTALL_ROOTFS = ("python3", "python3-venv", "pipx", "ca-certificates")


@pytest.mark.slow
@pytest.mark.parametrize("block", ["install-venv", "install-pipx"])
def test_the_install_page_works_as_written_on_debian(wheels: Wheels, block: str) -> None:
    rootfs = debian_rootfs(INSTALL_ROOTFS, "install")
    nspawn = shutil.which("systemd-nspawn")
    assert nspawn, "systemd-nspawn is missing: apt-get install systemd-container (.ci/run installs it)"
    env = [f"--setenv={name}={'/wheels' if name == 'PIP_FIND_LINKS' else value}" for name, value in wheels.pip_env().items()]
    # after the block: the command is a link into the install, and (venv) `man` finds vaultpki(1) through its link
    checks = ['test "$(readlink -f /usr/local/bin/vaultpki)" != /usr/local/bin/vaultpki']
    if block == "install-venv":
        checks.append("test -s /usr/local/share/man/man1/vaultpki.1 && test -s /usr/local/share/man/man1/vaultpki-sync.1")
    script = doc_block("install.md", block) + "\n".join(["", *checks, "vaultpki --version", ""])
    done = subprocess.run(
        [nspawn, "--quiet", "--register=no", "--keep-unit", f"--machine=vaultpki-install-{os.getpid()}",
         "--volatile=overlay", "-D", str(rootfs), f"--bind-ro={wheels.folder}:/wheels", "--chdir=/wheels", *env,
         "bash", "-ec", script],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # the block's own check, `vaultpki --version`, printed last (pipx's spinner leaves terminal codes before it)
    assert re.search(r"vaultpki, version \S+\Z", done.stdout.strip())
