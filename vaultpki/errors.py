"""The one error hierarchy of vaultpki; the exit code lives on the class.

    VaultpkiError                 (1)
    ├── InputError                (2)  bad argument: user name, path, flag value
    ├── ConfigError               (2)  missing or invalid configuration
    ├── VaultUnavailable          (1)  network failure, timeout, sealed or 5xx
    ├── VaultDenied               (1)  403 / bad token / failed login
    ├── VaultRequestError         (1)  400-class answer: the role or request was refused
    ├── IssuanceRefused           (1)  Vault issued something we will not write
    ├── CertificateError          (1)  PEM that does not parse as a certificate or key
    ├── StoreError                (1)  the certs-dir could not be read or written
    └── ReloadError               (1)  the database could not be told to reload

Foreign exceptions are translated where they enter (vault/failures.py, store/descriptors.py,
core/crypto.py)
and chained with ``from``; the CLI prints ``vaultpki: error: <message>`` and exits
with ``exit_code``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CertificateError",
    "ConfigError",
    "InputError",
    "IssuanceRefused",
    "ReloadError",
    "StoreError",
    "VaultDenied",
    "VaultRequestError",
    "VaultUnavailable",
    "VaultpkiError",
]


class VaultpkiError(Exception):
    """Root of every error vaultpki raises on purpose."""

    exit_code: ClassVar[int] = 1


class InputError(VaultpkiError):
    """A command-line argument is not acceptable."""

    exit_code = 2


class ConfigError(VaultpkiError):
    """The configuration file or environment is missing or invalid."""

    exit_code = 2


class VaultUnavailable(VaultpkiError):
    """Vault could not be reached or answered with a transient failure."""


class VaultDenied(VaultpkiError):
    """Vault refused our credentials or the policy forbids the request."""


class VaultRequestError(VaultpkiError):
    """Vault rejected the request itself (role constraints, bad parameters)."""


class IssuanceRefused(VaultpkiError):
    """Vault issued a certificate that fails validation; nothing was written."""


class CertificateError(VaultpkiError):
    """Bytes that should hold a certificate or a private key do not parse."""


class StoreError(VaultpkiError):
    """The certs-dir could not be read or written safely."""


class ReloadError(VaultpkiError):
    """The database could not be made to reload its certificates."""
