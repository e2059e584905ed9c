"""The ``vaultpki`` command group: the commands gathered from their modules, and every error turned into one line.

Every error is one line ``vaultpki: error: <message>`` on stderr with the exit
code of its class (2 for bad input or config, 1 for operational failures); the
traceback only with ``--debug``. The commands live in a module per group of
commands and are added to the group here, so none of them imports this module.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, NoReturn

import click
import msgspec

from vaultpki.cli.ca import ca
from vaultpki.cli.context import _Ctx
from vaultpki.cli.init import init
from vaultpki.cli.inspection import status, verify
from vaultpki.cli.issuing import issue_node, issue_user
from vaultpki.cli.provision import provision
from vaultpki.cli.revocation import revoke, revoke_user, rollback
from vaultpki.cli.sync import sync
from vaultpki.errors import VaultpkiError


def _fail(exc: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, VaultpkiError):
        click.echo(f"vaultpki: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"vaultpki: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Maps every error, click's usage errors included, to one line and its exit code."""
    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"vaultpki: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"vaultpki: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("vaultpki: error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place foreign errors become exit codes
            _fail(exc, bool(ctx.obj and ctx.obj.debug) or "--debug" in sys.argv)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             short_help="CockroachDB certs-dirs from Vault/OpenBao PKI.")
@click.option("--config", "config_path", envvar="VAULTPKI_CONFIG", metavar="FILE",
              help="TOML configuration (default: $VAULTPKI_CONFIG).")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="vaultpki")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Issue and keep fresh CockroachDB certificates from Vault / OpenBao PKI.

    The configuration is a TOML file named by --config FILE (before or after the command) or
    $VAULTPKI_CONFIG; `vaultpki init` writes a commented one. Vault's address, CA bundle and token come
    from it, else from $BAO_ADDR/$VAULT_ADDR, $BAO_CACERT/$VAULT_CACERT, and $BAO_TOKEN/$VAULT_TOKEN or
    ~/.vault-token.

    Exit status: 0 on success; 1 for an operational failure (Vault, the certs-dir, a check that failed);
    2 for bad input or configuration. Every error is one line on stderr, and nothing is written. With
    --json, a command prints one JSON document on stdout.

    Shell completion for bash: eval "$(_VAULTPKI_COMPLETE=bash_source vaultpki)" (zsh_source and
    fish_source for zsh and fish).
    """
    ctx.obj = _Ctx(config_path, debug)


def _config_after(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--config`` given after the subcommand: it wins over the group's (and $VAULTPKI_CONFIG)."""
    if value is not None and isinstance(ctx.obj, _Ctx):
        ctx.obj = msgspec.structs.replace(ctx.obj, config_path=value)


def _accept_config(command: click.Command) -> None:
    """Let ``--config`` follow the subcommand too (``vaultpki status --config f``), in every subcommand of a group."""
    command.params.append(click.Option(["--config", "config_after"], metavar="FILE", expose_value=False,
                                       callback=_config_after, help="TOML configuration (as before the subcommand)."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_config(sub)


for _command in (issue_node, issue_user, sync, status, verify, rollback, revoke_user, revoke, ca, provision):
    _accept_config(_command)
    main.add_command(_command)
main.add_command(init)          # writes a configuration: it reads none
