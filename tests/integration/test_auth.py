"""Every way of authenticating to Vault, against real servers: token, AppRole, TLS certificate."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from vaultpki.config import parse
from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.ports import IssuedCert, SignRequest
from vaultpki.dev.devserver import DevServer, free_port
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.errors import VaultUnavailable
from vaultpki.vault.client import HttpVault

from .conftest import NODE_HOSTS, Deployment, run_cli, tree
from .test_cli_errors import one_error_line

NODE_POLICY = """
path "{mount}/sign/{node_role}" {{ capabilities = ["update"] }}
path "{mount}/issuer/default/json" {{ capabilities = ["read"] }}
path "{web}/sign/ui" {{ capabilities = ["update"] }}
path "{web}/issuer/default/json" {{ capabilities = ["read"] }}
"""


def secret_file(path: Path, value: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.chmod(path, mode)
    return path


def node_policy(dep: Deployment) -> str:
    return NODE_POLICY.format(mount=dep.pki.mount, node_role=dep.pki.node_role, web=dep.pki.ui_mount)


def test_token_from_file(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    token = secret_file(tmp_path / "token", dep.server.root_token + "\n")
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    config.write_text(config.read_text().replace('auth = "token"', f'auth = "token"\ntoken_file = "{token}"'))
    result = run_cli(["--config", str(config), "issue-node"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").exists()


@pytest.fixture(scope="module")
def approle(deploy: Callable[..., Deployment]) -> tuple[Deployment, str, str]:
    dep = deploy(Mode.STANDARD)
    admin = dep.admin
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_acl_policy("node-n1", node_policy(dep))
    admin.write_data("auth/approle/role/node-n1", data={"token_policies": ["node-n1"], "token_ttl": "10m"})
    role_id = admin.read("auth/approle/role/node-n1/role-id")["data"]["role_id"]
    secret_id = admin.write_data("auth/approle/role/node-n1/secret-id", data={})["data"]["secret_id"]
    return dep, role_id, secret_id


def test_approle_login_with_least_privilege_policy(approle: tuple[Deployment, str, str], tmp_path: Path) -> None:
    dep, role_id, secret_id = approle
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    sid = secret_file(tmp_path / "secret-id", secret_id)
    rid = secret_file(tmp_path / "role-id", role_id)
    config.write_text(config.read_text().replace(
        'auth = "token"', f'auth = "approle"\nrole_id_file = "{rid}"\nsecret_id_file = "{sid}"'))
    result = run_cli(["--config", str(config), "issue-node"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").exists() and (tmp_path / "certs" / "ui.crt").exists()
    # The same identity may not mint user certificates: the policy grants node signing only.
    denied = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(tmp_path / "marc")])
    one_error_line(denied, 1, "Vault denied", "user")
    assert not (tmp_path / "marc").exists()


def test_approle_bad_secret_and_loose_file(approle: tuple[Deployment, str, str], tmp_path: Path) -> None:
    dep, role_id, _ = approle
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir)
    wrong = secret_file(tmp_path / "secret-id", "00000000-0000-0000-0000-000000000000")
    config.write_text(config.read_text().replace(
        'auth = "token"', f'auth = "approle"\nrole_id = "{role_id}"\nsecret_id_file = "{wrong}"'))
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 1, "logging in with approle")
    wrong.chmod(0o640)
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 2, "secret_id_file", "group or others")
    assert tree(certs_dir) == {}


def stray_ca(path: Path) -> Path:
    """A CA that signed nothing Vault uses."""
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stray CA")])
    now = dt.datetime.now(dt.UTC)
    stray = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(key, hashes.SHA256()))
    path.write_bytes(crypto.certs_to_pem([stray]))
    return path


@pytest.fixture(scope="module")
def tls_bao() -> Iterator[DevServer]:
    with DevServer(tls=True) as server:
        yield server


def test_cert_auth_over_tls_with_the_node_certificate(tls_bao: DevServer, tmp_path: Path) -> None:
    """Bootstrap with a token, then renew by logging in with the node's own certificate."""
    admin = hvac.Client(url=tls_bao.addr, token=tls_bao.root_token, verify=tls_bao.ca_cert)
    pki = PkiNames(mount="tls-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    # Cert auth as Terraform makes it: auth/cert/certs/node-n1, bound to the OU only n1's PKI role sets.
    provision(admin, tls_bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS,
                                                 root_mount="tls-root", nodes={"n1": NODE_HOSTS}, access=True,
                                                 cert_auth=True))
    certs_dir = tmp_path / "certs"
    dep = Deployment(tls_bao, Mode.STANDARD, msgspec.structs.replace(pki, node_role="node-n1"), "tls-root", True)
    dep.admin = admin
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir, ca_trust="root")
    first = run_cli(["--config", str(config), "issue-node"],
                    {"VAULT_TOKEN": tls_bao.root_token, "VAULT_CACERT": tls_bao.ca_cert or ""})
    assert first.returncode == 0, first.stderr

    serial_before = (certs_dir / "node.crt").read_bytes()
    config.write_text(config.read_text().replace('auth = "token"', (
        f'auth = "cert"\ncert_role = "node-n1"\ncert_file = "{certs_dir / "node.crt"}"\n'
        f'key_file = "{certs_dir / "node.key"}"\nca_cert = "{tls_bao.ca_cert}"')))
    renewed = run_cli(["--config", str(config), "issue-node"])
    assert renewed.returncode == 0, renewed.stderr
    assert (certs_dir / "node.crt").read_bytes() != serial_before


