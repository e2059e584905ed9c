"""Configuration: a TOML file plus the usual ``VAULT_*`` variables, parsed into frozen values.

Two layers: msgspec checks the document against the schema (``ConfigFile``: which keys exist, their
types and defaults; an unknown key is an error, so a misspelt ``client_mount`` cannot silently produce
a non-split layout), then small functions judge what the values mean (durations, mounts, URLs, the
keys that go together) and build ``Config``. Either way an error is one line naming the dotted key.
``parse()`` is pure (dict + environment in, ``Config`` out); ``load()`` is the only place that reads
the file and ``os.environ``.
"""

from __future__ import annotations

import enum
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

from vaultpki.core.crypto import KeyType, check_key_params
from vaultpki.core.issue import MAX_TTL_SECONDS
from vaultpki.core.layout import Mode, PkiNames, validate_username
from vaultpki.core.renewal import RenewPolicy, parse_percent
from vaultpki.daemon.probe import parse_endpoint
from vaultpki.daemon.reload import parse_signal
from vaultpki.errors import ConfigError, InputError, VaultpkiError
from vaultpki.files import NotReadable, read_regular
from vaultpki.redact import redacted_repr

__all__ = [
    "HEADER_UNSAFE", "MAX_CONFIG_BYTES", "MAX_DURATION_SECONDS", "Config", "ConfigFile", "ReloadConfig", "VaultConfig",
    "config_keys", "dumps", "expand_path", "header_safe", "load", "parse", "parse_duration",
]

AuthMethod = Literal["token", "approle", "cert"]
CaTrust = Literal["issuer", "root"]
IssueMethod = Literal["sign", "issue"]
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


# --- the schema: which keys a file may hold, their types and defaults ----------------------------------
# msgspec does the structural checking (a key no table names, a value of the wrong type) in one pass;
# what a value means (a duration, a mount name, a URL) is judged afterwards, by the functions below.


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of the configuration file: unknown keys are refused, not ignored, so that a misspelt
    ``client_mount`` cannot silently produce a non-split layout."""


class VaultTable(_Table, frozen=True):
    """``[vault]``: where Vault is and how vaultpki logs in (``$VAULT_*`` fill what is left out)."""

    addr: str | tuple[str, ...] = ()         # one URL, a comma-separated string, or a list (HA)
    auth: AuthMethod = "token"
    ca_cert: str | None = None
    namespace: str | None = None
    timeout: float = 30.0
    retry_for: str = "60s"
    token_file: str | None = None
    approle_mount: str = "approle"
    role_id: str | None = None
    role_id_file: str | None = None
    secret_id_file: str | None = None
    cert_mount: str = "cert"
    cert_role: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class PkiTable(_Table, frozen=True):
    """``[pki]``: the mounts and roles certificates are asked of."""

    mount: str = "pki-crdb"
    client_mount: str | None = None
    node_role: str = "node"
    client_node_role: str = "client-node"
    user_role: str = "user"
    root_role: str = "root"
    ui_mount: str | None = None
    ui_role: str = "ui"


class NodeTable(_Table, frozen=True):
    """``[node]``: the node certificate's host names, and the users whose client certs sit beside it."""

    hosts: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


class UiTable(_Table, frozen=True):
    """``[ui]``: the DB Console certificate's host names (split-node with a UI mount)."""

    hosts: tuple[str, ...] = ()


class RenewTable(_Table, frozen=True):
    """``[renew]``: when ``sync`` renews, and how it waits while Vault is away."""

    before: str = "33%"
    jitter: str = "5%"
    retry_initial: str = "1s"
    retry_max: str = "5m"
    ca_check: str = "1h"
    ocsp_check: bool = True
    revoke_replaced: bool = False


class ReloadTable(_Table, frozen=True):
    """``[reload]``: how ``sync`` makes the database pick up a new set."""

    signal: str | None = None
    process: str | None = None
    pidfile: str | None = None
    command: tuple[str, ...] = ()
    command_timeout: str = "60s"
    verify: str | None = None
    verify_timeout: str = "15s"
    rollback_on_failure: bool = False


