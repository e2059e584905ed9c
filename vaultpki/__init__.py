"""vaultpki: CockroachDB certs-dirs from HashiCorp Vault / OpenBao PKI.

The public names load on first use (PEP 562): importing ``vaultpki.cli`` must not
pay for anything the command at hand does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        CertificateError,
        ConfigError,
        InputError,
        IssuanceRefused,
        ReloadError,
        StoreError,
        VaultDenied,
        VaultpkiError,
        VaultRequestError,
        VaultUnavailable,
    )
    from .layout import CertSpec, FileKind, Mode, Plan, plan_node, plan_user, validate_username
    from .snapshot import judge
    from .validate import Problem

_HOMES = {
    "errors": ("CertificateError", "ConfigError", "InputError", "IssuanceRefused", "ReloadError", "StoreError",
               "VaultDenied", "VaultRequestError", "VaultUnavailable", "VaultpkiError"),
    "layout": ("CertSpec", "FileKind", "Mode", "Plan", "plan_node", "plan_user", "validate_username"),
    "snapshot": ("judge",),
    "validate": ("Problem",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CertSpec", "CertificateError", "ConfigError", "FileKind", "InputError", "IssuanceRefused", "Mode", "Plan",
    "Problem", "ReloadError", "StoreError", "VaultDenied", "VaultRequestError", "VaultUnavailable",
    "VaultpkiError", "judge", "plan_node", "plan_user", "validate_username",
]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
