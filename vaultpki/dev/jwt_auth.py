"""JWT auth per node for the embedded provisioner: one jwt role per node, bound to the pod-name claim of a
Kubernetes projected service-account token, with that node's own static policy (``terraform/auth.tf``
makes the same roles; tests/terraform/test_jwt_auth.py compares them).

Why one role per node, bound to a claim: every pod of a StatefulSet runs as the same service account, so
the token's subject (``system:serviceaccount:<namespace>:<name>``) names no pod. The kube-apiserver puts
the pod's own name into every projected token it signs (``kubernetes.io.pod.name``), and nothing in the
pod can change it; a role that requires that claim can be logged in to only with that pod's token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hvac
import msgspec

from vaultpki.core.policy import render
from vaultpki.dev.provision import ProvisionSpec, default_policies_dir, static_node_policy_variables
from vaultpki.errors import ConfigError
from vaultpki.vault.admin import VaultAdmin
from vaultpki.vault.failures import translate_errors

__all__ = ["NODE_CLAIM", "JwtAuthSpec", "jwt_role", "provision_jwt_auth"]

# The pod's name in a projected service-account token, as a JSON pointer (OpenBao's bound_claims and
# claim_mappings take one for a nested claim).
NODE_CLAIM = "/kubernetes.io/pod/name"


class JwtAuthSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A jwt auth mount and its per-node roles (the variables of the Terraform module's ``jwt_auth``)."""

    path: str = "jwt"
    validation_pubkeys: tuple[str, ...] = ()     # PEM public keys of the signer (the kube-apiserver's SA keys)
    bound_issuer: str | None = None               # the tokens' "iss" (the cluster's --service-account-issuer)
    bound_audiences: tuple[str, ...] = ("vault",)
    bound_subject: str | None = None              # system:serviceaccount:<namespace>:<service account>
    node_claim: str = NODE_CLAIM
    claim_values: Mapping[str, str] = msgspec.field(default_factory=dict)    # node -> the claim's value (its name)
    token_ttl: int = 3600
    token_max_ttl: int = 86400


def jwt_role(node: str, spec: JwtAuthSpec, policy: str) -> dict[str, Any]:
    """The API body of node ``node``'s jwt role (``auth/<path>/role/node-<node>``)."""
    body: dict[str, Any] = {
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": list(spec.bound_audiences),
        # The claim must equal this node's value exactly: "string", not "glob", so no pattern can match two pods.
        "bound_claims_type": "string",
        "bound_claims": {spec.node_claim: spec.claim_values.get(node, node)},
        # The pod's name in the token's metadata (and so in the audit log): every pod has the same "sub".
        "claim_mappings": {spec.node_claim: "pod"},
        "token_policies": [policy],
        "token_no_default_policy": True,           # the node policy has all it needs (lookup-self, renew-self)
        "token_ttl": spec.token_ttl,
        "token_max_ttl": spec.token_max_ttl,
    }
    if spec.bound_subject:
        body["bound_subject"] = spec.bound_subject
    return body


def provision_jwt_auth(client: hvac.Client, addr: str, prov: ProvisionSpec, spec: JwtAuthSpec) -> tuple[str, ...]:
    """Mount jwt auth at ``spec.path`` (once), configure its signer, and give every node of ``prov.nodes``
    its static policy ``crdb-node-<node>`` and its role ``node-<node>``; the role paths made."""
    if not prov.nodes:
        raise ConfigError("jwt auth per node needs one role per node (nodes)")
    admin = VaultAdmin(client, addr)
    with translate_errors(addr, f"enabling jwt auth at {spec.path}"):
        if f"{spec.path}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("jwt", path=spec.path)
    config: dict[str, Any] = {"jwt_validation_pubkeys": list(spec.validation_pubkeys)}
    if spec.bound_issuer:
        config["bound_issuer"] = spec.bound_issuer
    admin.write(f"auth/{spec.path}/config", **config)
    template = (prov.policies_dir or default_policies_dir()) / "crdb-node.hcl.tftpl"
    made = []
    for node in prov.nodes:
        policy = f"crdb-node-{node}"
        # The static policy names the node's own PKI role; the accessor only feeds the templated one it replaces.
        admin.policy(policy, render(template.read_text(encoding="utf-8"), static_node_policy_variables(prov, "", node)))
        admin.write(f"auth/{spec.path}/role/node-{node}", **jwt_role(node, spec, policy))
        made.append(f"auth/{spec.path}/role/node-{node}")
    return tuple(made)
