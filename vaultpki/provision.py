"""Embedded provisioner for a dev/test Vault: CA mounts, issuers and roles.

This is what ``make demo`` and the integration tests use; production deployments
use the Terraform module in ``terraform/``. Both read the same role definitions
(``vaultpki/data/roles.json``), so what the tests prove is what Terraform builds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hvac

from .layout import Mode, PkiNames, split_hosts
from .vault import translate_errors

__all__ = ["ProvisionSpec", "load_roles", "provision", "role_body"]

ROOT_TTL = "87600h"
INTERMEDIATE_TTL = "43800h"


def load_roles() -> dict[str, Any]:
    """The shared role definitions (also read by Terraform)."""
    text = resources.files("vaultpki").joinpath("data/roles.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def role_body(template: str, domains: Sequence[str], *, openbao: bool, ip_cidrs: Sequence[str] = ()) -> dict[str, Any]:
    """The API body for one role: common fields, then the template's, then the domains."""
    roles = load_roles()
    body = {k: v for k, v in {**roles["common"], **roles["roles"][template]}.items() if not k.startswith("_")}
    if not body.get("allow_any_name"):
        body["allowed_domains"] = list(domains)
    if openbao:
        body.update(roles["openbao_only"])
        if body.get("allow_ip_sans") and ip_cidrs:
            body["allowed_ip_sans_cidr"] = list(ip_cidrs)
    return body


@dataclass(frozen=True, slots=True)
class ProvisionSpec:
    mode: Mode
    pki: PkiNames
    node_hosts: tuple[str, ...]
    ui_hosts: tuple[str, ...] = ()
    root_mount: str = "pki-root"
    intermediate: bool = True        # False: each leaf mount holds its own self-signed root


_CA_NAMES = {"node": "CockroachDB node CA", "client": "CockroachDB client CA", "ui": "DB Console CA"}


class _Admin:
    def __init__(self, client: hvac.Client, addr: str) -> None:
        self.client = client
        self.addr = addr

    def write(self, path: str, **data: Any) -> dict[str, Any]:
        with translate_errors(self.addr, f"writing {path}"):
            response = self.client.write_data(path, data=data)
        return dict(response.get("data") or {}) if isinstance(response, dict) else {}

    def enable_pki(self, mount: str) -> None:
        with translate_errors(self.addr, f"mounting {mount}"):
            self.client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": ROOT_TTL})

    def is_openbao(self) -> bool:
        with translate_errors(self.addr, "reading the server version"):
            version = str(self.client.sys.read_health_status(method="GET").get("version", ""))
        return version.startswith("2.")


def _setup_ca(admin: _Admin, mount: str, label: str, spec: ProvisionSpec) -> None:
    admin.enable_pki(mount)
    name = f"{_CA_NAMES[label]} ({mount})"
    if not spec.intermediate:
        admin.write(f"{mount}/issuers/generate/root/internal", common_name=name, ttl=INTERMEDIATE_TTL,
                    key_type="ec", key_bits=256, issuer_name="root")
    else:
        csr = admin.write(f"{mount}/issuers/generate/intermediate/internal", common_name=name,
                          key_type="ec", key_bits=256)["csr"]
        signed = admin.write(f"{spec.root_mount}/issuer/default/sign-intermediate", csr=csr, common_name=name,
                             ttl=INTERMEDIATE_TTL, format="pem_bundle")
        imported = admin.write(f"{mount}/intermediate/set-signed", certificate=signed["certificate"])
        keyed = [issuer for issuer, key in (imported.get("mapping") or {}).items() if key]
        admin.write(f"{mount}/config/issuers", default=keyed[0])
    base = f"{admin.addr}/v1/{mount}"
    admin.write(f"{mount}/config/urls", issuing_certificates=[f"{base}/ca"],
                crl_distribution_points=[f"{base}/crl"], ocsp_servers=[f"{base}/ocsp"])


def _cidrs(ips: Sequence[str]) -> list[str]:
    return [f"{ip}/{128 if ':' in ip else 32}" for ip in ips]


def provision(client: hvac.Client, addr: str, spec: ProvisionSpec) -> list[str]:
    """Create every mount and role the configured mode needs; returns the role paths made."""
    admin = _Admin(client, addr)
    openbao = admin.is_openbao()
    pki = spec.pki
    if spec.intermediate:
        admin.enable_pki(spec.root_mount)
        admin.write(f"{spec.root_mount}/issuers/generate/root/internal", common_name="vaultpki root CA",
                    ttl=ROOT_TTL, key_type="ec", key_bits=256, issuer_name="root")
    _setup_ca(admin, pki.mount, "node", spec)
    client_mount = pki.mount
    if spec.mode is Mode.SPLIT_CA:
        client_mount = pki.client_mount or ""
        _setup_ca(admin, client_mount, "client", spec)
    dns, ips = split_hosts(spec.node_hosts)
    cidrs = _cidrs(ips)
    # (mount, role name, template in roles.json, allowed_domains, allowed IP CIDRs)
    roles: list[tuple[str, str, str, list[str], list[str]]] = []
    if spec.mode is Mode.STANDARD:
        roles.append((pki.mount, pki.node_role, "node", ["node", *dns], cidrs))
    else:
        roles.append((pki.mount, pki.node_role, "node-server", list(dns), cidrs))
        roles.append((client_mount, pki.client_node_role, "client-node", ["node"], []))
    roles.append((client_mount, pki.user_role, "user", [], []))
    if pki.ui_mount:
        _setup_ca(admin, pki.ui_mount, "ui", spec)
        ui_dns, ui_ips = split_hosts(spec.ui_hosts)
        roles.append((pki.ui_mount, pki.ui_role or "ui", "ui", list(ui_dns), _cidrs(ui_ips)))
    made = []
    for mount, role, template, domains, role_cidrs in roles:
        admin.write(f"{mount}/roles/{role}", **role_body(template, domains, openbao=openbao, ip_cidrs=role_cidrs))
        made.append(f"{mount}/roles/{role}")
    return made
