"""Directory-descriptor primitives: working inside a directory another local user may also reach.

Every step of a write works relative to a directory opened once (``dir_fd=``, ``O_NOFOLLOW``,
``O_DIRECTORY``), so a path swapped meanwhile changes nothing we touch, and a link is followed only
while it stays inside the directory it starts in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from vaultpki.errors import StoreError

__all__ = ["DIR_FLAGS", "MAX_READ", "NotRegular", "Outside", "close_if_open", "leaves", "open_within", "os_errors",
           "read_fd", "rmtree", "store_error"]

MAX_READ = 1 << 20

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 16
MAX_TREE_DEPTH = 8


def store_error(what: str, exc: OSError) -> StoreError:
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
    return StoreError(f"{what}: {reason}")


@contextmanager
def os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise store_error(what, exc) from exc


def rmtree(name: str, dir_fd: int, depth: int = 0) -> None:
    """Remove ``name`` (in ``dir_fd``) and all it holds, best effort. Each directory is opened without
    following a link and emptied through its descriptor, so an entry swapped for a link meanwhile
    is unlinked, never followed. Our trees are two levels deep; a deeper one is left as it is."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)            # a file or a link: the entry itself, never its target
        return
    try:
        if depth < MAX_TREE_DEPTH:
            for entry in os.listdir(fd):
                rmtree(entry, fd, depth + 1)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)


def leaves(target: str) -> bool:
    """Whether a link target, read relative to a directory, can lead above it: absolute, or more '..' than names."""
    if target.startswith("/"):
        return True
    depth = 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def close_if_open(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


class Outside(Exception):
    """A link on the way to an entry leads out of the certs-dir."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class NotRegular(Exception):
    """The entry (through in-dir links) is not a regular file."""


def open_within(root_fd: int, name: str) -> int | None:
    """The regular file ``name`` names inside the directory ``root_fd``, opened for reading.

    Links are followed only while they stay inside: each component is opened with O_NOFOLLOW
    relative to its parent, a link is read and its target walked the same way, and ``..`` is
    resolved against the directories walked so far, never above the first. The file itself is
    checked through its descriptor (fstat), so swapping the entry between the look and the
    open gains nothing. None when the entry or an in-dir link's target does not exist.
    """
    pending = name.split("/")
    walked = [os.dup(root_fd)]
    hops = 0
    followed = name                  # the last link target read: what to name when the walk leads out
    try:
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if len(walked) == 1:
                    raise Outside(followed)
                os.close(walked.pop())
                continue
            try:
                st = os.stat(part, dir_fd=walked[-1], follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                target = followed = os.readlink(part, dir_fd=walked[-1])
                if target.startswith("/"):
                    raise Outside(target)
                if hops > MAX_LINK_HOPS:
                    raise NotRegular("too many levels of symbolic links")
                pending[:0] = target.split("/")
                continue
            if pending:
                if not stat.S_ISDIR(st.st_mode):
                    return None
                walked.append(os.open(part, DIR_FLAGS, dir_fd=walked[-1]))
                continue
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular("not a regular file")
            fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=walked[-1])
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                raise NotRegular("replaced while being read")
            return fd
        raise NotRegular("a directory")
    finally:
        for fd in walked:
            os.close(fd)


def read_fd(fd: int) -> bytes | None:
    """Up to MAX_READ bytes from ``fd``; None when there is more (a file that big is no certificate or key)."""
    chunks = []
    size = 0
    while size <= MAX_READ:
        chunk = os.read(fd, MAX_READ + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > MAX_READ else b"".join(chunks)
