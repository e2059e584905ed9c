"""Embedded provisioner for a dev/test Vault: CA mounts, issuers and roles.

This is what ``make demo`` and the integration tests use; production deployments
use the Terraform module in ``terraform/``. Both read the same role definitions
(``vaultpki/data/roles.json``), so what the tests prove is what Terraform builds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import hvac
import msgspec

from vaultpki.core.layout import Mode, PkiNames, split_hosts
from vaultpki.core.policy import POLICY_NAMES, render
from vaultpki.dev.converge import CREATED, Change, Converger
from vaultpki.errors import ConfigError
from vaultpki.vault.admin import ROOT_TTL, VaultAdmin

__all__ = ["Change", "ProvisionSpec", "Provisioned", "cert_auth_role", "load_roles", "policy_variables", "provision",
           "role_body", "static_node_policy_variables"]

INTERMEDIATE_TTL = "43800h"


def load_roles() -> dict[str, Any]:
    """The shared role definitions (also read by Terraform)."""
    text = resources.files("vaultpki").joinpath("data/roles.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def role_body(template: str, domains: Sequence[str], *, openbao: bool, ip_cidrs: Sequence[str] = (),
              node: str | None = None) -> dict[str, Any]:
    """The API body for one role: common fields, then the template's, then the domains.

    ``node`` names the node a per-node role is made for: it fills the node's own subject OU.
    """
    roles = load_roles()
    body = {k: v for k, v in {**roles["common"], **roles["roles"][template]}.items() if not k.startswith("_")}
    if "ou" in body:
        _node_ou(body, node)
    if not body.get("allow_any_name"):
        body["allowed_domains"] = list(domains)
    if body.get("allow_ip_sans") and not ip_cidrs:
        # A host list without an IP means no IP SAN: with allow_ip_sans on, an empty
        # allowed_ip_sans_cidr lets a role sign any IP (another node's, 8.8.8.8, ::1).
        body["allow_ip_sans"] = False
    if openbao:
        body.update(roles["openbao_only"])
        if body.get("allow_ip_sans"):
            body["allowed_ip_sans_cidr"] = list(ip_cidrs)
    return body


def _node_ou(body: dict[str, Any], node: str | None) -> None:
    """Fill in "{node}" of the node role's OU; a role shared by every node gets no OU (it names no one)."""
    if node:
        body["ou"] = [ou.replace("{node}", node) for ou in body["ou"]]
    else:
        del body["ou"]


class ProvisionSpec(msgspec.Struct, frozen=True):
    mode: Mode
    pki: PkiNames
    node_hosts: tuple[str, ...]
    ui_hosts: tuple[str, ...] = ()
    root_mount: str = "pki-root"
    intermediate: bool = True        # False: each leaf mount holds its own self-signed root
    # Per-node roles "<node_role>-<name>", each allowing only that node's hosts (else one shared role).
    nodes: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    # Policies from policies/, an AppRole role per node, userpass + the self-service role.
    access: bool = False
    # Standard mode, with nodes and access: each node also logs in with its own node.crt
    # (auth/cert/certs/node-<name>, bound to the node's OU) and gets a static policy of its own.
    cert_auth: bool = False
    policies_dir: Path | None = None


class Provisioned(msgspec.Struct, frozen=True):
    roles: tuple[str, ...]
    policies: Mapping[str, str] = msgspec.field(default_factory=dict)     # name -> rendered text
    approle_accessor: str | None = None
    userpass_accessor: str | None = None
    cert_roles: tuple[str, ...] = ()                                      # auth/cert/certs/node-<name>
    changes: tuple[Change, ...] = ()                                      # what each step came to, in order


USER_SELF_ROLE = "user-self"


def default_policies_dir() -> Path:
    """``policies/`` of a source checkout (the provisioner is for dev/test; Terraform is for production)."""
    return Path(__file__).resolve().parents[2] / "policies"


_CA_NAMES = {"node": "CockroachDB node CA", "client": "CockroachDB client CA", "ui": "DB Console CA"}


def _setup_ca(run: Converger, mount: str, label: str, spec: ProvisionSpec) -> None:
    """A CA mount: its CA (made once, then kept), and the URLs its certificates carry."""
    run.pki_mount(mount)
    kind = "root CA" if not spec.intermediate else f"intermediate CA, signed by {spec.root_mount}"
    if not run.has_ca(mount, kind):
        _make_ca(run.admin, mount, f"{_CA_NAMES[label]} ({mount})", spec)
        run.note(CREATED, f"{mount}/issuers", kind)
    base = f"{run.admin.addr}/v1/{mount}"
    run.ensure(f"{mount}/config/urls", "CA, CRL and OCSP URLs", {
        "issuing_certificates": [f"{base}/ca"], "crl_distribution_points": [f"{base}/crl"],
        "ocsp_servers": [f"{base}/ocsp"]})


