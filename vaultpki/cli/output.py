"""How the issuing commands print what they did, or would do: lines for a person, or one ``--json`` document."""

from __future__ import annotations

import json
from typing import Any

import click

from vaultpki import config as config_mod
from vaultpki.core.issue import IssuedSet
from vaultpki.core.layout import Plan
from vaultpki.store.certs_dir import CertsDir


def echo_json(doc: object) -> None:
    """A ``--json`` answer."""
    click.echo(json.dumps(doc, indent=2))


def report_issued(issued: IssuedSet, target: CertsDir, as_json: bool) -> None:
    if as_json:
        echo_json({
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


def report_dry_run(cfg: config_mod.Config, plan: Plan, target: CertsDir, as_json: bool) -> None:
    """What a command would issue and write; nothing is sent to Vault, nothing is written."""
    leaves: list[dict[str, Any]] = [{
        "file": s.cert_file, "key": s.key_file, "vault_path": f"{s.mount}/{cfg.issue_method}/{s.role}",
        "common_name": s.common_name, "dns_sans": list(s.dns_sans), "ip_sans": list(s.ip_sans),
        "ekus": sorted(e.value for e in s.ekus), "key_type": f"{cfg.key_type.value}-{cfg.key_bits}",
    } for s in plan.certs]
    cas = [{"file": t.file, "mount": t.mount, "trust": cfg.ca_trust} for t in plan.ca_files]
    key_mode = f"{target.key_mode:04o}"
    if as_json:
        echo_json({"dry_run": True, "certs_dir": str(target.path), "certificates": leaves,
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
