"""The real parts of the Kubernetes example's tests: podman and the example's images (built once per session),
the example's manifest, and an OpenBao set up the way docs/kubernetes.md sets up Vault for it (TLS, the PKI
and one PKI role per node, jwt auth with one role per node bound to the pod's name in its token).

Nothing is mocked; a missing podman, runc, catatonit or debootstrap fails the tests (``.ci/run`` installs them).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml

from tests.support.pods import ISSUER, ServiceAccountSigner
from tests.support.wheel import REPO, build_wheels
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .podman import Podman

MANIFEST = REPO / "deploy" / "kubernetes" / "cockroachdb-with-vaultpki.yaml"
PODS = ("cockroachdb-0", "cockroachdb-1")


def manifest_docs() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(MANIFEST.read_text()))


def manifest_doc(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifest_docs() if d["kind"] == kind]
    return doc


def node_hosts(pod: str) -> tuple[str, ...]:
    """The names the example's VAULTPKI_NODE_HOSTS gives ``pod``: what its PKI role must allow (as Terraform's var.nodes)."""
    return (f"{pod}.cockroachdb", "cockroachdb-public", "localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vaultpki-kube-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def podman(scratch: Path) -> Podman:
    return Podman(scratch)


@pytest.fixture(scope="session")
def images(podman: Podman, scratch: Path) -> Podman:
    """The example's image from this working tree's wheel, and the PostgreSQL stand-in: built once per session."""
    podman.build_images(build_wheels(scratch / "wheels"))
    return podman


@dataclass(frozen=True)
class Vault:
    """The OpenBao the pods log in to, and the signer of their service-account tokens."""

    server: DevServer
    signer: ServiceAccountSigner
    pki: PkiNames

    @property
    def admin(self) -> hvac.Client:
        return hvac.Client(url=self.server.addr, token=self.server.root_token, verify=self.server.ca_cert)


@pytest.fixture(scope="session")
def vault() -> Iterator[Vault]:
    """docs/kubernetes.md's Vault side, with the embedded provisioner that mirrors the Terraform module: the
    ConfigMap's mount ``pki-crdb``, a role ``node-<pod>`` per pod allowed only its names, and jwt auth trusting
    the signer's key, with a role ``node-<pod>`` per pod that accepts only a token naming that pod."""
    from vaultpki.dev.jwt_auth import JwtAuthSpec, provision_jwt_auth  # here: the manifest's checks need no Vault

    signer = ServiceAccountSigner(namespace="default", service_account="cockroachdb")
    pki = PkiNames(mount="pki-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    with DevServer(tls=True) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token, verify=server.ca_cert)
        spec = ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=(), root_mount="pki-root",
                             nodes={pod: node_hosts(pod) for pod in PODS}, access=True)
        provision(admin, server.addr, spec)
        provision_jwt_auth(admin, server.addr, spec, JwtAuthSpec(
            validation_pubkeys=(signer.public_pem,), bound_issuer=ISSUER, bound_subject=signer.subject))
        yield Vault(server, signer, pki)
