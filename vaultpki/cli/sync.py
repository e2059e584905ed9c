"""``sync``: keep this node's certs-dir fresh, once (``--once``, ``--dry-run``) or as a daemon."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click
import msgspec

from vaultpki import config as config_mod
from vaultpki.cli.acme_output import acme_dry_run_line, acme_issued_line
from vaultpki.cli.context import _Ctx, node_dir
from vaultpki.cli.output import emit
from vaultpki.core.layout import plan_node
from vaultpki.core.report import renewal_outlook
from vaultpki.daemon.actions import Actions
from vaultpki.daemon.clock import SystemClock
from vaultpki.daemon.metrics import Metrics, MetricsServer
from vaultpki.daemon.probe import EndpointProber
from vaultpki.daemon.reload import NoReload, Reloader, parse_signal
from vaultpki.daemon.reload_command import RunCommand
from vaultpki.daemon.reload_signal import SignalByName, SignalByPidfile
from vaultpki.daemon.sync_loop import Daemon
from vaultpki.daemon.sync_pass import PassReport, Syncer
from vaultpki.errors import InputError
from vaultpki.logs import setup
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.ownership import resolve_owner
from vaultpki.vault.client import HttpVault


def actions_of(cfg: config_mod.Config) -> Actions:
    """What runs after a write, in order: the configured signal, then each command; else nothing."""
    r = cfg.reload
    sig = parse_signal(r.signal)
    actions: list[Reloader] = []
    if r.pidfile:      # (with reload.process too: the pid must be that process)
        owner = resolve_owner(cfg.owner, cfg.group)
        actions.append(SignalByPidfile.for_files_of(Path(r.pidfile), sig, r.process, owner.uid, owner.gid))
    elif r.process:
        actions.append(SignalByName(r.process, sig))
    # Each gets our environment minus the Vault credentials, plus what was renewed (daemon.actions).
    actions += [RunCommand(argv, float(r.command_timeout)) for argv in r.commands]
    return Actions(tuple(actions) or (NoReload(),))


def _syncer_factory(certs_dir: str | None, metrics: Metrics, log: logging.Logger,
                    now: Callable[[], dt.datetime]) -> Callable[[config_mod.Config], Syncer]:
    def build(cfg: config_mod.Config) -> Syncer:
        prober = EndpointProber(cfg.reload.verify) if cfg.reload.verify else None
        store = CertsDir(node_dir(cfg, certs_dir), resolve_owner(cfg.owner, cfg.group))
        plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, cfg.node_users,
                  acme_ui=cfg.ui_acme is not None)      # config errors now, not at the first pass
        return Syncer(cfg=cfg, vault=HttpVault(cfg.vault), store=store, reloader=actions_of(cfg), prober=prober,
                      metrics=metrics, now=now, log=log)
    return build


def _listen_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 <= int(port) < 65536:
        raise InputError(f"--metrics-addr {text!r} is not HOST:PORT (e.g. 127.0.0.1:9101, or :9101 for every interface)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def _dry_run(syncer: Syncer, as_json: bool) -> None:
    """One look: what is due and what would be done; exit 1 when Vault could not be asked."""
    decisions, vault_error = syncer.preview()
    outlook = renewal_outlook(decisions)
    if as_json:
        upcoming = outlook.next_renewal
        emit(vault_error is None, {
            "dry_run": True, "certs_dir": str(syncer.store.path),
            "due": [{"file": d.file, "reason": d.reason, "at": d.at.isoformat()} for d in outlook.due],
            "next_renewal": upcoming.isoformat() if upcoming else None,
            "reload": syncer.reloader.describe(), "verify": syncer.cfg.reload.verify,
            "error": str(vault_error) if vault_error is not None else None})
        if vault_error is not None:
            sys.exit(1)
        return
    for decision in outlook.due:
        click.echo(f"would renew {decision.file}: {decision.reason}")
        if decision.file == "ui.crt" and syncer.cfg.ui_acme is not None:
            click.echo(acme_dry_run_line(syncer.cfg.ui_acme, syncer.cfg.ui_hosts))
    if outlook.due:
        click.echo(f"would write them into {syncer.store.path} as one set, then reload: {syncer.reloader.describe()}"
                   + (f", and check {syncer.cfg.reload.verify}" if syncer.cfg.reload.verify else ""))
    else:
        upcoming = outlook.next_renewal
        click.echo("nothing due" + (f"; next renewal {upcoming:%Y-%m-%d %H:%M:%S}Z" if upcoming else ""))
    if vault_error is not None:
        click.echo(f"vaultpki: error: {vault_error}", err=True)
        sys.exit(1)


def _acme_renewed(report: PassReport) -> list[dict[str, str]]:
    """A new ACME ui.crt, as --json lists every renewed file (with where it came from)."""
    origin = report.acme_renewed
    if origin is None:
        return []
    return [{"file": "ui.crt", "serial": origin.serial, "not_after": origin.not_after.isoformat(),
             "acme_directory": origin.directory, "acme_order": origin.order_url}]


def _once(syncer: Syncer, as_json: bool) -> None:
    """One pass (cron, a systemd timer): exit 0 when it went well, 1 with one line per failure."""
    report = syncer.run_pass()
    if as_json:
        pending = syncer.pending.current      # what a reload is still owed, after this pass
        emit(report.ok, {
            "dry_run": False, "certs_dir": str(syncer.store.path),
            "renewed": [{"file": leaf.spec.cert_file, "serial": leaf.serial, "not_after": leaf.not_after.isoformat()}
                        for leaf in report.renewed] + _acme_renewed(report),
            "removed": list(report.removed),
            "failures": list(report.failures), "reloaded": report.reloaded, "verified": report.verified,
            "reload_pending": msgspec.to_builtins(pending),      # as status --json has it (null: none)
            "next_renewal": report.next_renewal.isoformat() if report.next_renewal else None,
            "next_wake": report.next_wake.isoformat() if report.next_wake else None})
        if not report.ok:
            sys.exit(1)
        return
    for leaf in report.renewed:
        click.echo(f"renewed {leaf.spec.cert_file} (serial {leaf.serial}, expires {leaf.not_after:%Y-%m-%d %H:%M:%S}Z)")
    if report.acme_renewed is not None:
        click.echo(f"renewed {acme_issued_line(report.acme_renewed)}")
    reasons = {d.file: d.reason for d in report.decisions}
    for name in report.removed:
        click.echo(f"removed {name}: {reasons.get(name, 'not part of the layout')}")
    if report.ok:
        when = f"; next renewal {report.next_renewal:%Y-%m-%d %H:%M:%S}Z" if report.next_renewal else ""
        changed = report.renewed or report.removed or report.acme_renewed
        what = "renewed" if report.renewed or report.acme_renewed else "removed"
        click.echo((f"{what}; reload: {syncer.reloader.describe()}" if changed
                    else "nothing due") + when)
        if syncer.pending.current is not None:
            click.echo(f"reload pending ({syncer.pending.current.reason}); the next pass tries again")
        return
    for failure in report.failures:
        click.echo(f"vaultpki: error: {failure}", err=True)
    sys.exit(1)


@click.command(short_help="Keep this node's certs-dir fresh.")
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a systemd timer): 0 ok, 1 failed.")
@click.option("--certs-dir", metavar="DIR", help="Override certs_dir from the config.")
@click.option("--metrics-addr", metavar="HOST:PORT", help="Serve /metrics and /healthz here (daemon mode).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--dry-run", is_flag=True, help="One look: print what is due and what would be done; mint nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --once or --dry-run: print one JSON document (docs/json.md).")
@click.pass_obj
def sync(obj: _Ctx, once: bool, certs_dir: str | None, metrics_addr: str | None, log_format: str,
         dry_run: bool, as_json: bool) -> None:
    """Keep this node's certs-dir fresh: renew what is due, reload the database, verify it took."""
    if as_json and not (once or dry_run):
        raise click.UsageError("--json goes with --once or --dry-run (the daemon logs JSON with --log-format json)")
    listen = _listen_addr(metrics_addr) if metrics_addr else None
    log = setup(log_format)
    clock = SystemClock()
    metrics = Metrics()
    build = _syncer_factory(certs_dir, metrics, log, clock.now)
    syncer = build(obj.config())
    if dry_run:
        _dry_run(syncer, as_json)
        return
    if once:
        _once(syncer, as_json)
        return
    server = None
    if listen is not None:
        try:
            server = MetricsServer(metrics, *listen).start()
        except OSError as exc:
            raise InputError(f"cannot listen on {metrics_addr}: {exc.strerror}") from exc
        log.info("metrics listening", extra={"addr": f"{listen[0]}:{server.port}"})
    daemon = Daemon(load_config=obj.config, build=build,
                    tokens=lambda s: s.vault if isinstance(s.vault, HttpVault) else None,
                    log=log, sleep=clock.sleep, wake=clock.wake, wakeup_fd=clock.wakeup_fd)
    try:
        sys.exit(daemon.run(syncer))
    finally:
        if server is not None:
            server.stop()
