"""``provision``: set up a development or test Vault; the one command that may reach into ``vaultpki.dev``.

It can be run again: each mount, CA and role is written only when it differs from what the
configuration asks for, one line each says what became of it, and a run that changed nothing says so.
"""

from __future__ import annotations

import click

from vaultpki.cli.ca import admin_client
from vaultpki.cli.context import _Ctx
from vaultpki.cli.output import emit
from vaultpki.dev.provision import ProvisionSpec
from vaultpki.dev.provision import provision as run_provision


@click.command(short_help="Set up a DEV/TEST Vault; safe to re-run.")
@click.option("--root-mount", default="pki-root", show_default=True, help="Mount for the root CA.")
@click.option("--no-intermediate", is_flag=True, help="Make each mount its own root instead of an intermediate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md).")
@click.pass_obj
def provision(obj: _Ctx, root_mount: str, no_intermediate: bool, as_json: bool) -> None:
    """Set up a DEV/TEST Vault (mounts, CAs, roles) for the configured mode; run again, it changes only what
    differs. Production: use terraform/."""
    cfg = obj.config()
    client = admin_client(cfg)              # the admin token from the sources every command reads
    spec = ProvisionSpec(mode=cfg.mode, pki=cfg.pki, node_hosts=cfg.node_hosts, ui_hosts=cfg.ui_hosts,
                         root_mount=root_mount, intermediate=not no_intermediate)
    changes = run_provision(client, cfg.vault.addr, spec).changes
    changed = [c for c in changes if c.action != "unchanged"]
    if as_json:
        emit(True, {"changed": bool(changed),
                    "items": [{"action": c.action, "path": c.path, "what": c.what} for c in changes]})
        return
    width = max(len(c.path) for c in changes)
    for c in changes:
        click.echo(f"{c.action:<9} {c.path:<{width}}  {c.what}")
    if not changed:
        click.echo(f"nothing changed: all {len(changes)} were already as configured")
        return
    counts = {action: sum(1 for c in changed if c.action == action) for action in ("created", "updated")}
    click.echo(f"{counts['created']} created, {counts['updated']} updated, {len(changes) - len(changed)} unchanged")
