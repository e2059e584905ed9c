"""House rules that keep vaultpki easy to change, checked rather than hoped for.

The folders are the architecture: ``core`` plans and judges and never touches the world; ``vault``,
``store`` and ``daemon`` are the adapters that do; ``cli`` parses and prints; ``dev`` holds the tools
for development (dev server, demo, lab provisioner) that production never runs.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import vaultpki

PACKAGE = Path(vaultpki.__file__).parent
ROOT = PACKAGE.parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
# The standard library and third-party modules that touch the world (files, processes, network, clocks,
# threads); the core gets the world through its ports (core/ports.py) instead.
IO = {"os", "socket", "subprocess", "signal", "threading", "concurrent", "asyncio", "time", "shutil", "random",
      "hvac", "requests", "urllib3", "http", "ssl", "psutil", "fcntl", "select", "selectors", "tempfile"}
ADAPTERS = ("vaultpki.vault", "vaultpki.store", "vaultpki.daemon", "vaultpki.cli", "vaultpki.dev")
# Records that are mutable on purpose: the state of one command, pass or connection, never passed on as a value.
WORKING_STATE = {"vaultpki.cli.context._Ctx", "vaultpki.daemon.metrics.Health", "vaultpki.core.policy._Node",
                 "vaultpki.core.snapshot._Loaded", "vaultpki.store.generation.Stage"}
MAX_LINES = 400
CORE_MAY_IMPORT = ("vaultpki.core", "vaultpki.errors", "vaultpki.redact")


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, typing_too: bool = False) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count: they run too), and with
    ``typing_too`` those under ``if TYPE_CHECKING:``. Relative imports are resolved to absolute names."""
    tree = ast.parse(path.read_text())
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    skip = set() if typing_too else {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def internal(path: Path) -> set[str]:
    """The vaultpki modules a file imports (names that are modules, not attributes)."""
    known = {dotted(p) for p in MODULES}
    return {n for n in imports(path) if n in known and n != dotted(path)}


CORE = [p for p in MODULES if dotted(p).startswith("vaultpki.core")]


def test_the_folders_are_the_architecture() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"core", "vault", "store", "daemon", "cli", "dev"} <= packages
    assert CORE, "no core modules"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.stem)
def test_the_core_touches_nothing(path: Path) -> None:
    names = imports(path)
    touching = sorted(n for n in names if n.split(".")[0] in IO)
    assert not touching, f"{dotted(path)} imports {touching}"
    # Not even for typing: the core's needs from the world are its own ports (core/ports.py).
    outside = sorted(n for n in imports(path, typing_too=True)
                     if n.startswith("vaultpki") and not n.startswith(CORE_MAY_IMPORT))
    assert not outside, f"{dotted(path)} imports {outside}: the core may import only {CORE_MAY_IMPORT}"


def test_production_never_imports_the_development_tools() -> None:
    """Only ``vaultpki provision`` (a lab command) reaches into ``dev``; nothing else does."""
    for path in MODULES:
        name = dotted(path)
        if name.startswith("vaultpki.dev"):
            continue
        dev = {n for n in internal(path) if n.startswith("vaultpki.dev")}
        allowed = {"vaultpki.dev.provision"} if name.startswith("vaultpki.cli") else set()
        assert dev <= allowed, f"{name} imports {sorted(dev - allowed)}"


def test_no_import_cycle() -> None:
    graph = {dotted(p): {n for n in internal(p) if not n == "vaultpki"} for p in MODULES}
    # A package's __init__ importing its own modules is how packages re-export; not a cycle of concepts.
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if seen.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES}: split it by concept)"


def test_values_are_frozen_records_of_one_kind() -> None:
    """Values are frozen msgspec Structs and nothing else; the few mutable ones are listed working state."""
    mutable = set()
    for path in MODULES:
        name = dotted(path)
        assert "dataclasses" not in {n.split(".")[0] for n in imports(path)}, f"{name}: records are msgspec Structs"
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj.__module__ == name:
                if not obj.__struct_config__.frozen:
                    mutable.add(f"{name}.{attr}")
    assert mutable == WORKING_STATE


def test_public_names_are_exported_and_sorted() -> None:
    assert vaultpki.__all__ == sorted(vaultpki.__all__)
    for name in vaultpki.__all__:
        assert hasattr(vaultpki, name), name


def test_only_the_cli_prints_or_exits() -> None:
    for path in MODULES:
        name = dotted(path)
        if name.startswith(("vaultpki.cli", "vaultpki.dev.demo")) or name == "vaultpki.__main__":
            continue
        assert not re.search(r"\bsys\.exit\(|(?<![.\w])print\(|click\.echo", path.read_text()), name


def test_comments_carry_no_timings() -> None:
    """Comments say why; figures go stale with any dependency bump and live in docs/benchmarks.md."""
    timing = re.compile(r"#.*\b\d+(\.\d+)?\s?(ms|µs|us|M instructions)\b|\"\"\"[^\"]*\b\d+(\.\d+)?\s?ms\b", re.S)
    offenders = [str(p.relative_to(PACKAGE)) for p in MODULES if timing.search(p.read_text())]
    assert not offenders, f"timings in comments: {offenders}"


def test_mypy_strict_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "vaultpki", "tests", "tools", "bench"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
