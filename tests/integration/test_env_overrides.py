"""``$VAULTPKI_PKI_NODE_ROLE`` through the real CLI, against a real OpenBao (issue 18: the Kubernetes example's
one shared ConfigMap, with each pod's own role from the Downward API).

The server is provisioned like the Terraform module: one PKI role ``node-<name>`` per node, allowed only that
node's names, and one AppRole role per node whose policy reaches only ``node-<its name>``. The shared config
names ``node_role = "node"``, which no node may use: only the override makes the pod's own role.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import run_cli, toml_dump, tree

pytestmark = pytest.mark.integration

NODES = {"db-0": ("db-0.cockroachdb", "localhost", "127.0.0.1"), "db-1": ("db-1.cockroachdb", "localhost", "127.0.0.1")}
PKI = PkiNames(mount="env-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as bao:
        admin = hvac.Client(url=bao.addr, token=bao.root_token)
        provision(admin, bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=(), root_mount="env-root",
                                                 nodes=NODES, access=True))
        yield bao


def secret_file(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return str(path)


def shared_config(server: DevServer, tmp_path: Path, node: str) -> tuple[Path, Path]:
    """The one shared configuration (like the ConfigMap) and ``node``'s own AppRole credentials as files."""
    admin = hvac.Client(url=server.addr, token=server.root_token)
    role_id = admin.auth.approle.read_role_id(node)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(node)["data"]["secret_id"]
    certs = tmp_path / "certs"
    path = tmp_path / "vaultpki.toml"
    path.write_text(toml_dump({
        "certs_dir": str(certs), "mode": "standard", "ttl": "1h",
        "vault": {"addr": server.addr, "auth": "approle",
                  "role_id_file": secret_file(tmp_path / "role-id", role_id),
                  "secret_id_file": secret_file(tmp_path / "secret-id", secret_id)},
        "pki": {"mount": PKI.mount, "node_role": "node"},
        "node": {"hosts": ["db-0.cockroachdb", "db-1.cockroachdb", "localhost"]},
    }))
    return path, certs


def test_the_shared_config_alone_names_no_role_the_node_may_use(server: DevServer, tmp_path: Path) -> None:
    config, certs = shared_config(server, tmp_path, "db-1")
    result = run_cli(["--config", str(config), "issue-node"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert tree(certs) == {}


def test_node_role_and_hosts_from_the_environment_issue_the_pods_own_certificate(server: DevServer,
                                                                                 tmp_path: Path) -> None:
    config, certs = shared_config(server, tmp_path, "db-1")
    env = {"VAULTPKI_PKI_NODE_ROLE": "node-db-1", "VAULTPKI_NODE_HOSTS": ",".join(NODES["db-1"])}
    result = run_cli(["--config", str(config), "issue-node"], env)
    assert result.returncode == 0, result.stderr
    cert = crypto.load_certs((certs / "node.crt").read_bytes())[0]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "db-1.cockroachdb" in names.get_values_for_type(x509.DNSName)
    assert "db-0.cockroachdb" not in names.get_values_for_type(x509.DNSName)
    verified = run_cli(["verify", "--certs-dir", str(certs)])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_another_nodes_role_through_the_environment_is_refused(server: DevServer, tmp_path: Path) -> None:
    """The override chooses a role, it grants nothing: db-1's credentials cannot reach node-db-0."""
    config, certs = shared_config(server, tmp_path, "db-1")
    env = {"VAULTPKI_PKI_NODE_ROLE": "node-db-0", "VAULTPKI_NODE_HOSTS": ",".join(NODES["db-0"])}
    result = run_cli(["--config", str(config), "issue-node"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert tree(certs) == {}


def test_a_misspelt_override_is_refused_before_any_request(server: DevServer, tmp_path: Path) -> None:
    config, certs = shared_config(server, tmp_path, "db-1")
    result = run_cli(["--config", str(config), "issue-node"], {"VAULTPKI_PKI_NODE_ROL": "node-db-1"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vaultpki: error: $VAULTPKI_PKI_NODE_ROL names no configuration key; did you mean $VAULTPKI_PKI_NODE_ROLE?"]
    assert tree(certs) == {}
