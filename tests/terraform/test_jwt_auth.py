"""The module's jwt auth per node is exactly what the embedded provisioner writes to the real OpenBao in
tests/integration/test_auth_jwt.py: the same role arguments (read from the module's plan) and the same
static node policies, so what those tests prove is what Terraform builds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.policy import render
from vaultpki.dev.jwt_auth import JwtAuthSpec, jwt_role
from vaultpki.dev.provision import ProvisionSpec, static_node_policy_variables

from .conftest import REPO_ROOT, run_terraform

NODES = {"cockroachdb-0": ["cockroachdb-0.crdb.internal", "localhost"], "n2": ["n2.db.internal", "10.0.0.2"]}
SPEC = JwtAuthSpec(validation_pubkeys=("-----BEGIN PUBLIC KEY-----\nmock\n-----END PUBLIC KEY-----\n",),
                   bound_issuer="https://kubernetes.default.svc.cluster.local",
                   bound_subject="system:serviceaccount:crdb:cockroachdb", claim_values={"n2": "cockroachdb-1"},
                   token_ttl=600, token_max_ttl=7200)
# The provider's arguments that are not API fields of the role (or are its path).
NOT_ROLE_FIELDS = {"backend", "role_name", "namespace", "id"}


def planned(tf_env: dict[str, str], base: Path, mode: Mode) -> list[dict[str, Any]]:
    """The module's plan (terraform test, mocked provider, -verbose -json) with ``SPEC`` as ``jwt_auth``."""
    shutil.copytree(REPO_ROOT / "terraform", base / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    shutil.copytree(REPO_ROOT / "policies", base / "policies")
    (base / "vaultpki" / "data").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "vaultpki" / "data" / "roles.json", base / "vaultpki" / "data" / "roles.json")
    for old in (base / "terraform" / "tests").glob("*.tftest.hcl"):
        old.unlink()
    nodes = "\n".join(f"      {json.dumps(n)} = {{ hosts = {json.dumps(h)} }}" for n, h in NODES.items())
    (base / "terraform" / "tests" / "jwt.tftest.hcl").write_text(f'''
mock_provider "vault" {{
  override_during = plan
  mock_resource "vault_auth_backend" {{
    defaults = {{ accessor = "auth_approle_mock" }}
  }}
}}

run "jwt" {{
  command = plan
  variables {{
    mode         = "{mode.value}"
    aia_base_url = "https://vault.internal:8200"
    root_mount   = "pki-root"
    nodes = {{
{nodes}
    }}
    jwt_auth = {{
      enabled            = true
      validation_pubkeys = {json.dumps(list(SPEC.validation_pubkeys))}
      bound_issuer       = {json.dumps(SPEC.bound_issuer)}
      bound_subject      = {json.dumps(SPEC.bound_subject)}
      claim_values       = {{ n2 = "cockroachdb-1" }}
      token_ttl          = {SPEC.token_ttl}
      token_max_ttl      = {SPEC.token_max_ttl}
    }}
  }}
}}
''')
    result = run_terraform(["test", "-json", "-verbose"], base / "terraform", tf_env).check()
    for line in result.stdout.splitlines():
        changes = (json.loads(line).get("test_plan") or {}).get("resource_changes")
        if changes:
            return list(changes)
    raise AssertionError(f"no plan in the output of terraform test:\n{result.output[-3000:]}")


def as_api(args: dict[str, Any]) -> dict[str, Any]:
    """Planned arguments as the API takes them: the set ones, sets and lists as sorted lists."""
    return {k: sorted(v) if isinstance(v, list) else v for k, v in args.items() if k not in NOT_ROLE_FIELDS and v is not None}


def test_terraform_makes_the_provisioners_jwt_roles_and_static_policies(tf_env: dict[str, str], tmp_path: Path) -> None:
    mode = Mode.SPLIT_NODE
    changes = planned(tf_env, tmp_path, mode)
    roles = {c["index"]: c["change"]["after"] for c in changes if c["type"] == "vault_jwt_auth_backend_role"}
    policies = {c["index"]: c["change"]["after"]["policy"] for c in changes if c["address"].startswith("vault_policy.node_static")}
    backend = next(c["change"]["after"] for c in changes if c["type"] == "vault_jwt_auth_backend")
    assert set(roles) == set(NODES) == set(policies)
    pki = PkiNames(mount="pki-crdb", client_mount=None, node_role="node-server", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    prov = ProvisionSpec(mode=mode, pki=pki, node_hosts=(), nodes={n: tuple(h) for n, h in NODES.items()})
    template = (REPO_ROOT / "policies" / "crdb-node.hcl.tftpl").read_text()
    for node in NODES:
        assert roles[node]["role_name"] == f"node-{node}" and roles[node]["backend"] == SPEC.path
        assert as_api(roles[node]) == as_api(jwt_role(node, SPEC, f"crdb-node-{node}")), node
        assert policies[node] == render(template, static_node_policy_variables(prov, "", node)), node
    assert roles["n2"]["bound_claims"] == {"/kubernetes.io/pod/name": "cockroachdb-1"}
    assert backend["jwt_validation_pubkeys"] == list(SPEC.validation_pubkeys)
    assert backend["bound_issuer"] == SPEC.bound_issuer and backend["path"] == SPEC.path
