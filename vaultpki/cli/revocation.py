"""``revoke-user``, ``revoke`` and ``rollback``: take certificates back in Vault, or a bad set back on disk."""

from __future__ import annotations

import datetime as dt
import sys

import click
import msgspec

from vaultpki import config as config_mod
from vaultpki.cli.context import _Ctx, chosen_dir, one_shot_vault, utc_now
from vaultpki.cli.output import emit
from vaultpki.cli.sync import actions_of
from vaultpki.core import crypto
from vaultpki.core.layout import validate_username
from vaultpki.core.ocsp import OcspStatus, responder_urls
from vaultpki.core.report import ocsp_questions
from vaultpki.core.snapshot import DirState, FileState
from vaultpki.daemon.actions import Actions
from vaultpki.daemon.probe import EndpointProber
from vaultpki.daemon.reload import NoReload, Reloader
from vaultpki.daemon.restored import Told, tell_restored
from vaultpki.errors import StoreError, VaultpkiError
from vaultpki.store.certs_dir import CertsDir, GenerationFiles
from vaultpki.vault import ocsp
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


# A rollback changes files only: the database goes on serving what it loaded until it is told.
_STILL_SERVES = "the database still serves the set it loaded before until it reloads (SIGHUP it)"


@click.command(short_help="Make the previous set current again.")
@click.option("--certs-dir", metavar="DIR", help="The certs-dir (default: certs_dir from the config).")
@click.option("--no-reload", is_flag=True,
              help="Do not run the [reload] actions: the database serves the set it loaded until it reloads.")
@click.option("--force", is_flag=True,
              help="Restore the previous set even if a certificate in it was revoked, has expired or cannot be checked.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON document (docs/json.md).")
@click.pass_obj
def rollback(obj: _Ctx, certs_dir: str | None, no_reload: bool, force: bool, as_json: bool) -> None:
    """Make the previous set of files current again (after a bad rotation), then tell the database.

    With the configuration's certs-dir and a [reload] table, the same actions as after a renewal run for
    the restored files (the signal, then each command), and reload.verify is checked; without [reload],
    it says that the database still serves the set it loaded before until it reloads.

    Refused, with nothing changed, when a certificate it would restore was revoked (its OCSP responder
    says so: renew.revoke_replaced revokes what each renewal replaced), has expired, or (with
    renew.revoke_replaced) cannot be checked; --force restores it anyway."""
    target, cfg = chosen_dir(obj, certs_dir)
    current, previous = target.rollback_view()
    changed = sorted(n for n, data in previous.files.items() if current is None or current.files.get(n) != data)
    refused, warnings = _unfit(previous, changed, cfg, utc_now())
    if refused and not force:
        raise StoreError(f"refusing to roll back {target.path}: " + "; ".join(refused)
                         + ". Nothing was changed; --force restores the previous set anyway")
    warnings += [f"restored anyway (--force): {why}" for why in refused]
    how, note = _how_to_tell(obj, target, cfg, no_reload, "node.crt" in previous.files)   # config errors before
    generation = target.rollback(expect=previous.name)
    told = tell_restored(how.actions, how.prober, how.endpoint, how.timeout, target, changed, utc_now) if how else None
    failures = [told.failure] if told is not None and told.failure else []
    if as_json:
        emit(not failures, {"certs_dir": str(target.path), "generation": generation, "files": changed,
                            "reloaded": bool(told and told.reloaded), "verified": told.verified if told else None,
                            "reload_pending": msgspec.to_builtins(told.pending) if told else None,
                            "failures": failures, "warnings": [*warnings, *([note] if note else [])]})
    else:
        for warning in warnings:
            click.echo(f"vaultpki: warning: {warning}", err=True)
        click.echo(f"rolled back {target.path} to {generation}" + (f": {', '.join(changed)}" if changed else ""))
        _print_told(told, note, how)
    if failures:
        sys.exit(1)


