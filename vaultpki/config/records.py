"""The configuration as the rest of vaultpki sees it: frozen records, every value already judged.

``vaultpki.config.build`` makes them from a checked file and the environment; nothing else does.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from vaultpki.core.crypto import KeyType
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.renewal import RenewPolicy
from vaultpki.redact import redacted_repr

__all__ = [
    "HOME_TOKEN_FILE", "KUBERNETES_TOKEN_FILE", "AcmeConfig", "Config", "ReloadConfig", "TokenSource", "VaultConfig", "VaultLogin",
]

HOME_TOKEN_FILE = "~/.vault-token"
# Where the kubelet puts a pod's service-account token when the pod automounts it: vault.jwt_file's
# default with auth = "kubernetes".
KUBERNETES_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class TokenSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a static token comes from (``config.build.token_source`` chose it): a file to read when the
    token is needed, or a value from the environment; ``origin`` names it in messages."""

    origin: str                   # "vault.token_file", "$BAO_TOKEN", "$VAULT_TOKEN" or "~/.vault-token"
    path: str | None = None       # read when the token is needed (None and no value: no token anywhere)
    value: str | None = None      # from the environment; never logged (see __repr__)

    def __repr__(self) -> str:
        return redacted_repr(self, "value")


class VaultLogin(msgspec.Struct, frozen=True, kw_only=True):
    """How vaultpki logs in: the same keys in the file's ``[vault]`` table and in the parsed record."""

    token_file: str | None = None
    approle_mount: str = "approle"
    role_id: str | None = None
    role_id_file: str | None = None
    secret_id_file: str | None = None
    cert_mount: str = "cert"
    cert_role: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    jwt_mount: str = "jwt"
    jwt_role: str | None = None
    jwt_file: str | None = None           # a JWT (for kubernetes auth: the pod's service-account token)
    kubernetes_mount: str = "kubernetes"
    kubernetes_role: str | None = None


class VaultConfig(VaultLogin, frozen=True):
    addr: str                     # the first of ``addrs``
    auth: str
    ca_cert: str | None
    namespace: str | None
    timeout: float
    token: str | None = None      # from $BAO_TOKEN or $VAULT_TOKEN; never logged (see __repr__)
    token_source: TokenSource = TokenSource(origin=HOME_TOKEN_FILE)   # where a static token comes from
    addrs: tuple[str, ...] = ()   # every address to try, in order (HA: fail over between them)
    retry_for: float = 60.0       # how long to retry transient failures of one request (an election, an outage)

    def __repr__(self) -> str:
        return redacted_repr(self, "token", "role_id")


class ReloadConfig(msgspec.Struct, frozen=True):
    """How ``sync`` makes the database pick up a new set, and how it checks that it did."""

    signal: str = "SIGHUP"
    process: str | None = None           # exact process name, like `pkill -x`
    pidfile: str | None = None           # first line is the pid
    command: tuple[str, ...] = ()        # as written: ``commands`` holds it as its one command
    commands: tuple[tuple[str, ...], ...] = ()   # run after the signal, in order (no shell)
    command_timeout: int = 60
    verify: str | None = None            # postgres://host:port or tls://host:port
    verify_timeout: int = 15
    rollback_on_failure: bool = False


class AcmeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where ``ui.crt`` comes from when an ACME CA issues it (the ``ui.acme_*`` keys, judged together).
    Files are named, never read here: the EAB HMAC key and the TSIG key are read when an order needs them."""

    directory: str                                  # the CA's directory URL
    email: str | None = None                        # the account's contact
    eab_kid: str | None = None                      # external account binding: the key id...
    eab_hmac_file: Path | None = None               # ...and the file with its base64url HMAC key
    challenge: str = "http-01"                      # "http-01" or "dns-01"
    http_port: int = 80                             # http-01 standalone listener
    webroot: Path | None = None                     # http-01 through a web server already there, instead
    dns_server: tuple[str, int] | None = None       # dns-01 RFC 2136: the zone's primary (address, port)
    tsig_key_file: Path | None = None               # ...and its TSIG key, a BIND key file
    dns_hook: tuple[str, ...] = ()                  # dns-01 through the operator's command, instead
    dns_cleanup_hook: tuple[str, ...] = ()
    dns_resolvers: tuple[tuple[str, int], ...] = () # where the TXT record is looked for (else the zone's servers)
    ca_cert: Path | None = None                     # the roots of the ACME server's own TLS certificate
    trust: Path | None = None                       # the roots the issued chain must reach (else the system's)

    def responder_text(self) -> str:
        """Which challenge is answered where, in the words ``--dry-run`` and ``status`` use."""
        if self.challenge == "http-01":
            return (f"http-01 through the webroot {self.webroot}" if self.webroot
                    else f"http-01 on a standalone listener on port {self.http_port}")
        if self.dns_server is not None:
            address, port = self.dns_server
            return f"dns-01 by RFC 2136 update to {address}{'' if port == 53 else f':{port}'} (TSIG key {self.tsig_key_file})"
        return f"dns-01 through the hook {self.dns_hook[0]}"


class Config(msgspec.Struct, frozen=True):
    certs_dir: Path | None
    mode: Mode
    key_type: KeyType
    key_bits: int
    ttl_seconds: int | None
    owner: str | None
    group: str | None
    ca_trust: str
    issue_method: str
    vault: VaultConfig
    pki: PkiNames
    node_hosts: tuple[str, ...]
    ui_hosts: tuple[str, ...]
    source: str                   # where the config came from, for error messages
    renew: RenewPolicy = RenewPolicy()
    retry_initial: float = 1.0    # daemon backoff while Vault is away: first wait...
    retry_max: float = 300.0      # ...and the cap
    reload: ReloadConfig = ReloadConfig()
    node_users: tuple[str, ...] = ()   # SQL users whose client certs the node's certs-dir also holds
    node_pk8: bool = False             # their keys also as client.<user>.key.pk8 (PKCS#8 DER, for Java)
    ui_acme: AcmeConfig | None = None  # ui.crt from an ACME CA instead of pki.ui_mount
