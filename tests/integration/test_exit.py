"""How a vaultpki process ends: through the console script's entry point and ``python -m vaultpki``, with the
exit status of its class, its output whole, and the interpreter's ordinary exit (profilers keep working)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def vaultpki(*args: str, entry: str = "module") -> subprocess.CompletedProcess[str]:
    """The CLI in a new Python: as ``python -m vaultpki``, or as the console script ``vaultpki.__main__:run`` does."""
    if entry == "module":
        argv = [sys.executable, "-m", "vaultpki", *args]
    else:
        argv = [sys.executable, "-c", "import sys; from vaultpki.__main__ import run; sys.argv[0] = 'vaultpki'; run()", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("entry", ["module", "console-script"])
def test_each_entry_point_runs_the_command_line(entry: str) -> None:
    done = vaultpki("--help", entry=entry)
    assert done.returncode == 0 and "issue-node" in done.stdout and done.stderr == ""


def test_a_usage_error_keeps_its_status() -> None:
    done = vaultpki("issue-user", entry="console-script")
    assert done.returncode == 2
    assert done.stderr.startswith("vaultpki: error: give exactly one of USER or --from-file") and done.stdout == ""


def test_a_profiled_run_still_writes_its_profile(tmp_path: Path) -> None:
    """cProfile (and coverage) write their results at exit: the ordinary exit keeps that."""
    out = tmp_path / "prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "vaultpki", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "issue-node" in done.stdout
    assert out.stat().st_size > 0


def test_the_command_line_leaves_with_its_status_and_output(tmp_path: Path) -> None:
    """Through the real entry point: a refused command keeps its exit code and its one error line."""
    done = vaultpki("verify", "--certs-dir", str(tmp_path / "none"))
    assert done.returncode == 1 and done.stderr.strip().endswith("certs-dir does not exist")
    ok = vaultpki("--help")
    assert ok.returncode == 0 and "issue-user" in ok.stdout and ok.stderr == ""
