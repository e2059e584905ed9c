"""``status`` and ``verify``: look at a certs-dir (and, with ``--ocsp``, ask the responders), then print the
report the core makes of it."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import click
import msgspec

from vaultpki import config as config_mod
from vaultpki.acme.console import UiOrigin, read_origin
from vaultpki.cli.acme_output import acme_origin_lines
from vaultpki.cli.context import _Ctx, chosen_dir, utc_now
from vaultpki.cli.output import emit
from vaultpki.core.layout import plan_node
from vaultpki.core.renewal import RenewPolicy
from vaultpki.core.report import (
    FileRow,
    OcspOutcome,
    StatusReport,
    ocsp_questions,
    problems_of,
    status_report,
    verify_report,
)
from vaultpki.core.snapshot import DirState, Expectation
from vaultpki.core.validate import Problem
from vaultpki.daemon.pending import read_pending
from vaultpki.errors import InputError, VaultpkiError
from vaultpki.store.certs_dir import CertsDir
from vaultpki.vault import ocsp


def _expectation(cfg: config_mod.Config | None, certs_dir: Path, cfg_dir: Path | None) -> Expectation | None:
    """What the config says the dir must hold, when the dir looked at is the config's own."""
    if cfg is None or cfg_dir is None or certs_dir.resolve() != cfg_dir.resolve():
        return None
    # An ACME ui.crt comes with ca-ui.crt: the root its chain was verified to.
    acme = cfg.ui_acme is not None
    return Expectation(mode=cfg.mode, node_hosts=cfg.node_hosts, ui=bool(cfg.pki.ui_mount) or acme, users=cfg.node_users,
                       ui_ca=acme or (bool(cfg.pki.ui_mount) and cfg.pki.ui_mount != cfg.pki.mount))


def _load_dir(obj: _Ctx, certs_dir: str | None) -> tuple[DirState, Expectation | None]:
    target, cfg = chosen_dir(obj, certs_dir)
    return target.snapshot(), _expectation(cfg, target.path, cfg.certs_dir if cfg else None)


def _ocsp_states(state: DirState, ca_cert: str | None) -> dict[str, OcspOutcome]:
    """Per leaf file: the OcspResult from the responder named in the certificate, or why there is none;
    ``ca_cert`` (the configuration's ``vault.ca_cert``) is trusted beside the system's store."""
    results: dict[str, OcspOutcome] = {}
    for name, question in ocsp_questions(state).items():
        if isinstance(question, str):
            results[name] = question
            continue
        try:
            results[name] = ocsp.query(*question, now=utc_now(), ca_cert=ca_cert)
        except VaultpkiError as exc:
            results[name] = str(exc)
    return results


def _judged(obj: _Ctx, certs_dir: str | None, check_ocsp: bool,
            now: dt.datetime) -> tuple[DirState, list[Problem], dict[str, OcspOutcome]]:
    """A certs-dir, its problems, and (with ``check_ocsp``) each leaf's OCSP answer."""
    state, expect = _load_dir(obj, certs_dir)
    vault_ca = obj.config(vault_needed=False).vault.ca_cert if check_ocsp and obj.config_path else None
    ocsp_results = _ocsp_states(state, vault_ca) if check_ocsp else {}
    return state, problems_of(state, now, expect, ocsp_results), ocsp_results


# What `vaultpki --help` and the man pages' NAME lines say of each (click would cut the docstring short).
_SHORT_HELP = {"status": "Show every certificate file of a certs-dir.", "verify": "Judge a certs-dir as CockroachDB would."}


def _inspecting(command: Callable[..., None]) -> click.Command:
    """The options ``status`` and ``verify`` share: which dir, whether to ask OCSP, JSON or text."""
    for option in reversed((
        click.option("--certs-dir", metavar="DIR", help="The certs-dir to look at (default: certs_dir from the config)."),
        click.option("--ocsp", "check_ocsp", is_flag=True, help="Also ask each certificate's OCSP responder (network)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md)."),
        click.pass_obj,
    )):
        command = option(command)
    return click.command(short_help=_SHORT_HELP[command.__name__])(command)


@_inspecting
def verify(obj: _Ctx, certs_dir: str | None, check_ocsp: bool, as_json: bool) -> None:
    """Judge a certs-dir as CockroachDB would at start-up; exit 1 with one line per problem."""
    state, problems, _ = _judged(obj, certs_dir, check_ocsp, utc_now())
    report = verify_report(state, problems)
    if as_json:
        emit(report.ok, msgspec.to_builtins(report))
    else:
        for problem in problems:
            click.echo(str(problem), err=problem.severity == "error")
        if report.ok:
            click.echo(f"ok: {state.path} is a valid CockroachDB certs-dir")
    if not report.ok:
        sys.exit(1)


