"""AppRole as the Terraform module sets it up, with the shipped deployments' login sequences, and when
vaultpki logs in again (issue 16, section 2), against a real OpenBao.

- The AppRole role of each node is written with exactly the arguments `terraform test` plans for
  ``vault_approle_auth_backend_role.node`` from terraform/variables.tf and auth.tf (the module's defaults),
  read from the plan, so these tests follow the files.
- The systemd unit's ExecStartPre (``sync --once``) then its ExecStart (``sync``), and the Kubernetes
  example's init container then its sidecar, are run as those files say: two processes, two logins.
- The daemon logs in again when its token reaches the role's ``token_max_ttl`` (shortened here).
- A request denied by policy is one login and "Vault denied …"; a revoked or expired token is one new
  login and success.

Logins are counted in the server's audit log (a file audit device, raw), by role-id.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml

from vaultpki.config import parse
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.errors import VaultDenied
from vaultpki.vault.client import HttpVault

from ..terraform.conftest import REPO_ROOT, _tf_session_env, run_terraform, vault_schema_tgz  # noqa: F401  (fixtures)
from .conftest import SHORT, run_cli, toml_dump
from .daemon_proc import SyncDaemon, msg
from .test_auth import secret_file
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

UNIT = REPO_ROOT / "deploy" / "systemd" / "vaultpki-sync.service"
K8S = REPO_ROOT / "deploy" / "kubernetes" / "cockroachdb-with-vaultpki.yaml"
PKI = PkiNames(mount="tf-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
HOSTS = ("n.db.internal", "localhost", "127.0.0.1")
# One AppRole role (= node) per test, so that each test counts only its own logins.
NODES = ("systemd", "k8s", "maxttl", "denied-cli", "denied-api", "revoked", "expired")

# The provider's arguments that are not API fields of the role (or are its path).
_NOT_ROLE_FIELDS = {"backend", "role_name", "namespace", "role_id", "id"}

MOCKS = """
mock_provider "vault" {
  override_during = plan
  mock_resource "vault_auth_backend" {
    defaults = { accessor = "auth_approle_mock" }
  }
  mock_resource "vault_pki_secret_backend_intermediate_set_signed" {
    defaults = { imported_issuers = ["issuer-mock"] }
  }
  mock_resource "vault_pki_secret_backend_issuer" {
    defaults = { issuer_id = "issuer-id-mock" }
  }
  mock_resource "vault_pki_secret_backend_root_sign_intermediate" {
    defaults = { certificate = "-----BEGIN CERTIFICATE-----\\nmock\\n-----END CERTIFICATE-----\\n" }
  }
}

