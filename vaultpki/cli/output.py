"""How commands print what they did, or would do: lines for a person, or one ``--json`` document.

Every ``--json`` document has the same envelope (docs/json.md): ``command`` (the subcommand's path,
``"ca status"``) and ``ok`` (true exactly when the exit code is 0), then the command's own fields.
An error that stops a command prints no document: stdout stays empty and the one line on stderr says
why, with exit 2 or 1, as without ``--json``. A document with ``ok: false`` (exit 1) means the command
ran to its end and something in it failed; the document says what.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from vaultpki import config as config_mod
from vaultpki.core.issue import IssuedLeaf, IssuedSet
from vaultpki.core.layout import CertSpec, Plan, stray_reason
from vaultpki.store.certs_dir import CertsDir

ENVELOPE = ("command", "ok")


def command_name() -> str:
    """The running subcommand's path without the program: ``issue-node``, ``ca status``."""
    ctx: click.Context | None = click.get_current_context()
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.command.name or ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def emit(ok: bool, fields: Mapping[str, Any]) -> None:
    """The one ``--json`` document of a command: the envelope, then the command's own fields."""
    clashing = set(ENVELOPE) & set(fields)
    if clashing - {"ok"} or fields.get("ok", ok) != ok:
        raise AssertionError(f"--json fields {sorted(clashing)} would contradict the envelope")
    doc = {"command": command_name(), "ok": ok, **{k: v for k, v in fields.items() if k not in ENVELOPE}}
    click.echo(json.dumps(doc, indent=2))


def _ca_files(cfg: config_mod.Config, plan: Plan) -> list[dict[str, Any]]:
    return [{"file": t.file, "mount": t.mount, "trust": cfg.ca_trust} for t in plan.ca_files]


def _planned(cfg: config_mod.Config, spec: CertSpec) -> dict[str, Any]:
    return {"file": spec.cert_file, "key": spec.key_file, "vault_path": f"{spec.mount}/{cfg.issue_method}/{spec.role}",
            "common_name": spec.common_name, "dns_sans": list(spec.dns_sans), "ip_sans": list(spec.ip_sans),
            "ekus": sorted(e.value for e in spec.ekus), "key_type": f"{cfg.key_type.value}-{cfg.key_bits}"}


def _issued(leaf: IssuedLeaf) -> dict[str, Any]:
    return {"file": leaf.spec.cert_file, "key": leaf.spec.key_file, "common_name": leaf.spec.common_name,
            "serial": leaf.serial, "not_after": leaf.not_after.isoformat()}


def _user(item: dict[str, Any]) -> dict[str, Any]:
    """A client certificate's item, led by the user it is for (its CN)."""
    return {"user": item["common_name"], **item}


def _document(cfg: config_mod.Config, plan: Plan, target: CertsDir, *, dry_run: bool, files: Sequence[str],
              items: list[dict[str, Any]], users: bool, failed: Mapping[str, str],
              removed: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of ``issue-node`` and ``issue-user``, in a dry run and not: one shape for every way of running."""
    doc: dict[str, Any] = {"dry_run": dry_run, "certs_dir": str(target.path), "files": sorted(files)}
    if users:
        doc["issued"] = [_user(i) for i in items]
        doc["failed"] = [{"user": u, "error": e} for u, e in failed.items()]
    else:
        doc["certificates"] = items
        doc["removed"] = [{"file": name, "reason": stray_reason(name, cfg.mode)} for name in removed]
    doc["ca_files"] = _ca_files(cfg, plan)
    doc["key_mode"] = f"{target.key_mode:04o}"
    return doc


def report_issued(cfg: config_mod.Config, plan: Plan, issued: IssuedSet, target: CertsDir, as_json: bool, *,
                  users: bool = False, bulk: bool = False, failed: Mapping[str, str] | None = None,
                  removed: Sequence[str] = ()) -> None:
    """What was issued and written; ``bulk``: a ``--from-file`` run, where ``failed`` names the users whose
    certificates could not be (the text says how many of how many; JSON has the same shape either way)."""
    failed = failed or {}
    if as_json:
        written = [f.name for f in issued.files] if issued.leaves else []      # nothing succeeded: nothing written
        emit(not failed, _document(cfg, plan, target, dry_run=False, files=written,
                                   items=[_issued(leaf) for leaf in issued.leaves], users=users, failed=failed,
                                   removed=removed))
        return
    if bulk:
        click.echo(f"issued {len(issued.leaves)} of {len(plan.certs)} user certificates into {target.path}")
        for name, error in failed.items():
            click.echo(f"vaultpki: error: {name}: {error}", err=True)
        return
    for leaf in issued.leaves:
        click.echo(f"wrote {leaf.spec.cert_file} + {leaf.spec.key_file} (serial {leaf.serial}, "
                   f"expires {leaf.not_after:%Y-%m-%d %H:%M}Z)")
    cas = sorted(f.name for f in issued.files if f.name.startswith("ca"))
    click.echo(f"wrote {', '.join(cas)} into {target.path}")
    for name in removed:
        click.echo(f"removed {name}: {stray_reason(name, cfg.mode)} (the previous set keeps it: vaultpki rollback)")


def report_dry_run(cfg: config_mod.Config, plan: Plan, target: CertsDir, as_json: bool, *, users: bool = False,
                   removed: Sequence[str] = ()) -> None:
    """What a command would issue and write; nothing is sent to Vault, nothing is written."""
    if as_json:
        emit(True, _document(cfg, plan, target, dry_run=True, files=plan.file_names,
                             items=[_planned(cfg, s) for s in plan.certs], users=users, failed={}, removed=removed))
        return
    for spec in plan.certs:
        sans = ", ".join(spec.dns_sans + spec.ip_sans) or "none"
        click.echo(f"would issue {spec.cert_file} from {spec.mount}/{cfg.issue_method}/{spec.role}: "
                   f"CN={spec.common_name}, SANs {sans}, EKU {'+'.join(sorted(e.value for e in spec.ekus))}, "
                   f"{cfg.key_type.value}-{cfg.key_bits} key generated {'here' if cfg.issue_method == 'sign' else 'by Vault'}")
    for ca_file in _ca_files(cfg, plan):
        click.echo(f"would write {ca_file['file']} from the CA of mount {ca_file['mount']} (ca_trust = {ca_file['trust']})")
    for name in removed:
        click.echo(f"would remove {name}: {stray_reason(name, cfg.mode)}")
    click.echo(f"would write them into {target.path} as one set (keys mode {target.key_mode:04o}); "
               "nothing was sent or written")
