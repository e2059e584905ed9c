"""``revoke-user``, ``revoke`` and ``rollback``: take certificates back in Vault, or a bad set back on disk."""

from __future__ import annotations

import click

from vaultpki import config as config_mod
from vaultpki.cli.context import _Ctx, chosen_dir, one_shot_vault, utc_now
from vaultpki.cli.output import emit
from vaultpki.core.layout import validate_username
from vaultpki.vault.rotation import Revoked, revoke_serial
from vaultpki.vault.rotation import revoke_user as revoke_user_in_vault


def _user_mounts(cfg: config_mod.Config) -> list[str]:
    """Where client certificates come from (the client CA in split-ca)."""
    return [cfg.pki.client_mount] if cfg.mode.value == "split-ca" and cfg.pki.client_mount else [cfg.pki.mount]


def _all_mounts(cfg: config_mod.Config) -> list[str]:
    mounts = [*_user_mounts(cfg), cfg.pki.mount, cfg.pki.ui_mount]
    return list(dict.fromkeys(m for m in mounts if m))


def _print_revoked(revoked: list[Revoked], as_json: bool, **asked: str) -> None:
    """What was revoked; ``asked``: what the command was asked for (the user, or the serial), for the JSON."""
    if as_json:
        emit(True, {**asked, "revoked": [{"mount": r.mount, "serial": r.serial, "common_name": r.common_name,
                                          "not_after": r.not_after.isoformat(), "revocation_time": r.revocation_time}
                                         for r in revoked]})
        return
    for r in revoked:
        click.echo(f"revoked {r.serial} CN={r.common_name} on {r.mount} (was valid until {r.not_after:%Y-%m-%d %H:%M}Z)")
    if not revoked:
        click.echo("nothing to revoke: no unexpired, unrevoked certificate matched")


@click.command("revoke-user", short_help="Revoke every certificate of a SQL user.")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print what was revoked as one JSON document (docs/json.md).")
@click.pass_obj
def revoke_user(obj: _Ctx, user: str, as_json: bool) -> None:
    """Revoke every unexpired certificate Vault issued for SQL user USER (found by serial in Vault)."""
    user = validate_username(user) if user != "node" else user
    cfg = obj.config()
    _print_revoked(revoke_user_in_vault(one_shot_vault(cfg), _user_mounts(cfg), user, utc_now()), as_json, user=user)


@click.command(short_help="Revoke one certificate by serial.")
@click.option("--serial", required=True, help="The serial, hex (colons optional).")
@click.option("--mount", help="The PKI mount (default: try the configured mounts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was revoked as one JSON document (docs/json.md).")
@click.pass_obj
def revoke(obj: _Ctx, serial: str, mount: str | None, as_json: bool) -> None:
    """Revoke one certificate by serial."""
    cfg = obj.config()
    revoked = revoke_serial(one_shot_vault(cfg), [mount] if mount else _all_mounts(cfg), serial)
    _print_revoked([revoked], as_json, serial=revoked.serial)


@click.command(short_help="Make the previous set current again.")
@click.option("--certs-dir", metavar="DIR", help="The certs-dir (default: certs_dir from the config).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON document (docs/json.md).")
@click.pass_obj
def rollback(obj: _Ctx, certs_dir: str | None, as_json: bool) -> None:
    """Make the previous set of files current again (after a bad rotation)."""
    target, _ = chosen_dir(obj, certs_dir)
    generation = target.rollback()
    if as_json:
        emit(True, {"certs_dir": str(target.path), "generation": generation})
        return
    click.echo(f"rolled back {target.path} to {generation}")
