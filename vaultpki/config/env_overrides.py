"""``$VAULTPKI_<TABLE>_<KEY>``: an environment variable for every configuration key, above the file.

Why: one ConfigMap shared by every pod of a StatefulSet cannot name a per-pod value (``pki.node_role =
"node-<pod>"``), but the Downward API can put the pod's name into the environment
(``VAULTPKI_PKI_NODE_ROLE=node-$(POD_NAME)``). The names are derived from ``config_keys()``, so every key
has exactly one, and any other ``VAULTPKI_*`` variable is an error: a typo must not be silently ignored.
``$VAULTPKI_CONFIG`` names the file and is not a key. The schema holds no secret (no token key; only
files that hold one), so none can come through here.

A value is read by its key's type (strings as they are; lists comma-separated; integers, numbers and
booleans strictly) and put into the document before the schema sees it: it is then judged exactly like
the file's value. Pure: an environment and a document in, a document out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import msgspec

from vaultpki.config.schema import ConfigFile, config_keys
from vaultpki.errors import ConfigError

__all__ = ["CONFIG_FILE_VAR", "PREFIX", "apply_overrides", "env_name", "override_names"]

PREFIX = "VAULTPKI_"
CONFIG_FILE_VAR = "VAULTPKI_CONFIG"      # names the file: not a key, never an override
_INTEGER = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def env_name(key: str) -> str:
    """The variable that overrides a dotted key: ``pki.node_role`` -> ``VAULTPKI_PKI_NODE_ROLE``."""
    return PREFIX + key.replace(".", "_").upper()


def override_names() -> dict[str, str]:
    """Every override variable and the dotted key it sets (one each: a collision is a schema bug)."""
    names = {env_name(key): key for key in config_keys()}
    if len(names) != len(config_keys()) or CONFIG_FILE_VAR in names:
        raise AssertionError("two configuration keys share an environment variable name")
    return names


def apply_overrides(raw: Mapping[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` with every ``$VAULTPKI_*`` key put in, and which keys came from which variable.
    A ``VAULTPKI_*`` variable (in any letter case) that names no key is a ConfigError."""
    names = override_names()
    doc: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    used: dict[str, str] = {}
    for var in sorted(env):
        if not var.upper().startswith(PREFIX) or var == CONFIG_FILE_VAR:
            continue
        key = names.get(var)
        if key is None:
            raise ConfigError(_unknown(var, names))
        _put(doc, key, _value(key, var, env[var]))
        used[key] = var
    return doc, used


def _unknown(var: str, names: Mapping[str, str]) -> str:
    """One line naming the variable (never its value: it may be something secret set by mistake)."""
    shown = var if var.isprintable() else ascii(var)
    close = difflib.get_close_matches(var.upper(), list(names), n=1)
    hint = f"; did you mean ${close[0]}?" if close else f" (${CONFIG_FILE_VAR} names the file; see docs/configuration.md)"
    return f"${shown} names no configuration key{hint}"


def _put(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key; a table the file wrote as something else is left for the schema to refuse."""
    table, _, name = key.rpartition(".")
    if not table:
        doc[name] = value
    elif isinstance(doc.setdefault(table, {}), dict):
        doc[table][name] = value


def _field_type(key: str) -> Any:
    kind: Any = ConfigFile
    for name in key.split("."):
        kind = {field.name: field.type for field in msgspec.structs.fields(kind)}[name]
    return kind


def _value(key: str, var: str, text: str) -> Any:
    """The variable's text as a value of the key's type, strictly; a ConfigError naming both otherwise."""
    kinds = [k for k in (get_args(_field_type(key)) if _is_union(_field_type(key)) else (_field_type(key),))
             if k is not NoneType]
    if str in kinds or not kinds:       # strings (and Literal/Enum choices, judged by the schema) as they are
        return text
    kind = kinds[0]
    if get_origin(kind) is tuple:
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        if not all(items):
            raise ConfigError(f"${var} ({key}): an empty item in a comma-separated list {text!r}")
        return items
    if kind is bool:
        if text not in ("true", "false"):
            raise ConfigError(f"${var} ({key}) must be true or false, not {text!r}")
        return text == "true"
    if kind is int:
        if not _INTEGER.fullmatch(text):
            raise ConfigError(f"${var} ({key}) must be an integer (ASCII digits), not {text!r}")
        return int(text)
    if kind is float:
        if not _NUMBER.fullmatch(text):
            raise ConfigError(f"${var} ({key}) must be a number like 30 or 2.5, not {text!r}")
        return float(text)
    return text                         # an Enum or a Literal: the schema names the choices


def _is_union(kind: Any) -> bool:
    return isinstance(kind, UnionType) or get_origin(kind) is Union