@_inspecting
def status(obj: _Ctx, certs_dir: str | None, check_ocsp: bool, as_json: bool) -> None:
    """Every certificate file: kind, subject, SANs, issuer, serial, expiry, time left, problems, and when
    sync renews it."""
    now = utc_now()
    state, problems, ocsp_results = _judged(obj, certs_dir, check_ocsp, now)
    if not state.exists:
        # A mistyped path is bad input, not an empty report a monitoring script would read as "all fine".
        raise InputError(f"certs-dir {state.path} does not exist")
    policy, renewed = _renewal_inputs(obj, state)
    # The store as the config has it: a certs-dir owned by the configured owner is no intruder's.
    store, _ = chosen_dir(obj, certs_dir)
    report = status_report(state, problems, now, ocsp_results, read_pending(store), policy, renewed)
    acme, origin = _acme_origin(obj, state, store)
    if as_json:
        emit(True, {**msgspec.to_builtins(report), "ui_acme": msgspec.to_builtins(origin)})   # reports; verify judges
        return
    _print_status(report)
    for line in acme_origin_lines(origin) if acme else ():
        click.echo(line)


def _acme_origin(obj: _Ctx, state: DirState, store: CertsDir) -> tuple[bool, UiOrigin | None]:
    """Whether the config's ui.crt comes from an ACME CA (for the config's own dir), and where the current one
    came from."""
    cfg = obj.config(vault_needed=False) if obj.config_path else None
    if cfg is None or cfg.ui_acme is None or cfg.certs_dir is None or Path(state.path).resolve() != cfg.certs_dir.resolve():
        return False, None
    return True, read_origin(store)


def _renewal_inputs(obj: _Ctx, state: DirState) -> tuple[RenewPolicy | None, frozenset[str]]:
    """The ``[renew]`` policy and the leaf files ``sync`` renews, when the dir looked at is the config's own
    (another dir, such as a user's, is not the daemon's: no schedule)."""
    cfg = obj.config(vault_needed=False) if obj.config_path else None
    if cfg is None or cfg.certs_dir is None or Path(state.path).resolve() != cfg.certs_dir.resolve():
        return None, frozenset()
    try:
        plan = plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, cfg.node_users, acme_ui=cfg.ui_acme is not None)
    except VaultpkiError:           # a config sync would refuse: it renews nothing
        return None, frozenset()
    acme = ("ui.crt",) if cfg.ui_acme is not None else ()         # renewed by sync from the ACME CA
    return cfg.renew, frozenset((*(spec.cert_file for spec in plan.certs), *acme))


def _print_status(report: StatusReport) -> None:
    # An error (what verify fails on) is a PROBLEM line, a warning a WARNING line.
    for message in report.problems:
        warning = message.removeprefix("warning: ")
        click.echo(f"WARNING {warning}" if warning != message else f"PROBLEM {message}")
    if report.reload_pending is not None:
        pending = report.reload_pending
        click.echo(f"RELOAD PENDING since {pending.since} ({pending.reason}; "
                   f"{pending.failures} failed attempt(s)): the daemon tries again at every pass")
        if pending.remaining:
            click.echo(f"  still to run: {', then '.join(pending.remaining)}")
        if pending.done:
            click.echo(f"  already ran:  {', '.join(pending.done)}")
    for row in report.files:
        click.echo(f"{row.file} ({row.kind})")
        for cert in row.certificates:
            sans = ", ".join(cert.dns_sans + cert.ip_sans) or "-"
            click.echo(f"  subject {cert.subject}  SANs {sans}")
            click.echo(f"  issuer  {cert.issuer}  serial {cert.serial}")
            click.echo(f"  expires {cert.not_after}  ({_time_left(cert.seconds_left)})")
        if row.chains_to:
            click.echo(f"  chains to {row.chains_to}")
        if row.ocsp is not None:
            click.echo(f"  OCSP    {row.ocsp}")
        for problem in row.problem_details:
            where = "" if problem.file == row.file else f"{problem.file}: "
            click.echo(f"  {'WARNING' if problem.severity == 'warning' else 'PROBLEM'} {where}{problem.message}")
        _print_renewal(row)


def _print_renewal(row: FileRow) -> None:
    """When sync renews the file: the time, then what it comes from (the window and the jitter)."""
    plan = row.renewal
    if plan is None:
        return
    when = "due: the next pass renews it" if plan.due else f"in {_span(plan.seconds_until)}"
    click.echo(f"  renews  {plan.renew_at}  ({when})")
    floor = "; the window is wider than half the lifetime, so it renews at half-life" if plan.floored else ""
    click.echo(f"  window  opens {plan.window_opens} (renew.before); jitter ±{plan.jitter_seconds}s "
               f"(renew.jitter), {plan.jitter_offset_seconds:+d}s for this serial{floor}")


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def _time_left(seconds: int) -> str:
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h left" if days else f"{hours}h {rest // 60}m left"
