"""``init``: write a commented configuration for a chosen layout, asking nothing it can derive.

Non-interactive (cron, CI, configuration management): every value comes from an option, else from
the environment (``$BAO_ADDR``/``$VAULT_ADDR``, ``$BAO_CACERT``/``$VAULT_CACERT``, the host's names),
else from vaultpki's defaults. What it writes is parsed by vaultpki's own configuration parser before a
byte is written, it holds no secret (only the paths of the files that do), and an existing file is
never replaced without ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import click

from vaultpki import config as config_mod
from vaultpki.config.records import KUBERNETES_TOKEN_FILE
from vaultpki.config.schema import AuthMethod
from vaultpki.core.layout import Mode
from vaultpki.errors import ConfigError, InputError, StoreError

DOCS = "docs/configuration.md"
FILE_MODE = 0o644          # no secret in it: a service user and its operators may read it


def default_hosts() -> list[str]:
    """This machine's names as ``hostname -f`` and ``hostname`` give them, then the loopback names the local
    ``cockroach`` CLI dials (a host whose only name is ``localhost`` gets the loopback names alone)."""
    own = [n for n in (socket.getfqdn(), socket.gethostname()) if n and not n.startswith("localhost")]
    return list(dict.fromkeys([*own, "localhost", "127.0.0.1"]))


def _toml(value: object) -> str:
    """One value as TOML (the configuration writer's own rules)."""
    return config_mod.dumps({"v": value}).split(" = ", 1)[1].rstrip("\n")


def _login(auth: str, certs_dir: str, node: str) -> list[str]:
    """The [vault] lines of one login method: the files a node's credentials are read from, never the credentials."""
    if auth == "token":
        return ["# A Vault token in a file only vaultpki's user can read (chmod 600).",
                'token_file = "/etc/vaultpki/token"']
    if auth == "approle":
        return ["# AppRole: the role id (not a secret) and the secret id, each in a file (the secret id chmod 600).",
                'role_id_file = "/etc/vaultpki/role-id"', 'secret_id_file = "/etc/vaultpki/secret-id"']
    if auth == "cert":
        return ["# TLS certificate auth with this node's own node.crt (standard mode only). The first issue-node",
                "# needs a token or AppRole: a node has no node.crt yet. docs/configuration.md, \"Cert auth\".",
                f"cert_role = {_toml(f'node-{node}')}", f"cert_file = {_toml(str(Path(certs_dir) / 'node.crt'))}",
                f"key_file = {_toml(str(Path(certs_dir) / 'node.key'))}"]
    if auth == "jwt":
        return ["# JWT/OIDC auth: a token from a file (a Kubernetes projected service-account token or any OIDC",
                "# token), read again at every login because it is rotated.",
                f"jwt_role = {_toml(f'node-{node}')}", 'jwt_file = "/var/run/secrets/vaultpki/token"']
    if auth == "kubernetes":
        return ["# Kubernetes auth: the pod's service-account token, checked by Vault against the API server.",
                f"kubernetes_role = {_toml(f'node-{node}')}",
                f"# jwt_file = {_toml(KUBERNETES_TOKEN_FILE)}   # the default: the token the kubelet mounts"]
    raise InputError(f"--auth {auth!r}: init has no template for it")


# The login methods the configuration knows, each of which _login has a template for (tests/unit/test_init.py).
AUTHS = tuple(get_args(AuthMethod))

_MODES = {
    Mode.STANDARD: "standard: one CA; node.crt is the node's server and client certificate (CN=node).",
    Mode.SPLIT_NODE: "split-node: node.crt is a server certificate only; client.node.crt (CN=node) is the node's client "
                     "certificate.",
    Mode.SPLIT_CA: "split-ca: as split-node, and client certificates come from a second CA (ca-client.crt).",
}


def render(mode: Mode, vault_addrs: Sequence[str], certs_dir: str, hosts: Sequence[str], auth: str, *,
           ca_cert: str | None = None, owner: str | None = None, group: str | None = None,
           command: str = "vaultpki init") -> str:
    """The configuration text: every key it sets, with a comment saying what it is."""
    named = [h for h in hosts if not h.startswith("localhost") and not h[:1].isdigit() and ":" not in h]
    node = named[0].split(".")[0] if named else "n1"      # the per-node role names of the Terraform module
    addr = _toml(vault_addrs[0] if len(vault_addrs) == 1 else list(vault_addrs))
    lines = [
        f"# vaultpki configuration, written by `{command}`.",
        f"# Every key, its default and what it means: {DOCS} in vaultpki's source; the commands: `man vaultpki`.",
        "# Try it without minting anything: vaultpki --config THIS-FILE issue-node --dry-run",
        "# It holds no secret: only the paths of the files that do (each readable by vaultpki's user alone).",
        "",
        "# The node's certs-dir, what `cockroach start --certs-dir` reads (issue-node, sync, verify, status).",
        f"certs_dir = {_toml(certs_dir)}",
        "# The layout (README, \"The three layouts\"):",
        f"# {_MODES[mode]}",
        f"mode = {_toml(mode.value)}",
        "# Who the written files belong to: the user CockroachDB runs as (unset: the user running vaultpki).",
        f"owner = {_toml(owner)}" if owner else '# owner = "cockroach"',
        f"group = {_toml(group)}" if group else '# group = "cockroach"',
        "",
        "[vault]",
        "# Vault or OpenBao; a list is tried in order, failing over ($BAO_ADDR/$VAULT_ADDR when they are unset here).",
        f"addr = {addr}",
        "# The CA bundle that verifies Vault's TLS certificate (unset: the system's trust store).",
        f"ca_cert = {_toml(ca_cert)}" if ca_cert else '# ca_cert = "/etc/vaultpki/vault-ca.pem"',
        "# How this node logs in (docs/vault-setup.md: the policy and login each node gets).",
        f"auth = {_toml(auth)}",
        *_login(auth, certs_dir, node),
        "",
        "[pki]",
        "# The PKI mounts and roles the files come from (docs/vault-setup.md, \"Which role each file uses\"). With the",
        "# Terraform module, paste the node's [pki] table from its vaultpki_config output instead.",
        'mount = "pki-crdb"',
    ]
    if mode is Mode.SPLIT_CA:
        lines += ["# The client CA's mount: ca-client.crt, client.node.crt and the users' certificates.",
                  'client_mount = "pki-crdb-client"']
    if mode is Mode.STANDARD:
        lines += ["# The role that signs node.crt.", 'node_role = "node"']
    else:
        lines += ["# The role that signs node.crt (a server certificate), and the one that signs client.node.crt.",
                  'node_role = "node-server"', 'client_node_role = "client-node"']
    lines += [
        "",
        "[node]",
        "# Every DNS name and IP that reaches this node: its advertise and join addresses, a load balancer's name,",
        "# and localhost/127.0.0.1 for the local `cockroach` CLI. Each becomes a SAN of node.crt.",
        f"hosts = {_toml(list(hosts))}",
        "",
        "[reload]",
        "# How `vaultpki sync` makes CockroachDB read renewed files: SIGHUP to every process of exactly this name",
        "# (docs/sync.md, \"Reload and verification\"). [renew] holds when sync renews; its defaults suit most nodes.",
        'process = "cockroach"',
    ]
    return "\n".join(lines) + "\n"


def check(text: str) -> None:
    """What was rendered, read back by vaultpki's own parser, as ``--config`` will read it."""
    try:
        config_mod.parse(tomllib.loads(text), {}, source="vaultpki init")
    except ConfigError as exc:
        raise ConfigError(f"init: these options make no valid configuration: {exc}") from None


def write_new(path: Path, text: str, force: bool) -> None:
    """``text`` into ``path``, mode 0644, complete or not at all; an existing file only with ``force``."""
    if not force and os.path.lexists(path):
        raise InputError(f"{path} exists: vaultpki init never replaces a file (pass --force to replace it)")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), FILE_MODE)
            os.fsync(fh.fileno())
        if force:
            os.replace(temp, path)
        else:
            os.link(temp, path)          # fails if the name appeared meanwhile: never replaced
            os.unlink(temp)
    except FileExistsError:
        raise InputError(f"{path} exists: vaultpki init never replaces a file (pass --force to replace it)") from None
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma-separated lists alike: ``--node-hosts a,b --node-hosts c``."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.command(short_help="Write a commented configuration.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.STANDARD.value, show_default=True,
              help="The certs-dir layout.")
