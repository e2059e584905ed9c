"""Small records of the daemon's own kept in the state dir (``.vaultpki/<name>``), such as a reload
still pending, so they outlive a restart of the daemon.

They are read and written like everything else of the store: through the certs-dir's and the state
dir's descriptors (never a path walked again), never through a link, written whole to a new file and
renamed over the old one under the dir's lock, so a crash leaves the old record or the new one.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

from vaultpki.errors import StoreError
from vaultpki.store.descriptors import close_if_open, os_errors, read_fd
from vaultpki.store.opening import OpensDirs

__all__ = ["KeepsState"]

# A record's name: a plain file name that cannot be a generation, a link or the lock.
RECORD_NAME = re.compile(r"[a-z][a-z0-9-]*\.json")


class KeepsState(OpensDirs):
    """``read_record`` and ``write_record``: small files of the daemon's own in the state dir."""

    def read_record(self, name: str) -> bytes | None:
        """The record's bytes; None when the certs-dir, its state dir or the record does not exist."""
        self._check_record_name(name)
        root_fd = self._open_root()
        if root_fd is None:
            return None
        state_fd = None
        try:
            state_fd = self._open_state(root_fd)
            if state_fd is None:
                return None
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=state_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(f"cannot read {self._state / name}: {(exc.strerror or str(exc)).lower()}") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StoreError(f"{self._state / name} is not a regular file")
                return read_fd(fd)
            finally:
                os.close(fd)
        finally:
            close_if_open(state_fd)
            os.close(root_fd)

    def write_record(self, name: str, data: bytes | None) -> None:
        """Replace the record with ``data`` atomically (0600, the writer's own); ``None`` removes it.

        The state dir exists once a set was written; before that there is nothing to remember a reload of,
        so a missing certs-dir or state dir is a StoreError."""
        self._check_record_name(name)
        root_fd = self._open_root()
        if root_fd is None:
            raise StoreError(f"certs-dir {self.path} does not exist")
        state_fd = None
        try:
            state_fd = self._open_state(root_fd)
            if state_fd is None:
                raise StoreError(f"{self._state} does not exist")
            with os_errors(f"cannot write {self._state / name}"), self._locked(state_fd):
                if data is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=state_fd)
                else:
                    self._replace_record(state_fd, name, data)
                os.fsync(state_fd)
        finally:
            close_if_open(state_fd)
            os.close(root_fd)

    def _locked(self, state_fd: int) -> contextlib.AbstractContextManager[None]:
        """The dir's writer lock (``CertsDir._locked``): a record is written by one writer at a time too."""
        raise NotImplementedError

    @staticmethod
    def _replace_record(state_fd: int, name: str, data: bytes) -> None:
        """Write ``data`` to a fresh temporary file (O_EXCL: never one somebody left there), then rename it."""
        temp = f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=state_fd)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=state_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=state_fd, dst_dir_fd=state_fd)

    @staticmethod
    def _check_record_name(name: str) -> None:
        if not RECORD_NAME.fullmatch(name):
            raise StoreError(f"invalid state record name {name!r}")
