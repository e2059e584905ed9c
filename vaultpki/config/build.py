"""From a file checked against the schema, and the environment, to ``Config``: what the values mean
together (the keys that go together or exclude each other, what each login method needs) and where
``$BAO_*``/``$VAULT_*`` fill in what the file leaves out. Pure: a dict and an environment in, a Config out.

Above the file: ``$VAULTPKI_<TABLE>_<KEY>`` (``env_overrides``), a per-pod value the file cannot hold.

The precedence of every value the environment may give (docs/configuration.md "Where the token comes
from"): the file's key, else ``$BAO_X``, else ``$VAULT_X``, and for the token last ``~/.vault-token``,
what ``bao login``/``vault login`` write. It is the ``bao`` CLI's own order (it reads ``BAO_X`` and falls
back to ``VAULT_X``; a token in the environment beats the token helper's file), and the ``vault`` CLI's
where it has a say (it knows no ``BAO_*``). The file comes first because it is what the operator wrote
for this tool, and because a daemon's environment is the one place a token should never be.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from vaultpki.config.acme import parse_acme
from vaultpki.config.env_overrides import apply_overrides
from vaultpki.config.records import HOME_TOKEN_FILE, KUBERNETES_TOKEN_FILE, Config, ReloadConfig, TokenSource, VaultConfig
from vaultpki.config.schema import PkiTable, ReloadTable, RenewTable, VaultTable, check_strings, read_file
from vaultpki.config.values import (
    HEADER_UNSAFE,
    check_mount,
    check_role,
    check_vault_addr,
    expand_path,
    header_safe,
    parse_duration,
    parse_ttl,
)
from vaultpki.core.crypto import check_key_params
from vaultpki.core.layout import Mode, PkiNames, validate_username
from vaultpki.core.renewal import RenewPolicy, parse_percent
from vaultpki.daemon.probe import parse_endpoint
from vaultpki.daemon.reload import parse_signal
from vaultpki.errors import ConfigError, InputError

__all__ = ["from_env", "parse", "token_source"]


def parse(raw: Mapping[str, Any], env: Mapping[str, str], source: str = "<config>", *,
          vault_needed: bool = True) -> Config:
    """Build a Config from a parsed TOML document and an environment (pure). ``vault_needed=False``: a
    command that never talks to Vault (``status``, ``verify``) accepts a config with no Vault address.
    ``$VAULTPKI_<TABLE>_<KEY>`` variables win over the file's keys (``env_overrides``)."""
    document, overridden = apply_overrides(raw, env)
    try:
        return _parse(document, env, source, vault_needed)
    except ConfigError as exc:
        raise ConfigError(_with_origin(str(exc), overridden)) from None


def _with_origin(message: str, overridden: Mapping[str, str]) -> str:
    """A message about a key the environment set says so: the file may not even hold that key."""
    origins = [f"${var}" for key, var in overridden.items() if re.search(rf"(?<![\w.]){re.escape(key)}\b", message)]
    return f"{message} (set by {', '.join(origins)})" if origins else message


def _parse(raw: Mapping[str, Any], env: Mapping[str, str], source: str, vault_needed: bool) -> Config:
    doc = read_file(raw)
    check_strings(doc)
    key_type, key_bits = check_key_params(doc.key_type.value, doc.key_bits)
    config = Config(
        certs_dir=expand_path(doc.certs_dir, "certs_dir") if doc.certs_dir else None,
        mode=doc.mode,
        key_type=key_type,
        key_bits=key_bits,
        ttl_seconds=parse_ttl(doc.ttl),
        owner=doc.owner,
        group=doc.group,
        ca_trust=doc.ca_trust,
        issue_method=doc.issue_method,
        vault=_parse_vault(doc.vault, env, vault_needed),
        pki=_parse_pki(doc.pki),
        node_hosts=doc.node.hosts,
        ui_hosts=doc.ui.hosts,
        source=source,
        renew=_parse_renew(doc.renew),
        retry_initial=parse_duration(doc.renew.retry_initial, "renew.retry_initial"),
        retry_max=parse_duration(doc.renew.retry_max, "renew.retry_max"),
        reload=_parse_reload(doc.reload),
        node_users=_node_users(doc.node.users),
        node_pk8=doc.node.pk8,
        ui_acme=parse_acme(doc.ui, doc.pki.ui_mount),
    )
    _check_combination(config)
    return config


def _check_combination(config: Config) -> None:
    """Keys that are each fine alone but not together."""
    if config.pki.ui_mount and not config.ui_hosts:
        raise ConfigError("pki.ui_mount is set but ui.hosts is empty")
    if config.mode is Mode.SPLIT_CA and not config.pki.client_mount:
        raise ConfigError("mode = 'split-ca' needs pki.client_mount (the client CA's mount)")
    if config.vault.auth == "cert" and config.mode is not Mode.STANDARD:
        # A node's login is bound to the subject OU of its own standard-mode node.crt (docs/security.md).
        raise ConfigError(f"vault.auth = 'cert' works in mode = 'standard' only: in {config.mode.value} node.crt is a "
                          "server certificate Vault refuses for login, and client.node.crt is the same on every node; "
                          "use auth = 'approle'")


