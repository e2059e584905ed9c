"""vaultpki: CockroachDB certs-dirs from HashiCorp Vault / OpenBao PKI.

The package is laid out by what each part is (docs/development.md): ``core`` plans and judges,
``vault``, ``store`` and ``daemon`` touch the world, ``cli`` prints, ``dev`` is for development only.
The names below are the library API: planning a set, judging a certs-dir, and the errors.
"""

from vaultpki.core.layout import CertSpec, FileKind, Mode, Plan, plan_node, plan_user, validate_username
from vaultpki.core.snapshot import judge
from vaultpki.core.validate import Problem
from vaultpki.errors import (
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

__all__ = [
    "CertSpec", "CertificateError", "ConfigError", "FileKind", "InputError", "IssuanceRefused", "Mode", "Plan",
    "Problem", "ReloadError", "StoreError", "VaultDenied", "VaultRequestError", "VaultUnavailable",
    "VaultpkiError", "judge", "plan_node", "plan_user", "validate_username",
]
