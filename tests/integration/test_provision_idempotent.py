"""``provision`` is idempotent (issue 18): a second run against the same Vault changes nothing and says so,
and Vault's state (mounts and their configuration, issuers and keys, URLs, roles, policies, auth roles) reads
back byte for byte the same; a changed setting is updated, and reported as updated. On the old code the
second run failed ("path is already in use"), after the first had made a root CA it would make again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import NODE_HOSTS, UI_HOSTS, run_cli, toml_dump
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

MOUNTS = ("idem-root", "idem-crdb", "idem-client", "idem-web")


def _read(client: hvac.Client, path: str) -> Any:
    answer = client.read(path)
    return answer["data"] if answer else None


def _list(client: hvac.Client, path: str) -> list[str]:
    answer = client.list(path)
    return sorted(answer["data"]["keys"]) if answer else []


def vault_state(client: hvac.Client, mounts: tuple[str, ...], auth_roles: tuple[str, ...] = ()) -> bytes:
    """Everything provisioning may touch, read back through hvac, as bytes: equal bytes, equal state."""
    state: dict[str, Any] = {}
    engines = client.sys.list_mounted_secrets_engines()["data"]
    for mount in mounts:
        state[f"sys/mounts/{mount}"] = engines.get(f"{mount}/")
        state[f"sys/mounts/{mount}/tune"] = _read(client, f"sys/mounts/{mount}/tune")
        for listing, item in (("issuers", "issuer"), ("keys", "key"), ("roles", "roles"), ("certs", "cert")):
            names = _list(client, f"{mount}/{listing}")
            state[f"{mount}/{listing}"] = names
            for name in names:
                state[f"{mount}/{item}/{name}"] = _read(client, f"{mount}/{item}/{name}")
        for config in ("config/issuers", "config/urls", "config/crl"):
            state[f"{mount}/{config}"] = _read(client, f"{mount}/{config}")
    state["sys/auth"] = {k: v for k, v in client.sys.list_auth_methods()["data"].items()}
    state["sys/policy"] = {name: _read(client, f"sys/policy/{name}") for name in _list(client, "sys/policy")}
    for path in auth_roles:
        state[path] = {name: _read(client, f"{path}/{name}") for name in _list(client, path)}
    return json.dumps(state, sort_keys=True).encode()


@pytest.fixture
def split_ca_config(bao: DevServer, tmp_path: Path) -> Path:
    """A split-ca layout with a UI mount on mount names of this test's own: every kind of mount, CA and role."""
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({
        "certs_dir": str(tmp_path / "certs"), "mode": "split-ca",
        "vault": {"addr": bao.addr}, "pki": {"mount": "idem-crdb", "client_mount": "idem-client",
                                             "node_role": "node-server", "ui_mount": "idem-web"},
        "node": {"hosts": list(NODE_HOSTS)}, "ui": {"hosts": list(UI_HOSTS)},
    }))
    return config


def test_a_second_provision_changes_nothing_and_says_so(bao: DevServer, split_ca_config: Path) -> None:
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    token = {"VAULT_TOKEN": bao.root_token}
    args = ["--config", str(split_ca_config), "provision", "--root-mount", "idem-root"]
    first = run_cli(args, token)
    assert first.returncode == 0, first.stderr
    before = vault_state(admin, MOUNTS)

    second = run_cli(args, token)
    assert second.returncode == 0, second.stderr                     # the old code: "path is already in use", exit 1
    assert all(line.startswith("created ") for line in first.stdout.splitlines()[:-1]), first.stdout
    lines = second.stdout.splitlines()
    assert len(lines) == len(first.stdout.splitlines())
    assert all(line.split()[0] == "unchanged" for line in lines[:-1]), second.stdout
    assert {line.split()[1] for line in lines[:-1]} >= {"idem-crdb/roles/node-server", "idem-client/roles/user",
                                                       "idem-web/roles/ui", "idem-root/issuers", "idem-crdb/issuers"}
    assert lines[-1].startswith("nothing changed")
    assert vault_state(admin, MOUNTS) == before                      # not one byte of Vault's state differs

    as_json = run_cli([*args, "--json"], token)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["changed"] is False and {i["action"] for i in doc["items"]} == {"unchanged"}
    assert vault_state(admin, MOUNTS) == before

    # A changed setting: the node's host list. Its role is updated (and said to be), nothing else is touched.
    split_ca_config.write_text(split_ca_config.read_text().replace('"node1.test.internal", ', '"node9.test.internal", '))
    third = run_cli(args, token)
    assert third.returncode == 0, third.stderr
    changed = [line.split()[:2] for line in third.stdout.splitlines()[:-1] if not line.startswith("unchanged ")]
    assert changed == [["updated", "idem-crdb/roles/node-server"]], third.stdout
    assert third.stdout.splitlines()[-1].startswith("0 created, 1 updated, ")
    assert "node9.test.internal" in admin.read("idem-crdb/roles/node-server")["data"]["allowed_domains"]
    assert vault_state(admin, MOUNTS) != before                      # the snapshot sees a change when there is one
    assert run_cli(args, token).stdout.splitlines()[-1].startswith("nothing changed")


@pytest.fixture(scope="module")
def own_bao() -> Iterator[DevServer]:
    """A server of its own: the access set-up writes global names (policies, auth/approle, auth/cert)."""
    with DevServer() as server:
        yield server


def test_the_full_lab_setup_is_idempotent_too(own_bao: DevServer) -> None:
    """What the tests and the demo provision (per-node roles, policies, AppRole, userpass, cert auth)."""
    admin = hvac.Client(url=own_bao.addr, token=own_bao.root_token)
    pki = PkiNames(mount="lab-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    spec = ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS, root_mount="lab-root",
                         nodes={"n1": ("n1.db.internal", "10.0.0.1"), "n2": ("n2.db.internal", "10.0.0.2")},
                         access=True, cert_auth=True)
    auth_roles = ("auth/approle/role", "auth/cert/certs")
    first = provision(admin, own_bao.addr, spec)
    before = vault_state(admin, ("lab-root", "lab-crdb"), auth_roles)
    second = provision(admin, own_bao.addr, spec)                    # the old code: "path is already in use"
    assert {c.action for c in first.changes} == {"created"}
    assert [c.action for c in second.changes] == ["unchanged"] * len(first.changes), \
        [c for c in second.changes if c.action != "unchanged"]
    assert [c.path for c in second.changes] == [c.path for c in first.changes]
    assert second.policies == first.policies and second.roles == first.roles
    assert vault_state(admin, ("lab-root", "lab-crdb"), auth_roles) == before


def test_a_mount_of_another_kind_is_refused_in_one_line(bao: DevServer, tmp_path: Path) -> None:
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    admin.sys.enable_secrets_engine("kv", path="idem-kv")
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({"mode": "standard", "vault": {"addr": bao.addr}, "pki": {"mount": "idem-kv"},
                                 "node": {"hosts": ["localhost"]}}))
    result = run_cli(["--config", str(config), "provision", "--no-intermediate"], {"VAULT_TOKEN": bao.root_token})
    one_error_line(result, 2, "mount idem-kv exists", "not PKI")
    assert result.stdout == ""
    assert admin.sys.list_mounted_secrets_engines()["data"]["idem-kv/"]["type"] == "kv"
