"""Secret files as the kubelet mounts them (issue 18), read by the real CLI against the real OpenBao.

A Secret volume with ``defaultMode: 0400`` and a pod ``fsGroup`` comes out as a root-owned 0440 file in
the fsGroup (kubernetes/kubernetes#57923); the container runs as ``runAsUser`` with the fsGroup as a
supplementary group. Here the container's user is ``nobody`` with the stand-in fsGroup FS_GROUP (through
``setpriv``), and the files get exactly those owners and modes. Such a token is accepted; a token that
another user can read (others' bits, a group that is not the process's, a non-root owner) is refused
with one line and exit 2. A role-id names the AppRole and is no secret: a 0444 role-id file is read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaultpki.core.layout import Mode

from .conftest import Deployment

pytestmark = pytest.mark.integration

NOBODY = 65534
FS_GROUP = 2345           # the pod's fsGroup: a supplementary group of the container's user
OTHER_UID = 2346          # another non-root user
POD_USER = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--groups", str(FS_GROUP)]


@pytest.fixture
def pod_dir() -> Iterator[Path]:
    """A scratch dir: ``certs`` writable by the pod's user, the rest root's (like a read-only root)."""
    scratch = Path(tempfile.mkdtemp(prefix="vaultpki-secret-", dir="/tmp"))
    scratch.chmod(0o755)
    (scratch / "certs").mkdir(mode=0o700)
    os.chown(scratch / "certs", NOBODY, NOBODY)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mounted(path: Path, data: str, uid: int, gid: int, mode: int) -> Path:
    path.write_text(data)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def run_as_pod(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env["HOME"] = str(config.parent)
    return subprocess.run([*POD_USER, sys.executable, "-m", "vaultpki", "--config", str(config), "issue-node"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def token_config(dep: Deployment, pod_dir: Path, token_file: Path) -> Path:
    vault = {"addr": dep.server.addr, "auth": "token", "token_file": str(token_file)}
    return dep.write_config(pod_dir / "vaultpki.toml", pod_dir / "certs", vault=vault)


def test_the_kubelets_fsgroup_token_is_accepted(deploy: Callable[..., Deployment], pod_dir: Path) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    token = mounted(pod_dir / "token", dep.server.root_token, 0, FS_GROUP, 0o440)
    result = run_as_pod(token_config(dep, pod_dir, token))
    assert result.returncode == 0, result.stderr
    assert (pod_dir / "certs" / "node.key").stat().st_uid == NOBODY


@pytest.mark.parametrize(("uid", "gid", "mode"), [
    pytest.param(0, FS_GROUP, 0o444, id="0444-world-readable"),
    pytest.param(0, 0, 0o404, id="0404-others-read"),
    pytest.param(0, FS_GROUP, 0o460, id="0460-group-writable"),
    pytest.param(OTHER_UID, FS_GROUP, 0o440, id="0440-owned-by-another-user"),
    pytest.param(0, NOBODY, 0o444, id="0444-in-the-users-own-group"),
])
def test_a_token_another_user_can_read_is_refused(deploy: Callable[..., Deployment], pod_dir: Path,
                                                   uid: int, gid: int, mode: int) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    token = mounted(pod_dir / "token", dep.server.root_token, uid, gid, mode)
    result = run_as_pod(token_config(dep, pod_dir, token))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaultpki: error: vault.token_file "), result.stderr
    assert f"accessible by group or others (mode {mode:04o})" in lines[0], lines[0]
    assert os.listdir(pod_dir / "certs") == []


def test_a_world_readable_role_id_is_read_but_not_such_a_secret_id(deploy: Callable[..., Deployment],
                                                                   pod_dir: Path) -> None:
    """AppRole as a pod would mount it: a 0444 role-id (not a secret) is fine; the secret-id beside it, as
    the kubelet gives it, logs in; the same secret-id world-readable is refused."""
    dep = deploy(Mode.STANDARD, ui=False)
    admin = dep.admin
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    rule = f'path "{dep.pki.mount}/*" {{ capabilities = ["read", "create", "update"] }}'
    admin.sys.create_or_update_acl_policy("pod-secret-modes", rule)
    admin.write_data("auth/approle/role/pod-secret-modes", data={"token_policies": ["pod-secret-modes"], "token_ttl": "10m"})
    role_id = admin.read("auth/approle/role/pod-secret-modes/role-id")["data"]["role_id"]
    secret_id = admin.write_data("auth/approle/role/pod-secret-modes/secret-id", data={})["data"]["secret_id"]
    role_file = mounted(pod_dir / "role-id", role_id, 0, 0, 0o444)
    secret_file = mounted(pod_dir / "secret-id", secret_id, 0, FS_GROUP, 0o440)
    vault = {"addr": dep.server.addr, "auth": "approle", "role_id_file": str(role_file), "secret_id_file": str(secret_file)}
    config = dep.write_config(pod_dir / "vaultpki.toml", pod_dir / "certs", vault=vault)
    result = run_as_pod(config)
    assert result.returncode == 0, result.stderr
    secret_file.chmod(0o444)
    refused = run_as_pod(config)
    assert refused.returncode == 2 and "vault.secret_id_file" in refused.stderr, refused.stderr
