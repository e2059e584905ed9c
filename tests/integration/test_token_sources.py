"""Where the token and the address come from, through the real CLI against the real OpenBao: every
command (the admin ones included) reads ``vault.token_file``, ``$BAO_ADDR``/``$BAO_TOKEN``/``$BAO_CACERT``
beside ``$VAULT_*``, and ``~/.vault-token`` (what ``bao login`` writes), in the one documented order."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode
from vaultpki.dev.devserver import DevServer

from .conftest import Deployment, run_cli, toml_dump
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

DEAD_ADDR = "http://127.0.0.1:9"      # the discard port: nothing answers there


def secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A HOME of the test's own: no ~/.vault-token unless the test writes one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def config_without(dep: Deployment, tmp_path: Path, *drop: str, **vault: str) -> Path:
    """The deployment's config, with [vault] keys dropped or set."""
    doc = dep.config_doc(tmp_path / "certs")
    for key in drop:
        doc["vault"].pop(key)
    doc["vault"].update(vault)
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump(doc))
    return config


def test_ca_status_with_only_vault_token_file(deploy: Callable[..., Deployment], tmp_path: Path, home: Path) -> None:
    """`ca status` reads vault.token_file: no $VAULT_TOKEN demanded."""
    dep = deploy(Mode.STANDARD)
    token = secret(tmp_path / "token", dep.server.root_token)
    config = config_without(dep, tmp_path, token_file=str(token))
    result = run_cli(["--config", str(config), "ca", "status", "--json"], {"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    issuers = json.loads(result.stdout)["issuers"]
    assert len(issuers) >= 1 and sum(1 for i in issuers if i["is_default"]) == 1


def test_issue_node_with_only_bao_addr_and_bao_token(deploy: Callable[..., Deployment], tmp_path: Path,
                                                     home: Path) -> None:
    """No vault.addr, no $VAULT_*: $BAO_ADDR and $BAO_TOKEN are enough."""
    dep = deploy(Mode.STANDARD)
    config = config_without(dep, tmp_path, "addr")
    env = {"HOME": str(home), "BAO_ADDR": dep.server.addr, "BAO_TOKEN": dep.server.root_token}
    result = run_cli(["--config", str(config), "issue-node"], env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").is_file()


def test_bao_variables_win_over_vault_variables(deploy: Callable[..., Deployment], tmp_path: Path,
                                                home: Path) -> None:
    """The bao CLI's order: $BAO_X, else $VAULT_X. A dead $VAULT_ADDR and a bogus $VAULT_TOKEN beside good
    $BAO_* are never used."""
    dep = deploy(Mode.STANDARD)
    config = config_without(dep, tmp_path, "addr")
    env = {"HOME": str(home), "BAO_ADDR": dep.server.addr, "BAO_TOKEN": dep.server.root_token,
           "VAULT_ADDR": DEAD_ADDR, "VAULT_TOKEN": "s.not-a-real-token"}
    result = run_cli(["--config", str(config), "issue-node"], env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").is_file()


def test_issue_node_and_ca_status_with_only_home_vault_token(deploy: Callable[..., Deployment], tmp_path: Path,
                                                             home: Path) -> None:
    """What `bao login` leaves behind, ~/.vault-token (0600), is the token when nothing else names one."""
    dep = deploy(Mode.STANDARD)
    secret(home / ".vault-token", dep.server.root_token)
    config = config_without(dep, tmp_path)
    result = run_cli(["--config", str(config), "issue-node"], {"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").is_file()
    status = run_cli(["--config", str(config), "ca", "status", "--json"], {"HOME": str(home)})
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)


def test_environment_token_wins_over_home_vault_token(deploy: Callable[..., Deployment], tmp_path: Path,
                                                      home: Path) -> None:
    """$VAULT_TOKEN beats ~/.vault-token, as in the vault and bao CLIs: a bogus file is never read."""
    dep = deploy(Mode.STANDARD)
    secret(home / ".vault-token", "s.not-a-real-token")
    config = config_without(dep, tmp_path)
    result = run_cli(["--config", str(config), "issue-node"],
                     {"HOME": str(home), "VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr


def test_home_vault_token_readable_by_others_is_refused(deploy: Callable[..., Deployment], tmp_path: Path,
                                                        home: Path) -> None:
    """~/.vault-token is held to the token file's rules: one line, exit 2, nothing written."""
    dep = deploy(Mode.STANDARD)
    secret(home / ".vault-token", dep.server.root_token, 0o644)
    config = config_without(dep, tmp_path)
    result = run_cli(["--config", str(config), "issue-node"], {"HOME": str(home)})
    one_error_line(result, 2, "~/.vault-token", "accessible by group or others", "chmod 600")
    assert dep.server.root_token not in result.stderr
    assert not (tmp_path / "certs").exists()


def test_no_token_anywhere_names_every_source(deploy: Callable[..., Deployment], tmp_path: Path, home: Path) -> None:
    dep = deploy(Mode.STANDARD)
    config = config_without(dep, tmp_path)
    result = run_cli(["--config", str(config), "ca", "status"], {"HOME": str(home)})
    one_error_line(result, 2, "no Vault token", "vault.token_file", "$BAO_TOKEN", "$VAULT_TOKEN", "~/.vault-token")


@pytest.fixture(scope="module")
def tls_bao() -> Iterator[DevServer]:
    with DevServer(tls=True) as server:
        yield server


def test_provision_then_issue_with_only_bao_variables_over_tls(tls_bao: DevServer, tmp_path: Path,
                                                              home: Path) -> None:
    """`provision` takes its admin token from $BAO_TOKEN (it demanded $VAULT_TOKEN), trusting $BAO_CACERT;
    `issue-node` then works from the same three variables."""
    assert tls_bao.ca_cert is not None
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({"certs_dir": str(tmp_path / "certs"), "mode": "standard", "ttl": "1h",
                                 "pki": {"mount": "toksrc-crdb"}, "node": {"hosts": ["localhost"]}}))
    env = {"HOME": str(home), "BAO_ADDR": tls_bao.addr, "BAO_TOKEN": tls_bao.root_token,
           "BAO_CACERT": tls_bao.ca_cert}
    first = run_cli(["--config", str(config), "provision", "--root-mount", "toksrc-root"], env)
    assert first.returncode == 0, first.stderr
    assert "toksrc-crdb/roles/node" in first.stdout
    issued = run_cli(["--config", str(config), "issue-node"], env)
    assert issued.returncode == 0, issued.stderr
    assert (tmp_path / "certs" / "node.crt").is_file()
