"""``ca rotate|activate|retire|status``: CA rotation with Vault's multiple issuers (admin token)."""

from __future__ import annotations

import datetime as dt

import click
import hvac

from vaultpki import config as config_mod
from vaultpki.cli.context import _Ctx, utc_now
from vaultpki.cli.output import emit
from vaultpki.vault.client import HttpVault
from vaultpki.vault.rotation import activate, ca_status, retire, rotate
from vaultpki.vault.session import admin_config

_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md).")


@click.group(short_help="CA rotation: rotate, activate, retire.")
def ca() -> None:
    """CA rotation with Vault's multiple issuers: rotate, then activate, then retire (admin token)."""


def admin_client(cfg: config_mod.Config) -> hvac.Client:
    """hvac's API over vaultpki's one Vault client (failover, deadline, caps, redirects), with the admin
    token from the sources every command reads, in their one order (``config.build.token_source``)."""
    vault = HttpVault(admin_config(cfg.vault), one_shot=True)
    vault.ensure_token()
    return vault.client()


@ca.command("rotate", short_help="Step 1: add a new issuer to a CA mount.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--root-mount", help="For an intermediate CA: the mount whose issuer signs the new one.")
@click.option("--ttl", default="43800h", show_default=True, help="Lifetime of the new CA.")
@_JSON
@click.pass_obj
def ca_rotate(obj: _Ctx, mount: str | None, root_mount: str | None, ttl: str, as_json: bool) -> None:
    """Step 1: add a new issuer (not yet the default); CA files become new + old at each node's next check."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    issuer = rotate(admin_client(cfg), cfg.vault.addr, target, root_mount, ttl, utc_now())
    if as_json:
        emit(True, {"mount": target, "issuer_id": issuer, "next": f"vaultpki ca activate --mount {target}"})
        return
    click.echo(f"new issuer {issuer} on {target}; once every node and client has the new CA bundle "
               f"(renew.ca_check), run: vaultpki ca activate --mount {target}")


@ca.command("activate", short_help="Step 2: make the newest issuer the default.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--min-age", default="2h", show_default=True, help="Refuse while the new issuer is younger than this.")
@_JSON
@click.pass_obj
def ca_activate(obj: _Ctx, mount: str | None, min_age: str, as_json: bool) -> None:
    """Step 2: the newest issuer becomes the default; daemons re-issue their leaves from it."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    age = dt.timedelta(seconds=0 if min_age == "0" else config_mod.parse_duration(min_age, "--min-age"))
    issuer = activate(admin_client(cfg), cfg.vault.addr, target, age, utc_now())
    if as_json:
        emit(True, {"mount": target, "issuer_id": issuer, "next": f"vaultpki ca retire --mount {target}"})
        return
    click.echo(f"issuer {issuer} is now the default of {target}; after every leaf is re-issued, run: "
               f"vaultpki ca retire --mount {target}")


@ca.command("retire", short_help="Step 3: set the old issuers read-only.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--force", is_flag=True, help="Retire even while leaves of the old issuer are still valid.")
@_JSON
@click.pass_obj
def ca_retire(obj: _Ctx, mount: str | None, force: bool, as_json: bool) -> None:
    """Step 3: set the old issuers read-only (they leave every CA file) once none of their leaves is valid."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    retired = retire(admin_client(cfg), cfg.vault.addr, target, utc_now(), force)
    if as_json:
        emit(True, {"mount": target, "retired": list(retired)})
        return
    click.echo(f"retired {', '.join(retired)} on {target}" if retired else f"nothing to retire on {target}")


@ca.command("status", short_help="Every issuer of a CA mount.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@_JSON
@click.pass_obj
def ca_status_cmd(obj: _Ctx, mount: str | None, as_json: bool) -> None:
    """Every issuer of the mount: default or not, usage, validity, valid leaves it signed."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    rows = ca_status(admin_client(cfg), cfg.vault.addr, target, utc_now())
    if as_json:
        emit(True, {"mount": target, "issuers": [
            {**{k: getattr(r, k) for k in ("issuer_id", "name", "is_default", "usage", "subject", "valid_leaves")},
             "not_before": r.not_before.isoformat(), "not_after": r.not_after.isoformat()} for r in rows]})
        return
    for r in rows:
        click.echo(f"{'*' if r.is_default else ' '} {r.issuer_id} {r.subject}  expires {r.not_after:%Y-%m-%d}  "
                   f"usage {r.usage}  valid leaves {r.valid_leaves}")
