"""What one configured value means: a duration, a path, a Vault address, mount or role name, a string
an HTTP header can carry. Each check refuses with one line naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from vaultpki.core.issue import MAX_TTL_SECONDS
from vaultpki.errors import ConfigError, VaultpkiError

__all__ = [
    "HEADER_UNSAFE", "MAX_DURATION_SECONDS", "check_mount", "check_role", "check_vault_addr", "expand_path",
    "header_safe", "parse_duration", "parse_ttl",
]

# ASCII digits only: Python's \d and int() also take '１' (full-width) and other scripts' digits, which
# Vault's Go duration parser refuses, and a duration must mean one thing to both.
_DURATION = re.compile(r"([0-9]+)([smhd])")
_SECONDS = re.compile(r"[0-9]+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# No vaultpki duration (a ttl, a renewal window, a backoff, a timeout) needs more; a bound keeps every
# later date computation inside what a datetime can hold.
MAX_DURATION_SECONDS = 10 * 365 * 86400
_MAX_DIGITS = 12
# Vault's names for a role (its API path pattern: ASCII word characters, '-', '.', '@' inside) and a
# mount (path segments of the same characters). Both go into a request's path.
_ROLE_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.@-]*[A-Za-z0-9_])?")
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9_.@-]+")


def parse_duration(text: str, key: str, allow_zero: bool = False) -> int:
    """Seconds in a Vault-style duration such as ``720h``, ``1h30m`` or ``90s`` (ASCII digits only);
    ``allow_zero``: a zero in any form (``0``, ``0s``, ``0h0m``) for the keys where zero means "off" or "now"."""
    text = str(text).strip()
    if _SECONDS.fullmatch(text):
        parts = [(text, "s")]
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(f"{key} = {text!r} is not a duration like '720h', '30m' or '1h30m'")
    if any(len(n) > _MAX_DIGITS for n, _ in parts):
        raise ConfigError(f"{key} is longer than {MAX_DURATION_SECONDS // 86400} days")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0 and not allow_zero:
        raise ConfigError(f"{key} must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ConfigError(f"{key} = {text!r} is longer than {MAX_DURATION_SECONDS // 86400} days")
    return seconds


def parse_ttl(text: str | None) -> int | None:
    """The leaf lifetime asked of Vault. Above the longest ``max_ttl`` of vaultpki's roles it could never
    be honoured: Vault would cap it without a word, or refuse a value its Go duration cannot hold."""
    if text is None:
        return None
    seconds = parse_duration(text, "ttl")
    if seconds > MAX_TTL_SECONDS:
        raise ConfigError(f"ttl = {text!r} is longer than any vaultpki role issues "
                          f"(the longest max_ttl is {MAX_TTL_SECONDS // 3600}h)")
    return seconds


def expand_path(text: str, what: str, error: type[VaultpkiError] = ConfigError) -> Path:
    """``text`` as a path, ``~`` and ``~user`` expanded; ``error`` naming ``what`` when it cannot be one."""
    if "\x00" in text:
        raise error(f"{what} {ascii(text)} has a NUL character, which no path can hold")
    try:
        return Path(text).expanduser()
    except RuntimeError:        # ~nosuchuser, or ~ with neither $HOME nor a passwd entry
        raise error(f"{what} {text!r}: {text.split('/', 1)[0]!r} names no user with a home directory") from None


def check_vault_addr(addr: str) -> None:
    """An http(s) URL with a host and a valid port: what a connection can be made to."""
    if not (re.fullmatch(r"https?://[^/\s]+(/\S*)?", addr) and addr.isascii() and addr.isprintable()):
        raise ConfigError(f"vault.addr {addr!r} is not an http(s) URL")
    try:
        parts = urlsplit(addr)
        port = parts.port       # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"vault.addr {addr!r} is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"vault.addr {addr!r} has no host")
    if port == 0:
        raise ConfigError(f"vault.addr {addr!r}: port 0 cannot be connected to")
    if parts.query or parts.fragment or "?" in addr or "#" in addr:
        raise ConfigError(f"vault.addr {addr!r} has a query or fragment; give the server's base URL")


def check_mount(value: str, key: str) -> str:
    segments = value.split("/")
    if not all(_MOUNT_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise ConfigError(f"{key} = {value!r} is not a Vault mount path (ASCII letters, digits, '_', '-', '.', '@', "
                          "segments joined by '/')")
    return value


def check_role(value: str, key: str) -> str:
    if not _ROLE_NAME.fullmatch(value):
        raise ConfigError(f"{key} = {value!r} is not a Vault role name (ASCII letters, digits, '_', and '-', '.', '@' "
                          "inside)")
    return value


def header_safe(value: str) -> bool:
    """Whether an HTTP header can carry ``value`` as it is: printable ASCII (no line break, no control
    character), no space at either end. A token or namespace is sent in one."""
    return value.isascii() and value.isprintable() and value == value.strip()


HEADER_UNSAFE = ("has a character an HTTP header cannot carry (a line break, a control or non-ASCII character, "
                 "or a space at either end)")