class ConfigFile(_Table, frozen=True):
    """A configuration file as written: every key it may hold, with its default."""

    certs_dir: str | None = None
    mode: Mode = Mode.STANDARD
    key_type: KeyType = KeyType.EC
    key_bits: int | None = None
    ttl: str | None = None
    owner: str | None = None
    group: str | None = None
    ca_trust: CaTrust = "issuer"
    issue_method: IssueMethod = "sign"
    vault: VaultTable = VaultTable()
    pki: PkiTable = PkiTable()
    node: NodeTable = NodeTable()
    ui: UiTable = UiTable()
    renew: RenewTable = RenewTable()
    reload: ReloadTable = ReloadTable()


def config_keys() -> tuple[str, ...]:
    """Every key a configuration file may hold, dotted (``vault.addr``): what the reference documents."""
    return tuple(_dotted_keys(ConfigFile, ""))


def _dotted_keys(table: type[_Table], prefix: str) -> list[str]:
    keys: list[str] = []
    for field in msgspec.structs.fields(table):
        if _is_table(field.type):
            keys += _dotted_keys(field.type, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def _is_table(kind: Any) -> TypeGuard[type[_Table]]:
    return isinstance(kind, type) and issubclass(kind, _Table)


# --- from msgspec's error to one line naming the key ------------------------------------------------------

_ERROR_AT = re.compile(r"(?P<what>.*) - at `\$(?P<path>(?:\.[A-Za-z_]\w*)*)(?P<item>\[\d+\])?`", re.DOTALL)


def _read_file(raw: Mapping[str, Any]) -> ConfigFile:
    """The document checked against the schema; a ConfigError in today's words when it does not fit."""
    try:
        return msgspec.convert(raw, ConfigFile)
    except msgspec.ValidationError as exc:
        # Every unknown key first, before any value is judged: a typo must not surface as its consequence.
        unknown = _unknown_keys(raw, ConfigFile, "")
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(sorted(unknown))}") from None
        raise ConfigError(_wrong_value(str(exc), raw)) from None


def _unknown_keys(raw: Mapping[str, Any], table: type[_Table], prefix: str) -> list[str]:
    """Every key of ``raw`` (and of its known tables) that the schema does not name, dotted."""
    fields = {field.name: field.type for field in msgspec.structs.fields(table)}
    unknown = [_shown(prefix + str(key)) for key in raw if key not in fields]
    for name, kind in fields.items():
        if _is_table(kind) and isinstance(raw.get(name), dict):
            unknown += _unknown_keys(raw[name], kind, f"{prefix}{name}.")
    return unknown


def _shown(name: str) -> str:
    """A key name as it can stand in a one-line message (TOML lets a quoted key hold a line break)."""
    return name if name.isprintable() else ascii(name)


