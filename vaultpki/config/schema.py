"""The configuration file's schema: which keys a file may hold, their types and defaults.

msgspec does the structural checking (a key no table names, a value of the wrong type) in one pass,
and its errors are said again here as one line naming the dotted key, in the configuration's words.
What a value means (a duration, a mount name, a URL) is judged afterwards (``vaultpki.config.values``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, get_args, get_origin

import msgspec

from vaultpki.config.records import VaultLogin
from vaultpki.core.crypto import KeyType
from vaultpki.core.layout import Mode
from vaultpki.errors import ConfigError

__all__ = [
    "ConfigFile", "NodeTable", "PkiTable", "ReloadTable", "RenewTable", "UiTable", "VaultTable", "check_strings",
    "config_keys", "read_file",
]

AuthMethod = Literal["token", "approle", "cert", "jwt", "kubernetes"]
CaTrust = Literal["issuer", "root"]
IssueMethod = Literal["sign", "issue"]
AcmeChallenge = Literal["http-01", "dns-01"]


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of the configuration file: unknown keys are refused, not ignored, so that a misspelt
    ``client_mount`` cannot silently produce a non-split layout."""


class VaultTable(_Table, VaultLogin, frozen=True):
    """``[vault]``: where Vault is and how vaultpki logs in (``$VAULT_*`` fill what is left out)."""

    addr: str | tuple[str, ...] = ()         # one URL, a comma-separated string, or a list (HA)
    auth: AuthMethod = "token"
    ca_cert: str | None = None
    namespace: str | None = None
    timeout: float = 30.0
    retry_for: str = "60s"


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
    """``[node]``: the node certificate's host names, and the users whose client certs sit beside it (with
    their keys also as PKCS#8 DER when ``pk8``)."""

    hosts: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    pk8: bool = False


class UiTable(_Table, frozen=True):
    """``[ui]``: the DB Console certificate's host names, and the ACME CA it may come from instead of a UI mount
    (``vaultpki.config.acme`` judges what the ``acme_*`` keys mean together)."""

    hosts: tuple[str, ...] = ()
    acme_directory: str | None = None
    acme_email: str | None = None
    acme_eab_kid: str | None = None
    acme_eab_hmac_file: str | None = None
    acme_challenge: AcmeChallenge | None = None            # None: http-01, but "set" is told apart from "default"
    acme_http_port: int | None = None                      # None: 80
    acme_webroot: str | None = None
    acme_dns_server: str | None = None
    acme_tsig_key_file: str | None = None
    acme_dns_hook: tuple[str, ...] = ()
    acme_dns_cleanup_hook: tuple[str, ...] = ()
    acme_dns_resolver: tuple[str, ...] = ()
    acme_ca_cert: str | None = None
    acme_trust: str | None = None


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
    commands: tuple[tuple[str, ...], ...] = ()
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


def read_file(raw: Mapping[str, Any]) -> ConfigFile:
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
    """The values a Literal or an Enum key (or an optional one) takes, in their order."""
    literals = [arg for arg in get_args(kind) if get_origin(arg) is Literal]
    if literals:                                         # ``Literal[...] | None``
        kind = literals[0]
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
    if get_origin(kind) is tuple and get_origin(get_args(kind)[0]) is tuple:
        return 'must be a list of commands, each a list of non-empty strings (e.g. [["systemctl", "reload", "haproxy"]])'
    if get_origin(kind) is tuple or any(get_origin(arg) is tuple for arg in get_args(kind)):
        return "must be a list of non-empty strings"
    return "must be a non-empty string"


def check_strings(table: _Table, prefix: str = "") -> None:
    """Every string of the file non-blank and free of NUL (no path, header or argument can hold one)."""
    for field in msgspec.structs.fields(table):
        key, value = prefix + field.name, getattr(table, field.name)
        if isinstance(value, _Table):
            check_strings(value, f"{key}.")
        elif isinstance(value, str):
            if not value.strip():
                raise ConfigError(f"{key} must be a non-empty string")
            if "\x00" in value:
                raise ConfigError(f"{key} has a NUL character")
        elif isinstance(value, tuple):
            value = tuple(part for item in value for part in (item if isinstance(item, tuple) else (item,)))
            if not all(item.strip() for item in value):
                raise ConfigError(f"{key} {_expected(field.type)}")
            if any("\x00" in item for item in value):
                raise ConfigError(f"{key} has a NUL character")
