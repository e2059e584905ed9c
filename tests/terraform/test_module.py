"""The Terraform module in terraform/, checked offline as strongly as this machine allows.

- `terraform fmt -check`;
- real `terraform validate` of every example, and the module's own `terraform test` (plan runs,
  mock_provider), against the hashicorp/vault 5.6.0 schema served by the schema-only stand-in;
- broken copies of the module, to show those checks bite;
- a cross-check that Terraform computes, from roles.json and policies/, exactly the role arguments
  and policy texts that the embedded provisioner applies to the real OpenBao in the integration
  tests (tests/integration/test_policies.py) — so what those tests prove is what Terraform builds.

What none of this can see: the provider's own translation of arguments into HTTP requests, and
provider-side defaults and validations (see tools/vault-schema-stub/README.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode, PkiNames, split_hosts
from vaultpki.core.policy import render
from vaultpki.dev.provision import (
    ProvisionSpec,
    cert_auth_role,
    load_roles,
    policy_variables,
    role_body,
    static_node_policy_variables,
)

from .conftest import REPO_ROOT, run_terraform

MODULE = REPO_ROOT / "terraform"
EXAMPLES = sorted(p.name for p in (MODULE / "examples").iterdir() if p.is_dir())
NODES = {"n1": ["n1.db.internal", "10.0.0.1", "localhost", "127.0.0.1"], "n2": ["n2.db.internal", "10.0.0.2"],
         "n3": ["n3.db.internal", "localhost"]}


def test_terraform_fmt(tf_env: dict[str, str]) -> None:
    run_terraform(["fmt", "-check", "-recursive", "-diff"], MODULE, tf_env).check()


def test_examples_exist_for_every_mode() -> None:
    assert EXAMPLES == sorted(m.value for m in Mode)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_validates_against_the_provider_schema(tf_env: dict[str, str], example: str) -> None:
    cwd = MODULE / "examples" / example
    run_terraform(["get"], cwd, tf_env).check()          # installs the local module; no providers, no lock file
    result = run_terraform(["validate"], cwd, tf_env).check()
    assert "Success! The configuration is valid" in result.flat_output


def test_module_terraform_test_runs_pass(tf_env: dict[str, str]) -> None:
    result = run_terraform(["test"], MODULE, tf_env).check()
    assert "0 failed" in result.flat_output and "9 passed" in result.flat_output, result.output


def test_no_lock_file_or_data_dir_left_in_the_tree() -> None:
    leftovers = [p for p in MODULE.rglob("*") if p.name in (".terraform.lock.hcl", ".terraform")]
    assert leftovers == []


@pytest.fixture
def module_copy(tmp_path: Path) -> Path:
    """terraform/ with the files it reads (../policies, ../vaultpki/data/roles.json) at the same relative places."""
    shutil.copytree(MODULE, tmp_path / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    (tmp_path / "vaultpki" / "data").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "vaultpki" / "data" / "roles.json", tmp_path / "vaultpki" / "data" / "roles.json")
    return tmp_path / "terraform"


@pytest.mark.parametrize(("old", "new", "diagnostic"), [
    pytest.param("  allow_bare_domains          =", "  allow_bare_domain =", "Unsupported argument", id="misspelt-argument"),
    pytest.param("  require_cn                  = local.role_args[each.key].require_cn", '  require_cn = "maybe"',
                 "a bool is required", id="wrong-type"),
    pytest.param("  backend  = vault_mount.ca[each.value.ca].path\n  name     = each.value.name",
                 "  name     = each.value.name", "Missing required argument", id="missing-required"),
])
def test_broken_module_copies_are_caught(tf_env: dict[str, str], module_copy: Path, old: str, new: str,
                                         diagnostic: str) -> None:
    roles_tf = module_copy / "roles.tf"
    text = roles_tf.read_text()
    assert old in text
    roles_tf.write_text(text.replace(old, new, 1))
    example = module_copy / "examples" / "standard"
    run_terraform(["get"], example, tf_env).check()
    result = run_terraform(["validate"], example, tf_env)
    assert result.returncode != 0 and diagnostic in result.flat_output, result.output


def expected_roles(mode: Mode) -> dict[str, dict[str, object]]:
    """What the embedded provisioner sends for each role (minus OpenBao-only fields Terraform cannot set)."""
    node_template = "node" if mode is Mode.STANDARD else "node-server"
    out: dict[str, dict[str, object]] = {}
    for name, hosts in NODES.items():
        dns, ips = split_hosts(hosts)
        out[f"{node_template}-{name}"] = role_body(node_template, ["node", *dns] if mode is Mode.STANDARD else list(dns),
                                                   openbao=False, node=name, ip_cidrs=[f"{ip}/32" for ip in ips])
    if mode is not Mode.STANDARD:
        out["client-node"] = role_body("client-node", ["node"], openbao=False)
    out["user"] = role_body("user", [], openbao=False)
    out["root"] = role_body("root", ["root"], openbao=False)
    for body in out.values():
        body.setdefault("allowed_domains", [])
    return out


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_terraform_computes_what_the_provisioner_applies(tf_env: dict[str, str], module_copy: Path, mode: Mode) -> None:
    accessor = "auth_approle_mock"
    (module_copy / "tests" / "module.tftest.hcl").unlink()
    (module_copy / "tests" / "expected-roles.json").write_text(json.dumps(expected_roles(mode)))
    pki = PkiNames(mount="pki-crdb", client_mount="pki-crdb-client" if mode is Mode.SPLIT_CA else None,
                   node_role="node" if mode is Mode.STANDARD else "node-server", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    policies = policy_variables(ProvisionSpec(mode=mode, pki=pki, node_hosts=()), accessor)
    policies.pop("crdb-user-self")              # only with a user auth mount (not set in this run)
    asserts = []
    for name, variables in policies.items():
        text = render((REPO_ROOT / "policies" / f"{name}.hcl.tftpl").read_text(), variables)
        (module_copy / "tests" / f"expected-{name}.hcl").write_text(text)
        asserts.append(f'''  assert {{
    condition     = vault_policy.policy["{name}"].policy == file("tests/expected-{name}.hcl")
    error_message = "Terraform and the embedded provisioner render {name} differently"
  }}''')
    nodes = "\n".join(f'    {n} = {{ hosts = {json.dumps(h)} }}' for n, h in NODES.items())
    (module_copy / "tests" / "crosscheck.tftest.hcl").write_text(f'''
mock_provider "vault" {{
  override_during = plan
  mock_resource "vault_auth_backend" {{
    defaults = {{ accessor = "{accessor}" }}
  }}
}}

run "same_values" {{
  command = plan
  variables {{
    mode         = "{mode.value}"
    aia_base_url = "https://vault.internal:8200"
    root_mount   = "pki-root"
    nodes = {{
{nodes}
    }}
  }}
  assert {{
    condition     = jsonencode(output.role_arguments) == jsonencode(jsondecode(file("tests/expected-roles.json")))
    error_message = "Terraform and the embedded provisioner compute different role arguments"
  }}
{chr(10).join(asserts)}
}}
''')
    result = run_terraform(["test"], module_copy, tf_env)
    assert result.returncode == 0 and "1 passed, 0 failed" in result.flat_output, result.output


# Names cannot tell these nodes apart: n1 and n2 share localhost and a load balancer name; n3 has only an IP.
SHARING = {"n1": ["n1.db.internal", "lb.db.internal", "localhost", "127.0.0.1"],
           "n2": ["n2.db.internal", "lb.db.internal", "localhost", "127.0.0.1"], "n3": ["10.0.0.3"]}


def test_terraform_makes_the_provisioners_cert_auth_roles(tf_env: dict[str, str], module_copy: Path) -> None:
    """Each node's cert-auth role and static policy, as Terraform computes them, are exactly what the embedded
    provisioner applies to the real OpenBao in tests/integration/test_node_identity.py: CN=node, the node's
    own OU (the value its PKI role sets), no DNS-name binding, no default policy."""
    accessor = "auth_approle_mock"
    (module_copy / "tests" / "module.tftest.hcl").unlink()
    pki = PkiNames(mount="pki-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    spec = ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=(), nodes={n: tuple(h) for n, h in SHARING.items()},
                         access=True, cert_auth=True)
    expected = {name: cert_auth_role(name) for name in SHARING}
    assert len({tuple(e["allowed_organizational_units"]) for e in expected.values()}) == len(SHARING)
    (module_copy / "tests" / "expected-cert-roles.json").write_text(json.dumps(expected))
    template = (REPO_ROOT / "policies" / "crdb-node.hcl.tftpl").read_text()
    for name in SHARING:
        text = render(template, static_node_policy_variables(spec, accessor, name))
        (module_copy / "tests" / f"expected-crdb-node-{name}.hcl").write_text(text)
    nodes = "\n".join(f'    {n} = {{ hosts = {json.dumps(h)} }}' for n, h in SHARING.items())
    (module_copy / "tests" / "crosscheck.tftest.hcl").write_text(f'''
mock_provider "vault" {{
  override_during = plan
  mock_resource "vault_auth_backend" {{
    defaults = {{ accessor = "{accessor}" }}
  }}
}}

run "same_cert_roles" {{
  command = plan
  variables {{
    mode         = "standard"
    aia_base_url = "https://vault.internal:8200"
    root_mount   = "pki-root"
    cert_auth    = {{ enabled = true }}
    nodes = {{
{nodes}
    }}
  }}
  assert {{
    condition = alltrue([for n, want in jsondecode(file("tests/expected-cert-roles.json")) :
      alltrue([for field, value in want : jsonencode(vault_cert_auth_backend_role.node[n][field]) == jsonencode(value)])])
    error_message = "Terraform and the embedded provisioner make different cert-auth roles"
  }}
  assert {{
    condition     = alltrue([for n, r in vault_cert_auth_backend_role.node : r.allowed_dns_sans == null && r.allowed_names == null])
    error_message = "a cert role binds a node by a name"
  }}
  assert {{
    condition = alltrue([for n, r in vault_cert_auth_backend_role.node :
      r.token_policies == toset([vault_policy.node_static[n].name])
      && vault_policy.node_static[n].policy == file("tests/expected-crdb-node-${{n}}.hcl")])
    error_message = "Terraform and the embedded provisioner render the static node policies differently"
  }}
}}
''')
    result = run_terraform(["test"], module_copy, tf_env)
    assert result.returncode == 0 and "1 passed, 0 failed" in result.flat_output, result.output


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_terraform_allows_no_ip_san_where_a_host_list_has_no_ip(tf_env: dict[str, str], module_copy: Path,
                                                                mode: Mode) -> None:
    """Issue 16 §3: with allow_ip_sans on, Vault signs any IP. A node or UI role whose hosts hold no IP
    gets allow_ip_sans = false, exactly as role_body (and so the provisioner) computes it; one with IPs
    keeps it (Terraform cannot pin the IPs: the provider has no allowed_ip_sans_cidr)."""
    (module_copy / "tests" / "module.tftest.hcl").unlink()
    node_template = "node" if mode is Mode.STANDARD else "node-server"
    for hosts in (["n3.db.internal"], ["n1.db.internal", "10.0.0.1"]):
        dns, ips = split_hosts(hosts)
        assert role_body(node_template, dns, openbao=False, ip_cidrs=[f"{ip}/32" for ip in ips])["allow_ip_sans"] is bool(ips)
    mounts = '{ node = "pki-crdb", client = "pki-crdb-client", ui = "pki-web" }'
    runs = []
    for label, ui_hosts, ui_ip in (("ui_without_ip", ["console.db.internal"], "false"),
                                   ("ui_with_ip", ["console.db.internal", "10.9.0.1"], "true")):
        runs.append(f'''
run "{label}" {{
  command = plan
  variables {{
    mode         = "{mode.value}"
    aia_base_url = "https://vault.internal:8200"
    root_mount   = "pki-root"
    mounts       = {mounts}
    ui_hosts     = {json.dumps(ui_hosts)}
    nodes = {{
      n1 = {{ hosts = ["n1.db.internal", "10.0.0.1", "localhost"] }}
      n3 = {{ hosts = ["n3.db.internal", "localhost"] }}
      n4 = {{ hosts = ["10.0.0.4"] }}
    }}
  }}
  assert {{
    condition     = alltrue([for n in ["n1", "n4"] : vault_pki_secret_backend_role.role["node-${{n}}"].allow_ip_sans])
    error_message = "a node whose hosts hold an IP may sign IP SANs"
  }}
  assert {{
    condition     = vault_pki_secret_backend_role.role["node-n3"].allow_ip_sans == false
    error_message = "a node whose hosts hold no IP signs no IP SAN"
  }}
  assert {{
    condition     = vault_pki_secret_backend_role.role["ui"].allow_ip_sans == {ui_ip}
    error_message = "the UI role signs IP SANs exactly when ui_hosts holds an IP"
  }}
  assert {{
    condition = alltrue([for k, r in vault_pki_secret_backend_role.role :
      r.allow_ip_sans == output.role_arguments[r.name].allow_ip_sans])
    error_message = "role_arguments (what the cross-check compares) and the roles differ on allow_ip_sans"
  }}
  assert {{
    condition     = alltrue([for k in ["user", "root"] : !vault_pki_secret_backend_role.role[k].allow_ip_sans])
    error_message = "client roles never sign IP SANs"
  }}
}}
''')
    (module_copy / "tests" / "ip_sans.tftest.hcl").write_text(
        'mock_provider "vault" {\n  override_during = plan\n}\n' + "".join(runs))
    result = run_terraform(["test"], module_copy, tf_env)
    assert result.returncode == 0 and "2 passed, 0 failed" in result.flat_output, result.output


def test_every_role_in_roles_json_is_used_by_the_module() -> None:
    roles_tf = (MODULE / "roles.tf").read_text()
    for template in load_roles()["roles"]:
        assert f'template = "{template}"' in roles_tf or (template in ("node", "node-server") and "node_template" in roles_tf), \
            template
