"""The schema-only hashicorp/vault stand-in really catches mistakes, offline, through the real `terraform`.

Each broken configuration is a copy of fixtures/good with one deliberate mistake, and each test asserts the
specific diagnostic Terraform gives. Limits of the stand-in (see tools/vault-schema-stub/README.md): provider
defaults are unknown (an unset argument plans as null), ForceNew/Sensitive/ConflictsWith/ValidateFunc are not
modelled apart from a few hand-written enumeration checks, and nothing here says what Vault does with the values.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import (
    DEV_OVERRIDES_WARNING,
    FETCH_SCRIPT,
    FIXTURES,
    REFUSAL,
    STUB_DIR,
    TerraformResult,
    run_terraform,
)

GOOD = FIXTURES / "good"


def copy_of_good(tmp_path: Path, old: str = "", new: str = "", append: str = "") -> Path:
    """A copy of fixtures/good with `old` (which must occur exactly once in main.tf) replaced by `new`."""
    dest = tmp_path / "config"
    shutil.copytree(GOOD, dest)
    main_tf = dest / "main.tf"
    text = main_tf.read_text()
    if old:
        assert text.count(old) == 1, f"fixtures/good/main.tf must contain {old!r} exactly once"
        text = text.replace(old, new)
    main_tf.write_text(text + append)
    return dest


def assert_diagnostics(result: TerraformResult, *expected: str, ok: bool = False) -> None:
    assert (result.returncode == 0) is ok, result
    # `terraform test` does not print this warning; test_terraform_test_uses_the_stand_in proves it there.
    if result.args[0] != "test":
        assert DEV_OVERRIDES_WARNING in result.flat_output, f"the stand-in was not in use:\n{result}"
    for fragment in expected:
        assert " ".join(fragment.split()) in result.flat_output, f"missing {fragment!r} in:\n{result}"


# ------------------------------------------------------------------------------------------------
# terraform validate
# ------------------------------------------------------------------------------------------------


def test_good_configuration_validates(tmp_path: Path, tf_env: dict[str, str]) -> None:
    result = run_terraform(["validate"], copy_of_good(tmp_path), tf_env)
    assert_diagnostics(result, "Success! The configuration is valid", ok=True)
    assert "Error" not in result.output, result


BROKEN = {
    "misspelt_argument": (
        "  allowed_domains    = [",
        "  alowed_domains     = [",
        ["Error: Unsupported argument", 'An argument named "alowed_domains" is not expected here. Did you mean "allowed_domains"?'],
    ),
    "wrong_type": (
        "enforce_hostnames  = true",
        'enforce_hostnames  = "maybe"',
        ["Error: Incorrect attribute value type", 'Inappropriate value for attribute "enforce_hostnames": a bool is required.'],
    ),
    "missing_required_argument": (
        '  backend            = vault_mount.pki.path\n  name               = "node"\n',
        '  name               = "node"\n',
        [
            "Error: Missing required argument",
            'in resource "vault_pki_secret_backend_role" "node"',
            'The argument "backend" is required, but no definition was found.',
        ],
    ),
    "nonexistent_exported_attribute": (
        "value = vault_pki_secret_backend_root_cert.root.issuer_id",
        "value = vault_pki_secret_backend_root_cert.root.issuer_idd",
        [
            "Error: Unsupported attribute",
            'This object has no argument, nested block, or exported attribute named "issuer_idd". Did you mean "issuer_id"?',
        ],
    ),
    "unknown_resource_type": (
        'resource "vault_pki_secret_backend_role" "node"',
        'resource "vault_pki_secret_backend_rolez" "node"',
        [
            "Error: Invalid resource type",
            'The provider hashicorp/vault does not support resource type "vault_pki_secret_backend_rolez". '
            'Did you mean "vault_pki_secret_backend_role"?',
        ],
    ),
    # Hand-written enumeration checks of the stand-in (the package carries no ValidateFunc).
    "role_key_type": (
        'key_type           = "ec"',
        'key_type           = "ecdsa"',
        ["Error: Unexpected vault_pki_secret_backend_role.key_type value 'ecdsa'", "Expected one of: any, ec, ed25519, rsa."],
    ),
    "root_cert_type": (
        'type        = "internal"',
        'type        = "intenral"',
        [
            "Error: Unexpected vault_pki_secret_backend_root_cert.type value 'intenral'",
            "Expected one of: existing, exported, internal, kms.",
        ],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_configuration_is_rejected(case: str, tmp_path: Path, tf_env: dict[str, str]) -> None:
    old, new, expected = BROKEN[case]
    result = run_terraform(["validate"], copy_of_good(tmp_path, old, new), tf_env)
    assert_diagnostics(result, *expected)


def test_nested_blocks_keep_their_schema(tmp_path: Path, tf_env: dict[str, str]) -> None:
    """A required attribute inside a set block, and a max-1 block given twice."""
    extra = """
