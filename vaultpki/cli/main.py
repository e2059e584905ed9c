"""The ``vaultpki`` command: the only place that prints, exits or formats JSON.

Every error is one line ``vaultpki: error: <message>`` on stderr with the exit
code of its class (2 for bad input or config, 1 for operational failures); the
traceback only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import hvac
import msgspec
from cryptography import x509

from vaultpki import config as config_mod
from vaultpki.core import crypto
from vaultpki.core.certnames import BadFilename, classify
from vaultpki.core.issue import IssuedSet, IssueOptions, obtain, obtain_partial
from vaultpki.core.layout import FileContent, Plan, plan_node, plan_user, validate_username
from vaultpki.core.snapshot import DirState, Expectation, judge
from vaultpki.core.validate import Problem, verify_chain
from vaultpki.daemon.clock import SystemClock
from vaultpki.daemon.metrics import Metrics, MetricsServer
from vaultpki.daemon.probe import EndpointProber
from vaultpki.daemon.reload import NoReload, Reloader, RunCommand, SignalByName, SignalByPidfile, parse_signal
from vaultpki.daemon.syncer import Daemon, Syncer
from vaultpki.dev.provision import ProvisionSpec
from vaultpki.dev.provision import provision as run_provision
from vaultpki.errors import ConfigError, InputError, VaultpkiError
from vaultpki.files import NotReadable, read_limited, read_regular
from vaultpki.logs import setup
from vaultpki.store.certs_dir import PROCESS_OWNER, CertsDir, Stage, resolve_owner
from vaultpki.vault import ocsp
from vaultpki.vault.client import HttpVault
from vaultpki.vault.rotation import Revoked, activate, ca_status, retire, revoke_serial, rotate
from vaultpki.vault.rotation import revoke_user as revoke_user_in_vault

DEFAULT_USER_DIR = "~/.cockroach-certs"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Ctx(msgspec.Struct):
    config_path: str | None
    debug: bool

    def config(self) -> config_mod.Config:
        return config_mod.load(self.config_path)


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="VAULTPKI_CONFIG", metavar="FILE",
              help="TOML configuration (default: $VAULTPKI_CONFIG).")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="vaultpki")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Issue and keep fresh CockroachDB certificates from Vault / OpenBao PKI."""
    ctx.obj = _Ctx(config_path, debug)


def _options(cfg: config_mod.Config) -> IssueOptions:
    return IssueOptions(key_type=cfg.key_type, key_bits=cfg.key_bits, ttl_seconds=cfg.ttl_seconds,
                        method=cfg.issue_method, ca_trust=cfg.ca_trust)


def _vault(cfg: config_mod.Config) -> HttpVault:
    """Vault for a command that ends within seconds: its token's lease is not tracked."""
    return HttpVault(cfg.vault, one_shot=True)


def _issue_and_write(cfg: config_mod.Config, plan: Plan, target: CertsDir) -> IssuedSet:
    issued = obtain(plan, _vault(cfg), _options(cfg), _now)
    target.write_set(issued.files)
    return issued


def _echo_json(doc: object) -> None:
    """A ``--json`` answer."""
    click.echo(json.dumps(doc, indent=2))


def _report_issued(issued: IssuedSet, target: CertsDir, as_json: bool) -> None:
    if as_json:
        _echo_json({
            "certs_dir": str(target.path),
            "files": sorted(f.name for f in issued.files),
            "certificates": [{"file": leaf.spec.cert_file, "serial": leaf.serial,
                              "not_after": leaf.not_after.isoformat()} for leaf in issued.leaves],
        })
        return
    for leaf in issued.leaves:
        click.echo(f"wrote {leaf.spec.cert_file} + {leaf.spec.key_file} (serial {leaf.serial}, "
                   f"expires {leaf.not_after:%Y-%m-%d %H:%M}Z)")
    cas = sorted(f.name for f in issued.files if f.name.startswith("ca"))
    click.echo(f"wrote {', '.join(cas)} into {target.path}")