def _parse_renew(t: RenewTable) -> RenewPolicy:
    jitter = parse_percent(t.jitter, "renew.jitter", allow_zero=True)
    if jitter > 0.25:
        raise ConfigError("renew.jitter above 25% would no longer respect the renewal window")
    ca_check = parse_duration(t.ca_check, "renew.ca_check", allow_zero=True)       # 0: no periodic CA check
    if "%" in t.before:
        fraction, seconds = parse_percent(t.before, "renew.before", allow_zero=False), None
    else:
        fraction, seconds = None, parse_duration(t.before, "renew.before")
    return RenewPolicy(before_fraction=fraction, before_seconds=seconds, jitter_fraction=jitter,
                       ca_check=ca_check, ocsp_check=t.ocsp_check, revoke_replaced=t.revoke_replaced)


def _node_users(users: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(validate_username(u) for u in users))
    except InputError as exc:
        raise ConfigError(f"node.users: {exc}") from None


def _parse_reload(t: ReloadTable) -> ReloadConfig:
    """The actions after a write: the signal (``process``, ``pidfile``, or both: the pid in the pidfile must
    then be that process), then the commands (``command`` is a list of one), in order."""
    if t.command and t.commands:
        raise ConfigError("reload: set reload.command (one command) or reload.commands (a list of them), not both")
    for number, argv in enumerate(t.commands, start=1):
        if not argv:
            raise ConfigError(f"reload.commands: command {number} is empty (a command is a list such as "
                              '["systemctl", "reload", "haproxy"])')
    reload = ReloadConfig(
        signal=parse_signal(t.signal).name if t.signal is not None else "SIGHUP",
        process=t.process,
        pidfile=t.pidfile,
        command=t.command,
        commands=(t.command,) if t.command else t.commands,
        command_timeout=parse_duration(t.command_timeout, "reload.command_timeout"),
        verify=t.verify,
        verify_timeout=parse_duration(t.verify_timeout, "reload.verify_timeout"),
        rollback_on_failure=t.rollback_on_failure,
    )
    if reload.verify is not None:
        parse_endpoint(reload.verify)       # a postgres:// or tls:// host:port, refused now rather than at reload
    return reload


def from_env(env: Mapping[str, str], name: str) -> tuple[str | None, str]:
    """``$BAO_<name>``, else ``$VAULT_<name>`` (an empty variable is unset), and the variable it came from."""
    for var in (f"BAO_{name}", f"VAULT_{name}"):
        if env.get(var):
            return env[var], f"${var}"
    return None, f"$VAULT_{name}"


def token_source(t: VaultTable, env: Mapping[str, str]) -> TokenSource:
    """Where the token comes from, in the one order every command uses: ``vault.token_file``, else
    ``$BAO_TOKEN``, else ``$VAULT_TOKEN``, else ``~/.vault-token`` (``$HOME``'s: what ``bao login`` and
    ``vault login`` write). The files are read (and judged) only when a token is needed."""
    if t.token_file:
        return TokenSource(origin="vault.token_file", path=t.token_file)
    token, var = from_env(env, "TOKEN")
    if token is not None:
        return TokenSource(origin=var, value=token)
    home = env.get("HOME")
    if home and home.startswith("/"):
        return TokenSource(origin=HOME_TOKEN_FILE, path=home.rstrip("/") + "/.vault-token")
    return TokenSource(origin=HOME_TOKEN_FILE)


def _vault_addrs(t: VaultTable, env: Mapping[str, str], needed: bool) -> tuple[str, ...]:
    """The configured addresses (a string, a comma-separated string like $VAULT_ADDR, or a list), else
    $BAO_ADDR's, else $VAULT_ADDR's; each checked, trailing slashes dropped."""
    configured = (t.addr,) if isinstance(t.addr, str) else t.addr
    if len(configured) == 1 and "," in configured[0]:
        configured = tuple(a.strip() for a in configured[0].split(","))
    addrs = configured or tuple(a.strip() for a in (from_env(env, "ADDR")[0] or "").split(",") if a.strip())
    if not addrs and needed:
        raise ConfigError("no Vault address: set vault.addr, $BAO_ADDR or $VAULT_ADDR")
    for addr in addrs:
        check_vault_addr(addr)
    return tuple(a.rstrip("/") for a in addrs)


