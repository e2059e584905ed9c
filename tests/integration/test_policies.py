"""The ACL policies in policies/, proven against a real OpenBao: who may sign what, cell by cell.

Read this next to policies/*.hcl.tftpl. Every cell sends one real request with a real
token of one actor and asserts the outcome: issued (and what the certificate says),
403 (the ACL refused) or 400 (the PKI role refused).

The deployment is split-node with two nodes, n1 and n2, each with its own PKI role
("node-server-n1") and its own AppRole role; the node policy reaches the PKI role named
after the caller's AppRole role, so one policy serves every node.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.policy import POLICY_NAMES, render
from vaultpki.dev.devserver import DevServer, find_bao
from vaultpki.dev.provision import Provisioned, ProvisionSpec, default_policies_dir, policy_variables, provision

from .conftest import run_cli

NODES = {"n1": ("n1.db.internal", "10.0.0.1"), "n2": ("n2.db.internal", "10.0.0.2")}
PKI = PkiNames(mount="pol-crdb", client_mount=None, node_role="node-server", client_node_role="client-node",
               user_role="user", ui_mount="pol-web", ui_role="ui")
CASES = [
    "".join(c) for c in itertools.product(*[(ch.lower(), ch.upper()) for ch in "root"])
] + ["node", "NODE", "nOdE", "Node"]


@dataclass
class Actors:
    server: DevServer
    admin: hvac.Client
    provisioned: Provisioned
    tokens: dict[str, hvac.Client]


def client_for(server: DevServer, token: str) -> hvac.Client:
    return hvac.Client(url=server.addr, token=token)


@pytest.fixture(scope="module")
def actors(bao: DevServer) -> Actors:
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    done = provision(admin, bao.addr, ProvisionSpec(
        mode=Mode.SPLIT_NODE, pki=PKI, node_hosts=(), ui_hosts=("console.db.internal",), root_mount="pol-root",
        nodes=NODES, access=True))
    tokens: dict[str, hvac.Client] = {}
    for node in NODES:
        role_id = admin.read(f"auth/approle/role/{node}/role-id")["data"]["role_id"]
        secret_id = admin.write_data(f"auth/approle/role/{node}/secret-id", data={})["data"]["secret_id"]
        login = admin.write_data("auth/approle/login", data={"role_id": role_id, "secret_id": secret_id})
        tokens[node] = client_for(bao, login["auth"]["client_token"])
    for actor, policies in {"operator": ["crdb-operator"], "root-operator": ["crdb-root-operator"],
                            "operator+root": ["crdb-operator", "crdb-root-operator"], "ui": ["crdb-ui"]}.items():
        token = admin.auth.token.create(policies=policies, no_default_policy=True, ttl="1h")["auth"]["client_token"]
        tokens[actor] = client_for(bao, token)
    for user in ("marc", "alice"):
        admin.write_data(f"auth/userpass/users/{user}", data={"password": f"{user}-pw", "token_policies": "crdb-user-self"})
        login = admin.write_data(f"auth/userpass/login/{user}", data={"password": f"{user}-pw"})
        tokens[user] = client_for(bao, login["auth"]["client_token"])
    return Actors(bao, admin, done, tokens)


def csr(cn: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> str:
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    return crypto.build_csr(key, cn, dns, ips).decode()


def attempt(client: hvac.Client, path: str, **data: Any) -> tuple[str, crypto.CertInfo | None]:
    """('issued', info) | ('403', None) | ('400', None)."""
    try:
        response = client.write_data(path, data=data)
    except hvac.exceptions.Forbidden:
        return "403", None
    except hvac.exceptions.InvalidRequest:
        return "400", None
    cert = (response.get("data") or {}).get("certificate")
    return ("issued", crypto.describe(crypto.load_certs(cert.encode())[0])) if cert else ("ok", None)


S = "pol-crdb/sign"
SERVER = "pol-crdb/sign/node-server"
# What vaultpki sends with every client certificate's request: the CN stays out of the DNS SANs.
CN_ONLY = {"exclude_cn_from_sans": True}

# (actor, path, request fields, expected outcome, expected CN of an issued certificate)
MATRIX = [
    # --- node n1: only its own names, only sign, only csr + ttl --------------------------------
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal", ("n1.db.internal",), ("10.0.0.1",))}, "issued", "n1.db.internal"),
    ("n2", f"{SERVER}-n2", {"csr": csr("n2.db.internal", ("n2.db.internal",))}, "issued", "n2.db.internal"),
    ("n1", f"{S}/client-node", {"csr": csr("node")}, "issued", "node"),
    ("n1", f"{S}/client-node", {"csr": csr("node"), **CN_ONLY}, "issued", "node"),
    ("n1", f"{S}/client-node", {"csr": csr("node"), "exclude_cn_from_sans": False}, "403", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal", ("n1.db.internal",)), **CN_ONLY}, "403", None),
    ("n1", f"{SERVER}-n2", {"csr": csr("n2.db.internal", ("n2.db.internal",))}, "403", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n2.db.internal")}, "400", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal", ("n1.db.internal", "n2.db.internal"))}, "400", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal", ("n1.db.internal",), ("10.0.0.2",))}, "400", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("root")}, "400", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("marc")}, "400", None),
    ("n1", f"{S}/client-node", {"csr": csr("root")}, "400", None),
    ("n1", f"{S}/client-node", {"csr": csr("marc")}, "400", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal"), "not_after": "2099-01-01T00:00:00Z"}, "403", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal"), "common_name": "n1.db.internal"}, "403", None),
    ("n1", f"{SERVER}-n1", {"csr": csr("n1.db.internal"), "alt_names": "n2.db.internal"}, "403", None),
    ("n1", "pol-crdb/issue/node-server-n1", {"common_name": "n1.db.internal"}, "403", None),
    ("n1", "pol-crdb/sign-verbatim", {"csr": csr("root")}, "403", None),
    ("n1", "pol-crdb/sign-verbatim/node-server-n1", {"csr": csr("root")}, "403", None),
    ("n1", "pol-crdb/root/sign-intermediate", {"csr": csr("evil CA"), "common_name": "evil CA"}, "403", None),
    ("n1", "pol-root/root/sign-intermediate", {"csr": csr("evil CA"), "common_name": "evil CA"}, "403", None),
    ("n1", "pol-crdb/issuers/generate/root/internal", {"common_name": "evil"}, "403", None),
    ("n1", "pol-crdb/intermediate/generate/internal", {"common_name": "evil"}, "403", None),
    ("n1", "pol-crdb/roles/node-server-n1", {"allowed_domains": "root"}, "403", None),
    ("n1", f"{S}/user", {"csr": csr("marc"), "common_name": "marc"}, "403", None),
    ("n1", f"{S}/root", {"csr": csr("root"), "common_name": "root"}, "403", None),
    ("n1", "pol-crdb/issuer/default/sign/node-server-n1", {"csr": csr("n1.db.internal")}, "403", None),
    ("n1", "sys/policies/acl/crdb-node", {"policy": 'path "*" { capabilities = ["sudo"] }'}, "403", None),
    # --- operator: ordinary users only --------------------------------------------------------
    ("operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc"}, "issued", "marc"),
    ("operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc", **CN_ONLY}, "issued", "marc"),
    ("operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc", "exclude_cn_from_sans": False}, "403", None),
    ("operator", f"{S}/user", {"csr": csr("root", ("root",)), "common_name": "alice"}, "issued", "alice"),
    *[("operator", f"{S}/user", {"csr": csr("x"), "common_name": name}, "403", None) for name in CASES],
    ("operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc", "alt_names": "root"}, "403", None),
    ("operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc", "not_after": "2099-01-01T00:00:00Z"}, "403", None),
    ("operator", f"{S}/root", {"csr": csr("root"), "common_name": "root"}, "403", None),
    ("operator", f"{S}/client-node", {"csr": csr("node")}, "403", None),
    ("operator", f"{SERVER}-n1", {"csr": csr("n1.db.internal")}, "403", None),
    ("operator", "pol-crdb/sign-verbatim", {"csr": csr("root")}, "403", None),
    ("operator", "pol-crdb/issue/user", {"common_name": "marc"}, "403", None),
    # --- root operator: CN=root, on the root role, and nothing else --------------------------------
    ("root-operator", f"{S}/root", {"csr": csr("root"), "common_name": "root"}, "issued", "root"),
    ("root-operator", f"{S}/root", {"csr": csr("root"), "common_name": "root", **CN_ONLY}, "issued", "root"),
    ("root-operator", f"{S}/root", {"csr": csr("marc"), "common_name": "marc"}, "403", None),
    ("root-operator", f"{S}/user", {"csr": csr("marc"), "common_name": "marc"}, "403", None),
    ("operator+root", f"{S}/user", {"csr": csr("root"), "common_name": "root"}, "403", None),
    ("operator+root", f"{S}/root", {"csr": csr("root"), "common_name": "root"}, "issued", "root"),
    # --- users: their own name only ---------------------------------------------------------------
    ("marc", f"{S}/user-self", {"csr": csr("marc"), "common_name": "marc"}, "issued", "marc"),
    ("marc", f"{S}/user-self", {"csr": csr("marc"), "common_name": "marc", **CN_ONLY}, "issued", "marc"),
    ("alice", f"{S}/user-self", {"csr": csr("alice"), "common_name": "alice"}, "issued", "alice"),
    ("marc", f"{S}/user-self", {"csr": csr("marc", ("root", "alice")), "common_name": "marc"}, "issued", "marc"),
    ("marc", f"{S}/user-self", {"csr": csr("alice"), "common_name": "alice"}, "400", None),
    ("marc", f"{S}/user-self", {"csr": csr("root"), "common_name": "root"}, "400", None),
    ("marc", f"{S}/user-self", {"csr": csr("marc"), "common_name": "marc", "alt_names": "alice"}, "403", None),
    ("marc", f"{S}/user-self", {"csr": csr("marc"), "common_name": "marc", "not_after": "2099-01-01T00:00:00Z"}, "403", None),
    ("marc", f"{S}/user", {"csr": csr("marc"), "common_name": "marc"}, "403", None),
    # --- ui: the UI role only ---------------------------------------------------------------------
    ("ui", "pol-web/sign/ui", {"csr": csr("console.db.internal", ("console.db.internal",))}, "issued", "console.db.internal"),
    ("ui", "pol-web/sign/ui", {"csr": csr("root")}, "400", None),
    ("ui", "pol-web/sign/ui", {"csr": csr("console.db.internal", ("console.db.internal",)), **CN_ONLY}, "403", None),
    ("ui", f"{SERVER}-n1", {"csr": csr("n1.db.internal")}, "403", None),
    ("ui", f"{S}/user", {"csr": csr("marc"), "common_name": "marc"}, "403", None),
]


def cell_id(cell: tuple[str, str, dict[str, Any], str, str | None]) -> str:
    actor, path, fields, outcome, _ = cell
    extra = ",".join(f"{k}={v}" for k, v in fields.items() if k != "csr")
    return f"{actor}:{path.split('/', 1)[1]}:{extra or 'csr'}->{outcome}"


@pytest.mark.parametrize("cell", MATRIX, ids=[cell_id(c) for c in MATRIX])
def test_policy_matrix(actors: Actors, cell: tuple[str, str, dict[str, Any], str, str | None]) -> None:
    actor, path, fields, expected, cn = cell
    outcome, info = attempt(actors.tokens[actor], path, **fields)
    assert outcome == expected
    if info is not None:
        assert info.common_name == cn
        if info.ekus is not None and info.ekus == {crypto.Eku.CLIENT_AUTH}:
            # A client certificate never names anyone but its own CN (each DNS SAN is a SQL identity); asked as
            # vaultpki asks, it names its user in the CN alone (a CA's name constraints never see the name).
            assert set(info.dns_sans) <= {cn} and info.ip_sans == () and info.uri_sans == ()
            if fields.get("exclude_cn_from_sans") is True:
                assert info.dns_sans == ()


def test_node_tokens_renew_and_look_up_themselves_only(actors: Actors) -> None:
    n1 = actors.tokens["n1"]
    assert n1.auth.token.lookup_self()["data"]["policies"] == ["crdb-node"]
    assert n1.auth.token.renew_self()["auth"]["client_token"] == n1.token
    with pytest.raises(hvac.exceptions.Forbidden):
        n1.auth.token.lookup(actors.tokens["n2"].token)
    with pytest.raises(hvac.exceptions.Forbidden):
        n1.auth.token.create(policies=["crdb-node"])


def test_operator_revokes_and_lists(actors: Actors) -> None:
    operator = actors.tokens["operator"]
    outcome, info = attempt(operator, f"{S}/user", csr=csr("bob"), common_name="bob")
    assert outcome == "issued" and info is not None
    assert info.serial in operator.list("pol-crdb/certs")["data"]["keys"]
    revoked = operator.write_data("pol-crdb/revoke", data={"serial_number": info.serial})
    assert revoked["data"]["revocation_time"] > 0
    with pytest.raises(hvac.exceptions.Forbidden):
        actors.tokens["n1"].write_data("pol-crdb/revoke", data={"serial_number": info.serial})


# --- the same policy files, checked offline ---------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(actors: Actors) -> dict[str, str]:
    return dict(actors.provisioned.policies)


def test_every_policy_file_is_used(rendered: dict[str, str]) -> None:
    files = {p.name.removesuffix(".hcl.tftpl") for p in default_policies_dir().glob("*.hcl.tftpl")}
    assert files == set(POLICY_NAMES) == set(rendered)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_bao_policy_fmt_accepts_each_rendered_policy(rendered: dict[str, str], tmp_path: Path, name: str) -> None:
    """`bao policy fmt` parses the HCL and checks the capabilities offline; it rewrites in place, so on a copy."""
    copy = tmp_path / f"{name}.hcl"
    copy.write_text(rendered[name])
    result = subprocess.run([find_bao(), "policy", "fmt", str(copy)], capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert copy.read_text().strip() != ""


def test_bao_policy_fmt_catches_a_typo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hcl"
    bad.write_text('path "x/sign/y" {\n  capabilities = ["updat"]\n}\n')
    result = subprocess.run([find_bao(), "policy", "fmt", str(bad)], capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode != 0 and "updat" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def terraform_console(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """Evaluate an expression with the real Terraform (no provider needed for templatefile())."""
    terraform = shutil.which("terraform")
    assert terraform, "terraform is needed to cross-check the policy renderer"
    work = tmp_path_factory.mktemp("tfconsole")
    (work / "cli.tfrc").write_text("")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(work), "TF_CLI_CONFIG_FILE": str(work / "cli.tfrc"),
           "TF_DATA_DIR": str(work / ".terraform"), "CHECKPOINT_DISABLE": "1"}

    def evaluate(expression: str) -> str:
        result = subprocess.run([terraform, "console"], input=expression, capture_output=True, text=True,
                                cwd=work, env=env, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        import json
        return str(json.loads(json.loads(result.stdout.strip())))
    return evaluate


def hcl(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hcl(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("${", "$${").replace("%{", "%%{") + '"'


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_renderer_matches_terraform_templatefile(terraform_console: Callable[[str], str], mode: Mode) -> None:
    pki = PkiNames(mount="m", client_mount="mc" if mode is Mode.SPLIT_CA else None, node_role="node",
                   client_node_role="client-node", user_role="user", ui_mount="web", ui_role="ui")
    spec = ProvisionSpec(mode=mode, pki=pki, node_hosts=("h",))
    for name, variables in policy_variables(spec, "auth_approle_1234").items():
        path = default_policies_dir() / f"{name}.hcl.tftpl"
        args = ", ".join(f"{k} = {hcl(v)}" for k, v in variables.items())
        expected = terraform_console(f'nonsensitive(jsonencode(templatefile("{path}", {{ {args} }})))')
        assert render(path.read_text(), variables) == expected, name


# --- and end to end: vaultpki with those policies, in every mode ---------------------------------------

@pytest.fixture(scope="module")
def approle_login() -> Iterator[Callable[[hvac.Client, str, Path], dict[str, str]]]:
    def make(admin: hvac.Client, node: str, base: Path) -> dict[str, str]:
        role_id = admin.read(f"auth/approle/role/{node}/role-id")["data"]["role_id"]
        secret_id = admin.write_data(f"auth/approle/role/{node}/secret-id", data={})["data"]["secret_id"]
        secret = base / f"{node}.secret-id"
        secret.write_text(secret_id)
        secret.chmod(0o600)
        return {"auth": "approle", "role_id": role_id, "secret_id_file": str(secret)}
    yield make


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_vaultpki_issues_with_least_privilege_in_every_mode(
    actors: Actors, approle_login: Callable[[hvac.Client, str, Path], dict[str, str]], tmp_path: Path, mode: Mode,
) -> None:
    """The node policy, an AppRole per node, the operator and root-operator policies: enough, and no more."""
    from .conftest import toml_dump
    prefix = f"lp-{mode.value}"
    pki = PkiNames(mount=f"{prefix}-crdb", client_mount=f"{prefix}-client" if mode is Mode.SPLIT_CA else None,
                   node_role="node" if mode is Mode.STANDARD else "node-server", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    admin, server = actors.admin, actors.server
    # A second AppRole role for this deployment's node (role names are global to the auth mount).
    node = f"{prefix}-n1"
    provision(admin, server.addr, ProvisionSpec(mode=mode, pki=pki, node_hosts=(), root_mount=f"{prefix}-root",
                                                nodes={node: ("n1.db.internal", "localhost", "127.0.0.1")}, access=True))
    for name, text in provision_policies(actors, mode, pki).items():
        admin.sys.create_or_update_acl_policy(f"{prefix}-{name}", text)
    admin.write_data(f"auth/approle/role/{node}", data={"token_policies": [f"{prefix}-crdb-node"],
                                                        "token_no_default_policy": True, "token_ttl": "1h"})
    doc: dict[str, Any] = {
        "certs_dir": str(tmp_path / "certs"), "mode": mode.value, "ttl": "1h",
        "vault": {"addr": server.addr, **approle_login(admin, node, tmp_path)},
        "pki": {"mount": pki.mount, "node_role": f"{pki.node_role}-{node}", **(
            {"client_mount": pki.client_mount} if pki.client_mount else {})},
        "node": {"hosts": ["n1.db.internal", "localhost", "127.0.0.1"]},
    }
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump(doc))
    result = run_cli(["--config", str(config), "issue-node"])
    assert result.returncode == 0, result.stderr
    assert run_cli(["--config", str(config), "verify"]).returncode == 0
    operator_doc = dict(doc, vault={"addr": server.addr})
    config.write_text(toml_dump(operator_doc))
    tokens = {who: admin.auth.token.create(policies=[f"{prefix}-crdb-{who}"], no_default_policy=True,
                                           ttl="10m")["auth"]["client_token"] for who in ("operator", "root-operator")}
    marc = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(tmp_path / "marc")],
                   {"VAULT_TOKEN": tokens["operator"]})
    assert marc.returncode == 0, marc.stderr
    denied = run_cli(["--config", str(config), "issue-user", "root", "--certs-dir", str(tmp_path / "root")],
                     {"VAULT_TOKEN": tokens["operator"]})
    assert denied.returncode == 1 and "Vault denied" in denied.stderr and not (tmp_path / "root").exists()
    root = run_cli(["--config", str(config), "issue-user", "root", "--certs-dir", str(tmp_path / "root")],
                   {"VAULT_TOKEN": tokens["root-operator"]})
    assert root.returncode == 0, root.stderr
    # Every client certificate names its user in the CN alone: no DNS SAN, under exactly these policies.
    clients = [tmp_path / "marc" / "client.marc.crt", tmp_path / "root" / "client.root.crt"]
    if mode is not Mode.STANDARD:
        clients.append(tmp_path / "certs" / "client.node.crt")
    for path in clients:
        info = crypto.describe(crypto.load_certs(path.read_bytes())[0])
        assert (info.common_name, info.dns_sans, info.ip_sans) == (path.name.split(".")[1], (), ()), path


def provision_policies(actors: Actors, mode: Mode, pki: PkiNames) -> dict[str, str]:
    accessor = actors.provisioned.approle_accessor
    assert accessor is not None
    spec = ProvisionSpec(mode=mode, pki=pki, node_hosts=())
    return {name: render((default_policies_dir() / f"{name}.hcl.tftpl").read_text(), variables)
            for name, variables in policy_variables(spec, accessor).items()}