def _unfit(previous: GenerationFiles, changed: list[str], cfg: config_mod.Config | None,
           now: dt.datetime) -> tuple[list[str], list[str]]:
    """Why the leaves a rollback would bring back must not be served (refused unless --force), and what
    could not be checked (warnings). A revoked leaf is what CockroachDB refuses with security.ocsp.mode on,
    so its responder is asked as CockroachDB asks; with renew.revoke_replaced the previous set was most
    likely revoked, so a leaf that cannot be checked is refused too."""
    revoke_replaced = cfg is not None and cfg.renew.revoke_replaced
    state = DirState(str(previous.name), True, {n: FileState(n, data=d) for n, d in previous.files.items()})
    refused: list[str] = []
    warnings: list[str] = []
    for name, question in ocsp_questions(state).items():
        if name not in changed:
            continue                       # served already: the rollback does not bring it back
        if isinstance(question, str):
            (refused if revoke_replaced else warnings).append(f"cannot tell whether {name} was revoked: {question}")
            continue
        leaf, issuer = question
        about = f"{name} (serial {crypto.format_serial(leaf.serial_number)})"
        if leaf.not_valid_after_utc <= now:
            refused.append(f"{about} expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
            continue
        if not responder_urls(leaf):
            if revoke_replaced:
                refused.append(f"cannot tell whether {about} was revoked (renew.revoke_replaced = true): it names no "
                               "OCSP responder")
            continue
        try:
            answer = ocsp.query(leaf, issuer, now=now, ca_cert=cfg.vault.ca_cert if cfg else None)
        except VaultpkiError as exc:
            line = f"cannot tell whether {about} was revoked: {exc}"
            (refused if revoke_replaced else warnings).append(line + (" (renew.revoke_replaced = true)"
                                                                      if revoke_replaced else ""))
            continue
        if answer.status is OcspStatus.REVOKED:
            when = f" at {answer.revocation_time:%Y-%m-%dT%H:%M:%SZ}" if answer.revocation_time else ""
            refused.append(f"{about} was revoked{when} (OCSP {answer.responder}): CockroachDB with "
                           "security.ocsp.mode on refuses it" + (", and renew.revoke_replaced = true revokes what "
                                                                 "each renewal replaced" if revoke_replaced else ""))
    return refused, warnings


class _Telling(msgspec.Struct, frozen=True):
    """How the database is told: the configured actions, and the endpoint that shows it took."""

    actions: tuple[Reloader, ...]
    describe: str
    prober: EndpointProber | None
    endpoint: str | None
    timeout: float


def _how_to_tell(obj: _Ctx, target: CertsDir, cfg: config_mod.Config | None, no_reload: bool,
                 node_dir: bool) -> tuple[_Telling | None, str | None]:
    """The configuration's [reload] actions, when the dir is the configuration's own; else, for a node's
    certs-dir, the one line saying the database still serves the set it loaded before."""
    actions = actions_of(cfg) if cfg is not None and not no_reload else Actions(())
    configured = tuple(a for a in actions.items if not isinstance(a, NoReload))
    same_dir = cfg is not None and cfg.certs_dir is not None and cfg.certs_dir.resolve() == target.path.resolve()
    if no_reload:
        why = "not reloaded (--no-reload)"
    elif cfg is None:
        why = "no configuration to reload with (--config)"
    elif not same_dir:
        why = f"{target.path} is not the configuration's certs_dir, so its [reload] does not apply"
    elif not configured:
        why = f"no [reload] in {obj.config_path}"
    else:
        verify = cfg.reload.verify
        return _Telling(configured, actions.describe(), EndpointProber(verify) if verify else None, verify,
                        float(cfg.reload.verify_timeout)), None
    return None, f"{why}: {_STILL_SERVES}" if node_dir else None


def _print_told(told: Told | None, note: str | None, how: _Telling | None) -> None:
    if told is None or how is None:
        if note:
            click.echo(note)
        return
    if told.reloaded:
        click.echo(f"reloaded: {how.describe}" + (f"; {how.endpoint} serves the restored certificate" if told.verified
                                                  else ""))
    elif told.failure is None and told.pending is not None:
        click.echo(f"reload pending ({told.pending.reason}): the database reads the restored files when it starts; "
                   "status shows what is owed, and vaultpki sync retries it when it starts or gets a SIGHUP")
    if told.failure:
        click.echo(f"vaultpki: error: {told.failure}", err=True)
