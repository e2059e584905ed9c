"""The credentials directory of a current systemd (256 and later), as vaultpki must read it (issue 18).

``LoadCredential=`` hands the service copies of root's credential files. How they are protected depends on
the file system systemd puts them on (``src/core/exec-credential.c``, ``write_credential``): each file is
written 0400 by root, then given a POSIX ACL entry that lets the service's user read it; only where the
file system has no ACLs (ramfs) is the file chowned to the user instead. systemd 252 (Debian 12, the
containers of ``test_service.py``) mounts a ramfs: 0400 files owned by the user. systemd 256 and later
mount a tmpfs (``noswap``), which has ACLs: the files stay root's, and since the group bits of a file with
an ACL show the ACL's mask, ``stat`` reports them as 0440, owned by root:root. Nobody but root and the
service's user can read them, but a judge of the mode bits alone sees a group-readable secret, and the
shipped unit then fails at every start. (Debian 13's systemd 257, booted like the containers here, gives a
``User=nobody`` service exactly this: ``440 root root``, ``user::r-- user:65534:r-- group::--- mask::r--
other::---`` on a read-only ``tmpfs``, ``noswap``. The suite's containers are Debian 12, whose Python the
cached wheels fit, so this reproduces that directory instead of booting it.)

This builds exactly such a directory (a tmpfs, root-owned 0400 files with the ACL entry libacl writes for
``fd_add_uid_acl_permission``, the directory read-only) and has the service's user (``nobody``) log in
with it through the real CLI and the real OpenBao. The ACL is judged, not waved through: an entry for a
second user, or for the file's group, is refused as before.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .node import Vault, node_config

pytestmark = pytest.mark.integration

NOBODY = 65534
DAEMON = 1                 # another user, for an ACL that lets somebody else read too
AS_SERVICE = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
# The binary form of a POSIX access ACL (the system.posix_acl_access attribute): version 2, then
# (tag, permissions, id) entries sorted by tag, as libacl writes them.
ACL_VERSION, USER_OBJ, USER, GROUP_OBJ, MASK, OTHER, NO_ID, READ = 2, 0x01, 0x02, 0x04, 0x10, 0x20, 0xFFFFFFFF, 4


def access_acl(users: dict[int, int], group: int = 0) -> bytes:
    """The ACL of a 0400 file with read access added for ``users`` (uid -> permission bits); the mask
    covers them, as ``acl_calc_mask`` makes it."""
    entries = [(USER_OBJ, READ, NO_ID), *((USER, perm, uid) for uid, perm in sorted(users.items())),
               (GROUP_OBJ, group, NO_ID), (MASK, max([group, *users.values()]), NO_ID), (OTHER, 0, NO_ID)]
    return struct.pack("<I", ACL_VERSION) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vaultpki-creds-", dir="/tmp"))
    path.chmod(0o755)
    (path / "certs").mkdir(mode=0o700)
    os.chown(path / "certs", NOBODY, NOBODY)
    (path / "credentials").mkdir(mode=0o700)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path / "credentials")], capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


def credentials_dir(where: Path, files: dict[str, str], acl: bytes) -> None:
    """A credentials directory as systemd makes one on a tmpfs: files 0400 root:root plus ``acl``, the
    directory readable by the service's user through its own ACL entry, then the whole mount read-only."""
    options = "mode=0700,noswap"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", str(where)], check=True)  # kernel < 6.4
    for name, text in files.items():
        fd = os.open(where / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o400)
            os.setxattr(fd, "system.posix_acl_access", acl)
        finally:
            os.close(fd)
    directory = [(USER_OBJ, 7, NO_ID), (USER, 5, NOBODY), (GROUP_OBJ, 0, NO_ID), (MASK, 5, NO_ID), (OTHER, 0, NO_ID)]
    os.setxattr(where, "system.posix_acl_access", struct.pack("<I", ACL_VERSION)
                + b"".join(struct.pack("<HHI", *e) for e in directory))
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def sync_once(vault: Vault, scratch: Path) -> subprocess.CompletedProcess[str]:
    assert vault.server.ca_cert is not None
    shutil.copyfile(vault.server.ca_cert, scratch / "vault-ca.pem")
    (scratch / "vault-ca.pem").chmod(0o644)
    config = scratch / "vaultpki.toml"
    config.write_text(node_config(vault, certs_dir=str(scratch / "certs"), owner=None, group=None, reload=None,
                                  vault__ca_cert=str(scratch / "vault-ca.pem"),
                                  vault__role_id_file=str(scratch / "credentials" / "role-id"),
                                  vault__secret_id_file=str(scratch / "credentials" / "secret-id")))
    env = {"PATH": os.environ["PATH"], "HOME": str(scratch), "LANG": "C.UTF-8"}
    return subprocess.run([*AS_SERVICE, sys.executable, "-m", "vaultpki", "--config", str(config), "sync", "--once"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_credentials_of_a_current_systemd_are_read(vault: Vault, scratch: Path) -> None:
    credentials_dir(scratch / "credentials", {"role-id": vault.role_id, "secret-id": vault.secret_id},
                    access_acl({NOBODY: READ}))
    st = os.stat(scratch / "credentials" / "secret-id")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o440)      # what stat shows of them
    result = sync_once(vault, scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (scratch / "certs" / "node.crt").is_file()


@pytest.mark.parametrize("acl", [access_acl({NOBODY: READ, DAEMON: READ}), access_acl({NOBODY: READ}, group=READ)],
                         ids=["another-user", "the-files-group"])
def test_an_acl_that_lets_somebody_else_read_the_secret_is_refused(vault: Vault, scratch: Path, acl: bytes) -> None:
    credentials_dir(scratch / "credentials", {"role-id": vault.role_id, "secret-id": vault.secret_id}, acl)
    result = sync_once(vault, scratch)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "secret-id" in result.stderr and "accessible by group or others (mode 0440)" in result.stderr, result.stderr
    assert not (scratch / "certs" / "node.crt").exists()
