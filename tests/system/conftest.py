"""The shipped systemd units under a real systemd: session fixtures shared by every module of tests/system.

* the cached Debian tree (``tests.support.rootfs``), with systemd, Python and PostgreSQL 15;
* vaultpki installed into it once per session, by docs/install.md's ``install-venv`` block run word for
  word as root before the first boot, from the wheel of this checkout and the cached dependency wheels
  (``tests.support.wheel``: pip is told where they are through its environment, the line is unchanged).
  What that changes is kept as an overlay layer that every container of the session boots on;
* one OpenBao per module (TLS, on the host's loopback, which the containers share), provisioned as
  docs/vault-setup.md says: PKI mounts and roles, the policies, and an AppRole role for the node.
  Each module has its own, so Vault's list of serials is the module's node's alone.

Nothing here skips: missing tooling fails with the package that brings it (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.support.doc_blocks import doc_block
from tests.support.nspawn import Container
from tests.support.rootfs import debian_rootfs
from tests.support.wheel import build_wheels
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .node import Vault

PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "postgresql-15", "ca-certificates", "procps")
# The docs' example node (deployment.md's unit-config): its AppRole role, PKI role and names.
NODE = "n1"
NODE_HOSTS = ("n1.db.internal", "10.0.0.1", "localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """Scratch space for the containers: under /var/tmp (the same file system as the cached tree is
    not needed, but overlayfs wants a real one for its upper layers, and /tmp may be a tmpfs)."""
    path = Path(tempfile.mkdtemp(prefix="vaultpki-system-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return debian_rootfs(PACKAGES, "systemd")


@pytest.fixture(scope="session")
def installed(rootfs: Path, workdir: Path) -> Path:
    """A layer holding vaultpki as docs/install.md installs it: /opt/vaultpki and /usr/local/bin/vaultpki."""
    wheels = build_wheels(workdir / "wheels")
    container = Container(rootfs, "vaultpki-install", workdir, ro_binds={wheels.folder: str(wheels.folder)},
                          keep_layer=True)
    with container:
        done = container.execute(doc_block("install.md", "install-venv"), cwd=str(wheels.folder), env=wheels.pip_env())
        assert done.returncode == 0, f"install-venv exited {done.returncode}:\n{done.stdout}{done.stderr}"
        assert done.stdout.strip().splitlines()[-1].startswith("vaultpki"), done.stdout     # vaultpki --version
        assert os.path.islink(container.root / "usr/local/bin/vaultpki")
    return container.upper


@pytest.fixture(scope="module")
def vault() -> Iterator[Vault]:
    with DevServer(tls=True) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token, verify=server.ca_cert)
        pki = PkiNames(mount="pki-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                       user_role="user", ui_mount=None, ui_role=None)
        provision(admin, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=(), root_mount="pki-root",
                                                    nodes={NODE: NODE_HOSTS}, access=True))
        role_id = admin.read(f"auth/approle/role/{NODE}/role-id")["data"]["role_id"]
        secret_id = admin.write_data(f"auth/approle/role/{NODE}/secret-id", data={})["data"]["secret_id"]
        yield Vault(server, admin, NODE, role_id, secret_id, pki.mount)
