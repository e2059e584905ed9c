"""``issue-node`` and ``issue-user``: plan a set, have Vault sign it, write it into a certs-dir as one set."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import click
import msgspec

from vaultpki import config as config_mod
from vaultpki.acme.console import UiOrigin, obtain_ui, write_origin
from vaultpki.cli.acme_output import acme_dry_run_line, acme_issued_line
from vaultpki.cli.context import DEFAULT_USER_DIR, _Ctx, node_dir, one_shot_vault, utc_now
from vaultpki.cli.output import report_dry_run, report_issued
from vaultpki.core.issue import IssuedSet, IssueOptions, obtain, obtain_partial
from vaultpki.core.layout import UI_NAMES, FileContent, Plan, plan_node, plan_user, validate_username
from vaultpki.errors import InputError
from vaultpki.files import NotReadable, read_limited, read_regular
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.generation import Stage
from vaultpki.store.ownership import resolve_owner

MAX_USER_LIST_BYTES = 32 << 20      # half a million names of the longest kind


def _options(cfg: config_mod.Config) -> IssueOptions:
    return IssueOptions(key_type=cfg.key_type, key_bits=cfg.key_bits, ttl_seconds=cfg.ttl_seconds,
                        method=cfg.issue_method, ca_trust=cfg.ca_trust)


def _issue_and_write(cfg: config_mod.Config, plan: Plan, target: CertsDir) -> IssuedSet:
    """Issue the plan and write it as one set, without the files of vaultpki's that the layout no longer has
    (``Plan.stray_names``: a split-ca dir's ``ca-client.crt`` once the node is split-node; the previous set
    keeps them)."""
    issued = obtain(plan, one_shot_vault(cfg), _options(cfg), utc_now)
    target.write_set(issued.files, drop=plan.stray_names)
    return issued


@click.command("issue-node", short_help="Issue this node's certificates, as one set.")
@click.option("--certs-dir", metavar="DIR", help="Override certs_dir from the config.")
@click.option("--user", "users", metavar="NAME", multiple=True,
              help="Also write client.NAME.crt/.key into the set (repeatable; adds to node.users).")
@click.option("--dry-run", is_flag=True, help="Print what would be issued and written; mint nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md).")
@click.pass_obj
def issue_node(obj: _Ctx, certs_dir: str | None, users: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Issue everything this node needs for the configured mode (and ui.crt when configured), as one set."""
    cfg = obj.config()
    plan = plan_node(cfg.mode, cfg.pki, cfg.node_hosts, cfg.ui_hosts, (*cfg.node_users, *users), pk8=cfg.node_pk8,
                     acme_ui=cfg.ui_acme is not None)
    target = CertsDir(node_dir(cfg, certs_dir), resolve_owner(cfg.owner, cfg.group))
    removed = target.managed(plan.stray_names)       # what the write takes out (the layout no longer has it)
    if dry_run:
        report_dry_run(cfg, plan, target, as_json, removed=removed)
        if cfg.ui_acme is not None and not as_json:
            click.echo(acme_dry_run_line(cfg.ui_acme, cfg.ui_hosts))
        return
    if cfg.ui_acme is None:
        report_issued(cfg, plan, _issue_and_write(cfg, plan, target), target, as_json, removed=removed)
        return
    issued, origin = _issue_with_acme_ui(cfg, cfg.ui_acme, plan, target)
    report_issued(cfg, plan, issued, target, as_json, removed=removed)
    if not as_json:
        click.echo(acme_issued_line(origin))


def _issue_with_acme_ui(cfg: config_mod.Config, acme: config_mod.AcmeConfig, plan: Plan,
                        target: CertsDir) -> tuple[IssuedSet, UiOrigin]:
    """Vault's files and the ACME CA's ui.crt/ui.key/ca-ui.crt as one set. Vault first: a Vault refusal then
    costs no order at a rate-limited CA. The order runs under the dir's lock; nothing is visible until both
    are in, and a failure of either leaves the dir as it was."""
    issued = obtain(plan, one_shot_vault(cfg), _options(cfg), utc_now)
    names = [f.name for f in issued.files] + sorted(UI_NAMES)
    with target.staged(names, drop=plan.stray_names) as stage:
        for content in issued.files:
            stage.add(content)
        ui = obtain_ui(acme, cfg.ui_hosts, target.ensure_state_dir(), cfg.key_type, cfg.key_bits, utc_now())
        for content in ui.files:
            stage.add(content)
    write_origin(target, ui.origin)
    return msgspec.structs.replace(issued, files=(*issued.files, *ui.files)), ui.origin