resource "vault_pki_secret_backend_role" "with_policy_identifier" {
  backend = vault_mount.pki.path
  name    = "pi"
  policy_identifier {
    cps = "https://example.test/cps"
  }
}

resource "vault_kv_secret_v2" "twice" {
  mount     = "kv"
  name      = "x"
  data_json = jsonencode({})
  custom_metadata {
    max_versions = 1
  }
  custom_metadata {
    max_versions = 2
  }
}
"""
    result = run_terraform(["validate"], copy_of_good(tmp_path, append=extra), tf_env)
    assert_diagnostics(
        result,
        'The argument "oid" is required, but no definition was found.',
        "Error: Too many custom_metadata blocks",
        'No more than 1 "custom_metadata" blocks are allowed',
    )


def test_unknown_mount_type_is_only_a_warning(tmp_path: Path, tf_env: dict[str, str]) -> None:
    """Plugins may register any mount type, so an unknown one is a warning, not an error."""
    result = run_terraform(["validate"], copy_of_good(tmp_path, 'type                      = "pki"', 'type = "pkii"'), tf_env)
    assert_diagnostics(result, "Warning: Unexpected vault_mount.type value 'pkii'", "Success! The configuration is valid", ok=True)


# ------------------------------------------------------------------------------------------------
# terraform test (plan runs, mock_provider) and refusal of real operations
# ------------------------------------------------------------------------------------------------


def test_terraform_test_with_mock_provider_runs_offline(tmp_path: Path, tf_env: dict[str, str]) -> None:
    result = run_terraform(["test"], copy_of_good(tmp_path), tf_env)
    assert_diagnostics(result, 'run "node_role_plan"... pass', "Success! 1 passed, 0 failed.", ok=True)


def test_terraform_test_assertions_see_planned_values(tmp_path: Path, tf_env: dict[str, str]) -> None:
    """The same run fails when the planned value it asserts on changes: the assertions are real."""
    config = copy_of_good(tmp_path, "server_flag        = true", "server_flag        = false")
    result = run_terraform(["test"], config, tf_env)
    assert_diagnostics(
        result, "Node certificates must be usable as server and client certificates.", "Failure! 0 passed, 1 failed."
    )


def test_terraform_test_uses_the_stand_in(tmp_path: Path, tf_env: dict[str, str]) -> None:
    """mock_provider still asks the stand-in to validate: its own enumeration check fires inside `terraform test`."""
    config = copy_of_good(tmp_path, 'key_type           = "ec"', 'key_type           = "ecdsa"')
    result = run_terraform(["test"], config, tf_env)
    assert_diagnostics(
        result, "Error: Unexpected vault_pki_secret_backend_role.key_type value 'ecdsa'", "Failure! 0 passed, 1 failed."
    )


def test_plan_against_the_stand_in_is_refused(tmp_path: Path, tf_env: dict[str, str]) -> None:
    result = run_terraform(["plan", "-input=false", "-lock=false"], copy_of_good(tmp_path), tf_env)
    assert_diagnostics(result, f"Error: {REFUSAL}", "remove the dev_overrides entry")
    assert not (tmp_path / "config" / "terraform.tfstate").exists()


def test_fixtures_are_formatted(tf_env: dict[str, str]) -> None:
    result = run_terraform(["fmt", "-check", "-diff", "-recursive", str(FIXTURES)], FIXTURES, tf_env)
    assert result.returncode == 0, result


def test_run_terraform_refuses_init(tmp_path: Path, tf_env: dict[str, str]) -> None:
    with pytest.raises(pytest.fail.Exception, match="refuses `terraform init`"):
        run_terraform(["init"], tmp_path, tf_env)


# ------------------------------------------------------------------------------------------------
# The schema extraction itself (no terraform involved)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vault_schema_stub", STUB_DIR / "vault_schema_stub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_schema_matches_known_facts_of_provider_5_6_0(stub_module: ModuleType, vault_schema_tgz: Path) -> None:
    spec = stub_module.load_provider_spec(vault_schema_tgz)
    assert (len(spec.resources), len(spec.data_sources)) == (160, 45)

    role = spec.resources["vault_pki_secret_backend_role"]
    assert {a.name for a in role.attributes if a.required} == {"backend", "name"}
    assert role.attribute("allowed_domains").type == ["list", "string"]
    assert role.attribute("enforce_hostnames").type == "bool"
    assert role.attribute("key_bits").type == "number"
    block = role.block("policy_identifier")
    assert (block.nesting, block.max_items) == ("set", 0)
    assert block.body.attribute("oid").required

    root = spec.resources["vault_pki_secret_backend_root_cert"]
    for exported in ("issuer_id", "certificate", "serial_number", "key_id"):
        attribute = root.attribute(exported)
        assert attribute.computed and not attribute.optional and not attribute.required, exported

    approle = spec.resources["vault_approle_auth_backend_role"]
    assert approle.attribute("token_policies").type == ["set", "string"]
    assert spec.resources["vault_kv_secret_v2"].block("custom_metadata").max_items == 1
    assert spec.data_sources["vault_pki_secret_backend_issuers"].attribute("key_info").type == ["map", "string"]
    assert "alias" not in {a.name for a in spec.provider.attributes}  # a meta-argument, not schema


# ------------------------------------------------------------------------------------------------
# tools/fetch-vault-schema.sh
# ------------------------------------------------------------------------------------------------


def test_fetch_reuses_a_verified_tarball_without_npm(tmp_path: Path, vault_schema_tgz: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / vault_schema_tgz.name
    shutil.copy2(vault_schema_tgz, cached)
    before = cached.stat().st_mtime_ns
    fake_bin = _fake_npm(tmp_path, "echo 'npm must not be called for a verified cached tarball' >&2; exit 99")
    proc = _run_fetch(cache, fake_bin)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cached)
    assert cached.stat().st_mtime_ns == before


def test_fetch_fails_loudly_on_integrity_mismatch(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # A fake npm that "packs" a tampered tarball.
    fake_bin = _fake_npm(
        tmp_path,
        'while [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest=$2; shift; done\n'
        'printf tampered > "$dest/cdktf-provider-vault-15.6.1.tgz"',
    )
    proc = _run_fetch(cache, fake_bin)
    assert proc.returncode == 1, proc
    assert "integrity mismatch for @cdktf/provider-vault@15.6.1" in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in cache.iterdir()) == [], "the tampered tarball must not be kept"


def _fake_npm(tmp_path: Path, body: str) -> Path:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    npm = fake_bin / "npm"
    npm.write_text(f"#!/bin/sh\n{body}\n")
    npm.chmod(0o755)
    return fake_bin


def _run_fetch(cache: Path, fake_bin: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(FETCH_SCRIPT), str(cache)], capture_output=True, text=True, env=env, timeout=60)
