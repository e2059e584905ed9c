"""``ca rotate|activate|retire|status``: CA rotation with Vault's multiple issuers (admin token)."""

from __future__ import annotations

import datetime as dt

import click
import hvac

from vaultpki import config as config_mod
from vaultpki.cli.context import _Ctx, utc_now
from vaultpki.cli.output import emit
from vaultpki.errors import ConfigError, InputError
from vaultpki.vault.client import HttpVault
from vaultpki.vault.rotation import Revoked, activate, ca_status, retire, rotate
from vaultpki.vault.session import admin_config

_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md).")
# A zero in any form a duration takes ("0", "0s", "0h0m"): the configuration's parser refuses a zero duration,
# but a zero --min-age is what "activate it now" means.

def parse_min_age(text: str) -> dt.timedelta:
    """``--min-age``: any duration the configuration accepts (``90s``, ``2h``, ``1h30m``), or a zero in any form."""
    try:
        return dt.timedelta(seconds=config_mod.parse_duration(text, "--min-age", allow_zero=True))
    except ConfigError as exc:
        raise InputError(f"{exc} (or 0s to activate now)") from None


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
@click.option("--min-age", default="2h", show_default=True,
              help="Refuse while the new issuer is younger than this (a duration: 90s, 2h, 1h30m; 0s: now).")
@_JSON
@click.pass_obj
def ca_activate(obj: _Ctx, mount: str | None, min_age: str, as_json: bool) -> None:
    """Step 2: the newest issuer becomes the default; daemons re-issue their leaves from it."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    issuer = activate(admin_client(cfg), cfg.vault.addr, target, parse_min_age(min_age), utc_now())
    if as_json:
        emit(True, {"mount": target, "issuer_id": issuer, "next": f"vaultpki ca retire --mount {target}"})
        return
    click.echo(f"issuer {issuer} is now the default of {target}; after every leaf is re-issued, run: "
               f"vaultpki ca retire --mount {target}")


@ca.command("retire", short_help="Step 3: set the old issuers read-only.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--revoke-leaves", is_flag=True,
              help="First revoke every unexpired leaf the old issuers signed (re-issuing does not invalidate them).")
@click.option("--dry-run", is_flag=True, help="Change nothing: list what would be revoked and retired.")
@click.option("--force", is_flag=True, help="Retire even while leaves of the old issuers are still valid.")
@_JSON
@click.pass_obj
def ca_retire(obj: _Ctx, mount: str | None, revoke_leaves: bool, dry_run: bool, force: bool, as_json: bool) -> None:
    """Step 3: set the old issuers (older than the default) read-only, so they leave every CA file, once none of
    their leaves is valid. A newer issuer waiting for `ca activate` is never retired."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    done = retire(admin_client(cfg), cfg.vault.addr, target, utc_now(), force=force, revoke_leaves=revoke_leaves,
                  dry_run=dry_run)
    if as_json:
        emit(True, {"mount": target, "dry_run": dry_run, "retired": list(done.retired),
                    "revoked": [_revoked(r) for r in done.revoked]})
        return
    revoke, retire_ = ("would revoke", "would retire") if dry_run else ("revoked", "retired")
    for r in done.revoked:
        click.echo(f"{revoke} {r.serial} CN={r.common_name} (valid until {r.not_after:%Y-%m-%d %H:%M}Z)")
    click.echo(f"{retire_} {', '.join(done.retired)} on {target}" if done.retired else f"nothing to retire on {target}")
    for issuer in done.pending:
        click.echo(f"issuer {issuer} is pending (newer than the default): left as is; activate it with "
                   f"vaultpki ca activate --mount {target}")


def _revoked(r: Revoked) -> dict[str, object]:
    return {"mount": r.mount, "serial": r.serial, "common_name": r.common_name, "not_after": r.not_after.isoformat(),
            "revocation_time": r.revocation_time}


@ca.command("status", short_help="Every issuer of a CA mount.")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@_JSON
@click.pass_obj
def ca_status_cmd(obj: _Ctx, mount: str | None, as_json: bool) -> None:
    """Every issuer of the mount, newest first: its state (active, pending, superseded, retired), usage, validity,
    and the valid leaves it signed."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    rows = ca_status(admin_client(cfg), cfg.vault.addr, target, utc_now())
    if as_json:
        emit(True, {"mount": target, "issuers": [
            {**{k: getattr(r, k) for k in ("issuer_id", "name", "state", "is_default", "usage", "subject", "valid_leaves")},
             "not_before": r.not_before.isoformat(), "not_after": r.not_after.isoformat()} for r in rows]})
        return
    for r in rows:
        click.echo(f"{r.state:<10}  {r.issuer_id}  {r.subject}  expires {r.not_after:%Y-%m-%d}  "
                   f"valid leaves {r.valid_leaves}  usage {r.usage}")
