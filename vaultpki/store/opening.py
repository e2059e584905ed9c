"""Opening the directories a set rests on: the certs-dir, its state dir and the generations in it.

Each is opened without following a link and checked as opened (``fstat`` of the descriptor, never a
second look at the path), and ``current``/``previous`` must name a generation right inside the state
dir: a link that leads anywhere else is refused, never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat

from vaultpki.errors import StoreError
from vaultpki.store.descriptors import DIR_FLAGS, leaves, os_errors, rmtree, store_error
from vaultpki.store.ownership import OwnedDir

__all__ = ["CURRENT", "GENERATION", "LOCK", "PREVIOUS", "STATE_DIR", "OpensDirs"]

STATE_DIR = ".vaultpki"
CURRENT = "current"
PREVIOUS = "previous"
LOCK = "lock"

# What ``current`` and ``previous`` may point at: a generation directory right inside the state dir.
GENERATION = re.compile(r"gen-[0-9A-Za-z-]+")


class OpensDirs(OwnedDir):
    """The certs-dir's directories, each opened as a descriptor of its own and checked as opened."""

    @staticmethod
    def _has_current(state_fd: int) -> bool:
        try:
            os.readlink(CURRENT, dir_fd=state_fd)
        except OSError:
            return False
        return True

    def _open_root(self) -> int | None:
        """The certs-dir, opened without following a link and checked as opened; None if it does not exist."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:          # a parent closed to this user: one line, not a traceback
            raise store_error(f"cannot open certs-dir {self.path}", exc) from exc
        if stat.S_ISLNK(st.st_mode):
            self._refuse_symlinked_dir()
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"certs-dir {self.path} is not a directory")
        try:
            fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise StoreError(f"certs-dir {self.path} was replaced while being opened") from None
            raise store_error(f"cannot open certs-dir {self.path}", exc) from exc
        self._guard_or_close("certs-dir", str(self.path), fd)
        return fd

    def _refuse_symlinked_dir(self) -> None:
        raise StoreError(f"certs-dir {self.path} is a symlink to {os.readlink(self.path)}; "
                         "refusing to write through it (use the real path)")

    def _prepare_dir(self) -> tuple[int, bool]:
        """The certs-dir opened (created if missing); True when this call created it."""
        fd = self._open_root()
        if fd is not None:
            return fd, False
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot create certs-dir {self.path}: {self.path.parent} does not exist")
        with os_errors(f"cannot create certs-dir {self.path}"):
            try:
                os.mkdir(self.path, self.owner.dir_mode)
            except FileExistsError:
                created = None          # somebody made it meanwhile: open it as any existing dir
            else:
                created = True
            fd = self._open_root()
            if fd is None:
                raise StoreError(f"certs-dir {self.path} vanished while being created")
            if created:
                try:
                    self._chown(fd)
                except BaseException:
                    identity = self._identity(fd)
                    os.close(fd)
                    self._remove_created(identity)
                    raise
        return fd, bool(created)

    def _remove_created(self, identity: tuple[int, int]) -> None:
        """Remove the certs-dir this call created, if its path still names it."""
        with contextlib.suppress(OSError):
            parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if self._is_same_dir(identity):
                    rmtree(self.path.name, parent)
            finally:
                os.close(parent)

    @staticmethod
    def _identity(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def _is_same_dir(self, identity: tuple[int, int]) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return not stat.S_ISLNK(st.st_mode) and (st.st_dev, st.st_ino) == identity

    def _still_the_same_dir(self, identity: tuple[int, int]) -> None:
        """Every step works in the directory opened at the start; if its path names something else by now
        (it was moved and replaced by a symlink, say), the set would not be where the database looks:
        stop before switching anything."""
        if not self._is_same_dir(identity):
            raise StoreError(f"certs-dir {self.path} was replaced during the write; nothing was switched")

    def _open_state(self, root_fd: int) -> int | None:
        """``.vaultpki`` opened as a directory of its own (never through a link) and checked; None if absent."""
        try:
            fd = os.open(STATE_DIR, DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):     # a link gives either, with O_DIRECTORY
                raise store_error(f"cannot open {self._state}", exc) from exc
            try:
                target = os.readlink(STATE_DIR, dir_fd=root_fd)
            except OSError:
                raise StoreError(f"refusing to write: {self._state} is not a directory") from None
            where = ", outside the certs-dir" if leaves(target) else ""
            raise StoreError(f"refusing to write: {self._state} is a symlink to {target}{where}; "
                             "the state dir must be a directory of its own") from None
        self._guard_or_close("state dir", str(self._state), fd)
        return fd

    def _ensure_state_dir(self, root_fd: int) -> int:
        """Create ``.vaultpki`` and open it (a concurrent creator's is checked like any existing one)."""
        try:
            os.mkdir(STATE_DIR, self.owner.dir_mode, dir_fd=root_fd)
            created = True
        except FileExistsError:
            created = False
        fd = self._open_state(root_fd)
        if fd is None:
            raise StoreError(f"{self._state} vanished while being created")
        try:
            if created:
                self._chown(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _generation_name(self, state_fd: int, link: str) -> str | None:
        """The generation ``.vaultpki/<link>`` points at, if it points at one that exists.

        The target must be a bare generation name: a link that leads anywhere else (``/etc``,
        ``../x``) is refused, never followed."""
        try:
            target = os.readlink(link, dir_fd=state_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):   # EINVAL: not a link
                return None
            raise
        if not GENERATION.fullmatch(target):
            raise StoreError(f"refusing to write: {self._state / link} points at {target}, not at a generation "
                             f"inside {STATE_DIR}")
        try:
            st = os.stat(target, dir_fd=state_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return target if stat.S_ISDIR(st.st_mode) else None

    def _open_generation(self, state_fd: int, link: str) -> tuple[str, int] | None:
        """The generation ``link`` names, opened without following a link and checked as opened."""
        name = self._generation_name(state_fd, link)
        if name is None:
            return None
        fd = os.open(name, DIR_FLAGS, dir_fd=state_fd)
        self._guard_or_close("generation", str(self._state / name), fd)
        return name, fd

    def _generation_files(self, gen_fd: int) -> set[str]:
        """The regular files of a generation; any other entry (a link out, a directory) is refused."""
        files = set()
        for name in os.listdir(gen_fd):
            st = os.stat(name, dir_fd=gen_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=gen_fd)
                raise StoreError(f"{self._state}/{CURRENT}/{name} is a symlink to {target}, outside the certs-dir "
                                 "(a generation holds files only); refusing to replace it")
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{self._state}/{CURRENT}/{name} is not a regular file; refusing to replace it")
            files.add(name)
        return files
