"""vaultpki: CockroachDB certs-dirs from HashiCorp Vault / OpenBao PKI."""

from __future__ import annotations

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
from .validate import Problem, judge

__all__ = [
    "CertSpec",
    "CertificateError",
    "ConfigError",
    "FileKind",
    "InputError",
    "IssuanceRefused",
    "Mode",
    "Plan",
    "Problem",
    "ReloadError",
    "StoreError",
    "VaultDenied",
    "VaultRequestError",
    "VaultUnavailable",
    "VaultpkiError",
    "judge",
    "plan_node",
    "plan_user",
    "validate_username",
]