def _node_dir(cfg: config_mod.Config, certs_dir: str | None) -> Path:
    chosen = config_mod.expand_path(certs_dir, "--certs-dir", InputError) if certs_dir else cfg.certs_dir
    if chosen is None:
        raise ConfigError("no certs-dir: set certs_dir in the config or pass --certs-dir")
    return chosen


def _report_dry_run(cfg: config_mod.Config, plan: Plan, target: CertsDir, as_json: bool) -> None:
    """What a command would issue and write; nothing is sent to Vault, nothing is written."""
    leaves: list[dict[str, Any]] = [{
        "file": s.cert_file, "key": s.key_file, "vault_path": f"{s.mount}/{cfg.issue_method}/{s.role}",
        "common_name": s.common_name, "dns_sans": list(s.dns_sans), "ip_sans": list(s.ip_sans),
        "ekus": sorted(e.value for e in s.ekus), "key_type": f"{cfg.key_type.value}-{cfg.key_bits}",
    } for s in plan.certs]
    cas = [{"file": t.file, "mount": t.mount, "trust": cfg.ca_trust} for t in plan.ca_files]
    key_mode = f"{target.key_mode:04o}"
    if as_json:
        _echo_json({"dry_run": True, "certs_dir": str(target.path), "certificates": leaves,
                    "ca_files": cas, "key_mode": key_mode})
        return
    for spec in plan.certs:
        sans = ", ".join(spec.dns_sans + spec.ip_sans) or "none"
        click.echo(f"would issue {spec.cert_file} from {spec.mount}/{cfg.issue_method}/{spec.role}: "
                   f"CN={spec.common_name}, SANs {sans}, EKU {'+'.join(sorted(e.value for e in spec.ekus))}, "
                   f"{cfg.key_type.value}-{cfg.key_bits} key generated {'here' if cfg.issue_method == 'sign' else 'by Vault'}")
    for ca_file in cas:
        click.echo(f"would write {ca_file['file']} from the CA of mount {ca_file['mount']} (ca_trust = {ca_file['trust']})")
    click.echo(f"would write them into {target.path} as one set (keys mode {key_mode}); nothing was sent or written")


@main.command("issue-node")
@click.option("--certs-dir", metavar="DIR", help="Override certs_dir from the config.")
@click.option("--user", "users", metavar="NAME", multiple=True,
              help="Also write client.NAME.crt/.key into the set (repeatable; adds to node.users).")
