"""What an operator reaches for (issue 18): ``--config`` after the subcommand, ``status``/``verify``
without a Vault address, ``status`` on a missing certs-dir, and retries that say so in the log."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from vaultpki.config import dumps, parse
from vaultpki.errors import VaultUnavailable
from vaultpki.vault.client import HttpVault

from .conftest import run_cli

pytestmark = pytest.mark.integration


def no_vault_config(path: Path, certs_dir: Path) -> Path:
    """A node's config with no Vault address at all (run_cli drops every $VAULT_*)."""
    path.write_text(dumps({"mode": "standard", "certs_dir": str(certs_dir), "node": {"hosts": ["db1"]}}))
    return path


def test_config_after_the_subcommand_and_status_verify_need_no_vault_address(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    config = str(no_vault_config(tmp_path / "c.toml", certs))
    for args in (["status", "--config", config], ["--config", config, "status"], ["status", f"--config={config}"]):
        result = run_cli(args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Vault" not in result.stderr
    verify = run_cli(["verify", "--config", config])
    assert verify.returncode == 1 and "Vault address" not in verify.stderr     # judged: the dir is empty
    assert "ca.crt" in verify.stdout + verify.stderr
    # A command that talks to Vault still needs the address, with the same one line, wherever --config is.
    for args in (["issue-node", "--config", config], ["--config", config, "sync", "--once"],
                 ["ca", "status", "--config", config]):
        result = run_cli(args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("vaultpki: error: no Vault address: set vault.addr")
        assert result.stderr.count("\n") == 1
    assert not any(certs.iterdir())


def test_config_after_the_subcommand_wins_over_the_one_before(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)
    good = str(no_vault_config(tmp_path / "good.toml", certs))
    result = run_cli(["--config", str(tmp_path / "absent.toml"), "status", "--json", "--config", good])
    assert result.returncode == 0, result.stderr
    assert '"files": []' in result.stdout


@pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "text"])
def test_status_on_a_missing_certs_dir_is_an_error(tmp_path: Path, json_flag: list[str]) -> None:
    missing = tmp_path / "no-such-dir"
    for args in (["status", "--certs-dir", str(missing), *json_flag],
                 ["status", "--config", str(no_vault_config(tmp_path / "c.toml", missing)), *json_flag]):
        result = run_cli(args)
        assert result.returncode == 2, (args, result.stdout)
        assert result.stdout == ""
        assert result.stderr == f"vaultpki: error: certs-dir {missing} does not exist\n"
    assert not missing.exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collect(logging.Handler):
    """Where the daemon's handler would be (``logs.setup`` puts it on the ``vaultpki`` logger)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_retries_log_when_they_start_and_when_they_give_up() -> None:
    # A real address with nothing listening: Vault away, the transient failure retries are for.
    addr = f"http://127.0.0.1:{closed_port()}"
    cfg = parse({"vault": {"addr": addr, "retry_for": "1s"}, "node": {"hosts": ["db1"]}}, {"VAULT_TOKEN": "t"}).vault
    vault = HttpVault(cfg, one_shot=True, env={})
    logger, seen = logging.getLogger("vaultpki.vault"), Collect()
    logger.addHandler(seen)
    try:
        with pytest.raises(VaultUnavailable):
            vault.list_serials("pki")
    finally:
        logger.removeHandler(seen)
    lines = [(r.levelname, r.getMessage(), r.__dict__.get("addr"), r.__dict__.get("retry_for")) for r in seen.records]
    assert lines == [("WARNING", "Vault request failed; retrying", addr, "1s"),
                     ("WARNING", "Vault request failed; giving up", addr, "1s")]
    assert seen.records[1].__dict__["attempts"] > 1
    assert addr.split("//")[1] in seen.records[1].__dict__["error"]
