"""Building a generation: a complete new set of files beside the visible one, on disk before the switch.

Keys are created 0600 with O_EXCL; the current generation's other files join by hard link (files are
never modified in place); nothing of it is visible until ``current`` is switched to it.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import msgspec

from vaultpki.core.layout import FileContent, pk8_key_file
from vaultpki.errors import StoreError
from vaultpki.store.descriptors import DIR_FLAGS, rmtree
from vaultpki.store.opening import CURRENT, OpensDirs

__all__ = ["SYNC_EACH_MAX", "BuildsGenerations", "Stage"]

# Up to this many files (the daemon's 3-8) a generation is made durable by fsyncing each; above it by one syncfs(2).
SYNC_EACH_MAX = 32


@functools.cache
def _libc_syncfs() -> Any:
    """libc's syncfs(2), or None where libc has none; ctypes loads on the first big set, not in every command."""
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def _syncfs(fd: int) -> None:
    """syncfs(2) on the filesystem of ``fd`` (where ``_libc_syncfs()`` found it), raising OSError on failure."""
    import ctypes

    if _libc_syncfs()(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Stage(msgspec.Struct, eq=False):
    """A set being written by ``CertsDir.staged``: ``add`` each of its files as it becomes known."""

    store: BuildsGenerations
    path: Path                                                # the new generation's directory
    names: frozenset[str]                                     # what may be added
    dir_fd: int                                               # the generation's directory: every file is made in it
    drop: frozenset[str] = frozenset()                        # what is not kept from the current generation
    syncfs: bool = False                                      # made durable by one syncfs (a big set), else per file
    written: set[str] = msgspec.field(default_factory=set)
    fds: list[int] = msgspec.field(default_factory=list)      # written but not yet fsynced (a small set)

    @property
    def generation(self) -> str:
        return self.path.name

    def add(self, content: FileContent) -> None:
        self.store._write_into(self, content)


class BuildsGenerations(OpensDirs):
    """Writing a new generation directory and making it durable (or dropping it when it will not be used)."""

    def _new_gen_dir(self, state_fd: int) -> tuple[str, int]:
        name = f"gen-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(4).hex()}"
        os.mkdir(name, self.owner.dir_mode, dir_fd=state_fd)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=state_fd)
            try:
                self._chown(fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            rmtree(name, dir_fd=state_fd)
            raise
        return name, fd

    def _write_file(self, dir_fd: int, content: FileContent) -> int:
        """Create and fill one file; returns its open fd, so that the caller decides when it is fsynced."""
        mode = self.key_mode if content.secret else 0o644
        # 0600 at creation: the key is never readable by anyone else, not even for an instant.
        fd = os.open(content.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600 if content.secret else 0o644, dir_fd=dir_fd)
        try:
            self._chown(fd)
            os.fchmod(fd, mode)
            view = memoryview(content.data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _begin_generation(self, state_fd: int, names: Sequence[str], drop: Collection[str] = ()) -> Stage:
        """An empty generation directory for ``names`` (and not ``drop``), open, and how it will be made durable.

        On ext4 an fsync between creates costs a journal commit each. Up to SYNC_EACH_MAX files (the
        daemon's case), each is fsynced once all are written: nothing unrelated is flushed. Above it,
        one syncfs(2) of the generation's filesystem: one journal commit instead of thousands, at the
        price of flushing the filesystem's other dirty data too, which a bulk operator command can
        afford. It goes through the generation's fd, opened before the writes, because Linux (5.8+)
        reports to syncfs the writeback errors since that open. Without syncfs, files are fsynced in
        batches of SYNC_EACH_MAX, which also bounds the fds held open.
        """
        name, fd = self._new_gen_dir(state_fd)
        return Stage(self, self._state / name, frozenset(names), fd, frozenset(drop),
                     syncfs=len(names) > SYNC_EACH_MAX and _libc_syncfs() is not None)

    def _write_into(self, stage: Stage, content: FileContent) -> None:
        """One file into a generation being built (see ``_begin_generation`` for when it is made durable)."""
        if content.name not in stage.names or content.name in stage.written:
            raise StoreError(f"{content.name} is not a file this set may add (or was added already)")
        with self._writing():
            fd = self._write_file(stage.dir_fd, content)
            stage.written.add(content.name)
            if stage.syncfs:
                os.close(fd)
                return
            stage.fds.append(fd)
            if len(stage.fds) >= SYNC_EACH_MAX:
                self._fsync_batch(stage)

    def _fsync_batch(self, stage: Stage) -> None:
        fds, stage.fds = stage.fds, []
        try:
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)

    def _finish_generation(self, state_fd: int, stage: Stage) -> None:
        """Complete a generation: the current one's other files joined in (files are never modified in
        place, so a hard link is a copy), and all of it on disk before it can be switched to.

        A key's PKCS#8 copy (``<stem>.key.pk8``) is not joined when this set replaces its key without
        writing a new copy: it would hold the replaced key. What the set drops is not joined, nor the
        PKCS#8 copy of a key it drops."""
        current = self._open_generation(state_fd, CURRENT)
        if current is not None:
            gen_fd = current[1]
            gone = stage.written | stage.drop
            try:
                for name in self._generation_files(gen_fd):
                    if name not in gone and pk8_key_file(name) not in gone:
                        os.link(name, name, src_dir_fd=gen_fd, dst_dir_fd=stage.dir_fd, follow_symlinks=False)
            finally:
                os.close(gen_fd)
        self._make_durable(stage)
        os.fsync(stage.dir_fd)
        self._close_stage(stage)

    def _make_durable(self, stage: Stage) -> None:
        """The files of a generation on disk: one syncfs for a big set, else each file's fsync."""
        if not stage.syncfs:
            self._fsync_batch(stage)
            return
        try:
            _syncfs(stage.dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            os.sync()            # syncfs refused (a seccomp filter, say): flush everything instead

    def _abandon(self, state_fd: int, stage: Stage) -> None:
        """Drop a generation that will not be switched to: its fds closed, its directory removed (through
        the state dir's descriptor, so always the one this write made)."""
        for fd in stage.fds:
            os.close(fd)
        stage.fds = []
        self._close_stage(stage)
        rmtree(stage.generation, dir_fd=state_fd)

    @staticmethod
    def _close_stage(stage: Stage) -> None:
        if stage.dir_fd >= 0:
            os.close(stage.dir_fd)
            stage.dir_fd = -1

    def _build_generation(self, state_fd: int, files: Sequence[FileContent]) -> str:
        """A complete new generation, on disk before it is returned: the current one's files, with
        ``files`` replaced or added."""
        stage = self._begin_generation(state_fd, [f.name for f in files])
        try:
            for content in files:
                self._write_into(stage, content)
            self._finish_generation(state_fd, stage)
        except BaseException:
            self._abandon(state_fd, stage)
            raise
        return stage.generation