def test_wrong_vault_ca_is_a_clear_tls_error(tls_bao: DevServer, tmp_path: Path) -> None:
    """ca_cert names a CA that did not sign Vault's certificate: one line, exit 1, nothing written."""
    other_ca = stray_ca(tmp_path / "other-ca.pem")
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'certs_dir = "{tmp_path / "certs"}"\n[vault]\naddr = "{tls_bao.addr}"\n'
                      f'ca_cert = "{other_ca}"\n[node]\nhosts = ["localhost"]\n')
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": tls_bao.root_token})
    one_error_line(result, 1, "TLS connection to Vault", "unable to get local issuer certificate")
    assert not (tmp_path / "certs").exists()


@pytest.fixture(scope="module")
def tls_bulk_mount(tls_bao: DevServer) -> str:
    admin = hvac.Client(url=tls_bao.addr, token=tls_bao.root_token, verify=tls_bao.ca_cert)
    pki = PkiNames(mount="tls-bulk", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    provision(admin, tls_bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS,
                                                 root_mount="tls-bulk-root"))
    return pki.mount


def sign_many_over_tls(tls_bao: DevServer, ca_cert: str, mount: str, users: list[str]) -> dict[str, object]:
    """HttpVault.sign_many against the TLS OpenBao: each user's certificate or error."""
    cfg = parse({"vault": {"addr": tls_bao.addr, "ca_cert": ca_cert, "retry_for": "2s"}},
                {"VAULT_TOKEN": tls_bao.root_token}).vault
    vault = HttpVault(cfg, one_shot=True, env={})
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    requests = ((u, SignRequest(mount, "user", crypto.build_csr(key, u, (), ()).decode(), u, "10m")) for u in users)
    return dict(vault.sign_many(requests, 4))


def test_bulk_signing_over_tls_checks_vaults_certificate(tls_bao: DevServer, tls_bulk_mount: str, tmp_path: Path) -> None:
    """The bulk path's pooled connections verify Vault against ca_cert; with the wrong CA every request
    gets the TLS error and nothing is signed."""
    users = [f"tls{i:02d}" for i in range(12)]
    results = sign_many_over_tls(tls_bao, tls_bao.ca_cert or "", tls_bulk_mount, users)
    for user in users:
        issued = results[user]
        assert isinstance(issued, IssuedCert), issued
        assert crypto.describe(crypto.load_certs(issued.certificate.encode())[0]).common_name == user

    wrong = str(stray_ca(tmp_path / "other-ca.pem"))
    results = sign_many_over_tls(tls_bao, wrong, tls_bulk_mount, users)
    for user in users:
        error = results[user]
        assert isinstance(error, VaultUnavailable)
        assert "TLS connection to Vault" in str(error) and "unable to get local issuer certificate" in str(error)


def test_bulk_over_tls_from_the_cli_is_silent_and_complete(tls_bao: DevServer, tls_bulk_mount: str, tmp_path: Path) -> None:
    """The whole command over TLS: every user written, nothing on stderr."""
    users = [f"cli{i:02d}" for i in range(20)]
    listing = tmp_path / "users.txt"
    listing.write_text("\n".join(users) + "\n")
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "{tls_bao.addr}"\nca_cert = "{tls_bao.ca_cert}"\n[pki]\nmount = "{tls_bulk_mount}"\n')
    result = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(tmp_path / "clients")], {"VAULT_TOKEN": tls_bao.root_token})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert sorted(p.name for p in (tmp_path / "clients").glob("client.*.crt")) == [f"client.{u}.crt" for u in users]
    verified = run_cli(["verify", "--certs-dir", str(tmp_path / "clients")])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_bulk_with_the_wrong_vault_ca_is_one_tls_error_and_writes_nothing(
        tls_bao: DevServer, tls_bulk_mount: str, tmp_path: Path) -> None:
    """The CA material is read before any CSR goes out: its TLS failure ends the run, as for one user."""
    listing = tmp_path / "users.txt"
    listing.write_text("alice\nbob\n")
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "{tls_bao.addr}"\nca_cert = "{stray_ca(tmp_path / "other-ca.pem")}"\n'
                      f'[pki]\nmount = "{tls_bulk_mount}"\n')
    result = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(tmp_path / "clients")], {"VAULT_TOKEN": tls_bao.root_token})
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert errors == [errors[0]] and errors[0].startswith("vaultpki: error: TLS connection to Vault")
    assert "unable to get local issuer certificate" in errors[0]
    assert not (tmp_path / "clients").exists()


def test_fails_over_between_vault_addresses(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """vault.addr as a list: a dead first address is skipped; the good one is remembered."""
    dep = deploy(Mode.STANDARD)
    dead = f"http://127.0.0.1:{free_port()}"
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    config.write_text(config.read_text().replace(f'addr = "{dep.server.addr}"', f'addr = ["{dead}", "{dep.server.addr}"]'))
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "node.crt").exists()
    both_dead = config.read_text().replace(f'"{dep.server.addr}"', f'"http://127.0.0.1:{free_port()}"')
    config.write_text(both_dead.replace('auth = "token"', 'auth = "token"\nretry_for = "2s"'))
    one_error_line(run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token}),
                   1, "cannot reach Vault")
