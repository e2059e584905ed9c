"""``vaultpki init`` (issue 18): a commented configuration for every layout and login method that vaultpki's
own parser reads back, written 0644 with no secret in it, never over an existing file without --force,
with no question asked (the environment and the host fill what the options leave out)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner, Result

from tests.support.doc_blocks import doc_block
from vaultpki import config as config_mod
from vaultpki.cli.init import AUTHS, default_hosts
from vaultpki.cli.main import main
from vaultpki.config.schema import AuthMethod
from vaultpki.core.layout import Mode

ADDR = "https://vault.test.internal:8200"
KEY_LINE = re.compile(r"^(?P<key>[a-z_]+) = ")


@pytest.fixture(autouse=True)
def _no_bao_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BAO_"):
            monkeypatch.delenv(name)


def init(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, ["init", *args], env=env, catch_exceptions=False)


def keys_of(text: str) -> list[str]:
    """The dotted keys a written configuration sets (comments and commented-out keys aside)."""
    table, keys = "", []
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]") + "."
        elif match := KEY_LINE.match(line):
            keys.append(table + match["key"])
    return keys


def test_every_login_method_of_the_schema_has_a_template() -> None:
    assert set(AUTHS) == set(get_args(AuthMethod))


@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_every_mode_and_login_parses_as_vaultpki_reads_it(tmp_path: Path, mode: Mode, auth: str) -> None:
    out = tmp_path / "vaultpki.toml"
    result = init("--mode", mode.value, "--auth", auth, "--vault-addr", ADDR, "--node-hosts", "db1.example.internal,10.0.0.1",
                  "--node-hosts", "localhost", "--certs-dir", "/srv/certs", "-o", str(out))
    if auth == "cert" and mode is not Mode.STANDARD:
        # vaultpki's own rule (cert login is bound to a standard node.crt), said before anything is written
        assert result.exit_code == 2 and "works in mode = 'standard' only" in result.output
        assert not out.exists()
        return
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    cfg = config_mod.load(out, env={})
    assert (cfg.mode, cfg.vault.auth, cfg.vault.addr) == (mode, auth, ADDR)
    assert cfg.certs_dir == Path("/srv/certs") and cfg.node_hosts == ("db1.example.internal", "10.0.0.1", "localhost")
    text = out.read_text()
    assert set(keys_of(text)) <= set(config_mod.config_keys())
    # every key is explained: each run of key lines follows a comment
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if KEY_LINE.match(line) and not KEY_LINE.match(lines[number - 1]):
            assert lines[number - 1].startswith("#"), f"line {number + 1} ({line!r}) has no comment above it"
    assert "docs/configuration.md" in text
    # no secret: only the paths of the files that hold one
    assert not {k.rsplit(".", 1)[-1] for k in keys_of(text)} & {"token", "role_id", "secret_id", "jwt"}


def test_cert_login_needs_an_https_address(tmp_path: Path) -> None:
    result = init("--auth", "cert", "--vault-addr", "http://vault:8200", "-o", str(tmp_path / "c.toml"))
    assert result.exit_code == 2 and "https://" in result.output
    assert not (tmp_path / "c.toml").exists()


def test_an_existing_file_is_never_replaced_without_force(tmp_path: Path) -> None:
    out = tmp_path / "vaultpki.toml"
    out.write_text("mine\n")
    result = init("--vault-addr", ADDR, "-o", str(out))
    assert result.exit_code == 2
    assert result.output == f"vaultpki: error: {out} exists: vaultpki init never replaces a file (pass --force to replace it)\n"
    assert out.read_text() == "mine\n"
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "elsewhere.toml")         # a dangling link is a name in use too
    assert init("--vault-addr", ADDR, "-o", str(link)).exit_code == 2 and not (tmp_path / "elsewhere.toml").exists()
    forced = init("--vault-addr", ADDR, "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert config_mod.load(out, env={}).vault.addr == ADDR and stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.toml", "vaultpki.toml"]      # no temporary file left


def test_the_address_and_ca_come_from_the_environment_bao_first() -> None:
    env: dict[str, str | None] = {"BAO_ADDR": "https://bao:8200", "VAULT_ADDR": "https://vault:8200",
                                  "VAULT_CACERT": "/etc/vault-ca.pem"}
    result = init(env=env)
    assert result.exit_code == 0, result.output
    cfg = config_mod.parse(tomllib.loads(result.output), {})
    assert cfg.vault.addrs == ("https://bao:8200",) and cfg.vault.ca_cert == "/etc/vault-ca.pem"
    several = init(env={"VAULT_ADDR": "https://v1:8200,https://v2:8200"})
    assert config_mod.parse(tomllib.loads(several.output), {}).vault.addrs == ("https://v1:8200", "https://v2:8200")


def test_no_address_anywhere_is_one_line_exit_2() -> None:
    result = init(env={"BAO_ADDR": None, "VAULT_ADDR": None})
    assert result.exit_code == 2
    assert result.output == "vaultpki: error: init: no Vault address: pass --vault-addr or set $BAO_ADDR or $VAULT_ADDR\n"


def test_the_hosts_default_to_this_machine_and_loopback() -> None:
    hosts = default_hosts()
    assert hosts[-2:] == ["localhost", "127.0.0.1"] and len(hosts) == len(set(hosts))
    cfg = config_mod.parse(tomllib.loads(init("--vault-addr", ADDR).output), {})
    assert list(cfg.node_hosts) == hosts


def test_it_asks_nothing_with_stdin_closed(tmp_path: Path) -> None:
    """Non-interactive, as cron and CI run it: the real command, stdin at end of file, no terminal."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "BAO_ADDR": ADDR}
    done = subprocess.run([sys.executable, "-m", "vaultpki", "init", "--mode", "split-ca", "-o", str(tmp_path / "c.toml")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'c.toml'} (mode 0644)") and done.stderr == ""
    assert config_mod.load(tmp_path / "c.toml", env={}).pki.client_mount == "pki-crdb-client"


def test_the_example_in_docs_cli_is_what_init_writes() -> None:
    result = init("--vault-addr", "https://vault.internal:8200", "--ca-cert", "/etc/vaultpki/vault-ca.pem", "--owner",
                  "cockroach", "--group", "cockroach", "--node-hosts", "node1.db.internal,10.0.0.1,localhost,127.0.0.1")
    assert result.exit_code == 0, result.output
    assert result.output == doc_block("cli.md", "init-example")
