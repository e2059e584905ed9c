"""Secrets stay out of every record's repr, the one place a record reaches a log whole."""

from __future__ import annotations

import pytest

from vaultpki.config import VaultConfig
from vaultpki.core.ports import IssuedCert
from vaultpki.daemon.reload_command import RunCommand
from vaultpki.redact import REDACTED, redacted_repr


def vault_config(**secrets: str | None) -> VaultConfig:
    return VaultConfig("https://vault.internal:8200", "token", None, None, 5.0, **secrets)


def test_config_repr_masks_token_and_role_id() -> None:
    cfg = vault_config(token="s.TOPSECRET", role_id="ROLE-ID-SECRET")
    text = repr(cfg)
    assert "s.TOPSECRET" not in text and "ROLE-ID-SECRET" not in text
    assert f"token={REDACTED!r}" in text and f"role_id={REDACTED!r}" in text
    assert "addr='https://vault.internal:8200'" in text       # the rest is shown as the generated repr shows it
    assert cfg.token == "s.TOPSECRET"                         # masking touches the text, never the record


def test_an_unset_secret_shows_as_none() -> None:
    text = repr(vault_config())
    assert "token=None" in text and "role_id=None" in text and REDACTED not in text


def test_issued_key_is_not_in_repr() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----\n"
    issued = IssuedCert("CERT", ("CA",), "01:02", private_key=pem)
    assert "MIGHAgEAMBMG" not in repr(issued) and f"private_key={REDACTED!r}" in repr(issued)
    assert "serial='01:02'" in repr(issued)


def test_reload_command_env_is_masked_and_argv_is_frozen() -> None:
    argv = ["/usr/local/bin/reload-db", "--graceful"]
    command = RunCommand(argv, 5, env={"PGPASSWORD": "hunter2"})
    argv.append("--now")                                      # the caller's list can't change the record
    assert command.argv == ("/usr/local/bin/reload-db", "--graceful")
    assert "hunter2" not in repr(command) and "--graceful" in repr(command)
    assert command == RunCommand(("/usr/local/bin/reload-db", "--graceful"), 5, env={"PGPASSWORD": "hunter2"})
    assert hash(RunCommand(["true"], 5)) == hash(RunCommand(("true",), 5))     # a value: usable as a key


@pytest.mark.parametrize("secrets", [pytest.param(("token",), id="one"), pytest.param(("token", "role_id"), id="two")])
def test_redacted_repr_names_the_class(secrets: tuple[str, ...]) -> None:
    assert redacted_repr(vault_config(token="t", role_id="r"), *secrets).startswith("VaultConfig(addr=")
