"""config.parse(): the [renew] and [reload] tables and the vault.addr list (what `vaultpki sync` reads)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vaultpki.config import Config, ReloadConfig, parse
from vaultpki.core.renewal import RenewPolicy
from vaultpki.errors import ConfigError

ADDR = "https://vault.example.com:8200"
BASE: dict[str, Any] = {"vault": {"addr": ADDR}, "node": {"hosts": ["node1.internal", "127.0.0.1"]}}


def config(env: dict[str, str] | None = None, **tables: Any) -> Config:
    raw = copy.deepcopy(BASE)
    for name, table in tables.items():
        if isinstance(table, dict) and isinstance(raw.get(name), dict):
            raw[name].update(table)
        else:
            raw[name] = table
    return parse(raw, env or {})


def refused(fragment: str, env: dict[str, str] | None = None, **tables: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config(env, **tables)
    assert fragment in str(info.value), str(info.value)
    return str(info.value)


# --- defaults -----------------------------------------------------------------

def test_defaults() -> None:
    cfg = config()
    assert cfg.renew == RenewPolicy(before_fraction=0.33, before_seconds=None, jitter_fraction=0.05)
    assert cfg.retry_initial == 1.0 and cfg.retry_max == 300.0
    assert cfg.reload == ReloadConfig()
    r = cfg.reload
    assert r.signal == "SIGHUP"
    assert r.process is None and r.pidfile is None and r.command == ()
    assert r.verify is None
    assert r.command_timeout == 60 and r.verify_timeout == 15
    assert r.rollback_on_failure is False


def test_empty_tables_are_the_defaults() -> None:
    assert config(renew={}, reload={}) == config()


# --- [renew] ------------------------------------------------------------------

@pytest.mark.parametrize(("before", "fraction", "seconds"), [
    pytest.param("24h", None, 86400, id="24h"),
    pytest.param("1h30m", None, 5400, id="1h30m"),
    pytest.param("7d", None, 7 * 86400, id="7d"),
    pytest.param("600", None, 600, id="bare-seconds"),
    pytest.param("50%", 0.5, None, id="50pct"),
    pytest.param("12.5%", 0.125, None, id="12.5pct"),
])
def test_renew_before(before: str, fraction: float | None, seconds: int | None) -> None:
    policy = config(renew={"before": before}).renew
    assert policy.before_seconds == seconds
    if fraction is None:
        assert policy.before_fraction is None
    else:
        assert policy.before_fraction == pytest.approx(fraction)
    assert policy.jitter_fraction == 0.05


@pytest.mark.parametrize(("jitter", "value"), [
    pytest.param("0%", 0.0, id="zero"),
    pytest.param("10%", 0.10, id="10"),
    pytest.param("25%", 0.25, id="25-is-the-limit"),
])
def test_renew_jitter(jitter: str, value: float) -> None:
    assert config(renew={"jitter": jitter}).renew.jitter_fraction == pytest.approx(value)


def test_renew_retry_durations() -> None:
    cfg = config(renew={"retry_initial": "2s", "retry_max": "10m"})
    assert cfg.retry_initial == 2.0 and cfg.retry_max == 600.0


@pytest.mark.parametrize(("renew", "fragment"), [
    pytest.param({"jitter": "26%"}, "25%", id="jitter-above-25"),
    pytest.param({"jitter": "99%"}, "25%", id="jitter-99"),
    pytest.param({"jitter": "abc"}, "renew.jitter", id="jitter-abc"),
    pytest.param({"jitter": "100%"}, "renew.jitter", id="jitter-100"),
    pytest.param({"before": "0%"}, "renew.before", id="before-0pct"),
    pytest.param({"before": "100%"}, "renew.before", id="before-100pct"),
    pytest.param({"before": "abc"}, "renew.before", id="before-abc"),
    pytest.param({"before": "0s"}, "renew.before", id="before-zero-duration"),
    pytest.param({"before": 5}, "renew.before must be a non-empty string", id="before-not-a-string"),
    pytest.param({"retry_initial": "soon"}, "renew.retry_initial", id="retry-initial-bad"),
    pytest.param({"retry_max": "0s"}, "renew.retry_max", id="retry-max-zero"),
    pytest.param({"befor": "24h"}, "renew.befor", id="unknown-key"),
])
def test_renew_refused(renew: dict[str, Any], fragment: str) -> None:
    refused(fragment, renew=renew)


# --- [reload] -----------------------------------------------------------------

def test_reload_every_key() -> None:
    r = config(reload={"signal": "usr1", "pidfile": "/run/cockroach.pid", "command_timeout": "2m",
                       "verify": "postgres://127.0.0.1:26257", "verify_timeout": "30s",
                       "rollback_on_failure": True}).reload
    assert r == ReloadConfig(signal="SIGUSR1", process=None, pidfile="/run/cockroach.pid", command=(),
                             command_timeout=120, verify="postgres://127.0.0.1:26257", verify_timeout=30,
                             rollback_on_failure=True)


@pytest.mark.parametrize(("reload", "field", "value"), [
    pytest.param({"process": "cockroach"}, "process", "cockroach", id="process"),
    pytest.param({"command": ["systemctl", "reload", "cockroach"]}, "command", ("systemctl", "reload", "cockroach"),
                 id="command"),
    pytest.param({"signal": "HUP"}, "signal", "SIGHUP", id="signal-short-name"),
    pytest.param({"signal": "1"}, "signal", "SIGHUP", id="signal-number"),
    pytest.param({"signal": "SIGUSR2"}, "signal", "SIGUSR2", id="signal-full-name"),
    pytest.param({"verify": "tls://[::1]:8080"}, "verify", "tls://[::1]:8080", id="verify-tls-ipv6"),
    pytest.param({"verify": "postgres://db1.internal:26257"}, "verify", "postgres://db1.internal:26257",
                 id="verify-postgres-host"),
])
def test_reload_values(reload: dict[str, Any], field: str, value: object) -> None:
    assert getattr(config(reload=reload).reload, field) == value


def test_reload_process_and_pidfile_go_together() -> None:
    """The pid in the pidfile must then be that process (reload.SignalByPidfile checks it)."""
    r = config(reload={"process": "cockroach", "pidfile": "/run/c.pid"}).reload
    assert (r.process, r.pidfile) == ("cockroach", "/run/c.pid")


@pytest.mark.parametrize("reload", [
    pytest.param({"process": "cockroach", "command": ["true"]}, id="process+command"),
    pytest.param({"pidfile": "/run/c.pid", "command": ["true"]}, id="pidfile+command"),
    pytest.param({"process": "cockroach", "pidfile": "/run/c.pid", "command": ["true"]}, id="all-three"),
])
def test_a_signal_and_a_command_go_together(reload: dict[str, Any]) -> None:
    """The signal first, then the command (docs/sync.md "Reload and verification")."""
    r = config(reload=reload).reload
    assert r.commands == (("true",),)
    assert (r.process, r.pidfile) == (reload.get("process"), reload.get("pidfile"))


def test_command_and_commands_together_are_refused() -> None:
    refused("set reload.command (one command) or reload.commands (a list of them), not both",
            reload={"command": ["a"], "commands": [["b"]]})


@pytest.mark.parametrize("sig", [
    pytest.param("SIGNOPE", id="unknown-name"),
    pytest.param("NOPE", id="unknown-short-name"),
    pytest.param("99999", id="unknown-number"),
    pytest.param("0", id="zero"),
])
def test_reload_bad_signal_refused(sig: str) -> None:
    refused("is not a signal name or number", reload={"signal": sig})


@pytest.mark.parametrize(("verify", "fragment"), [
    pytest.param("http://x:1", "unknown scheme 'http'", id="http"),
    pytest.param("postgres://host", "no port", id="postgres-without-port"),
    pytest.param("tls://db1:0", "is not a number from 1 to 65535", id="port-zero"),
    pytest.param("tls://db1:port", "is not a number from 1 to 65535", id="port-word"),
    pytest.param("postgres://root@db1:26257", "only scheme://host:port", id="user"),
    pytest.param("postgres://db1:26257/defaultdb", "only scheme://host:port", id="path"),
    pytest.param("db1:26257", "no scheme", id="no-scheme"),
    pytest.param("tls://::1:8080", "must be in brackets", id="bare-ipv6"),
])
def test_reload_bad_verify_endpoint_refused(verify: str, fragment: str) -> None:
    refused(fragment, reload={"verify": verify})


@pytest.mark.parametrize(("reload", "fragment"), [
    pytest.param({"sginal": "HUP"}, "reload.sginal", id="unknown-key"),
    pytest.param({"verfiy": "tls://db1:8080", "rollback": True}, "reload.rollback, reload.verfiy", id="two-unknown-keys"),
    pytest.param({"command": "systemctl reload cockroach"}, "reload.command must be a list", id="command-string"),
    pytest.param({"command": ["ok", ""]}, "reload.command must be a list", id="command-empty-arg"),
    pytest.param({"rollback_on_failure": "yes"}, "reload.rollback_on_failure must be true or false", id="rollback-yes"),
    pytest.param({"verify_timeout": "0s"}, "reload.verify_timeout", id="verify-timeout-zero"),
    pytest.param({"command_timeout": "forever"}, "reload.command_timeout", id="command-timeout-word"),
    pytest.param({"process": ""}, "reload.process must be a non-empty string", id="empty-process"),
])
def test_reload_refused(reload: dict[str, Any], fragment: str) -> None:
    refused(fragment, reload=reload)


def test_reload_must_be_a_table() -> None:
    refused("[reload] must be a table", reload="SIGHUP")


# --- vault.addr: one or several -----------------------------------------------

def test_vault_addr_list() -> None:
    v = config(vault={"addr": ["https://v1.example.com:8200/", "https://v2.example.com:8200"]}).vault
    assert v.addrs == ("https://v1.example.com:8200", "https://v2.example.com:8200")
    assert v.addr == "https://v1.example.com:8200"


def test_vault_addr_string() -> None:
    v = config(vault={"addr": "https://v1.example.com:8200/"}).vault
    assert v.addrs == ("https://v1.example.com:8200",)
    assert v.addr == v.addrs[0]


def test_vault_addr_from_env_list() -> None:
    raw = copy.deepcopy(BASE)
    del raw["vault"]["addr"]
    v = parse(raw, {"VAULT_ADDR": "https://a.example.com:8200, https://b.example.com:8200,"}).vault
    assert v.addrs == ("https://a.example.com:8200", "https://b.example.com:8200")
    assert v.addr == "https://a.example.com:8200"


def test_vault_addr_empty_list_falls_back_to_env() -> None:
    v = config({"VAULT_ADDR": "https://env.example.com:8200"}, vault={"addr": []}).vault
    assert v.addrs == ("https://env.example.com:8200",)


@pytest.mark.parametrize(("addr", "fragment"), [
    pytest.param(["https://ok:8200", "ftp://bad"], "'ftp://bad' is not an http(s) URL", id="one-bad"),
    pytest.param(["https://ok:8200", 5], "vault.addr must be a list of non-empty strings", id="not-a-string"),
    pytest.param(["https://ok:8200", " "], "vault.addr must be a list of non-empty strings", id="blank"),
    pytest.param(["https://ok:8200", " https://v2:8200"], "is not an http(s) URL", id="whitespace"),
    pytest.param(42, "vault.addr must be a list of non-empty strings", id="number"),
])
def test_vault_addr_list_refused(addr: object, fragment: str) -> None:
    refused(fragment, vault={"addr": addr})


def test_cert_auth_with_every_addr_https() -> None:
    v = config(vault={"addr": ["https://v1:8200", "https://v2:8200"], "auth": "cert",
                      "cert_file": "/etc/c.pem", "key_file": "/etc/c.key"}).vault
    assert v.auth == "cert" and v.addrs == ("https://v1:8200", "https://v2:8200")


@pytest.mark.parametrize(("addr", "env"), [
    pytest.param(["https://v1:8200", "http://v2:8200"], {}, id="second-is-http"),
    pytest.param(["http://v1:8200", "https://v2:8200"], {}, id="first-is-http"),
    pytest.param("http://v1:8200", {}, id="single-http"),
    pytest.param(None, {"VAULT_ADDR": "https://v1:8200,http://v2:8200"}, id="env-list-with-http"),
])
def test_cert_auth_refuses_any_http_addr(addr: object, env: dict[str, str]) -> None:
    raw = copy.deepcopy(BASE)
    raw["vault"] = {"auth": "cert", "cert_file": "/etc/c.pem", "key_file": "/etc/c.key"}
    if addr is not None:
        raw["vault"]["addr"] = addr
    with pytest.raises(ConfigError, match="needs an https:// Vault address"):
        parse(raw, env)


@pytest.mark.parametrize("zero", ["0", "0s", "0h0m"])
def test_ca_check_takes_zero_in_any_form(zero: str) -> None:
    """`renew.ca_check = "0s"` was refused ("must be longer than zero") though "0" turned the check off."""
    assert config(renew={"ca_check": zero}).renew.ca_check == 0


def test_other_durations_still_refuse_zero() -> None:
    refused("renew.retry_max must be longer than zero", renew={"retry_max": "0"})