def _wrong_value(message: str, raw: Mapping[str, Any]) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.vault.timeout``` in the words of this configuration."""
    match = _ERROR_AT.fullmatch(message)
    if not match or not match["path"]:
        return f"configuration: {message}"
    names = match["path"][1:].split(".")
    key = ".".join(names)
    kind: Any = ConfigFile
    value: Any = raw
    for name in names:
        kind = {field.name: field.type for field in msgspec.structs.fields(kind)}[name]
        value = value[name]
    if _is_table(kind) and not match["item"]:
        return f"[{key}] must be a table"
    choices = _choices(kind)
    if choices and message.startswith("Invalid enum value"):
        return f"{key} = {value!r} is not one of: {', '.join(choices)}"
    return f"{key} {_expected(kind)}"


def _choices(kind: Any) -> tuple[str, ...]:
    """The values a Literal or an Enum key takes, in their order."""
    if get_origin(kind) is Literal:
        return tuple(str(v) for v in get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(str(member.value) for member in kind)
    return ()


def _expected(kind: Any) -> str:
    """What a key of this schema type must be, said as the error message says it."""
    if kind is bool:
        return "must be true or false"
    if kind is float:
        return "must be a positive number"
    if kind is int or int in get_args(kind):
        return "must be an integer"
    if get_origin(kind) is tuple or any(get_origin(arg) is tuple for arg in get_args(kind)):
        return "must be a list of non-empty strings"
    return "must be a non-empty string"


def _check_strings(table: _Table, prefix: str = "") -> None:
    """Every string of the file non-blank and free of NUL (no path, header or argument can hold one)."""
    for field in msgspec.structs.fields(table):
        key, value = prefix + field.name, getattr(table, field.name)
        if isinstance(value, _Table):
            _check_strings(value, f"{key}.")
        elif isinstance(value, str):
            if not value.strip():
                raise ConfigError(f"{key} must be a non-empty string")
            if "\x00" in value:
                raise ConfigError(f"{key} has a NUL character")
        elif isinstance(value, tuple):
            if not all(item.strip() for item in value):
                raise ConfigError(f"{key} must be a list of non-empty strings")
            if any("\x00" in item for item in value):
                raise ConfigError(f"{key} has a NUL character")


# --- what the values mean ---------------------------------------------------------------------------------


def parse(raw: Mapping[str, Any], env: Mapping[str, str], source: str = "<config>") -> Config:
    """Build a Config from a parsed TOML document and an environment (pure)."""
    doc = _read_file(raw)
    _check_strings(doc)
    key_type, key_bits = check_key_params(doc.key_type.value, doc.key_bits)
    config = Config(
        certs_dir=expand_path(doc.certs_dir, "certs_dir") if doc.certs_dir else None,
        mode=doc.mode,
        key_type=key_type,
        key_bits=key_bits,
        ttl_seconds=_parse_ttl(doc.ttl),
        owner=doc.owner,
        group=doc.group,
        ca_trust=doc.ca_trust,
        issue_method=doc.issue_method,
        vault=_parse_vault(doc.vault, env),
        pki=_parse_pki(doc.pki),
        node_hosts=doc.node.hosts,
        ui_hosts=doc.ui.hosts,
        source=source,
        renew=_parse_renew(doc.renew),
        retry_initial=parse_duration(doc.renew.retry_initial, "renew.retry_initial"),
        retry_max=parse_duration(doc.renew.retry_max, "renew.retry_max"),
        reload=_parse_reload(doc.reload),
        node_users=_node_users(doc.node.users),
    )
    _check_combination(config)
    return config


def _check_combination(config: Config) -> None:
    """Keys that are each fine alone but not together."""
    if config.pki.ui_mount and not config.ui_hosts:
        raise ConfigError("pki.ui_mount is set but ui.hosts is empty")
    if config.mode is Mode.SPLIT_CA and not config.pki.client_mount:
        raise ConfigError("mode = 'split-ca' needs pki.client_mount (the client CA's mount)")
    if config.vault.auth == "cert" and config.mode is not Mode.STANDARD:
        # A node's login is bound to the subject OU of its own standard-mode node.crt (docs/security.md).
        raise ConfigError(f"vault.auth = 'cert' works in mode = 'standard' only: in {config.mode.value} node.crt is a "
                          "server certificate Vault refuses for login, and client.node.crt is the same on every node; "
                          "use auth = 'approle'")


def _parse_renew(t: RenewTable) -> RenewPolicy:
    jitter = parse_percent(t.jitter, "renew.jitter", allow_zero=True)
    if jitter > 0.25:
        raise ConfigError("renew.jitter above 25% would no longer respect the renewal window")
    ca_check = 0 if t.ca_check == "0" else parse_duration(t.ca_check, "renew.ca_check")
    if "%" in t.before:
        fraction, seconds = parse_percent(t.before, "renew.before", allow_zero=False), None
    else:
        fraction, seconds = None, parse_duration(t.before, "renew.before")
    return RenewPolicy(before_fraction=fraction, before_seconds=seconds, jitter_fraction=jitter,
                       ca_check=ca_check, ocsp_check=t.ocsp_check, revoke_replaced=t.revoke_replaced)


def _node_users(users: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(validate_username(u) for u in users))
    except InputError as exc:
        raise ConfigError(f"node.users: {exc}") from None


def _parse_reload(t: ReloadTable) -> ReloadConfig:
    reload = ReloadConfig(
        signal=parse_signal(t.signal).name if t.signal is not None else "SIGHUP",
        process=t.process,
        pidfile=t.pidfile,
        command=t.command,
        command_timeout=parse_duration(t.command_timeout, "reload.command_timeout"),
        verify=t.verify,
        verify_timeout=parse_duration(t.verify_timeout, "reload.verify_timeout"),
        rollback_on_failure=t.rollback_on_failure,
    )
    # process and pidfile go together: the pid in the pidfile must then be that process.
    chosen = [k for k, v in (("process", reload.process), ("pidfile", reload.pidfile), ("command", reload.command)) if v]
    if len(chosen) > 1 and chosen != ["process", "pidfile"]:
        raise ConfigError(f"reload: set only one of process, pidfile or command (got {', '.join(chosen)}; "
                          "process and pidfile may go together)")
    if reload.verify is not None:
        parse_endpoint(reload.verify)       # a postgres:// or tls:// host:port, refused now rather than at reload
    return reload


def _vault_addrs(t: VaultTable, env: Mapping[str, str]) -> tuple[str, ...]:
    """The configured addresses (a string, a comma-separated string like $VAULT_ADDR, or a list), else
    $VAULT_ADDR's; each checked, trailing slashes dropped."""
    configured = (t.addr,) if isinstance(t.addr, str) else t.addr
    if len(configured) == 1 and "," in configured[0]:
        configured = tuple(a.strip() for a in configured[0].split(","))
    addrs = configured or tuple(a.strip() for a in env.get("VAULT_ADDR", "").split(",") if a.strip())
    if not addrs:
        raise ConfigError("no Vault address: set vault.addr or $VAULT_ADDR")
    for addr in addrs:
        _check_vault_addr(addr)
    return tuple(a.rstrip("/") for a in addrs)


def _parse_vault(t: VaultTable, env: Mapping[str, str]) -> VaultConfig:
    addrs = _vault_addrs(t, env)
    if not (math.isfinite(t.timeout) and t.timeout > 0):
        raise ConfigError("vault.timeout must be a positive number")
    vault = VaultConfig(
        addr=addrs[0],
        addrs=addrs,
        auth=t.auth,
        ca_cert=t.ca_cert or env.get("VAULT_CACERT") or None,          # the file wins over $VAULT_*
        namespace=t.namespace or env.get("VAULT_NAMESPACE") or None,
        timeout=t.timeout,
        retry_for=float(parse_duration(t.retry_for, "vault.retry_for")),
        token=env.get("VAULT_TOKEN") or None,
        token_file=t.token_file,
        approle_mount=_check_mount(t.approle_mount, "vault.approle_mount"),
        role_id=t.role_id,
        role_id_file=t.role_id_file,
        secret_id_file=t.secret_id_file,
        cert_mount=_check_mount(t.cert_mount, "vault.cert_mount"),
        cert_role=t.cert_role,
        cert_file=t.cert_file,
        key_file=t.key_file,
    )
    _check_vault_auth(vault)
    return vault


def _check_vault_auth(vault: VaultConfig) -> None:
    """What each login method needs, and the values that go into headers."""
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
    if vault.auth == "cert" and not all(a.startswith("https://") for a in vault.addrs):
        raise ConfigError("vault.auth = 'cert' needs an https:// Vault address (the certificate is sent in the TLS handshake)")


def _parse_pki(t: PkiTable) -> PkiNames:
    return PkiNames(
        mount=_check_mount(t.mount, "pki.mount"),
        client_mount=None if t.client_mount is None else _check_mount(t.client_mount, "pki.client_mount"),
        node_role=_check_role(t.node_role, "pki.node_role"),
        client_node_role=_check_role(t.client_node_role, "pki.client_node_role"),
        user_role=_check_role(t.user_role, "pki.user_role"),
        ui_mount=None if t.ui_mount is None else _check_mount(t.ui_mount, "pki.ui_mount"),
        ui_role=_check_role(t.ui_role, "pki.ui_role"),
        root_role=_check_role(t.root_role, "pki.root_role"),
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