def _read_user_list(source: str) -> str:
    """The text of a --from-file list: stdin (``-``) or a regular file, at most MAX_USER_LIST_BYTES
    (``/dev/zero`` or a huge file must not fill memory, nor a FIFO hang the open)."""
    shown = source if source.isprintable() else ascii(source)
    try:
        data = read_limited(sys.stdin.fileno(), MAX_USER_LIST_BYTES) if source == "-" else \
            read_regular(source, MAX_USER_LIST_BYTES)[0]
        return data.decode("utf-8")
    except NotReadable as exc:
        raise InputError(f"cannot read --from-file {shown}: {exc}") from None
    except OSError as exc:          # stdin closed or unreadable
        raise InputError(f"cannot read --from-file {shown}: {exc.strerror}") from exc
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


@click.command("issue-user", short_help="Issue SQL users' client certificates.")
@click.argument("user", required=False)
@click.option("--from-file", "from_file", metavar="FILE", help="Issue for every user in FILE (one per line; - for stdin).")
@click.option("--certs-dir", metavar="DIR", default=DEFAULT_USER_DIR, show_default=True,
              help="Where to write client.USER.crt/.key and ca.crt.")
@click.option("--owner", metavar="USER", help="Owner of the written files (default: you).")
@click.option("--group", metavar="GROUP", help="Group of the written files.")
@click.option("--pk8", is_flag=True,
              help="Also write the key as client.USER.key.pk8 (PKCS#8 DER, for Java's JDBC driver), mode as the .key.")
@click.option("--dry-run", is_flag=True, help="Print what would be issued and written; mint nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document, the same for USER and --from-file.")
@click.pass_obj
def issue_user(obj: _Ctx, user: str | None, from_file: str | None, certs_dir: str, owner: str | None,
               group: str | None, pk8: bool, dry_run: bool, as_json: bool) -> None:
    """Issue client.USER.crt/.key (CN=USER) and ca.crt for SQL user USER (or every user of --from-file).

    Without --pk8, a re-issue removes an earlier client.USER.key.pk8 of vaultpki's: it would hold the
    replaced key."""
    if (user is None) == (from_file is None):
        raise click.UsageError("give exactly one of USER or --from-file")
    # Every name is validated before any path is built or any request made.
    users = [validate_username(user)] if user is not None else _read_users(from_file or "-")
    cfg = obj.config()
    plans = [plan_user(cfg.mode, cfg.pki, u, pk8=pk8) for u in users]
    plan = Plan(trusts=plans[0].trusts, certs=tuple(c for p in plans for c in p.certs))
    target = CertsDir(config_mod.expand_path(certs_dir, "--certs-dir", InputError), resolve_owner(owner, group))
    if dry_run:
        report_dry_run(cfg, plan, target, as_json, users=True)
        return
    if user is not None:
        report_issued(cfg, plan, _issue_and_write(cfg, plan, target), target, as_json, users=True)
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

        issued, failed = obtain_partial(plan, one_shot_vault(cfg), _options(cfg), utc_now, None,
                                        progress=lambda _name: bar.update(1), sink=write, streamed=True)
    failures = {name.removeprefix("client.").removesuffix(".crt"): str(exc) for name, exc in failed.items()}
    report_issued(cfg, plan, issued, target, as_json, users=True, bulk=True, failed=failures)
    if failures:
        sys.exit(1)


class _NoBar:
    """Stands in for click's progress bar when nobody watches stderr (or the answer is JSON)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _steps: int) -> None:
        return None
