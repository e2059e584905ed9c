"""OCSP against a Vault behind a private CA: vaultpki asks Vault's responder with the trust it has in Vault.

The provisioner publishes ``https://<vault>/v1/<mount>/ocsp`` as the certificates' responder. With the
system's trust store alone (what the OCSP check used before), every daemon pass logged "OCSP check
failed … CERTIFICATE_VERIFY_FAILED" and ``verify --ocsp`` could not tell a revoked node from a good one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import run_cli, toml_dump

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_vault() -> Iterator[DevServer]:
    with DevServer(tls=True) as server:
        client = hvac.Client(url=server.addr, token=server.root_token, verify=server.ca_cert)
        pki = PkiNames(mount="pki-ocsp-tls", client_mount=None, node_role="node", client_node_role="client-node",
                       user_role="user", ui_mount=None, ui_role=None)
        provision(client, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=("localhost",)))
        yield server


def node_dir(server: DevServer, tmp_path: Path) -> tuple[Path, Path]:
    certs = tmp_path / "certs"
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({
        "certs_dir": str(certs), "mode": "standard", "ttl": "1h",
        "vault": {"addr": server.addr, "ca_cert": server.ca_cert, "auth": "token"},
        "pki": {"mount": "pki-ocsp-tls"}, "node": {"hosts": ["localhost"]},
    }))
    done = run_cli(["--config", str(config), "issue-node"], env={"VAULT_TOKEN": server.root_token})
    assert done.returncode == 0, done.stderr
    return config, certs


def ocsp_of(config: Path) -> str:
    done = run_cli(["--config", str(config), "status", "--ocsp", "--json"])
    assert done.returncode == 0, done.stderr
    (node,) = [row for row in json.loads(done.stdout)["files"] if row["file"] == "node.crt"]
    return str(node["ocsp"])


def test_the_responder_is_asked_over_https_with_vault_ca_cert(tls_vault: DevServer, tmp_path: Path) -> None:
    config, _ = node_dir(tls_vault, tmp_path)
    assert ocsp_of(config).startswith("good"), ocsp_of(config)


def test_a_revoked_node_is_seen_as_revoked(tls_vault: DevServer, tmp_path: Path) -> None:
    config, _ = node_dir(tls_vault, tmp_path)
    serial = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)
    (node,) = [row for row in serial["files"] if row["file"] == "node.crt"]
    serial_hex = node["certificates"][0]["serial"]
    done = run_cli(["--config", str(config), "revoke", "--serial", serial_hex], env={"VAULT_TOKEN": tls_vault.root_token})
    assert done.returncode == 0, done.stderr
    assert ocsp_of(config).startswith("revoked"), ocsp_of(config)


def test_the_daemons_pass_checks_ocsp_without_a_warning(tls_vault: DevServer, tmp_path: Path) -> None:
    config, _ = node_dir(tls_vault, tmp_path)
    done = run_cli(["--config", str(config), "sync", "--once", "--log-format", "json"], env={"VAULT_TOKEN": tls_vault.root_token})
    assert done.returncode == 0, done.stderr
    assert "OCSP check failed" not in done.stderr + done.stdout
