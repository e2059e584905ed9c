"""Configuration: a TOML file plus the usual ``VAULT_*`` variables, parsed into frozen values.

Two layers: msgspec checks the document against the schema (``ConfigFile``: which keys exist, their
types and defaults; an unknown key is an error, so a misspelt ``client_mount`` cannot silently produce
a non-split layout), then small functions judge what the values mean (durations, mounts, URLs, the
keys that go together) and build ``Config``. Either way an error is one line naming the dotted key.
``parse()`` is pure (dict + environment in, ``Config`` out); ``load()`` is the only place that reads
the file and ``os.environ``.

The modules: ``schema`` (the file's keys, and msgspec's errors in one line), ``values`` (what one value
means), ``build`` (the whole file and the environment into ``Config``), ``records`` (``Config`` and its
parts), ``toml_file`` (``load`` and ``dumps``). Everyone imports from here.
"""

from vaultpki.config.build import parse
from vaultpki.config.records import AcmeConfig, Config, ReloadConfig, VaultConfig
from vaultpki.config.schema import ConfigFile, config_keys
from vaultpki.config.toml_file import MAX_CONFIG_BYTES, dumps, load
from vaultpki.config.values import HEADER_UNSAFE, MAX_DURATION_SECONDS, expand_path, header_safe, parse_duration

__all__ = [
    "HEADER_UNSAFE", "MAX_CONFIG_BYTES", "MAX_DURATION_SECONDS", "AcmeConfig", "Config", "ConfigFile", "ReloadConfig",
    "VaultConfig", "config_keys", "dumps", "expand_path", "header_safe", "load", "parse", "parse_duration",
]
