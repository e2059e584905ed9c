"""What every command shares: the group's options, the clock, and the certs-dir and Vault a command works on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

from vaultpki import config as config_mod
from vaultpki.errors import ConfigError, InputError
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.ownership import PROCESS_OWNER, resolve_owner
from vaultpki.vault.client import HttpVault

DEFAULT_USER_DIR = "~/.cockroach-certs"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Ctx(msgspec.Struct):
    """The group's options, for the command that runs; the config is read by the command that needs it."""

    config_path: str | None
    debug: bool

    def config(self, *, vault_needed: bool = True) -> config_mod.Config:
        """The config; ``vault_needed=False`` for a command that never talks to Vault (no address required)."""
        return config_mod.load(self.config_path, vault_needed=vault_needed)


def one_shot_vault(cfg: config_mod.Config) -> HttpVault:
    """Vault for a command that ends within seconds: its token's lease is not tracked."""
    return HttpVault(cfg.vault, one_shot=True)


def node_dir(cfg: config_mod.Config, certs_dir: str | None) -> Path:
    """This node's certs-dir: --certs-dir, else the config's."""
    chosen = config_mod.expand_path(certs_dir, "--certs-dir", InputError) if certs_dir else cfg.certs_dir
    if chosen is None:
        raise ConfigError("no certs-dir: set certs_dir in the config or pass --certs-dir")
    return chosen


def chosen_dir(obj: _Ctx, certs_dir: str | None) -> tuple[CertsDir, config_mod.Config | None]:
    """The certs-dir a command works on (--certs-dir, else the config's), with the config if one was given."""
    cfg = obj.config(vault_needed=False) if obj.config_path else None   # looking at files needs no Vault
    if certs_dir:
        path = config_mod.expand_path(certs_dir, "--certs-dir", InputError)
    elif cfg is not None and cfg.certs_dir is not None:
        path = cfg.certs_dir
    else:
        raise InputError("which certs-dir? pass --certs-dir DIR or --config FILE with certs_dir")
    return CertsDir(path, resolve_owner(cfg.owner, cfg.group) if cfg else PROCESS_OWNER), cfg
