"""Logging in to Vault: the request each login method sends (AppRole, TLS certificate, JWT, Kubernetes), and
the credential files it reads, anew at every login.

A file is read at each login, never once for the life of the process: the kubelet replaces a projected
service-account token well before it expires, and an operator rotates a secret-id by replacing its file.
A file that cannot be used is a ConfigError (exit 2), raised before anything is sent. A JWT or secret-id
goes into the login's body only: never into a message, a log line or a ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import hvac

from vaultpki.config import VaultConfig
from vaultpki.errors import ConfigError
from vaultpki.files import NotReadable, read_secret_file

__all__ = ["MAX_SECRET_BYTES", "Login", "login_request", "read_jwt", "read_secret"]

MAX_SECRET_BYTES = 1 << 16       # a token, role-id, secret-id or service-account JWT is at most a few KiB
# A role-id names the AppRole, like a user name: it logs in nobody without the secret-id, so its file may
# be readable by others (a ConfigMap, a 0444 Secret). Tokens, secret-ids and JWTs are secrets.
NOT_SECRET = frozenset({"vault.role_id_file"})
# A JWS in compact form, as a kube-apiserver or an OIDC provider signs it: three base64url parts.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class Login(NamedTuple):
    """One login: what it is doing, in the words of its messages, and the request itself."""

    what: str                                # "logging in with jwt auth as role node-n1 at auth/jwt"
    mount: str                               # the auth mount: "jwt"
    send: Callable[[hvac.Client], Any]       # over an hvac client on the session's adapter: the decoded answer


def login_request(cfg: VaultConfig) -> Login:
    """The login ``cfg.auth`` names, its credential files read now. jwt and kubernetes go through hvac's
    own auth API (``auth.jwt.jwt_login``, ``auth.kubernetes.login``) over the same adapter as every other
    request; ``use_token=False``: the session takes the token from the answer itself, once it is judged."""
    if cfg.auth == "approle":
        role_id = cfg.role_id or read_secret(cfg.role_id_file or "", "vault.role_id_file")
        body = {"role_id": role_id, "secret_id": read_secret(cfg.secret_id_file or "", "vault.secret_id_file")}
        return _posted("approle", cfg.approle_mount, body)
    if cfg.auth == "cert":
        return _posted("cert", cfg.cert_mount, {"name": cfg.cert_role} if cfg.cert_role else {})
    if cfg.auth == "jwt":
        role, mount, jwt = cfg.jwt_role or "", cfg.jwt_mount, read_jwt(cfg.jwt_file or "")
        return Login(f"logging in with jwt auth as role {role} at auth/{mount}", mount,
                     lambda client: client.auth.jwt.jwt_login(role, jwt, use_token=False, path=mount))
    if cfg.auth == "kubernetes":
        role, mount, jwt = cfg.kubernetes_role or "", cfg.kubernetes_mount, read_jwt(cfg.jwt_file or "")
        return Login(f"logging in with kubernetes auth as role {role} at auth/{mount}", mount,
                     lambda client: client.auth.kubernetes.login(role, jwt, use_token=False, mount_point=mount))
    raise ConfigError(f"vault.auth = {cfg.auth!r} is not a login method")       # token: no login, a static token


def _posted(method: str, mount: str, body: Mapping[str, str]) -> Login:
    """A login that is one POST of ``body`` to ``auth/<mount>/login``."""
    return Login(f"logging in with {method} auth at auth/{mount}", mount,
                 lambda client: client.adapter.request("POST", f"/v1/auth/{mount}/login", json=body))


def read_jwt(path: str) -> str:
    """The JWT in ``vault.jwt_file``, under the rules of every secret file (and the kubelet's token modes).
    Its shape is checked here so that a wrong file (a CA certificate, the namespace file) is named as such,
    without echoing what it holds."""
    token = read_secret(path, "vault.jwt_file")
    if not _COMPACT_JWS.fullmatch(token):
        raise ConfigError(f"vault.jwt_file {path} does not hold a JWT (three base64url parts joined by '.')")
    return token


def read_secret(path: str, key: str) -> str:
    """Read a token, secret-id, JWT or role-id file, refusing a secret that somebody else can read
    (``files.secret_exposure``: the kubelet's root-owned 0440 in our own group passes, and so does systemd's
    root-owned credential with an ACL for our user alone; for a JWT, also the kubelet's projected-token mode).
    Judged by what was opened (``files.read_secret_file``): a regular file of at most MAX_SECRET_BYTES, never
    a FIFO (whose open would wait for a writer forever) or a device."""
    try:
        data, _st, exposure = read_secret_file(path, MAX_SECRET_BYTES, projected_token=key == "vault.jwt_file")
    except NotReadable as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc}") from None
    if exposure is not None and key not in NOT_SECRET:
        raise ConfigError(f"{key} {path} {exposure}; chmod 600 it")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{key} {path} is empty")
    return value