def _parse_vault(t: VaultTable, env: Mapping[str, str], vault_needed: bool) -> VaultConfig:
    addrs = _vault_addrs(t, env, vault_needed)
    source = token_source(t, env)
    if not (math.isfinite(t.timeout) and t.timeout > 0):
        raise ConfigError("vault.timeout must be a positive number")
    vault = VaultConfig(
        addr=addrs[0] if addrs else "",      # "": none, for a command that never talks to Vault
        addrs=addrs,
        auth=t.auth,
        ca_cert=t.ca_cert or from_env(env, "CACERT")[0],          # the file wins over $BAO_*/$VAULT_*
        namespace=t.namespace or from_env(env, "NAMESPACE")[0],
        timeout=t.timeout,
        retry_for=float(parse_duration(t.retry_for, "vault.retry_for")),
        token=source.value,
        token_source=source,
        token_file=t.token_file,
        approle_mount=check_mount(t.approle_mount, "vault.approle_mount"),
        role_id=t.role_id,
        role_id_file=t.role_id_file,
        secret_id_file=t.secret_id_file,
        cert_mount=check_mount(t.cert_mount, "vault.cert_mount"),
        cert_role=t.cert_role,
        cert_file=t.cert_file,
        key_file=t.key_file,
        jwt_mount=check_mount(t.jwt_mount, "vault.jwt_mount"),
        jwt_role=None if t.jwt_role is None else check_role(t.jwt_role, "vault.jwt_role"),
        jwt_file=t.jwt_file or (KUBERNETES_TOKEN_FILE if t.auth == "kubernetes" else None),
        kubernetes_mount=check_mount(t.kubernetes_mount, "vault.kubernetes_mount"),
        kubernetes_role=None if t.kubernetes_role is None else check_role(t.kubernetes_role, "vault.kubernetes_role"),
    )
    _check_vault_auth(vault)
    return vault


def _check_vault_auth(vault: VaultConfig) -> None:
    """What each login method needs, and the values that go into headers."""
    # Checked here, before anything is sent, and never echoed: the value may be a token. ($BAO_TOKEN or
    # $VAULT_TOKEN only where it is the one used: with a token file or another auth method it is ignored.)
    if vault.auth == "token" and vault.token is not None and not header_safe(vault.token):
        raise ConfigError(f"{vault.token_source.origin} {HEADER_UNSAFE}")
    if vault.namespace is not None and not header_safe(vault.namespace):
        raise ConfigError(f"vault.namespace (or $BAO_NAMESPACE, $VAULT_NAMESPACE) {HEADER_UNSAFE}")
    if vault.auth == "approle":
        if not (vault.role_id or vault.role_id_file) or not vault.secret_id_file:
            raise ConfigError("vault.auth = 'approle' needs vault.role_id (or role_id_file) and vault.secret_id_file")
    if vault.auth == "cert" and not (vault.cert_file and vault.key_file):
        raise ConfigError("vault.auth = 'cert' needs vault.cert_file and vault.key_file")
    if vault.auth == "cert" and not all(a.startswith("https://") for a in vault.addrs):
        raise ConfigError("vault.auth = 'cert' needs an https:// Vault address (the certificate is sent in the TLS handshake)")
    _check_jwt_auth(vault)


# Which login method reads which of the JWT keys: any other method given one is a mistake worth a line
# (a jwt_file next to auth = "token" would otherwise be silently ignored, and the token used instead).
_JWT_KEYS = {"jwt_role": ("jwt",), "kubernetes_role": ("kubernetes",), "jwt_file": ("jwt", "kubernetes")}


def _check_jwt_auth(vault: VaultConfig) -> None:
    """What jwt and kubernetes auth need; their keys set for another login method."""
    if vault.auth == "jwt" and not (vault.jwt_role and vault.jwt_file):
        raise ConfigError("vault.auth = 'jwt' needs vault.jwt_role and vault.jwt_file (the file holding the JWT, such as a "
                          "projected service-account token)")
    if vault.auth == "kubernetes" and not vault.kubernetes_role:
        raise ConfigError("vault.auth = 'kubernetes' needs vault.kubernetes_role")
    for key, methods in _JWT_KEYS.items():
        if getattr(vault, key) is not None and vault.auth not in methods:
            raise ConfigError(f"vault.{key} is set, but vault.auth = {vault.auth!r} does not use it (it is for auth = "
                              f"{' or '.join(repr(m) for m in methods)})")


def _parse_pki(t: PkiTable) -> PkiNames:
    return PkiNames(
        mount=check_mount(t.mount, "pki.mount"),
        client_mount=None if t.client_mount is None else check_mount(t.client_mount, "pki.client_mount"),
        node_role=check_role(t.node_role, "pki.node_role"),
        client_node_role=check_role(t.client_node_role, "pki.client_node_role"),
        user_role=check_role(t.user_role, "pki.user_role"),
        ui_mount=None if t.ui_mount is None else check_mount(t.ui_mount, "pki.ui_mount"),
        ui_role=check_role(t.ui_role, "pki.ui_role"),
        root_role=check_role(t.root_role, "pki.root_role"),
    )