run "defaults" {
  command = plan
  variables {
    aia_base_url = "https://vault.internal:8200"
    root_mount   = "pki-root"
    nodes        = { n1 = { hosts = ["n1.db.internal"] } }
  }
}
"""


@pytest.fixture(scope="module")
def module_approle(tmp_path_factory: pytest.TempPathFactory, _tf_session_env: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    """The AppRole role arguments the module plans for a node with every approle default (terraform test,
    mocked provider, -verbose -json: the plan of the run)."""
    base = tmp_path_factory.mktemp("tf-approle")
    shutil.copytree(REPO_ROOT / "terraform", base / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    shutil.copytree(REPO_ROOT / "policies", base / "policies")
    (base / "vaultpki" / "data").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "vaultpki" / "data" / "roles.json", base / "vaultpki" / "data" / "roles.json")
    for old in (base / "terraform" / "tests").glob("*.tftest.hcl"):
        old.unlink()
    (base / "terraform" / "tests" / "approle.tftest.hcl").write_text(MOCKS)
    result = run_terraform(["test", "-json", "-verbose"], base / "terraform", dict(_tf_session_env)).check()
    for line in result.stdout.splitlines():
        event = json.loads(line)
        for change in (event.get("test_plan") or {}).get("resource_changes", []):
            if change["type"] == "vault_approle_auth_backend_role" and change["index"] == "n1":
                return dict(change["change"]["after"])
    pytest.fail(f"the plan has no vault_approle_auth_backend_role.node[\"n1\"]:\n{result.output[-3000:]}")


def role_fields(planned: dict[str, Any], **override: Any) -> dict[str, Any]:
    """The planned arguments as the AppRole API takes them (what the provider sends: the set ones)."""
    fields = {k: v for k, v in planned.items() if k not in _NOT_ROLE_FIELDS and v is not None}
    return fields | override


@dataclass
class Lab:
    server: DevServer
    admin: hvac.Client
    audit_log: Path
    planned: dict[str, Any]
    base: Path

    def approle(self, node: str, **override: Any) -> tuple[str, str]:
        """Write the node's AppRole role with the module's arguments (plus ``override``); return
        (role_id, a secret-id delivered response-wrapped and unwrapped as the node does)."""
        self.admin.write_data(f"auth/approle/role/{node}", data=role_fields(self.planned, **override))
        role_id = self.admin.read(f"auth/approle/role/{node}/role-id")["data"]["role_id"]
        wrapped = self.admin.write_data(f"auth/approle/role/{node}/secret-id", wrap_ttl="60s")["wrap_info"]["token"]
        secret_id = hvac.Client(url=self.server.addr, token=wrapped).sys.unwrap()["data"]["secret_id"]
        return role_id, secret_id

    def logins(self, role_id: str) -> list[dict[str, Any]]:
        """Every answered login with this role-id, in order: {"ok": bool, "token": str}."""
        out = []
        for line in self.audit_log.read_text().splitlines():
            entry = json.loads(line)
            request = entry.get("request") or {}
            if (entry.get("type") == "response" and request.get("path") == "auth/approle/login"
                    and (request.get("data") or {}).get("role_id") == role_id):
                auth = (entry.get("response") or {}).get("auth") or {}
                out.append({"ok": bool(auth.get("client_token")), "token": auth.get("client_token", "")})
        return out

    def config(self, node: str, role_id: str, secret_id: str, **top: Any) -> Path:
        """A node's vaultpki.toml: AppRole credentials in 0600 files, never in the environment."""
        home = self.base / node
        home.mkdir(exist_ok=True)
        doc = {
            "certs_dir": str(home / "certs"), "mode": "standard", "ttl": "1h",
            "vault": {"addr": self.server.addr, "auth": "approle", "retry_for": "5s",
                      "role_id_file": str(secret_file(home / "role-id", role_id)),
                      "secret_id_file": str(secret_file(home / "secret-id", secret_id))},
            "pki": {"mount": PKI.mount, "node_role": f"{PKI.node_role}-{node}"},
            "node": {"hosts": list(HOSTS)},
        } | top
        path = home / "vaultpki.toml"
        path.write_text(toml_dump(doc))
        return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, module_approle: dict[str, Any]) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("relogin")
    audit_log = base / "audit.log"
    audit = (f'audit "file" "logins" {{\n  options {{\n    file_path = "{audit_log}"\n    log_raw = "true"\n'
             "  }\n}\n")
    with DevServer(extra_hcl=audit) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token)
        provision(admin, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=(), root_mount="tf-root",
                                                    nodes={n: HOSTS for n in NODES}, access=True))
        yield Lab(server, admin, audit_log, module_approle, base)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def vaultpki_argv(args: list[str], config: Path) -> tuple[list[str], str | None]:
    """A shipped command line (after the program) with our config: the arguments, and the value of
    --metrics-addr it gives (None without one)."""
    out, metrics = list(args), None
    out[out.index("--config") + 1] = str(config)
    if "--metrics-addr" in out:
        metrics = out[out.index("--metrics-addr") + 1]
    return out, metrics


def systemd_commands() -> dict[str, list[str]]:
    """ExecStartPre and ExecStart of the unit: vaultpki's arguments."""
    commands = {}
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStartPre", "ExecStart"):
            argv = shlex.split(value)
            assert Path(argv[0]).name == "vaultpki", line
            commands[key] = argv[1:]
    return commands


