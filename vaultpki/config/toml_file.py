"""The configuration file itself: reading one (``load``, the only place that reads the file and
``os.environ``) and writing one (``dumps``, for tests, benchmarks and generated configurations).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from vaultpki.config.build import parse
from vaultpki.config.records import Config
from vaultpki.errors import ConfigError
from vaultpki.files import NotReadable, read_regular

__all__ = ["MAX_CONFIG_BYTES", "dumps", "load"]

MAX_CONFIG_BYTES = 1 << 20


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None, *,
         vault_needed: bool = True) -> Config:
    """Read ``path`` (else ``$VAULTPKI_CONFIG``) and the environment; the only I/O of the configuration.
    ``vault_needed=False``: no Vault address is required (``parse``)."""
    env = dict(os.environ) if env is None else env
    chosen = path or env.get("VAULTPKI_CONFIG")
    if not chosen:
        raise ConfigError("no configuration: pass --config FILE or set $VAULTPKI_CONFIG")
    shown = str(chosen) if str(chosen).isprintable() else ascii(str(chosen))    # one line, whatever the name
    try:
        data, _ = read_regular(chosen, MAX_CONFIG_BYTES)      # not /dev/zero, a FIFO, or a file filling memory
        raw = tomllib.loads(data.decode("utf-8"))
    except NotReadable as exc:
        raise ConfigError(f"config file {shown} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {shown} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {shown} is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    return parse(raw, env, source=str(chosen), vault_needed=vault_needed)


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
