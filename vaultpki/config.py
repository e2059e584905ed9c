"""Configuration: a TOML file plus the usual ``VAULT_*`` variables, parsed into frozen values.

``parse()`` is pure (dict + environment in, ``Config`` out); ``load()`` is the only
place that reads the file and ``os.environ``. Unknown keys are errors: a misspelt
``client_mount`` must not silently produce a non-split layout.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .crypto import KeyType, check_key_params
from .errors import ConfigError, InputError, VaultpkiError
from .files import NotReadable, read_regular
from .issue import MAX_TTL_SECONDS
from .layout import Mode, PkiNames, validate_username
from .redact import redacted_repr
from .renewal import RenewPolicy, parse_percent

__all__ = [
    "HEADER_UNSAFE", "MAX_CONFIG_BYTES", "MAX_DURATION_SECONDS", "Config", "ReloadConfig", "VaultConfig", "dumps",
    "expand_path", "header_safe", "load", "parse", "parse_duration",
]

AUTH_METHODS = ("token", "approle", "cert")
CA_TRUST = ("issuer", "root")
ISSUE_METHODS = ("sign", "issue")
DEFAULT_USER_CERTS_DIR = "~/.cockroach-certs"
MAX_CONFIG_BYTES = 1 << 20
# ASCII digits only: Python's \d and int() also take '１' (full-width) and other scripts' digits, which
# Vault's Go duration parser refuses, and a duration must mean one thing to both.
_DURATION = re.compile(r"([0-9]+)([smhd])")
_SECONDS = re.compile(r"[0-9]+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# No vaultpki duration (a ttl, a renewal window, a backoff, a timeout) needs more; a bound keeps every
# later date computation inside what a datetime can hold.
MAX_DURATION_SECONDS = 10 * 365 * 86400
_MAX_DIGITS = 12
# Vault's names for a role (its API path pattern: ASCII word characters, '-', '.', '@' inside) and a
# mount (path segments of the same characters). Both go into a request's path.
_ROLE_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.@-]*[A-Za-z0-9_])?")
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9_.@-]+")


def parse_duration(text: str, key: str) -> int:
    """Seconds in a Vault-style duration such as ``720h``, ``1h30m`` or ``90s`` (ASCII digits only)."""
    text = str(text).strip()
    if _SECONDS.fullmatch(text):
        parts = [(text, "s")]
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(f"{key} = {text!r} is not a duration like '720h', '30m' or '1h30m'")
    if any(len(n) > _MAX_DIGITS for n, _ in parts):
        raise ConfigError(f"{key} is longer than {MAX_DURATION_SECONDS // 86400} days")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{key} must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ConfigError(f"{key} = {text!r} is longer than {MAX_DURATION_SECONDS // 86400} days")
    return seconds


def _parse_ttl(text: str | None) -> int | None:
    """The leaf lifetime asked of Vault. Above the longest ``max_ttl`` of vaultpki's roles it could never
    be honoured: Vault would cap it without a word, or refuse a value its Go duration cannot hold."""
    if text is None:
        return None
    seconds = parse_duration(text, "ttl")
    if seconds > MAX_TTL_SECONDS:
        raise ConfigError(f"ttl = {text!r} is longer than any vaultpki role issues "
                          f"(the longest max_ttl is {MAX_TTL_SECONDS // 3600}h)")
    return seconds


def expand_path(text: str, what: str, error: type[VaultpkiError] = ConfigError) -> Path:
    """``text`` as a path, ``~`` and ``~user`` expanded; ``error`` naming ``what`` when it cannot be one."""
    if "\x00" in text:
        raise error(f"{what} {ascii(text)} has a NUL character, which no path can hold")
    try:
        return Path(text).expanduser()
    except RuntimeError:        # ~nosuchuser, or ~ with neither $HOME nor a passwd entry
        raise error(f"{what} {text!r}: {text.split('/', 1)[0]!r} names no user with a home directory") from None


def _check_vault_addr(addr: str) -> None:
    """An http(s) URL with a host and a valid port: what a connection can be made to."""
    if not (re.fullmatch(r"https?://[^/\s]+(/\S*)?", addr) and addr.isascii() and addr.isprintable()):
        raise ConfigError(f"vault.addr {addr!r} is not an http(s) URL")
    try:
        parts = urlsplit(addr)
        port = parts.port       # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"vault.addr {addr!r} is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"vault.addr {addr!r} has no host")
    if port == 0:
        raise ConfigError(f"vault.addr {addr!r}: port 0 cannot be connected to")
    if parts.query or parts.fragment or "?" in addr or "#" in addr:
        raise ConfigError(f"vault.addr {addr!r} has a query or fragment; give the server's base URL")


def _check_mount(value: str, key: str) -> str:
    segments = value.split("/")
    if not all(_MOUNT_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise ConfigError(f"{key} = {value!r} is not a Vault mount path (ASCII letters, digits, '_', '-', '.', '@', "
                          "segments joined by '/')")
    return value


def _check_role(value: str, key: str) -> str:
    if not _ROLE_NAME.fullmatch(value):
        raise ConfigError(f"{key} = {value!r} is not a Vault role name (ASCII letters, digits, '_', and '-', '.', '@' "
                          "inside)")
    return value


def header_safe(value: str) -> bool:
    """Whether an HTTP header can carry ``value`` as it is: printable ASCII (no line break, no control
    character), no space at either end. A token or namespace is sent in one."""
    return value.isascii() and value.isprintable() and value == value.strip()


HEADER_UNSAFE = ("has a character an HTTP header cannot carry (a line break, a control or non-ASCII character, "
                 "or a space at either end)")


class VaultConfig(msgspec.Struct, frozen=True):
    addr: str                     # the first of ``addrs``
    auth: str
    ca_cert: str | None
    namespace: str | None
    timeout: float
    token: str | None = None      # from $VAULT_TOKEN; never logged (see __repr__)
    token_file: str | None = None
    approle_mount: str = "approle"
    role_id: str | None = None
    role_id_file: str | None = None
    secret_id_file: str | None = None
    cert_mount: str = "cert"
    cert_role: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    addrs: tuple[str, ...] = ()   # every address to try, in order (HA: fail over between them)
    retry_for: float = 60.0       # how long to retry transient failures of one request (an election, an outage)

    def __repr__(self) -> str:
        return redacted_repr(self, "token", "role_id")


class ReloadConfig(msgspec.Struct, frozen=True):
    """How ``sync`` makes the database pick up a new set, and how it checks that it did."""

    signal: str = "SIGHUP"
    process: str | None = None           # exact process name, like `pkill -x`
    pidfile: str | None = None           # first line is the pid
    command: tuple[str, ...] = ()        # run instead of a signal (no shell)
    command_timeout: int = 60
    verify: str | None = None            # postgres://host:port or tls://host:port
    verify_timeout: int = 15
    rollback_on_failure: bool = False


class Config(msgspec.Struct, frozen=True):
    certs_dir: Path | None
    mode: Mode
    key_type: KeyType
    key_bits: int
    ttl_seconds: int | None
    owner: str | None
    group: str | None
    ca_trust: str
    issue_method: str
    vault: VaultConfig
    pki: PkiNames
    node_hosts: tuple[str, ...]
    ui_hosts: tuple[str, ...]
    source: str                   # where the config came from, for error messages
    renew: RenewPolicy = RenewPolicy()
    retry_initial: float = 1.0    # daemon backoff while Vault is away: first wait...
    retry_max: float = 300.0      # ...and the cap
    reload: ReloadConfig = ReloadConfig()
    node_users: tuple[str, ...] = ()   # SQL users whose client certs the node's certs-dir also holds


class _Table:
    """One TOML table being consumed; leftover keys are reported as unknown."""

    def __init__(self, raw: Any, name: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] must be a table")
        self.raw = dict(raw)
        self.name = name

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw.pop(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{self._key(key)} must be a non-empty string")
        if value is not None and "\x00" in value:
            raise ConfigError(f"{self._key(key)} has a NUL character")
        return value

    def mount(self, key: str, default: str | None = None) -> str | None:
        value = self.text(key, default)
        return None if value is None else _check_mount(value, self._key(key))

    def role(self, key: str, default: str | None = None) -> str | None:
        value = self.text(key, default)
        return None if value is None else _check_role(value, self._key(key))

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(f"{self._key(key)} = {value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, key: str) -> int | None:
        value = self.raw.pop(key, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{self._key(key)} must be an integer")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.raw.pop(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{self._key(key)} must be a positive number")
        return float(value)

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.raw.pop(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{self._key(key)} must be a list of non-empty strings")
        if any("\x00" in v for v in value):
            raise ConfigError(f"{self._key(key)} has a NUL character")
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.pop(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._key(key)} must be true or false")
        return value

    def str_or_list(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key)
        if isinstance(value, str):
            return (self.text(key) or "",)
        return self.str_list(key)

    def table(self, key: str) -> _Table:
        return _Table(self.raw.pop(key, {}), self._key(key))

    def done(self) -> None:
        if self.raw:
            names = ", ".join(sorted(self._key(k) for k in self.raw))
            raise ConfigError(f"unknown configuration key(s): {names}")


_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"certs_dir", "mode", "key_type", "key_bits", "ttl", "owner", "group", "ca_trust",
                   "issue_method", "vault", "pki", "node", "ui", "renew", "reload"}),
    "vault": frozenset({"addr", "auth", "ca_cert", "namespace", "timeout", "retry_for", "token_file", "approle_mount", "role_id",
                        "role_id_file", "secret_id_file", "cert_mount", "cert_role", "cert_file", "key_file"}),
    "pki": frozenset({"mount", "client_mount", "node_role", "client_node_role", "user_role", "root_role", "ui_mount",
                      "ui_role"}),
    "node": frozenset({"hosts", "users"}),
    "ui": frozenset({"hosts"}),
    "renew": frozenset({"before", "jitter", "retry_initial", "retry_max", "ca_check", "ocsp_check", "revoke_replaced"}),
    "reload": frozenset({"signal", "process", "pidfile", "command", "command_timeout", "verify", "verify_timeout",
                         "rollback_on_failure"}),
}


def _check_keys(raw: Mapping[str, Any]) -> None:
    """Name every unknown key before reading any value: a typo must not surface as its consequence."""
    unknown = sorted(k for k in raw if k not in _KEYS[""])
    for table in ("vault", "pki", "node", "ui", "renew", "reload"):
        if isinstance(raw.get(table), dict):
            unknown += sorted(f"{table}.{k}" for k in raw[table] if k not in _KEYS[table])
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")


def parse(raw: Mapping[str, Any], env: Mapping[str, str], source: str = "<config>") -> Config:
    """Build a Config from a parsed TOML document and an environment (pure)."""
    _check_keys(raw)
    top = _Table(raw, "")
    vault_t, pki_t, node_t, ui_t = top.table("vault"), top.table("pki"), top.table("node"), top.table("ui")
    renew_t, reload_t = top.table("renew"), top.table("reload")
    certs_dir = top.text("certs_dir")
    mode_name = top.choice("mode", tuple(m.value for m in Mode), Mode.STANDARD.value)
    key_type, key_bits = check_key_params(top.text("key_type", "ec") or "ec", top.integer("key_bits"))
    ttl = top.text("ttl")
    config = Config(
        certs_dir=expand_path(certs_dir, "certs_dir") if certs_dir else None,
        mode=Mode(mode_name),
        key_type=key_type,
        key_bits=key_bits,
        ttl_seconds=_parse_ttl(ttl),
        owner=top.text("owner"),
        group=top.text("group"),
        ca_trust=top.choice("ca_trust", CA_TRUST, "issuer"),
        issue_method=top.choice("issue_method", ISSUE_METHODS, "sign"),
        vault=_parse_vault(vault_t, env),
        pki=_parse_pki(pki_t),
        node_hosts=node_t.str_list("hosts"),
        ui_hosts=ui_t.str_list("hosts"),
        source=source,
        renew=_parse_renew(renew_t),
        retry_initial=parse_duration(renew_t.text("retry_initial", "1s") or "1s", "renew.retry_initial"),
        retry_max=parse_duration(renew_t.text("retry_max", "5m") or "5m", "renew.retry_max"),
        reload=_parse_reload(reload_t),
        node_users=_node_users(node_t.str_list("users")),
    )
    for table in (vault_t, pki_t, node_t, ui_t, renew_t, reload_t, top):
        table.done()
    if config.pki.ui_mount and not config.ui_hosts:
        raise ConfigError("pki.ui_mount is set but ui.hosts is empty")
    if config.mode is Mode.SPLIT_CA and not config.pki.client_mount:
        raise ConfigError("mode = 'split-ca' needs pki.client_mount (the client CA's mount)")
    if config.vault.auth == "cert" and config.mode is not Mode.STANDARD:
        # A node's login is bound to the subject OU of its own standard-mode node.crt (docs/security.md).
        raise ConfigError(f"vault.auth = 'cert' works in mode = 'standard' only: in {config.mode.value} node.crt is a "
                          "server certificate Vault refuses for login, and client.node.crt is the same on every node; "
                          "use auth = 'approle'")
    return config


def _parse_renew(t: _Table) -> RenewPolicy:
    before = t.text("before", "33%") or "33%"
    jitter = parse_percent(t.text("jitter", "5%") or "5%", "renew.jitter", allow_zero=True)
    if jitter > 0.25:
        raise ConfigError("renew.jitter above 25% would no longer respect the renewal window")
    ca_check_text = t.text("ca_check", "1h") or "1h"
    ca_check = 0 if ca_check_text == "0" else parse_duration(ca_check_text, "renew.ca_check")
    ocsp_check = t.boolean("ocsp_check", True)
    revoke_replaced = t.boolean("revoke_replaced", False)
    if "%" in before:
        fraction, seconds = parse_percent(before, "renew.before", allow_zero=False), None
    else:
        fraction, seconds = None, parse_duration(before, "renew.before")
    return RenewPolicy(before_fraction=fraction, before_seconds=seconds, jitter_fraction=jitter,
                       ca_check=ca_check, ocsp_check=ocsp_check, revoke_replaced=revoke_replaced)


def _node_users(users: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(validate_username(u) for u in users))
    except InputError as exc:
        raise ConfigError(f"node.users: {exc}") from None


def _parse_reload(t: _Table) -> ReloadConfig:
    signal_name = t.text("signal")
    if signal_name is not None:
        from .reload import parse_signal  # subprocess and friends: only when there is a signal to check

        signal_name = parse_signal(signal_name).name
    reload = ReloadConfig(
        signal=signal_name or "SIGHUP",
        process=t.text("process"),
        pidfile=t.text("pidfile"),
        command=t.str_list("command"),
        command_timeout=parse_duration(t.text("command_timeout", "60s") or "60s", "reload.command_timeout"),
        verify=t.text("verify"),
        verify_timeout=parse_duration(t.text("verify_timeout", "15s") or "15s", "reload.verify_timeout"),
        rollback_on_failure=t.boolean("rollback_on_failure", False),
    )
    # process and pidfile go together: the pid in the pidfile must then be that process.
    chosen = [k for k, v in (("process", reload.process), ("pidfile", reload.pidfile), ("command", reload.command)) if v]
    if len(chosen) > 1 and chosen != ["process", "pidfile"]:
        raise ConfigError(f"reload: set only one of process, pidfile or command (got {', '.join(chosen)}; "
                          "process and pidfile may go together)")
    if reload.verify is not None:
        from .probe import parse_endpoint  # validates postgres:// and tls:// endpoints (ssl: only when needed)

        parse_endpoint(reload.verify)
    return reload


def _parse_vault(t: _Table, env: Mapping[str, str]) -> VaultConfig:
    configured = t.str_or_list("addr")
    if len(configured) == 1 and "," in configured[0]:
        configured = tuple(a.strip() for a in configured[0].split(","))     # "https://a,https://b", like $VAULT_ADDR
    addrs = configured or tuple(a.strip() for a in env.get("VAULT_ADDR", "").split(",") if a.strip())
    if not addrs:
        raise ConfigError("no Vault address: set vault.addr or $VAULT_ADDR")
    for addr in addrs:
        _check_vault_addr(addr)
    addrs = tuple(a.rstrip("/") for a in addrs)
    addr = addrs[0]
    vault = VaultConfig(
        addr=addr,
        addrs=addrs,
        auth=t.choice("auth", AUTH_METHODS, "token"),
        ca_cert=t.text("ca_cert") or env.get("VAULT_CACERT") or None,
        namespace=t.text("namespace") or env.get("VAULT_NAMESPACE") or None,
        timeout=t.number("timeout", 30.0),
        retry_for=float(parse_duration(t.text("retry_for", "60s") or "60s", "vault.retry_for")),
        token=env.get("VAULT_TOKEN") or None,
        token_file=t.text("token_file"),
        approle_mount=t.mount("approle_mount", "approle") or "approle",
        role_id=t.text("role_id"),
        role_id_file=t.text("role_id_file"),
        secret_id_file=t.text("secret_id_file"),
        cert_mount=t.mount("cert_mount", "cert") or "cert",
        cert_role=t.text("cert_role"),
        cert_file=t.text("cert_file"),
        key_file=t.text("key_file"),
    )
    # Checked here, before anything is sent, and never echoed: the value may be a token. ($VAULT_TOKEN only
    # where it is the one used: with a token file or another auth method it is ignored.)
    if vault.auth == "token" and not vault.token_file and vault.token is not None and not header_safe(vault.token):
        raise ConfigError(f"$VAULT_TOKEN {HEADER_UNSAFE}")
    if vault.namespace is not None and not header_safe(vault.namespace):
        raise ConfigError(f"vault.namespace (or $VAULT_NAMESPACE) {HEADER_UNSAFE}")
    if vault.auth == "approle":
        if not (vault.role_id or vault.role_id_file) or not vault.secret_id_file:
            raise ConfigError("vault.auth = 'approle' needs vault.role_id (or role_id_file) and vault.secret_id_file")
    if vault.auth == "cert" and not (vault.cert_file and vault.key_file):
        raise ConfigError("vault.auth = 'cert' needs vault.cert_file and vault.key_file")
    if vault.auth == "cert" and not all(a.startswith("https://") for a in addrs):
        raise ConfigError("vault.auth = 'cert' needs an https:// Vault address (the certificate is sent in the TLS handshake)")
    return vault


def _parse_pki(t: _Table) -> PkiNames:
    return PkiNames(
        mount=t.mount("mount", "pki-crdb") or "pki-crdb",
        client_mount=t.mount("client_mount"),
        node_role=t.role("node_role", "node") or "node",
        client_node_role=t.role("client_node_role", "client-node") or "client-node",
        user_role=t.role("user_role", "user") or "user",
        ui_mount=t.mount("ui_mount"),
        ui_role=t.role("ui_role", "ui"),
        root_role=t.role("root_role", "root") or "root",
    )


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (else ``$VAULTPKI_CONFIG``) and the environment; the only I/O in this module."""
    env = dict(os.environ) if env is None else env
    chosen = path or env.get("VAULTPKI_CONFIG")
    if not chosen:
        raise ConfigError("no configuration: pass --config FILE or set $VAULTPKI_CONFIG")
    shown = str(chosen) if str(chosen).isprintable() else ascii(str(chosen))    # one line, whatever the name
    try:
        data, _ = read_regular(chosen, MAX_CONFIG_BYTES)      # not /dev/zero, a FIFO, or a file filling memory
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {shown} cannot be read: {exc.strerror}") from exc
    except NotReadable as exc:
        raise ConfigError(f"config file {shown} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {shown} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {shown} is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    return parse(raw, env, source=str(chosen))


def dumps(doc: Mapping[str, Any]) -> str:
    """A configuration document as TOML (strings, numbers, booleans, lists, one level of tables):
    what tests, benchmarks and generated configurations write, and ``load()`` reads back.
    (``json`` loads here, not in every command that reads a config: a TOML basic string is a JSON string.)"""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))
    lines = [f"{k} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
