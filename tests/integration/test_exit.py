"""How a vaultpki process ends: ``__main__.leave`` skips the interpreter's teardown (~25 ms of a cold
command) but must keep what the teardown did that matters: the exit status, flushed output and logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def child(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a new Python, with its stdout buffered as it is by default (not PYTHONUNBUFFERED)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", "from vaultpki.__main__ import leave\n" + code],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [
        pytest.param("leave(None)", 0, "", id="none-is-success"),
        pytest.param("leave(0)", 0, "", id="zero"),
        pytest.param("leave(2)", 2, "", id="a-usage-error-keeps-its-status"),
        pytest.param("leave('vaultpki: error: no')", 1, "vaultpki: error: no\n", id="a-message-is-printed-and-fails"),
    ],
)
def test_leave_exits_as_sys_exit_would(code: str, status: int, stderr: str) -> None:
    done = child(f"print('out', end='')\n{code}")
    assert (done.returncode, done.stdout, done.stderr) == (status, "out", stderr)


def test_block_buffered_output_is_flushed_before_leaving() -> None:
    """stdout into a pipe is block-buffered: 200 kB still in the buffer must come out whole."""
    done = child("import sys\nsys.stdout.write('x' * 200_000)\nleave(0)")
    assert done.returncode == 0 and done.stdout == "x" * 200_000


def test_log_records_are_flushed_before_leaving(tmp_path: Path) -> None:
    log = tmp_path / "log"
    done = child(f"import logging\nlogging.basicConfig(filename={str(log)!r})\nlogging.warning('renewed')\nleave(0)")
    assert done.returncode == 0 and "renewed" in log.read_text()


def test_output_that_cannot_be_written_is_a_failure() -> None:
    """As Python's own teardown does: status 120 when stdout cannot be flushed, instead of success."""
    done = child("import os\nprint('lost')\nos.close(1)\nleave(0)")
    assert done.returncode == 120


def test_a_profiled_run_still_writes_its_profile(tmp_path: Path) -> None:
    """cProfile (and coverage) write their results at exit: under them the ordinary exit is kept."""
    out = tmp_path / "prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "vaultpki", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "issue-node" in done.stdout
    assert out.stat().st_size > 0


def test_the_command_line_leaves_with_its_status_and_output(tmp_path: Path) -> None:
    """Through the real entry point: a refused command keeps its exit code and its one error line."""
    done = subprocess.run([sys.executable, "-m", "vaultpki", "verify", "--certs-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stderr.strip().endswith("certs-dir does not exist")
    ok = subprocess.run([sys.executable, "-m", "vaultpki", "--help"], capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0 and "issue-user" in ok.stdout and ok.stderr == ""
