"""``provision``: set up a development or test Vault; the one command that may reach into ``vaultpki.dev``."""

from __future__ import annotations

import click

from vaultpki.cli.ca import admin_client
from vaultpki.cli.context import _Ctx
from vaultpki.dev.provision import ProvisionSpec
from vaultpki.dev.provision import provision as run_provision


@click.command()
@click.option("--root-mount", default="pki-root", show_default=True, help="Mount for the root CA.")
@click.option("--no-intermediate", is_flag=True, help="Make each mount its own root instead of an intermediate.")
@click.pass_obj
def provision(obj: _Ctx, root_mount: str, no_intermediate: bool) -> None:
    """Set up a DEV/TEST Vault (mounts, CAs, roles) for the configured mode. Production: use terraform/."""
    cfg = obj.config()
    client = admin_client(cfg)              # the admin token from the sources every command reads
    spec = ProvisionSpec(mode=cfg.mode, pki=cfg.pki, node_hosts=cfg.node_hosts, ui_hosts=cfg.ui_hosts,
                         root_mount=root_mount, intermediate=not no_intermediate)
    for path in run_provision(client, cfg.vault.addr, spec).roles:
        click.echo(f"provisioned {path}")