def _make_ca(admin: VaultAdmin, mount: str, name: str, spec: ProvisionSpec) -> None:
    """The mount's CA: its own root, or an intermediate the root mount signs, made the mount's default issuer."""
    if not spec.intermediate:
        admin.write(f"{mount}/issuers/generate/root/internal", common_name=name, ttl=INTERMEDIATE_TTL,
                    key_type="ec", key_bits=256, issuer_name="root")
        return
    csr = admin.write(f"{mount}/issuers/generate/intermediate/internal", common_name=name,
                      key_type="ec", key_bits=256)["csr"]
    signed = admin.write(f"{spec.root_mount}/issuer/default/sign-intermediate", csr=csr, common_name=name,
                         ttl=INTERMEDIATE_TTL, format="pem_bundle")
    imported = admin.write(f"{mount}/intermediate/set-signed", certificate=signed["certificate"])
    keyed = [issuer for issuer, key in (imported.get("mapping") or {}).items() if key]
    admin.write(f"{mount}/config/issuers", default=keyed[0])


def _cidrs(ips: Sequence[str]) -> list[str]:
    return [f"{ip}/{128 if ':' in ip else 32}" for ip in ips]


def policy_variables(spec: ProvisionSpec, approle_accessor: str) -> dict[str, dict[str, object]]:
    """The templatefile() variables of every policy, as the Terraform module computes them."""
    pki = spec.pki
    client_mount = pki.client_mount if spec.mode is Mode.SPLIT_CA and pki.client_mount else pki.mount
    ca_mounts = list(dict.fromkeys([pki.mount, client_mount]))     # the order of terraform's distinct()
    variables: dict[str, dict[str, object]] = {
        "crdb-node": {
            "mount": pki.mount, "client_mount": client_mount,
            "node_role": f"{pki.node_role}-{{{{identity.entity.aliases.{approle_accessor}.metadata.role_name}}}}",
            "client_node_role": "" if spec.mode is Mode.STANDARD else pki.client_node_role,
            "ca_mounts": ca_mounts,
        },
        "crdb-operator": {"client_mount": client_mount, "user_role": pki.user_role, "mounts": ca_mounts},
        "crdb-root-operator": {"client_mount": client_mount, "root_role": pki.root_role},
        "crdb-user-self": {"client_mount": client_mount, "user_self_role": USER_SELF_ROLE, "ca_mounts": ca_mounts},
    }
    if pki.ui_mount:
        variables["crdb-ui"] = {"ui_mount": pki.ui_mount, "ui_role": pki.ui_role or "ui"}
    return variables


def provision(client: hvac.Client, addr: str, spec: ProvisionSpec) -> Provisioned:
    """Create every mount and role the configured mode needs (and, with ``access``, policies and auth)."""
    _check_cert_auth(spec)
    run = Converger(VaultAdmin(client, addr))
    openbao = run.admin.is_openbao()
    pki = spec.pki
    if spec.intermediate:
        run.pki_mount(spec.root_mount)
        if not run.has_ca(spec.root_mount, "root CA"):
            run.admin.write(f"{spec.root_mount}/issuers/generate/root/internal", common_name="vaultpki root CA",
                            ttl=ROOT_TTL, key_type="ec", key_bits=256, issuer_name="root")
            run.note(CREATED, f"{spec.root_mount}/issuers", "root CA")
    _setup_ca(run, pki.mount, "node", spec)
    client_mount = pki.mount
    if spec.mode is Mode.SPLIT_CA:
        client_mount = pki.client_mount or ""
        _setup_ca(run, client_mount, "client", spec)
    node_template = "node" if spec.mode is Mode.STANDARD else "node-server"
    # (mount, role name, template in roles.json, allowed_domains, allowed IP CIDRs)
    roles: list[tuple[str, str, str, list[str], list[str]]] = []
    per_node = spec.nodes or {"": spec.node_hosts}
    for name, hosts in per_node.items():
        dns, ips = split_hosts(hosts)
        domains = ["node", *dns] if spec.mode is Mode.STANDARD else list(dns)
        roles.append((pki.mount, f"{pki.node_role}-{name}" if name else pki.node_role, node_template, domains, _cidrs(ips)))
    if spec.mode is not Mode.STANDARD:
        roles.append((client_mount, pki.client_node_role, "client-node", ["node"], []))
    roles.append((client_mount, pki.user_role, "user", [], []))
    roles.append((client_mount, pki.root_role, "root", ["root"], []))
    if pki.ui_mount:
        _setup_ca(run, pki.ui_mount, "ui", spec)
        ui_dns, ui_ips = split_hosts(spec.ui_hosts)
        roles.append((pki.ui_mount, pki.ui_role or "ui", "ui", list(ui_dns), _cidrs(ui_ips)))
    approle = userpass = None
    if spec.access:
        userpass = run.auth("userpass")
        approle = run.auth("approle")
        roles.append((client_mount, USER_SELF_ROLE, "user-self",
                      [f"{{{{identity.entity.aliases.{userpass}.name}}}}"], []))
    made = []
    node_of = {f"{pki.node_role}-{name}": name for name in spec.nodes}     # per-node role -> its node
    for mount, role, template, domains, role_cidrs in roles:
        run.ensure(f"{mount}/roles/{role}", f"role ({template})",
                   role_body(template, domains, openbao=openbao, ip_cidrs=role_cidrs, node=node_of.get(role)))
        made.append(f"{mount}/roles/{role}")
    policies: dict[str, str] = {}
    cert_roles: tuple[str, ...] = ()
    if spec.access:
        assert approle is not None
        policies = _write_access(run, spec, approle)
        if spec.cert_auth:
            cert_roles = _write_cert_auth(run, spec, approle, policies)
    return Provisioned(tuple(made), policies, approle, userpass, cert_roles, tuple(run.changes))