@click.option("--dry-run", is_flag=True, help="Print what would be issued and written; mint nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_obj
def issue_node(obj: _Ctx, certs_dir: str | None, users: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Issue everything this node needs for the configured mode (and ui.crt when configured), as one set."""
    cfg = obj.config()
    plan = plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, (*cfg.node_users, *users))
    target = CertsDir(_node_dir(cfg, certs_dir), resolve_owner(cfg.owner, cfg.group))
    if dry_run:
        _report_dry_run(cfg, plan, target, as_json)
        return
    _report_issued(_issue_and_write(cfg, plan, target), target, as_json)


MAX_USER_LIST_BYTES = 32 << 20      # half a million names of the longest kind


def _read_user_list(source: str) -> str:
    """The text of a --from-file list: stdin (``-``) or a regular file, at most MAX_USER_LIST_BYTES
    (``/dev/zero`` or a huge file must not fill memory, nor a FIFO hang the open)."""
    shown = source if source.isprintable() else ascii(source)
    try:
        data = read_limited(sys.stdin.fileno(), MAX_USER_LIST_BYTES) if source == "-" else \
            read_regular(source, MAX_USER_LIST_BYTES)[0]
        return data.decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"cannot read --from-file {shown}: it does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read --from-file {shown}: {exc.strerror}") from exc
    except NotReadable as exc:
        raise InputError(f"cannot read --from-file {shown}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"--from-file {shown} is not UTF-8 text") from exc


def _read_users(source: str) -> list[str]:
    """Every user name of a --from-file list (one per line; '#' comments), all validated before anything else,
    each once, in the order of first mention."""
    users: dict[str, None] = {}          # a dict: membership in constant time, order kept
    for number, line in enumerate(_read_user_list(source).splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        try:
            validate_username(name)
        except InputError as exc:
            raise InputError(f"{source} line {number}: {exc}") from exc
        users.setdefault(name)
    if not users:
        raise InputError(f"--from-file {source} names no user")
    return list(users)


@main.command("issue-user")
@click.argument("user", required=False)
@click.option("--from-file", "from_file", metavar="FILE", help="Issue for every user in FILE (one per line; - for stdin).")
@click.option("--certs-dir", metavar="DIR", default=DEFAULT_USER_DIR, show_default=True,
              help="Where to write client.USER.crt/.key and ca.crt.")
@click.option("--owner", metavar="USER", help="Owner of the written files (default: you).")
@click.option("--group", metavar="GROUP", help="Group of the written files.")
@click.option("--dry-run", is_flag=True, help="Print what would be issued and written; mint nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_obj
def issue_user(obj: _Ctx, user: str | None, from_file: str | None, certs_dir: str, owner: str | None,
               group: str | None, dry_run: bool, as_json: bool) -> None:
    """Issue client.USER.crt/.key (CN=USER) and ca.crt for SQL user USER (or every user of --from-file)."""
    if (user is None) == (from_file is None):
        raise click.UsageError("give exactly one of USER or --from-file")
    # Every name is validated before any path is built or any request made.
    users = [validate_username(user)] if user is not None else _read_users(from_file or "-")
    cfg = obj.config()
    plans = [plan_user(cfg.mode, cfg.pki, u) for u in users]
    plan = Plan(trusts=plans[0].trusts, certs=tuple(c for p in plans for c in p.certs))
    target = CertsDir(config_mod.expand_path(certs_dir, "--certs-dir", InputError), resolve_owner(owner, group))
    if dry_run:
        _report_dry_run(cfg, plan, target, as_json)
        return
    if user is not None:
        _report_issued(_issue_and_write(cfg, plan, target), target, as_json)
        return
    _issue_many(cfg, plan, target, as_json)


def _issue_many(cfg: config_mod.Config, plan: Plan, target: CertsDir, as_json: bool) -> None:
    """Bulk issuance: concurrently over one connection pool; one failure does not stop the others; each
    success is written as soon as it is validated, and all become visible as one set; the exit code says
    whether anything failed."""
    show_bar = not as_json and sys.stderr.isatty()
    with (click.progressbar(length=len(plan.certs), label="issuing", file=sys.stderr) if show_bar else _NoBar() as bar,
          contextlib.ExitStack() as stack):
        stage: Stage | None = None

        def write(files: Sequence[FileContent]) -> None:
            """Each certificate goes to disk as soon as it is validated; the set becomes visible at the end.
            The dir is only touched once something succeeded: a run where every user fails writes nothing."""
            nonlocal stage
            if stage is None:
                stage = stack.enter_context(target.staged(plan.file_names))
            for content in files:
                stage.add(content)

        issued, failed = obtain_partial(plan, _vault(cfg), _options(cfg), _now, None,
                                        progress=lambda _name: bar.update(1), sink=write, streamed=True)
    failures = {name.removeprefix("client.").removesuffix(".crt"): str(exc) for name, exc in failed.items()}
    if as_json:
        _echo_json({
            "certs_dir": str(target.path),
            "issued": [{"user": leaf.spec.common_name, "serial": leaf.serial, "not_after": leaf.not_after.isoformat()}
                       for leaf in issued.leaves],
            "failed": [{"user": u, "error": e} for u, e in failures.items()],
        })
    else:
        click.echo(f"issued {len(issued.leaves)} of {len(plan.certs)} user certificates into {target.path}")
        for name, error in failures.items():
            click.echo(f"vaultpki: error: {name}: {error}", err=True)
    if failures:
        sys.exit(1)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _steps: int) -> None:
        return None


def _expectation(cfg: config_mod.Config | None, certs_dir: Path, cfg_dir: Path | None) -> Expectation | None:

    if cfg is None or cfg_dir is None or certs_dir.resolve() != cfg_dir.resolve():
        return None
    return Expectation(mode=cfg.mode, node_hosts=cfg.node_hosts, ui=bool(cfg.pki.ui_mount), users=cfg.node_users)


def _chosen_dir(obj: _Ctx, certs_dir: str | None) -> tuple[CertsDir, config_mod.Config | None]:
    """The certs-dir a command works on (--certs-dir, else the config's), with the config if one was given."""
    cfg = obj.config() if obj.config_path else None
    if certs_dir:
        path = config_mod.expand_path(certs_dir, "--certs-dir", InputError)
    elif cfg is not None and cfg.certs_dir is not None:
        path = cfg.certs_dir
    else:
        raise InputError("which certs-dir? pass --certs-dir DIR or --config FILE with certs_dir")
    return CertsDir(path, resolve_owner(cfg.owner, cfg.group) if cfg else PROCESS_OWNER), cfg


def _load_dir(obj: _Ctx, certs_dir: str | None) -> tuple[DirState, Expectation | None]:
    target, cfg = _chosen_dir(obj, certs_dir)
    return target.snapshot(), _expectation(cfg, target.path, cfg.certs_dir if cfg else None)


def _ca_bundles(state: DirState) -> list[tuple[str, list[x509.Certificate]]]:
    """The dir's CA files that parse, as (name, certificates), client CA first."""
    bundles = []
    for name in ("ca-client.crt", "ca.crt", "ca-ui.crt"):
        entry = state.entries.get(name)
        if entry is not None and entry.data:
            try:
                bundles.append((name, crypto.load_certs(entry.data)))
            except VaultpkiError:
                continue
    return bundles


def _issuer_of(leaf_chain: Sequence[x509.Certificate],
               bundles: Sequence[tuple[str, list[x509.Certificate]]]) -> x509.Certificate | None:
    """The certificate that signed a leaf: the next one in its file, else one in the dir's CA files."""
    candidates = [*leaf_chain[1:], *(c for _, certs in bundles for c in certs)]
    return next((c for c in candidates if crypto.is_issued_by(leaf_chain[0], c)), None)


def _ocsp_states(state: DirState) -> dict[str, ocsp.OcspResult | str]:
    """Per leaf file: the OcspResult from the responder named in the certificate, or why there is none."""
    results: dict[str, ocsp.OcspResult | str] = {}
    bundles = _ca_bundles(state)
    for name, entry in sorted(state.entries.items()):
        try:
            kind = classify(name)
        except BadFilename:
            continue
        if kind is None or kind.usage.is_ca or not entry.data:
            continue
        try:
            chain = crypto.load_certs(entry.data)
            issuer = _issuer_of(chain, bundles)
            if issuer is None:
                raise ocsp.OcspError("its issuer is not in the certs-dir")
            results[name] = ocsp.query(chain[0], issuer, now=_now())
        except VaultpkiError as exc:
            results[name] = str(exc)
    return results


def _ocsp_problems(results: dict[str, ocsp.OcspResult | str]) -> list[Problem]:
    problems = []
    for name, result in results.items():
        if isinstance(result, str):
            problems.append(Problem(name, f"OCSP check failed: {result}", "warning"))
        elif result.status.value == "revoked":
            when = f" at {result.revocation_time:%Y-%m-%dT%H:%M:%SZ}" if result.revocation_time else ""
            problems.append(Problem(name, f"is revoked{when} (OCSP {result.responder})"))
        elif result.status.value != "good":
            problems.append(Problem(name, f"OCSP status {result.status.value} ({result.responder})", "warning"))
    return problems


def _judged(obj: _Ctx, certs_dir: str | None, check_ocsp: bool,
            now: dt.datetime) -> tuple[DirState, list[Problem], dict[str, ocsp.OcspResult | str]]:
    """A certs-dir, its problems, and (with ``check_ocsp``) each leaf's OCSP answer."""
    state, expect = _load_dir(obj, certs_dir)
    problems = judge(state, now, expect)
    ocsp_results = _ocsp_states(state) if check_ocsp else {}
    return state, problems + _ocsp_problems(ocsp_results), ocsp_results


@main.command()
@click.option("--certs-dir", metavar="DIR", help="The certs-dir to judge (default: certs_dir from the config).")
@click.option("--ocsp", "check_ocsp", is_flag=True, help="Also ask each certificate's OCSP responder (network).")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
@click.pass_obj
def verify(obj: _Ctx, certs_dir: str | None, check_ocsp: bool, as_json: bool) -> None:
    """Judge a certs-dir as CockroachDB would at start-up; exit 1 with one line per problem."""
    state, problems, _ = _judged(obj, certs_dir, check_ocsp, _now())
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        _echo_json({"certs_dir": state.path, "ok": not errors,
                    "problems": [_problem_json(p) for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem), err=problem.severity == "error")
        if not errors:
            click.echo(f"ok: {state.path} is a valid CockroachDB certs-dir")
    if errors:
        sys.exit(1)


def _problem_json(p: Problem) -> dict[str, str]:
    return {"file": p.file, "severity": p.severity, "message": p.message}


@main.command()
@click.option("--certs-dir", metavar="DIR", help="The certs-dir to show (default: certs_dir from the config).")
@click.option("--ocsp", "check_ocsp", is_flag=True, help="Also show each certificate's OCSP status (network).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: _Ctx, certs_dir: str | None, check_ocsp: bool, as_json: bool) -> None:
    """Every certificate file: kind, subject, SANs, issuer, serial, expiry, time left, problems."""
    now = _now()
    state, problems, ocsp_results = _judged(obj, certs_dir, check_ocsp, now)
    rows = _status_rows(state, problems, now)
    for row in rows:
        result = ocsp_results.get(row["file"])
        if result is not None:
            row["ocsp"] = result if isinstance(result, str) else result.status.value
    # The directories the set rests on (owner, mode, where `current` leads): not a file of any row.
    dir_problems = [str(Problem(p.subject, p.message, p.severity)) for p in state.dir_problems]
    if as_json:
        _echo_json({"certs_dir": state.path, "problems": dir_problems, "files": rows})
        return
    if not state.exists:
        click.echo(f"{state.path}: does not exist")
        return
    for message in dir_problems:
        click.echo(f"PROBLEM {message}")
    for row in rows:
        click.echo(f"{row['file']} ({row['kind']})")
        for cert in row["certificates"]:
            sans = ", ".join(cert["dns_sans"] + cert["ip_sans"]) or "-"
            click.echo(f"  subject {cert['subject']}  SANs {sans}")
            click.echo(f"  issuer  {cert['issuer']}  serial {cert['serial']}")
            click.echo(f"  expires {cert['not_after']}  ({_human(cert['seconds_left'])})")
        if row.get("chains_to"):
            click.echo(f"  chains to {row['chains_to']}")
        if "ocsp" in row:
            click.echo(f"  OCSP    {row['ocsp']}")
        for message in row["problems"]:
            click.echo(f"  PROBLEM {message}")


def _status_rows(state: DirState, problems: Sequence[Problem], now: dt.datetime) -> list[dict[str, Any]]:

    rows = []
    bundles = _ca_bundles(state)
    for name in sorted(state.entries):
        try:
            cert_name = classify(name)
        except BadFilename:
            cert_name = None
        if cert_name is None:
            continue
        entry = state.entries[name]
        certs: list[dict[str, Any]] = []
        if entry.data is not None:
            try:
                certs = [_cert_json(crypto.describe(c), now) for c in crypto.load_certs(entry.data)]
            except VaultpkiError:
                certs = []
        key_name = cert_name.key_file
        rows.append({
            "file": name,
            "kind": cert_name.usage.value + (f" ({cert_name.name})" if cert_name.name else ""),
            "certificates": certs,
            "chains_to": None if cert_name.usage.is_ca else _chains_to(entry.data, bundles, now),
            "problems": [p.message for p in problems if p.file in (name, key_name)],
        })
    return rows


def _chains_to(data: bytes | None, bundles: Sequence[tuple[str, list[x509.Certificate]]], now: dt.datetime) -> str | None:
    """Which CA of which bundle a leaf verifies to ('subject (ca.crt #2)'): during a CA rotation,
    this shows which leaves still hang on the old CA."""
    if not data:
        return None
    try:
        chain = crypto.load_certs(data)
    except VaultpkiError:
        return None
    for name, bundle in bundles:
        for index, anchor in enumerate(bundle, start=1):
            if verify_chain(chain, [anchor], now, ()) is None:
                return f"{anchor.subject.rfc4514_string()} ({name} #{index} of {len(bundle)})"
    return None


def _cert_json(info: crypto.CertInfo, now: dt.datetime) -> dict[str, Any]:
    return {
        "subject": info.subject, "issuer": info.issuer, "serial": info.serial,
        "dns_sans": list(info.dns_sans), "ip_sans": list(info.ip_sans),
        "ekus": sorted(e.value for e in info.ekus) if info.ekus is not None else None,
        "is_ca": info.is_ca, "not_before": info.not_before.isoformat(), "not_after": info.not_after.isoformat(),
        "seconds_left": max(0, int((info.not_after - now).total_seconds())),
    }


def _human(seconds: int) -> str:
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h left" if days else f"{hours}h {rest // 60}m left"


@main.command()
@click.option("--certs-dir", metavar="DIR", help="The certs-dir (default: certs_dir from the config).")
@click.pass_obj
def rollback(obj: _Ctx, certs_dir: str | None) -> None:
    """Make the previous set of files current again (after a bad rotation)."""
    target, _ = _chosen_dir(obj, certs_dir)
    click.echo(f"rolled back {target.path} to {target.rollback()}")


def _reloader(cfg: config_mod.Config) -> Reloader:

    r = cfg.reload
    sig = parse_signal(r.signal)
    if r.pidfile:      # (with reload.process too: the pid must be that process)
        owner = resolve_owner(cfg.owner, cfg.group)
        return SignalByPidfile.for_files_of(Path(r.pidfile), sig, r.process, owner.uid, owner.gid)
    if r.process:
        return SignalByName(r.process, sig)
    if r.command:
        return RunCommand(r.command, float(r.command_timeout))   # gets our environment minus Vault credentials
    return NoReload()


def _syncer_factory(certs_dir: str | None, metrics: Metrics, log: logging.Logger,
                    now: Callable[[], dt.datetime]) -> Callable[[config_mod.Config], Syncer]:
    def build(cfg: config_mod.Config) -> Syncer:

        prober = EndpointProber(cfg.reload.verify) if cfg.reload.verify else None
        store = CertsDir(_node_dir(cfg, certs_dir), resolve_owner(cfg.owner, cfg.group))
        plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, cfg.node_users)      # config errors now, not at the first pass
        return Syncer(cfg=cfg, vault=HttpVault(cfg.vault), store=store, reloader=_reloader(cfg), prober=prober,
                      metrics=metrics, now=now, log=log)
    return build


def _listen_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 <= int(port) < 65536:
        raise InputError(f"--metrics-addr {text!r} is not HOST:PORT (e.g. 127.0.0.1:9101, or :9101 for every interface)")
    return (host.strip("[]") or "0.0.0.0"), int(port)


@main.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a systemd timer): 0 ok, 1 failed.")
@click.option("--certs-dir", metavar="DIR", help="Override certs_dir from the config.")
@click.option("--metrics-addr", metavar="HOST:PORT", help="Serve /metrics and /healthz here (daemon mode).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--dry-run", is_flag=True, help="One look: print what is due and what would be done; mint nothing.")
@click.pass_obj
def sync(obj: _Ctx, once: bool, certs_dir: str | None, metrics_addr: str | None, log_format: str,
         dry_run: bool) -> None:
    """Keep this node's certs-dir fresh: renew what is due, reload the database, verify it took."""
    listen = _listen_addr(metrics_addr) if metrics_addr else None
    log = setup(log_format)
    clock = SystemClock()
    metrics = Metrics()
    build = _syncer_factory(certs_dir, metrics, log, clock.now)
    syncer = build(obj.config())
    if dry_run:
        decisions, vault_error = syncer.preview()
        due = [d for d in decisions if d.due]
        for decision in due:
            click.echo(f"would renew {decision.file}: {decision.reason}")
        if due:
            click.echo(f"would write them into {syncer.store.path} as one set, then reload: {syncer.reloader.describe()}"
                       + (f", and check {syncer.cfg.reload.verify}" if syncer.cfg.reload.verify else ""))
        else:
            upcoming = min((d.at for d in decisions), default=None)
            click.echo("nothing due" + (f"; next renewal {upcoming:%Y-%m-%d %H:%M:%S}Z" if upcoming else ""))
        if vault_error is not None:
            click.echo(f"vaultpki: error: {vault_error}", err=True)
            sys.exit(1)
        return
    if once:
        report = syncer.run_pass()
        for leaf in report.renewed:
            click.echo(f"renewed {leaf.spec.cert_file} (serial {leaf.serial}, expires {leaf.not_after:%Y-%m-%d %H:%M:%S}Z)")
        if report.ok:
            when = f"; next renewal {report.next_wake:%Y-%m-%d %H:%M:%S}Z" if report.next_wake else ""
            click.echo((f"renewed; reload: {syncer.reloader.describe()}" if report.renewed else "nothing due") + when)
            return
        for failure in report.failures:
            click.echo(f"vaultpki: error: {failure}", err=True)
        sys.exit(1)
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


def _user_mounts(cfg: config_mod.Config) -> list[str]:
    """Where client certificates come from (the client CA in split-ca)."""
    return [cfg.pki.client_mount] if cfg.mode.value == "split-ca" and cfg.pki.client_mount else [cfg.pki.mount]


def _all_mounts(cfg: config_mod.Config) -> list[str]:
    mounts = [*_user_mounts(cfg), cfg.pki.mount, cfg.pki.ui_mount]
    return list(dict.fromkeys(m for m in mounts if m))


def _print_revoked(revoked: list[Revoked], as_json: bool) -> None:
    if as_json:
        _echo_json([{"mount": r.mount, "serial": r.serial, "common_name": r.common_name,
                     "not_after": r.not_after.isoformat(), "revocation_time": r.revocation_time}
                    for r in revoked])
        return
    for r in revoked:
        click.echo(f"revoked {r.serial} CN={r.common_name} on {r.mount} (was valid until {r.not_after:%Y-%m-%d %H:%M}Z)")
    if not revoked:
        click.echo("nothing to revoke: no unexpired, unrevoked certificate matched")


@main.command("revoke-user")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print what was revoked as JSON.")
@click.pass_obj
def revoke_user(obj: _Ctx, user: str, as_json: bool) -> None:
    """Revoke every unexpired certificate Vault issued for SQL user USER (found by serial in Vault)."""
    user = validate_username(user) if user != "node" else user
    cfg = obj.config()
    _print_revoked(revoke_user_in_vault(_vault(cfg), _user_mounts(cfg), user, _now()), as_json)


@main.command()
@click.option("--serial", required=True, help="The serial, hex (colons optional).")
@click.option("--mount", help="The PKI mount (default: try the configured mounts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was revoked as JSON.")
@click.pass_obj
def revoke(obj: _Ctx, serial: str, mount: str | None, as_json: bool) -> None:
    """Revoke one certificate by serial."""
    cfg = obj.config()
    _print_revoked([revoke_serial(_vault(cfg), [mount] if mount else _all_mounts(cfg), serial)], as_json)


@main.group()
def ca() -> None:
    """CA rotation with Vault's multiple issuers: rotate, then activate, then retire (admin token)."""


def _admin(cfg: config_mod.Config) -> hvac.Client:
    """hvac's API over vaultpki's one Vault client (failover, deadline, caps, redirects), with the admin token."""
    if not cfg.vault.token:
        raise ConfigError("CA rotation needs an admin token in $VAULT_TOKEN")
    vault = HttpVault(cfg.vault, one_shot=True)
    vault.ensure_token()
    return vault.client()


@ca.command("rotate")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--root-mount", help="For an intermediate CA: the mount whose issuer signs the new one.")
@click.option("--ttl", default="43800h", show_default=True, help="Lifetime of the new CA.")
@click.pass_obj
def ca_rotate(obj: _Ctx, mount: str | None, root_mount: str | None, ttl: str) -> None:
    """Step 1: add a new issuer (not yet the default); CA files become new + old at each node's next check."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    issuer = rotate(_admin(cfg), cfg.vault.addr, target, root_mount, ttl, _now())
    click.echo(f"new issuer {issuer} on {target}; once every node and client has the new CA bundle "
               f"(renew.ca_check), run: vaultpki ca activate --mount {target}")


@ca.command("activate")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--min-age", default="2h", show_default=True, help="Refuse while the new issuer is younger than this.")
@click.pass_obj
def ca_activate(obj: _Ctx, mount: str | None, min_age: str) -> None:
    """Step 2: the newest issuer becomes the default; daemons re-issue their leaves from it."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    age = dt.timedelta(seconds=0 if min_age == "0" else config_mod.parse_duration(min_age, "--min-age"))
    issuer = activate(_admin(cfg), cfg.vault.addr, target, age, _now())
    click.echo(f"issuer {issuer} is now the default of {target}; after every leaf is re-issued, run: "
               f"vaultpki ca retire --mount {target}")


@ca.command("retire")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--force", is_flag=True, help="Retire even while leaves of the old issuer are still valid.")
@click.pass_obj
def ca_retire(obj: _Ctx, mount: str | None, force: bool) -> None:
    """Step 3: set the old issuers read-only (they leave every CA file) once none of their leaves is valid."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    retired = retire(_admin(cfg), cfg.vault.addr, target, _now(), force)
    click.echo(f"retired {', '.join(retired)} on {target}" if retired else f"nothing to retire on {target}")


@ca.command("status")
@click.option("--mount", help="The CA mount (default: pki.mount).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def ca_status_cmd(obj: _Ctx, mount: str | None, as_json: bool) -> None:
    """Every issuer of the mount: default or not, usage, validity, valid leaves it signed."""
    cfg = obj.config()
    target = mount or cfg.pki.mount
    rows = ca_status(_admin(cfg), cfg.vault.addr, target, _now())
    if as_json:
        _echo_json([{**{k: getattr(r, k) for k in ("issuer_id", "name", "is_default", "usage", "subject",
                                                     "valid_leaves")},
                     "not_before": r.not_before.isoformat(), "not_after": r.not_after.isoformat()}
                    for r in rows])
        return
    for r in rows:
        click.echo(f"{'*' if r.is_default else ' '} {r.issuer_id} {r.subject}  expires {r.not_after:%Y-%m-%d}  "
                   f"usage {r.usage}  valid leaves {r.valid_leaves}")


@main.command()
@click.option("--root-mount", default="pki-root", show_default=True, help="Mount for the root CA.")
@click.option("--no-intermediate", is_flag=True, help="Make each mount its own root instead of an intermediate.")
@click.pass_obj
def provision(obj: _Ctx, root_mount: str, no_intermediate: bool) -> None:
    """Set up a DEV/TEST Vault (mounts, CAs, roles) for the configured mode. Production: use terraform/."""


    cfg = obj.config()
    token = cfg.vault.token
    if cfg.vault.auth != "token" or not token:
        raise ConfigError("provision needs token auth with $VAULT_TOKEN set to an admin token")
    client = hvac.Client(url=cfg.vault.addr, token=token, verify=cfg.vault.ca_cert or True,
                         namespace=cfg.vault.namespace)
    spec = ProvisionSpec(mode=cfg.mode, pki=cfg.pki, node_hosts=cfg.node_hosts, ui_hosts=cfg.ui_hosts,
                         root_mount=root_mount, intermediate=not no_intermediate)
    for path in run_provision(client, cfg.vault.addr, spec).roles:
        click.echo(f"provisioned {path}")
