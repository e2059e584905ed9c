"""``$VAULTPKI_<TABLE>_<KEY>``: an environment override for every configuration key (issue 18: a per-pod
``pki.node_role`` from the Downward API, with one ConfigMap shared by every pod)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vaultpki.config import config_keys, dumps, load, parse
from vaultpki.config.env_overrides import CONFIG_FILE_VAR, env_name, override_names
from vaultpki.errors import ConfigError

BASE: dict[str, Any] = {
    "certs_dir": "/var/lib/cockroach/certs",
    "vault": {"addr": "https://vault.example.com:8200"},
    "pki": {"node_role": "node"},
    "node": {"hosts": ["db-0.db", "localhost"]},
}


def test_every_key_has_exactly_one_variable_and_none_is_the_files() -> None:
    names = override_names()
    assert sorted(names.values()) == sorted(config_keys())
    assert names["VAULTPKI_PKI_NODE_ROLE"] == "pki.node_role"
    assert names["VAULTPKI_NODE_HOSTS"] == "node.hosts"
    assert names["VAULTPKI_CERTS_DIR"] == "certs_dir"
    assert names["VAULTPKI_VAULT_TOKEN_FILE"] == "vault.token_file"
    assert CONFIG_FILE_VAR not in names
    assert env_name("reload.verify_timeout") == "VAULTPKI_RELOAD_VERIFY_TIMEOUT"


def test_no_key_can_carry_a_token_through_the_environment() -> None:
    # A file naming the token is fine; the token itself has no key, hence no variable.
    assert not any(key.endswith(("token", "secret_id")) for key in config_keys())
    with pytest.raises(ConfigError) as exc:
        parse(BASE, {"VAULTPKI_VAULT_TOKEN": "s.very-secret"})
    assert "VAULTPKI_VAULT_TOKEN" in str(exc.value) and "s.very-secret" not in str(exc.value)


def test_node_role_from_the_environment_wins_over_the_file() -> None:
    assert parse(BASE, {}).pki.node_role == "node"
    assert parse(BASE, {"VAULTPKI_PKI_NODE_ROLE": "node-cockroachdb-2"}).pki.node_role == "node-cockroachdb-2"


def test_values_are_read_by_their_keys_type() -> None:
    cfg = parse(BASE, {
        "VAULTPKI_CERTS_DIR": "/certs",
        "VAULTPKI_NODE_HOSTS": "cockroachdb-2.cockroachdb, localhost,127.0.0.1",
        "VAULTPKI_NODE_USERS": "root",
        "VAULTPKI_KEY_BITS": "384",
        "VAULTPKI_VAULT_TIMEOUT": "2.5",
        "VAULTPKI_RENEW_OCSP_CHECK": "false",
        "VAULTPKI_MODE": "split-node",
        "VAULTPKI_RELOAD_COMMAND": "kubectl,rollout,restart,statefulset/cockroachdb",
    })
    assert str(cfg.certs_dir) == "/certs"
    assert cfg.node_hosts == ("cockroachdb-2.cockroachdb", "localhost", "127.0.0.1")
    assert cfg.node_users == ("root",)
    assert cfg.key_bits == 384
    assert cfg.vault.timeout == 2.5
    assert cfg.renew.ocsp_check is False
    assert cfg.mode.value == "split-node"
    assert cfg.reload.command == ("kubectl", "rollout", "restart", "statefulset/cockroachdb")


def test_a_table_the_file_leaves_out_is_created() -> None:
    raw = {"vault": {"addr": "https://vault.example.com:8200"}}
    assert parse(raw, {"VAULTPKI_PKI_MOUNT": "pki-other"}).pki.mount == "pki-other"


def test_precedence_override_then_file_then_bao_vault_then_default() -> None:
    raw = {"vault": {"namespace": "from-file"}}
    env = {"BAO_ADDR": "https://bao.example.com:8200", "BAO_NAMESPACE": "from-bao", "VAULT_NAMESPACE": "from-vault"}
    assert parse(raw, {**env, "VAULTPKI_VAULT_NAMESPACE": "from-override"}).vault.namespace == "from-override"
    assert parse(raw, env).vault.namespace == "from-file"
    assert parse({}, env).vault.namespace == "from-bao"
    assert parse({}, {"VAULT_ADDR": "https://v.example.com:8200"}).vault.namespace is None
    # The address too: the override beats $BAO_ADDR, and it is read like the file's (comma-separated HA list).
    cfg = parse({}, {**env, "VAULTPKI_VAULT_ADDR": "https://a.example.com:8200,https://b.example.com:8200"})
    assert cfg.vault.addrs == ("https://a.example.com:8200", "https://b.example.com:8200")


@pytest.mark.parametrize("var", ["VAULTPKI_PKI_NODEROLE", "VAULTPKI_NODE_HOST", "vaultpki_pki_node_role",
                                 "VAULTPKI_", "VAULTPKI_CONFIG_FILE"])
def test_an_unknown_vaultpki_variable_is_an_error(var: str) -> None:
    with pytest.raises(ConfigError, match=r"names no configuration key"):
        parse(BASE, {var: "node-x"})


def test_the_typo_gets_the_closest_name() -> None:
    with pytest.raises(ConfigError, match=r"did you mean \$VAULTPKI_PKI_NODE_ROLE\?"):
        parse(BASE, {"VAULTPKI_PKI_NODEROLE": "node-x"})


def test_vaultpki_config_names_the_file_and_is_no_override() -> None:
    assert parse(BASE, {CONFIG_FILE_VAR: "/etc/vaultpki.toml"}).pki.node_role == "node"


@pytest.mark.parametrize(("var", "value", "message"), [
    ("VAULTPKI_NODE_HOSTS", "a,,b", r"\$VAULTPKI_NODE_HOSTS \(node.hosts\): an empty item"),
    ("VAULTPKI_NODE_HOSTS", "a, ", r"an empty item"),
    ("VAULTPKI_KEY_BITS", "3x", r"\$VAULTPKI_KEY_BITS \(key_bits\) must be an integer"),
    ("VAULTPKI_KEY_BITS", "-256", r"must be an integer"),
    ("VAULTPKI_KEY_BITS", "２５６", r"must be an integer"),
    ("VAULTPKI_VAULT_TIMEOUT", "nan", r"must be a number"),
    ("VAULTPKI_VAULT_TIMEOUT", "1e3", r"must be a number"),
    ("VAULTPKI_RENEW_OCSP_CHECK", "yes", r"must be true or false"),
    ("VAULTPKI_RENEW_OCSP_CHECK", "True", r"must be true or false"),
])
def test_a_value_that_is_not_of_the_keys_type_is_an_error(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(BASE, {var: value})


@pytest.mark.parametrize(("var", "value", "message"), [
    ("VAULTPKI_PKI_NODE_ROLE", "node-$(POD_NAME)", r"pki.node_role = .* is not a Vault role name"),
    ("VAULTPKI_PKI_NODE_ROLE", "", r"pki.node_role must be a non-empty string"),
    ("VAULTPKI_KEY_BITS", "512", r"key_bits"),
    ("VAULTPKI_MODE", "bogus", r"mode = 'bogus' is not one of"),
    ("VAULTPKI_RENEW_JITTER", "50%", r"renew.jitter"),
    ("VAULTPKI_VAULT_ADDR", "ftp://x", r"vault.addr"),
])
def test_a_value_is_judged_like_the_files_and_the_message_names_the_variable(var: str, value: str,
                                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        parse(BASE, {var: value})
    assert str(exc.value).endswith(f"(set by ${var})")


def test_a_file_error_is_not_blamed_on_an_override() -> None:
    with pytest.raises(ConfigError) as exc:
        parse({**BASE, "ttl": "forever"}, {"VAULTPKI_PKI_NODE_ROLE": "node-db-0"})
    assert "set by" not in str(exc.value)


def test_load_reads_overrides_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "vaultpki.toml"
    path.write_text(dumps(BASE))
    assert load(path, {"VAULTPKI_PKI_NODE_ROLE": "node-db-1"}).pki.node_role == "node-db-1"


def test_cli_refuses_an_unknown_variable_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "vaultpki.toml"
    path.write_text(dumps(BASE))
    certs = tmp_path / "certs"
    result = subprocess.run([sys.executable, "-m", "vaultpki", "--config", str(path), "status"],
                            env={"PATH": "/usr/bin:/bin", "VAULTPKI_PKI_NODEROLE": "node-db-0"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vaultpki: error: $VAULTPKI_PKI_NODEROLE names no configuration key; did you mean $VAULTPKI_PKI_NODE_ROLE?"]
    assert not certs.exists()
