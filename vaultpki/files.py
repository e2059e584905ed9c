"""Reading the small files vaultpki is handed (its configuration, a user list, a token or secret-id):
bounded, regular files only, and never blocking.

``open()`` of a FIFO waits for a writer, forever; ``read()`` of ``/dev/zero`` never ends and of a huge
file fills memory. Each file is opened non-blocking, judged by what was opened (``fstat`` of the
descriptor, not a ``stat`` of the path that could be swapped in between), and read up to a bound.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from collections.abc import Iterator

__all__ = ["NotReadable", "read_limited", "read_regular", "read_secret_file", "secret_exposure"]

# What the kubelet makes of a Secret's ``defaultMode: 0400`` when the pod has an ``fsGroup``.
KUBELET_MODE = 0o440
# What it makes of a projected service-account token in a pod with an fsGroup: it writes the token 0600 and
# then adds the group's read bit ("When FsGroup is set, we depend on SetVolumeOwnership to change from 0600
# to 0640", kubernetes pkg/volume/projected). No volume setting changes that mode.
KUBELET_TOKEN_MODE = 0o640
# A file's POSIX access ACL (acl(5)): the extended attribute, its format version and the entry tags judged.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_OTHER = 2, 0x02, 0x04, 0x08, 0x20
# Reads are made in pieces of this size, so that a file growing while it is read costs at most one more.
_CHUNK = 1 << 16


class NotReadable(Exception):
    """Why a file was refused, in words; the caller says which file it was and raises its own error."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_limited(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd``, to its end; NotReadable when there are more."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise NotReadable(f"it is larger than {limit:,} bytes")


def read_regular(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``path`` (links followed) and its status, as opened.

    Raises NotReadable, saying why in words, for a file that cannot be opened (missing, no permission),
    a name with a NUL character, anything that is not a regular file, or more than ``limit`` bytes.
    """
    with _opened(path, limit) as (fd, st):
        return read_limited(fd, limit), st


def read_secret_file(path: str | os.PathLike[str], limit: int,
                     projected_token: bool = False) -> tuple[bytes, os.stat_result, str | None]:
    """``read_regular`` for a file that holds a secret, and why somebody else can read it (``secret_exposure``,
    None when nobody can), judged on what was opened, its access ACL included."""
    with _opened(path, limit) as (fd, st):
        acl = _access_acl(fd) if stat.S_IMODE(st.st_mode) & (stat.S_IRWXG | stat.S_IRWXO) else None
        return read_limited(fd, limit), st, secret_exposure(st, acl, projected_token)


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str], limit: int) -> Iterator[tuple[int, os.stat_result]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ValueError:          # an embedded NUL: no file has such a name
        raise NotReadable("its name has a NUL character") from None
    except FileNotFoundError:
        raise NotReadable("it does not exist") from None
    except OSError as exc:
        raise NotReadable(exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable(f"it is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise NotReadable(f"it is larger than {limit:,} bytes")
        yield fd, st
    finally:
        os.close(fd)


def _access_acl(fd: int) -> bytes | None:
    """The file's POSIX access ACL in its binary form, None when it has none (or its file system has no ACLs)."""
    try:
        return os.getxattr(fd, _ACL_XATTR)
    except OSError:
        return None


def secret_exposure(st: os.stat_result, acl: bytes | None = None, projected_token: bool = False) -> str | None:
    """Why a secret file with status ``st`` (and access ACL ``acl``) is readable by somebody else, in words;
    None when it is not.

    Only its owner may have access, with these exceptions:

    * the kubelet's: a Secret volume with ``fsGroup`` turns ``defaultMode: 0400`` into a root-owned 0440 file
      in the pod's group. Exactly such a file is accepted when that group is one of this process's own
      (effective or supplementary): those who can read it are root and the pod, whose group it is;
    * the kubelet's again, for a ``projected_token`` (a service-account token): mode exactly 0640 in one of
      this process's groups (the fsGroup), owned by root or, when every container of the pod runs as one
      user, by that user: us;
    * systemd's: ``LoadCredential=`` on a file system with ACLs (systemd 256 and later put credentials on a
      tmpfs) leaves the file root's, 0400, with an ACL entry that lets the service's user read it. A file
      with an ACL shows the ACL's mask as its group bits, so it looks 0440. It is accepted when the ACL lets
      nobody read but its owner (root, or us) and this process's user.

    Any other mode (0640 included: outside Kubernetes a group bit is a mistake to point out, not a
    convention), a group that is not ours, an ACL entry for anybody else, or an owner other than root (that
    user could read it, and hand it on) is refused.
    """
    mode = stat.S_IMODE(st.st_mode)
    loose = mode & (stat.S_IRWXG | stat.S_IRWXO)
    if not loose:
        return None
    if mode == KUBELET_MODE and st.st_uid == 0 and _own_group(st.st_gid):
        return None
    if projected_token and mode == KUBELET_TOKEN_MODE and st.st_uid in (0, os.geteuid()) and _own_group(st.st_gid):
        return None
    if acl is not None and not mode & stat.S_IRWXO and st.st_uid in (0, os.geteuid()) and _acl_lets_only_us_read(acl):
        return None
    return f"is accessible by group or others (mode {mode:04o})"


def _acl_lets_only_us_read(acl: bytes) -> bool:
    """Whether an access ACL (acl(5), binary: a version, then tag/permissions/id entries) grants nothing to
    the file's group, any other group or any user but this process's: every entry of the group class that
    grants something is a named-user entry for our own uid."""
    if len(acl) < 4 or (len(acl) - 4) % 8 or struct.unpack_from("<I", acl)[0] != _ACL_VERSION:
        return False
    for offset in range(4, len(acl), 8):
        tag, permissions, ident = struct.unpack_from("<HHI", acl, offset)
        if tag == _ACL_USER and ident != os.geteuid() and permissions:
            return False
        if tag in (_ACL_GROUP_OBJ, _ACL_GROUP, _ACL_OTHER) and permissions:
            return False
    return True


def _own_group(gid: int) -> bool:
    """Whether ``gid`` is this process's effective group or one of its supplementary groups."""
    return gid == os.getegid() or gid in os.getgroups()
