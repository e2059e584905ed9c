"""vaultpki as an operator installs it: a wheel built from this checkout, and its dependencies as wheels.

The deployment tests (a real systemd, the Kubernetes containers, the quickstart) install vaultpki
the way the install docs say, with pip, into a fresh virtual environment on a fresh root file
system. They must not reach a package index while they run, so:

* ``make test`` downloads the dependencies once into ``.venv/cache/wheelhouse`` (an install step,
  like every other one of ``make``), and the tests hand that folder to pip as ``PIP_FIND_LINKS``
  with ``PIP_NO_INDEX=1``: the documented ``pip install`` line runs unchanged and finds everything
  there;
* vaultpki's own wheel is built fresh from the working tree for every test session (a stale wheel
  would test yesterday's code) by docs/install.md's ``build-wheel`` block, run word for word in a copy
  of the checkout, with build isolation turned off through pip's environment (``PIP_NO_BUILD_ISOLATION``)
  so that the setuptools of ``.venv`` builds it instead of one downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.doc_blocks import doc_block

__all__ = ["REPO", "WHEELHOUSE", "Wheels", "build_wheels"]

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".venv" / "cache" / "wheelhouse"


@dataclass(frozen=True)
class Wheels:
    """vaultpki's wheel, and a folder holding it and every wheel it depends on."""

    vaultpki: Path        # <folder>/vaultpki-<version>-py3-none-any.whl
    folder: Path          # what pip is given as --find-links / PIP_FIND_LINKS

    def pip_env(self) -> dict[str, str]:
        """What makes a documented ``pip install`` line install from ``folder`` alone."""
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(self.folder), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def build_wheels(out: Path) -> Wheels:
    """vaultpki's wheel from the working tree, in ``out`` beside links to the cached dependencies."""
    if not (WHEELHOUSE / ".done").is_file():
        raise RuntimeError(f"{WHEELHOUSE} is missing: run `make test` (its wheelhouse step downloads the dependencies)")
    out.mkdir(parents=True, exist_ok=True)
    checkout = out / "checkout"
    _copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    # pip's "no" options read inverted from the environment: PIP_NO_BUILD_ISOLATION=0 means --no-build-isolation
    env.update(PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1", PIP_QUIET="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    proc = subprocess.run(["bash", "-ec", doc_block("install.md", "build-wheel")], cwd=checkout, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"docs/install.md build-wheel failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    (built,) = (checkout / "dist").glob("vaultpki-*.whl")
    shutil.move(built, out / built.name)
    shutil.rmtree(checkout)
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith("vaultpki-"):
            copy = out / wheel.name
            if not copy.exists():
                # a real file, not a symlink: the folder is bound into containers that cannot see .venv
                shutil.copy2(wheel, copy)
    return Wheels(vaultpki=out / built.name, folder=out)


def _copy_checkout(target: Path) -> None:
    """The working tree's files as a clone would have them plus uncommitted ones (no .venv, no build output)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
