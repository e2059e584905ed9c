"""The one order every command takes Vault's address, CA, namespace and token in: the file's key, else
$BAO_X, else $VAULT_X, and for the token last ~/.vault-token ($HOME's)."""

from __future__ import annotations

from typing import Any

import pytest

from vaultpki.config import parse
from vaultpki.config.records import TokenSource
from vaultpki.errors import ConfigError
from vaultpki.vault.session import admin_config

ADDR = "https://vault.example.com:8200"


def doc(**vault: Any) -> dict[str, Any]:
    return {"node": {"hosts": ["db1"]}, "vault": {"addr": ADDR, **vault}}


@pytest.mark.parametrize(("vault", "env", "expected"), [
    pytest.param({"token_file": "/run/t"}, {"BAO_TOKEN": "b", "VAULT_TOKEN": "v", "HOME": "/home/u"},
                 TokenSource(origin="vault.token_file", path="/run/t"), id="file-key-first"),
    pytest.param({}, {"BAO_TOKEN": "b", "VAULT_TOKEN": "v", "HOME": "/home/u"},
                 TokenSource(origin="$BAO_TOKEN", value="b"), id="bao-before-vault"),
    pytest.param({}, {"BAO_TOKEN": "", "VAULT_TOKEN": "v", "HOME": "/home/u"},
                 TokenSource(origin="$VAULT_TOKEN", value="v"), id="empty-bao-is-unset"),
    pytest.param({}, {"HOME": "/home/u/"},
                 TokenSource(origin="~/.vault-token", path="/home/u/.vault-token"), id="home-file-last"),
    pytest.param({}, {}, TokenSource(origin="~/.vault-token"), id="no-home-no-token"),
    pytest.param({}, {"HOME": "relative"}, TokenSource(origin="~/.vault-token"), id="relative-home-ignored"),
])
def test_token_precedence(vault: dict[str, Any], env: dict[str, str], expected: TokenSource) -> None:
    cfg = parse(doc(**vault), env).vault
    assert cfg.token_source == expected
    assert cfg.token == expected.value


@pytest.mark.parametrize(("name", "key"), [("ADDR", "addr"), ("CACERT", "ca_cert"), ("NAMESPACE", "namespace")])
def test_bao_variables_before_vault_variables(name: str, key: str) -> None:
    bao, vault = ("https://bao:8200", "https://vault:8200") if name == "ADDR" else ("bao-value", "vault-value")
    raw: dict[str, Any] = {"node": {"hosts": ["db1"]}} if name == "ADDR" else doc()
    both = parse(raw, {f"BAO_{name}": bao, f"VAULT_{name}": vault}).vault
    assert getattr(both, key) == bao
    only_vault = parse(raw, {f"BAO_{name}": "", f"VAULT_{name}": vault}).vault
    assert getattr(only_vault, key) == vault


def test_the_file_beats_bao_variables() -> None:
    env = {"BAO_ADDR": "https://bao:8200", "BAO_CACERT": "/bao/ca.pem", "BAO_NAMESPACE": "bao-ns"}
    v = parse(doc(ca_cert="/file/ca.pem", namespace="file-ns"), env).vault
    assert (v.addr, v.ca_cert, v.namespace) == (ADDR, "/file/ca.pem", "file-ns")


def test_no_address_names_both_variables() -> None:
    with pytest.raises(ConfigError, match=r"set vault.addr, \$BAO_ADDR or \$VAULT_ADDR"):
        parse({"node": {"hosts": ["db1"]}}, {"HOME": "/home/u"})


def test_a_bao_token_no_header_can_carry_is_named_as_bao_token() -> None:
    with pytest.raises(ConfigError, match=r"^\$BAO_TOKEN has a character"):
        parse(doc(), {"BAO_TOKEN": "left\nover"})


def test_the_bao_token_is_not_in_repr() -> None:
    cfg = parse(doc(), {"BAO_TOKEN": "s.SECRET-BAO"})
    assert "SECRET-BAO" not in repr(cfg)
    assert "SECRET-BAO" not in repr(cfg.vault.token_source)


def test_admin_commands_use_the_same_sources_whatever_the_login_method() -> None:
    """A node configured for AppRole: `ca …`/`provision` still take the operator's own token."""
    raw = doc(auth="approle", role_id="r", secret_id_file="/s")
    admin = admin_config(parse(raw, {"HOME": "/home/op"}).vault)
    assert admin.auth == "token"
    assert admin.token_source == TokenSource(origin="~/.vault-token", path="/home/op/.vault-token")