@click.option("--vault-addr", envvar=["BAO_ADDR", "VAULT_ADDR"], metavar="URL",
              help="Vault's address; comma-separated for several (default: $BAO_ADDR, else $VAULT_ADDR).")
@click.option("--certs-dir", default="/var/lib/cockroach/certs", show_default=True, metavar="DIR",
              help="The node's certs-dir.")
@click.option("--node-hosts", multiple=True, metavar="HOST[,HOST]",
              help="The node's DNS names and IPs (default: `hostname -f`, `hostname`, localhost, 127.0.0.1).")
@click.option("--auth", type=click.Choice(AUTHS), default="approle", show_default=True, help="How the node logs in to Vault.")
@click.option("--ca-cert", envvar=["BAO_CACERT", "VAULT_CACERT"], metavar="FILE",
              help="CA bundle for Vault's TLS certificate (default: $BAO_CACERT, else $VAULT_CACERT).")
@click.option("--owner", metavar="USER", help="Owner of the written certificate files.")
@click.option("--group", metavar="GROUP", help="Group of the written certificate files.")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True, help="Where to write it (- for stdout).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def init(mode: str, vault_addr: str | None, certs_dir: str, node_hosts: tuple[str, ...], auth: str, ca_cert: str | None,
         owner: str | None, group: str | None, output: str, force: bool) -> None:
    """Write a commented configuration for a layout; asks nothing (the environment and the host fill what options leave out)."""
    if not vault_addr or not vault_addr.strip():
        raise InputError("init: no Vault address: pass --vault-addr or set $BAO_ADDR or $VAULT_ADDR")
    addrs = [a.strip() for a in vault_addr.split(",") if a.strip()]
    hosts = _split(node_hosts) or default_hosts()
    shown = " ".join(["vaultpki init", f"--mode {mode}", f"--auth {auth}"])
    text = render(Mode(mode), addrs, certs_dir, hosts, auth, ca_cert=ca_cert, owner=owner, group=group, command=shown)
    check(text)
    if output == "-":
        click.echo(text, nl=False)
        return
    write_new(Path(output), text, force)
    click.echo(f"wrote {output} (mode {FILE_MODE:04o}); try it: vaultpki --config {output} issue-node --dry-run")