def _write_access(run: Converger, spec: ProvisionSpec, approle_accessor: str) -> dict[str, str]:
    """The policies (rendered from policies/*.hcl.tftpl) and one AppRole role per node."""
    directory = spec.policies_dir or default_policies_dir()
    policies = {}
    for name, variables in policy_variables(spec, approle_accessor).items():
        path = directory / f"{name}.hcl.tftpl"
        try:
            template = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"policy template {path} cannot be read: {exc.strerror}") from exc
        policies[name] = render(template, variables)
        run.policy(name, policies[name])
    for name in spec.nodes:
        run.ensure(f"auth/approle/role/{name}", "AppRole role", {
            "token_policies": ["crdb-node"], "token_no_default_policy": True, "token_ttl": "1h", "token_max_ttl": "24h",
            "secret_id_num_uses": 0})
    assert set(policies) <= set(POLICY_NAMES)
    return policies


# Terraform's rule for var.nodes: a node name goes into an OU that cert auth matches as a glob
# pattern, so it must never hold a glob character ("*") or a separator.
_NODE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _check_cert_auth(spec: ProvisionSpec) -> None:
    """Refuse a cert-auth set-up that could not tell one node from another (before anything is made)."""
    if not spec.cert_auth:
        return
    if spec.mode is not Mode.STANDARD:
        raise ConfigError("cert auth needs mode = standard: in split layouts node.crt is a server certificate "
                          "and client.node.crt names no node")
    if not spec.nodes or not spec.access:
        raise ConfigError("cert auth needs one role per node (nodes) and the node policies (access)")
    bad = sorted(name for name in spec.nodes if not _NODE_NAME.fullmatch(name))
    if bad:
        raise ConfigError(f"cert auth: node names are lower-case DNS labels, not {', '.join(map(repr, bad))}")


def cert_auth_role(node: str) -> dict[str, Any]:
    """The roles.json part of node ``node``'s cert-auth role: CN=node *and* the OU only its own PKI role sets.

    Names cannot tell nodes apart (every node certificate has CN=node; nodes share ``localhost`` or a
    load balancer name, or have only IPs), so the login is bound to the node role's subject OU.
    """
    body = {k: v for k, v in load_roles()["cert_auth"].items() if not k.startswith("_")}
    body["allowed_organizational_units"] = role_body("node", [], openbao=False, node=node)["ou"]
    return body


def static_node_policy_variables(spec: ProvisionSpec, approle_accessor: str, node: str) -> dict[str, object]:
    """The crdb-node policy's variables for one node's static copy (Terraform's node_static): its own role."""
    return {**policy_variables(spec, approle_accessor)["crdb-node"], "node_role": f"{spec.pki.node_role}-{node}"}


def _write_cert_auth(run: Converger, spec: ProvisionSpec, approle_accessor: str,
                     policies: dict[str, str]) -> tuple[str, ...]:
    """Cert auth with one role per node, each with a static copy of the node policy naming its own PKI role.

    The trusted certificate is the node CA mount's chain (what Terraform pins: the intermediate and
    its issuer). A static policy, because a cert-auth token has no per-node identity to template on.
    """
    run.auth("cert")
    issuer = run.admin.read(f"{spec.pki.mount}/issuer/default/json")
    chain = "\n".join(issuer.get("ca_chain") or [issuer["certificate"]])
    template = (spec.policies_dir or default_policies_dir()) / "crdb-node.hcl.tftpl"
    made = []
    for name in spec.nodes:
        policy = f"crdb-node-{name}"
        policies[policy] = render(template.read_text(encoding="utf-8"),
                                  static_node_policy_variables(spec, approle_accessor, name))
        run.policy(policy, policies[policy])
        run.ensure(f"auth/cert/certs/node-{name}", "cert auth role", {
            **cert_auth_role(name), "certificate": chain, "token_policies": [policy], "token_ttl": "1h",
            "token_max_ttl": "24h"})
        made.append(f"auth/cert/certs/node-{name}")
    return tuple(made)
