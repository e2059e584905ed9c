"""House rules that keep vaultpki easy to change, checked rather than hoped for."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import vaultpki

PACKAGE = Path(vaultpki.__file__).parent
ROOT = PACKAGE.parent
# The pure core plans and judges; it never touches the world (style.md, rule 1).
PURE = ["layout", "certnames", "crypto", "validate", "snapshot", "issue", "renewal", "policy"]
FORBIDDEN = {"os", "socket", "subprocess", "signal", "hvac", "requests", "urllib3", "asyncio", "shutil", "time",
             "random"}
# Records that are mutable on purpose: the state of one command, pass or connection, never passed on as a value.
WORKING_STATE = {"cli._Ctx", "metrics.Health", "policy._Node", "snapshot._Loaded", "store.Stage"}


def runtime_imports(module: str) -> set[str]:
    """Top-level names a module imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                names |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level == 0 and sub.module:
                    names.add(sub.module.split(".")[0])
                elif sub.level == 1 and sub.module:
                    names.add("." + sub.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_core_touches_nothing(module: str) -> None:
    imported = runtime_imports(module)
    assert not imported & FORBIDDEN, f"{module} imports {sorted(imported & FORBIDDEN)}"
    adapters = {".store", ".vault", ".transport", ".cli", ".devserver", ".provision", ".demo"}
    assert not imported & adapters, f"{module} imports adapters {sorted(imported & adapters)}"


def test_values_are_frozen_records_of_one_kind() -> None:
    """Values are frozen records, msgspec Structs and nothing else (why not dataclasses: the README, Dependencies)."""
    mutable = set()
    for info in (m for m in pkgutil.iter_modules([str(PACKAGE)]) if not m.ispkg):
        assert "dataclasses" not in runtime_imports(info.name), f"{info.name}: records are msgspec Structs"
        module = importlib.import_module(f"vaultpki.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj.__module__ == module.__name__:
                if not obj.__struct_config__.frozen:
                    mutable.add(f"{info.name}.{name}")
    assert mutable == WORKING_STATE


def test_public_names_are_exported_and_sorted() -> None:
    assert vaultpki.__all__ == sorted(vaultpki.__all__)
    for name in vaultpki.__all__:
        assert hasattr(vaultpki, name), name


def test_only_cli_prints_or_exits() -> None:
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("cli", "demo", "__main__"):
            continue
        text = path.read_text()
        assert not re.search(r"\bsys\.exit\(|(?<![.\w])print\(|click\.echo", text), path.name


def test_mypy_strict_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "vaultpki", "tests"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
