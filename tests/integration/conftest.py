"""Real parts for integration tests: one OpenBao dev server per session, provisioned per layout.

Nothing here mocks Vault. A missing ``bao`` binary is a failure, not a skip.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest

from vaultpki.config import dumps
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

NODE_HOSTS = ("node1.test.internal", "localhost", "127.0.0.1")
# A `sync` config that renews within a test's patience: 60 s certificates renewed at 40 %, fast backoff.
SHORT = {"ttl": "60s", "renew": {"before": "60%", "jitter": "5%", "retry_initial": "1s", "retry_max": "2s"}}
UI_HOSTS = ("console.test.internal", "localhost")


toml_dump = dumps     # the tests write configurations with vaultpki's own writer


@dataclass
class Deployment:
    """One provisioned layout on the session's OpenBao server."""

    server: DevServer
    mode: Mode
    pki: PkiNames
    root_mount: str
    intermediate: bool
    node_hosts: tuple[str, ...] = NODE_HOSTS
    ui_hosts: tuple[str, ...] = UI_HOSTS
    admin: hvac.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = hvac.Client(url=self.server.addr, token=self.server.root_token)

    def config_doc(self, certs_dir: Path, **top: Any) -> dict[str, Any]:
        pki: dict[str, Any] = {
            "mount": self.pki.mount, "node_role": self.pki.node_role,
            "client_node_role": self.pki.client_node_role, "user_role": self.pki.user_role,
        }
        if self.pki.client_mount:
            pki["client_mount"] = self.pki.client_mount
        if self.pki.ui_mount:
            pki["ui_mount"] = self.pki.ui_mount
            pki["ui_role"] = self.pki.ui_role
        doc: dict[str, Any] = {
            "certs_dir": str(certs_dir), "mode": self.mode.value, "ttl": "1h",
            "vault": {"addr": self.server.addr, "auth": "token"},
            "pki": pki, "node": {"hosts": list(self.node_hosts)},
        }
        if self.pki.ui_mount:
            doc["ui"] = {"hosts": list(self.ui_hosts)}
        doc.update(top)
        return doc

    def write_config(self, path: Path, certs_dir: Path, **top: Any) -> Path:
        path.write_text(toml_dump(self.config_doc(certs_dir, **top)))
        return path

    def serials(self, mount: str | None = None) -> set[str]:
        """Every serial the mount has issued (Vault's own record, for 'nothing minted' checks)."""
        try:
            keys = self.admin.list(f"{mount or self.pki.mount}/certs")["data"]["keys"]
        except (TypeError, KeyError, hvac.exceptions.InvalidPath):
            return set()
        return set(keys)


@pytest.fixture(scope="session")
def bao() -> Iterator[DevServer]:
    with DevServer() as server:
        yield server


_MADE: dict[tuple[str, bool, bool], Deployment] = {}


@pytest.fixture(scope="session")
def deploy(bao: DevServer) -> Callable[..., Deployment]:
    """deploy(mode, intermediate=True, ui=True) -> a Deployment, provisioned once per session."""
    def make(mode: Mode, intermediate: bool = True, ui: bool = True) -> Deployment:
        key = (mode.value, intermediate, ui)
        if key not in _MADE:
            prefix = f"{mode.value}{'' if intermediate else '-rootonly'}{'' if ui else '-noui'}"
            pki = PkiNames(
                mount=f"{prefix}-crdb",
                client_mount=f"{prefix}-client" if mode is Mode.SPLIT_CA else None,
                node_role="node" if mode is Mode.STANDARD else "node-server",
                client_node_role="client-node", user_role="user",
                ui_mount=f"{prefix}-web" if ui else None, ui_role="ui" if ui else None,
            )
            dep = Deployment(bao, mode, pki, f"{prefix}-root", intermediate)
            provision(dep.admin, bao.addr, ProvisionSpec(
                mode=mode, pki=pki, node_hosts=NODE_HOSTS, ui_hosts=UI_HOSTS if ui else (),
                root_mount=dep.root_mount, intermediate=intermediate))
            _MADE[key] = dep
        return _MADE[key]
    return make


_EMPTY_HOME = tempfile.mkdtemp(prefix="vaultpki-test-home-")
atexit.register(shutil.rmtree, _EMPTY_HOME, ignore_errors=True)


def run_cli(args: list[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``vaultpki`` command in a subprocess (exit codes and stderr exactly as users see them)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    base["HOME"] = _EMPTY_HOME      # a developer's own ~/.vault-token (bao login) must not reach a test
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "vaultpki", *args], env=base, capture_output=True,
                          text=True, timeout=timeout, check=False)


def tree(path: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under ``path`` (links not followed) with kind, mode and content: a before/after fingerprint."""
    out: dict[str, tuple[str, int, bytes]] = {}
    if not os.path.lexists(path):
        return out
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            st = full.lstat()
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = ("link", 0, os.readlink(full).encode())
            elif full.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, b"")
            else:
                out[rel] = ("file", st.st_mode & 0o7777, full.read_bytes())
    return out


def standard_sync_config(addr: str, root_token: str, prefix: str, tmp_path: Path) -> tuple[Path, Path]:
    """Provision a standard layout (mount ``<prefix>-crdb`` under ``<prefix>-root``) on a server of a
    test's own and write a SHORT ``sync`` config for it; returns (config, certs-dir)."""
    pki = PkiNames(mount=f"{prefix}-crdb", client_mount=None, node_role="node", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    provision(hvac.Client(url=addr, token=root_token), addr,
              ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS, root_mount=f"{prefix}-root"))
    certs = tmp_path / "certs"
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({
        "certs_dir": str(certs), "mode": "standard", **SHORT,
        "vault": {"addr": addr, "retry_for": "2s"}, "pki": {"mount": pki.mount},
        "node": {"hosts": list(NODE_HOSTS)},
    }))
    return config, certs
