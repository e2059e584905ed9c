"""The ACME account: its key, made once and kept (mode 0600), and the account at the CA that key holds.

The key is EC P-256 (ES256, which every ACME CA takes), PKCS#8 PEM in a file the caller names (the state dir).
A second run reuses it: the CA is asked for the account that key already has (``onlyReturnExisting``) and a
new one is registered only when it has none, with the contact e-mail, the terms of service agreed to, and an
External Account Binding (key id + HMAC key from a file) for a CA that requires one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import msgspec
from acme import messages
from acme.client import ClientV2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from vaultpki.acme.network import Network
from vaultpki.acme.problems import translate
from vaultpki.errors import ConfigError, StoreError
from vaultpki.files import NotReadable, read_regular, read_secret_file

__all__ = ["Account", "AccountSettings", "ExternalBinding", "account_key_path", "load_or_create_key", "open_account"]

KEY_FILE_LIMIT = 16 * 1024


class ExternalBinding(msgspec.Struct, frozen=True):
    """RFC 8555 7.3.4: the key id the CA gave, and the file holding its base64url HMAC key."""

    key_id: str
    hmac_key_file: Path
    algorithm: str = "HS256"


class AccountSettings(msgspec.Struct, frozen=True):
    directory_url: str
    key_file: Path                         # the account key, in the state dir
    contact_email: str | None = None
    eab: ExternalBinding | None = None
    agree_tos: bool = True
    verify: bool | str = True              # TLS verification, or a CA bundle for an internal CA


class Account:
    """A client logged in as one account: the library's client, the account URL and the key's JWK."""

    def __init__(self, settings: AccountSettings, client: ClientV2, network: Network, jwk: JWK, url: str,
                 created: bool) -> None:
        self.settings = settings
        self.client = client
        self.network = network
        self.jwk = jwk
        self.url = url
        self.created = created             # True when this call registered it

    def __repr__(self) -> str:
        return f"Account(directory={self.settings.directory_url!r}, url={self.url!r})"


def account_key_path(state_dir: Path, directory_url: str) -> Path:
    """The account key's file for one directory: a key per CA directory, because a CA may refuse a key that
    already holds an account elsewhere (OpenBao does, per directory path, role directories included)."""
    digest = hashlib.sha256(directory_url.encode()).hexdigest()[:16]
    return state_dir / f"acme-account-{digest}.pem"


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The account key at *path*; made (P-256, mode 0600, written whole or not at all) when there is none."""
    try:
        data, st, exposure = read_secret_file(path, KEY_FILE_LIMIT)
    except NotReadable as exc:
        if path.exists() or path.is_symlink():
            raise StoreError(f"the ACME account key {path} cannot be read: {exc}") from None
        return _create_key(path)
    if exposure:
        raise StoreError(f"the ACME account key {path} {exposure}: make it mode 0600")
    del st
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise StoreError(f"the ACME account key {path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StoreError(f"the ACME account key {path} is not an EC key")
    return key


def _create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Created 0600 from the first byte, then renamed into place: a reader sees no key or the whole key.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, stat.S_IRUSR | stat.S_IWUSR)
        try:
            os.fchmod(fd, 0o600)           # the umask cannot widen it, but may have narrowed it: be exact
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, path)                # fails if another process made one meanwhile: its key wins
    except FileExistsError:
        return load_or_create_key(path)
    except OSError as exc:
        raise StoreError(f"cannot write the ACME account key {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
    return key


def _eab_jws(binding: ExternalBinding, jwk: JWK, directory: messages.Directory) -> dict[str, object]:
    try:
        raw, _st = read_regular(binding.hmac_key_file, 4096)
    except NotReadable as exc:
        raise ConfigError(f"the ACME external account HMAC key file {binding.hmac_key_file}: {exc}") from None
    hmac_key = raw.decode("ascii", errors="replace").strip()
    if not hmac_key:
        raise ConfigError(f"the ACME external account HMAC key file {binding.hmac_key_file} is empty")
    try:
        return messages.ExternalAccountBinding.from_data(jwk.public_key(), binding.key_id, hmac_key, directory,
                                                         binding.algorithm)
    except (ValueError, DeserializationError) as exc:
        raise ConfigError(f"the ACME external account binding is unusable: {exc}") from None


def open_account(settings: AccountSettings) -> Account:
    """Log in to the CA at ``settings.directory_url`` with the kept key: the existing account, or a new one."""
    key = load_or_create_key(settings.key_file)
    jwk = JWKEC(key=key)
    network = Network(jwk, ES256, settings.verify)
    step = "directory"
    try:
        directory = ClientV2.get_directory(settings.directory_url, network)
        client = ClientV2(directory, network)
        step = "account lookup"
        try:
            regr = client.query_registration(messages.RegistrationResource(body=messages.Registration()))
            return Account(settings, client, network, jwk, regr.uri or "", created=False)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
        step = "account registration"
        if client.external_account_required() and settings.eab is None:
            raise ConfigError(f"ACME account registration: the CA at {settings.directory_url} requires an external "
                              "account binding (a key id and HMAC key from the CA), and none is configured")
        eab = _eab_jws(settings.eab, jwk, directory) if settings.eab else None
        registration = messages.NewRegistration.from_data(
            email=settings.contact_email, terms_of_service_agreed=settings.agree_tos or None,
            external_account_binding=eab)
        regr = client.new_account(registration)
        return Account(settings, client, network, jwk, regr.uri or "", created=True)
    except Exception as exc:
        raise translate(exc, step, settings.directory_url, network.last_response) from exc