def kubernetes_commands() -> dict[str, list[str]]:
    """The init container's and the sidecar's arguments (vaultpki is the image's entry point)."""
    docs = list(yaml.safe_load_all(K8S.read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "vaultpki-init")
    sidecar = next(c for c in pod["containers"] if c["name"] == "vaultpki")
    return {"init": list(init["args"]), "sidecar": list(sidecar["args"])}


def run_then_daemon(lab: Lab, config: Path, once: list[str], daemon: list[str], node: str, role_id: str) -> None:
    """``once`` to completion, then the daemon until its first pass: both succeed, each logs in once."""
    first = run_cli(vaultpki_argv(once, config)[0])
    assert first.returncode == 0, first.stderr
    assert (lab.base / node / "certs" / "node.crt").exists()
    argv, metrics = vaultpki_argv(daemon, config)
    assert metrics is not None
    # The shipped daemon command is exactly SyncDaemon's (which picks a free metrics port).
    assert argv == ["--config", str(config), "sync", "--log-format", "json", "--metrics-addr", metrics]
    with SyncDaemon(config) as proc:
        proc.wait_for(msg("pass complete"), 60)
        assert not [e for e in proc.events if e.get("level") == "error"], proc.events
        assert proc.stop() == 0
    logins = lab.logins(role_id)
    assert [login["ok"] for login in logins] == [True, True], logins


def test_module_defaults_let_a_node_log_in_again(module_approle: dict[str, Any]) -> None:
    """Any finite number of uses, or a secret-id that expires, ends every shipped deployment: a restart,
    the second process, the daemon's next login at token_max_ttl."""
    assert module_approle["secret_id_num_uses"] == 0 and module_approle["secret_id_ttl"] == 0, module_approle
    assert module_approle["token_no_default_policy"] is True


@pytest.mark.slow
def test_systemd_unit_sync_once_then_sync_with_the_module_defaults(lab: Lab) -> None:
    role_id, secret_id = lab.approle("systemd")
    commands = systemd_commands()
    config = lab.config("systemd", role_id, secret_id)
    run_then_daemon(lab, config, commands["ExecStartPre"], commands["ExecStart"], "systemd", role_id)


@pytest.mark.slow
def test_the_daemon_logs_in_again_at_token_max_ttl(lab: Lab) -> None:
    """The module's role with short token TTLs: the daemon renews its token, and logs in again when
    renewing no longer helps; the certificate renewal after that succeeds."""
    role_id, secret_id = lab.approle("maxttl", token_ttl=3, token_max_ttl=6)
    config = lab.config("maxttl", role_id, secret_id, **SHORT)
    with SyncDaemon(config) as proc:
        proc.wait_for(msg("pass complete"), 60)
        wait_until(lambda: len(lab.logins(role_id)) >= 3, 30, "two logins after the first")
        proc.wait_for(msg("renewed"), 90)                        # signed with a token of a later login
        proc.wait_for(msg("pass complete"), 15)
        assert not [e for e in proc.events if e.get("level") in ("error", "warning")], proc.events
        assert proc.stop() == 0
    assert all(login["ok"] for login in lab.logins(role_id))


def test_a_policy_denial_is_one_login_and_reported_as_a_denial(lab: Lab, tmp_path: Path) -> None:
    """The node policy does not allow user certificates: "Vault denied …", and no second login."""
    role_id, secret_id = lab.approle("denied-cli")
    config = lab.config("denied-cli", role_id, secret_id)
    result = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(tmp_path / "marc")])
    one_error_line(result, 1, "Vault denied signing with", "permission denied")
    assert "logging in" not in result.stderr
    assert [login["ok"] for login in lab.logins(role_id)] == [True]
    assert not (tmp_path / "marc").exists()


def node_vault(lab: Lab, config: Path, clock: Callable[[], float] = time.monotonic) -> HttpVault:
    return HttpVault(parse(tomllib.loads(config.read_text()), {}).vault, clock=clock, env={})


def sign_node(vault: HttpVault, node: str) -> None:
    from vaultpki.core import crypto

    key = crypto.generate_key(crypto.KeyType.EC, 256)
    csr = crypto.build_csr(key, "node", ("localhost",), ()).decode()
    issued = vault.sign(PKI.mount, f"{PKI.node_role}-{node}", csr, None, "10m")
    assert crypto.describe(crypto.load_certs(issued.certificate.encode())[0]).common_name == "node"


def test_a_revoked_token_is_one_new_login_then_success(lab: Lab) -> None:
    role_id, secret_id = lab.approle("revoked")
    vault = node_vault(lab, lab.config("revoked", role_id, secret_id))
    sign_node(vault, "revoked")
    [first] = lab.logins(role_id)
    lab.admin.auth.token.revoke(first["token"])
    sign_node(vault, "revoked")
    logins = lab.logins(role_id)
    assert [login["ok"] for login in logins] == [True, True] and logins[1]["token"] != first["token"]


@pytest.mark.slow
def test_an_expired_token_is_one_new_login_then_success(lab: Lab) -> None:
    """The token expires at the server while vaultpki's clock stands still (a suspended machine: the
    monotonic clock does not count the sleep), so only asking Vault can tell."""
    role_id, secret_id = lab.approle("expired", token_ttl=2, token_max_ttl=2)
    vault = node_vault(lab, lab.config("expired", role_id, secret_id), clock=lambda: 0.0)
    sign_node(vault, "expired")
    [first] = lab.logins(role_id)

    def gone() -> bool:
        try:
            lab.admin.auth.token.lookup(first["token"])
        except hvac.exceptions.Forbidden:
            return True
        except hvac.exceptions.InvalidRequest:
            return True
        return False
    wait_until(gone, 10, "the login token to expire")
    sign_node(vault, "expired")
    logins = lab.logins(role_id)
    assert [login["ok"] for login in logins] == [True, True] and logins[1]["token"] != first["token"]


def test_a_denial_with_a_live_token_in_process_does_not_log_in(lab: Lab) -> None:
    """The same through the adapter: VaultDenied, and the audit log holds one login."""
    role_id, secret_id = lab.approle("denied-api")
    vault = node_vault(lab, lab.config("denied-api", role_id, secret_id))
    for _ in range(3):
        with pytest.raises(VaultDenied, match="Vault denied signing with tf-crdb/sign/user"):
            vault.sign(PKI.mount, "user", "CSR", "marc", None)
    logins = [login for login in lab.logins(role_id)]
    assert [login["ok"] for login in logins] == [True], logins
