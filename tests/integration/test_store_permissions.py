"""A certs-dir whose parent is closed to the user: every way into the store is one line, never a traceback.

``rollback`` crashed with "internal error: PermissionError" there (issue 19, §5); the cause was the store's
first look at the path, which every writer and the state-dir records share.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_local_attacks import SETPRIV

pytestmark = pytest.mark.integration

# Each step, run as nobody: the store must raise its own StoreError (one line), not PermissionError.
STEPS = {
    "read_record": "store.read_record('pending-reload.json')",
    "write_record": "store.write_record('pending-reload.json', b'{}')",
    "write_set": "store.write_set([FileContent('ca.crt', b'x', False)])",
}
PROGRAM = """
import sys
from vaultpki.core.layout import FileContent
from vaultpki.errors import StoreError
from vaultpki.store.certs_dir import CertsDir
store = CertsDir(sys.argv[1])
try:
    {step}
except StoreError as exc:
    print("StoreError:", exc)
"""


@pytest.fixture(scope="module")
def closed_parent() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="vaultpki-closed-", dir="/tmp"))
    base.chmod(0o700)                     # root's: nobody cannot even look at what is inside
    (base / "certs").mkdir(mode=0o700)
    yield base / "certs"
    shutil.rmtree(base)


@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_closed_parent_is_one_store_error(closed_parent: Path, step: str) -> None:
    done = subprocess.run([*SETPRIV, sys.executable, "-c", PROGRAM.format(step=STEPS[step]), str(closed_parent)],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]          # no traceback escaped
    assert done.stdout.startswith(f"StoreError: cannot open certs-dir {closed_parent}"), done.stdout
    assert "ermission denied" in done.stdout
