"""Offline Terraform checks: run the real `terraform` against the schema-only stand-in for hashicorp/vault.

The real hashicorp/vault provider cannot be downloaded here. tools/vault-schema-stub/ serves its 5.6.0
schema instead (see the README there), wired in through a private Terraform CLI configuration with a
`dev_overrides` entry, so `terraform validate` and `terraform test` (plan runs with mock_provider) work
without `terraform init` and without network access.

Public helpers, for any test under tests/terraform/:

    def test_example_validates(tf_env: dict[str, str]) -> None:
        example = REPO_ROOT / "terraform" / "examples" / "basic"
        run_terraform(["get"], example, tf_env).check()         # only if it calls modules (local sources only)
        result = run_terraform(["validate"], example, tf_env)
        assert result.returncode == 0, result

`tf_env` is a fresh dict on every use: a clean environment (nothing inherited but PATH, so a
TF_CLI_CONFIG_FILE, TF_LOG or TF_REATTACH_PROVIDERS of the caller cannot leak in), a private HOME, a
private CLI configuration and the variables the stand-in needs. `run_terraform` gives every working
directory its own TF_DATA_DIR under that private HOME, so nothing is written into the configuration
directory, and it refuses `terraform init` (which would try to install providers and write a
`.terraform.lock.hcl` holding the stand-in's hash). Use `terraform get` for local modules.

A missing terraform binary, a missing npm, or a failed or tampered schema fetch fails the tests; nothing
is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STUB_DIR = REPO_ROOT / "tools" / "vault-schema-stub"
STUB_LAUNCHER = STUB_DIR / "terraform-provider-vault"
FETCH_SCRIPT = REPO_ROOT / "tools" / "fetch-vault-schema.sh"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Terraform prints this whenever dev_overrides are used: its presence proves the stand-in was in use.
DEV_OVERRIDES_WARNING = "Provider development overrides are in effect"
REFUSAL = "schema-only stand-in: cannot talk to Vault"

_NO_COLOR_COMMANDS = frozenset({"validate", "plan", "apply", "test", "get", "fmt", "console", "show", "output", "providers"})
_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class TerraformResult:
    args: tuple[str, ...]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat_output(self) -> str:
        """stdout+stderr with all whitespace runs collapsed: Terraform wraps diagnostics at ~78 columns."""
        return " ".join(self.output.split())

    def check(self) -> TerraformResult:
        """Fail the test (showing the full output) unless the command succeeded."""
        if self.returncode != 0:
            pytest.fail(f"{self} failed", pytrace=False)
        return self

    def __str__(self) -> str:
        return (
            f"`terraform {' '.join(self.args)}` in {self.cwd} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def terraform_binary() -> str:
    path = shutil.which("terraform")
    if path is None:
        pytest.fail("`terraform` is not on PATH; the offline checks need Terraform >= 1.11 (tested: 1.11.4)", pytrace=False)
    return path


def run_terraform(args: Sequence[str], cwd: Path, env: dict[str, str]) -> TerraformResult:
    """Run `terraform <args>` in cwd with an environment from the tf_env fixture. Never raises on exit codes."""
    args = list(args)
    if not args:
        raise ValueError("run_terraform needs a subcommand")
    if args[0] == "init":
        pytest.fail(
            "run_terraform refuses `terraform init`: it would try to install providers from a registry and write a "
            ".terraform.lock.hcl with the stand-in's hash. `validate` and `test` need no init; use `terraform get` "
            "to install local modules.",
            pytrace=False,
        )
    if args[0] in _NO_COLOR_COMMANDS and "-no-color" not in args:
        args.insert(1, "-no-color")
    run_env = dict(env)
    if "TF_DATA_DIR" not in run_env:
        key = hashlib.sha256(str(Path(cwd).resolve()).encode()).hexdigest()[:16]
        run_env["TF_DATA_DIR"] = str(Path(env["HOME"]) / "tf-data" / key)
    try:
        proc = subprocess.run(
            [terraform_binary(), *args], cwd=cwd, env=run_env, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`terraform {' '.join(args)}` in {cwd} did not finish within {_TIMEOUT_SECONDS} s: {exc}", pytrace=False)
    return TerraformResult(tuple(args), Path(cwd), proc.returncode, proc.stdout, proc.stderr)


def _hcl_string(value: str) -> str:
    return json.dumps(value)  # an HCL quoted string is a JSON string for our purposes (paths)


@pytest.fixture(scope="session")
def vault_schema_tgz() -> Path:
    """The verified @cdktf/provider-vault 15.6.1 tarball (fetched once into .venv/cache/, then reused)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("npm and node are needed to fetch the hashicorp/vault schema (npm pack @cdktf/provider-vault)", pytrace=False)
    proc = subprocess.run([str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"{FETCH_SCRIPT} failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}", pytrace=False)
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_file():
        pytest.fail(f"{FETCH_SCRIPT} printed {path}, which is not a file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def _tf_session_env(tmp_path_factory: pytest.TempPathFactory, vault_schema_tgz: Path) -> dict[str, str]:
    terraform_binary()
    if not os.access(STUB_LAUNCHER, os.X_OK):
        pytest.fail(f"{STUB_LAUNCHER} is not executable (git update-index --chmod=+x {STUB_LAUNCHER.relative_to(REPO_ROOT)})")
    base = tmp_path_factory.mktemp("terraform")
    home = base / "home"
    home.mkdir()
    empty_mirror = base / "no-providers-here"
    empty_mirror.mkdir()
    cli_config = base / "terraform.tfrc"
    # An empty filesystem mirror instead of `direct {}`: whatever is not the stand-in can never be
    # fetched from a registry, and fails fast with "was not found in any of the search locations".
    cli_config.write_text(
        "disable_checkpoint = true\n"
        "provider_installation {\n"
        "  dev_overrides {\n"
        f'    "hashicorp/vault" = {_hcl_string(str(STUB_DIR))}\n'
        "  }\n"
        "  filesystem_mirror {\n"
        f"    path = {_hcl_string(str(empty_mirror))}\n"
        "  }\n"
        "}\n"
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "VAULT_SCHEMA_STUB_TGZ": str(vault_schema_tgz),
        "VAULT_SCHEMA_STUB_PYTHON": sys.executable,  # this interpreter has `tf` installed
    }


@pytest.fixture
def tf_env(_tf_session_env: dict[str, str]) -> dict[str, str]:
    """Environment for run_terraform (a fresh copy per test, so a test may add variables)."""
    return dict(_tf_session_env)
