"""The ``ui.acme_*`` keys: ``ui.crt`` from an ACME CA, and what those keys mean together.

Each key is fine alone; together they must name one CA directory, one challenge and one way to answer it:
the standalone listener or a webroot for http-01, an RFC 2136 server with its TSIG key or a hook for dns-01.
A key the chosen challenge does not use is refused rather than ignored, as is a UI mount next to a directory
(``ui.crt`` comes from one place). Pure: nothing is read; the files are read when an order needs them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from vaultpki.config.records import AcmeConfig
from vaultpki.config.schema import UiTable
from vaultpki.config.values import expand_path
from vaultpki.errors import ConfigError

__all__ = ["parse_acme"]

_HTTP_KEYS = ("acme_http_port", "acme_webroot")
_DNS_KEYS = ("acme_dns_server", "acme_tsig_key_file", "acme_dns_hook", "acme_dns_cleanup_hook", "acme_dns_resolver")
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")
_SERVER = re.compile(r"\[(?P<v6>[^]]+)\](?::(?P<v6port>[0-9]{1,5}))?|(?P<host>[^:]+)(?::(?P<port>[0-9]{1,5}))?")


def _set_keys(t: UiTable) -> list[str]:
    """The ``acme_*`` keys the file (or the environment) set, in the schema's order."""
    return [name for name in type(t).__struct_fields__
            if name.startswith("acme_") and getattr(t, name) not in (None, ())]


def parse_acme(t: UiTable, ui_mount: str | None) -> AcmeConfig | None:
    """The ACME settings of ``[ui]``, or None when ``ui.acme_directory`` is not set (and no other ACME key is)."""
    if t.acme_directory is None:
        stray = _set_keys(t)
        if stray:
            raise ConfigError(f"ui.{stray[0]} is set but ui.acme_directory is not: the ACME keys need the CA's directory URL")
        return None
    directory = _check_directory(t.acme_directory)
    if ui_mount is not None:
        raise ConfigError("ui.acme_directory and pki.ui_mount are both set: ui.crt comes from an ACME CA or from a "
                          "Vault mount, not both")
    if not t.hosts:
        raise ConfigError("ui.acme_directory is set but ui.hosts is empty: the DB Console certificate needs the names "
                          "browsers use")
    if t.acme_email is not None and not _EMAIL.fullmatch(t.acme_email):
        raise ConfigError(f"ui.acme_email {t.acme_email!r} is not one e-mail address")
    if (t.acme_eab_kid is None) != (t.acme_eab_hmac_file is None):
        raise ConfigError("ui.acme_eab_kid and ui.acme_eab_hmac_file go together (the key id and the file holding the "
                          "HMAC key the CA gave for the external account binding)")
    challenge = t.acme_challenge or "http-01"
    common = AcmeConfig(directory=directory, email=t.acme_email, eab_kid=t.acme_eab_kid,
                        eab_hmac_file=_path(t.acme_eab_hmac_file, "ui.acme_eab_hmac_file"),
                        ca_cert=_path(t.acme_ca_cert, "ui.acme_ca_cert"), trust=_path(t.acme_trust, "ui.acme_trust"))
    if challenge == "http-01":
        _refuse_others(t, _DNS_KEYS, challenge)
        if t.acme_webroot is not None and t.acme_http_port is not None:
            raise ConfigError("ui.acme_webroot and ui.acme_http_port are both set: with a webroot the web server already "
                              "there answers, and no listener is started")
        port = 80 if t.acme_http_port is None else t.acme_http_port
        if not 1 <= port <= 65535:
            raise ConfigError(f"ui.acme_http_port = {port} is not a TCP port (1-65535)")
        return msgspec.structs.replace(common, challenge=challenge, http_port=port,
                                       webroot=_path(t.acme_webroot, "ui.acme_webroot"))
    _refuse_others(t, _HTTP_KEYS, challenge)
    return _dns01(t, common)


def _dns01(t: UiTable, common: AcmeConfig) -> AcmeConfig:
    ips = [host for host in t.hosts if _is_ip(host)]
    if ips:
        raise ConfigError(f"ui.acme_challenge = 'dns-01' cannot prove an IP address ({', '.join(ips)} in ui.hosts): "
                          "use http-01, or leave the addresses out")
    if t.acme_dns_server is not None and t.acme_dns_hook:
        raise ConfigError("ui.acme_dns_server and ui.acme_dns_hook are both set: the TXT record is published by an "
                          "RFC 2136 update or by the hook, not both")
    if t.acme_dns_server is None and not t.acme_dns_hook:
        raise ConfigError("ui.acme_challenge = 'dns-01' needs ui.acme_dns_server with ui.acme_tsig_key_file (RFC 2136), "
                          "or ui.acme_dns_hook")
    if (t.acme_dns_server is None) != (t.acme_tsig_key_file is None):
        raise ConfigError("ui.acme_dns_server and ui.acme_tsig_key_file go together (RFC 2136 updates are signed "
                          "with the TSIG key)")
    if t.acme_dns_cleanup_hook and not t.acme_dns_hook:
        raise ConfigError("ui.acme_dns_cleanup_hook is set but ui.acme_dns_hook is not")
    return msgspec.structs.replace(
        common,
        challenge="dns-01",
        dns_server=None if t.acme_dns_server is None else _server(t.acme_dns_server, "ui.acme_dns_server"),
        tsig_key_file=_path(t.acme_tsig_key_file, "ui.acme_tsig_key_file"),
        dns_hook=t.acme_dns_hook,
        dns_cleanup_hook=t.acme_dns_cleanup_hook,
        dns_resolvers=tuple(_server(text, "ui.acme_dns_resolver") for text in t.acme_dns_resolver),
    )


def _refuse_others(t: UiTable, keys: Sequence[str], challenge: str) -> None:
    for key in keys:
        if getattr(t, key) not in (None, ()):
            raise ConfigError(f"ui.{key} is set but ui.acme_challenge = {challenge!r} does not use it")


def _check_directory(url: str) -> str:
    """An https:// URL; http:// only to a loopback address (a CA on this machine, as in the tests)."""
    try:
        parts = urlsplit(url)
        if parts.port == 0:                                 # .port raises for one that is not a number in 0-65535
            raise ValueError("port 0")
    except ValueError as exc:
        raise ConfigError(f"ui.acme_directory {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or not url.isascii() or not url.isprintable():
        raise ConfigError(f"ui.acme_directory {url!r} is not an https:// URL")
    if parts.scheme == "http" and not (parts.hostname == "localhost" or (_is_ip(parts.hostname)
                                                                         and ipaddress.ip_address(parts.hostname).is_loopback)):
        raise ConfigError(f"ui.acme_directory {url!r}: plain http:// only to a CA on this machine (a loopback address); "
                          "use https://")
    return url


def _server(text: str, key: str) -> tuple[str, int]:
    """``address``, ``address:port`` or ``[v6]:port``: an IP address (DNS updates and checks go to addresses)."""
    match = _SERVER.fullmatch(text.strip())
    address = (match["v6"] or match["host"]) if match else ""
    port_text = (match["v6port"] or match["port"]) if match else None
    if not match or not _is_ip(address) or (port_text is not None and not 1 <= int(port_text) <= 65535):
        raise ConfigError(f"{key} {text!r} is not an IP address with an optional port (192.0.2.53, 192.0.2.53:5353, "
                          "[2001:db8::53]:53)")
    return str(ipaddress.ip_address(address)), int(port_text or 53)


def _path(text: str | None, key: str) -> Path | None:
    return None if text is None else expand_path(text, key)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
