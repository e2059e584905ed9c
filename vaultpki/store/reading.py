"""Reading a certs-dir back: what CockroachDB's loader will see, for ``verify``, ``status`` and the daemon.

Issuing never reads the dir this way, so the core's snapshot records are imported only when it does.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vaultpki.core.validate import Problem
from vaultpki.errors import StoreError
from vaultpki.store.descriptors import MAX_READ, read_fd
from vaultpki.store.opening import CURRENT, GENERATION, PREVIOUS, STATE_DIR, OpensDirs

if TYPE_CHECKING:
    from vaultpki.core.snapshot import DirState, FileState

__all__ = ["ReadsBack"]


class ReadsBack(OpensDirs):
    """The dir's entries and contents as the loader sees them, and what is wrong with its directories."""

    def snapshot(self, service_gid: int | None = None) -> DirState:
        """The dir as CockroachDB's loader will see it (entries lstat'ed, contents read through links),
        with what is wrong with the directories the set rests on (owner, mode, where ``current`` leads)."""
        from vaultpki.core.snapshot import DirState  # verify, status and the daemon read the dir back; issuing never does

        gid = service_gid if service_gid is not None else (self.owner.gid if self.owner.gid is not None else os.getgid())
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return DirState(str(self.path), exists=False, service_gid=gid)
        except OSError as exc:
            raise StoreError(f"cannot list certs-dir {self.path}: {exc.strerror}") from exc
        return DirState(str(self.path), True, {n: self._entry(n) for n in names}, service_gid=gid,
                        dir_problems=tuple(self._dir_problems()))

    def managed(self, names: Iterable[str]) -> tuple[str, ...]:
        """Which of ``names`` are vaultpki's files here now (links through ``.vaultpki/current``): what a write
        that drops them takes out of the dir."""
        return tuple(n for n in names if _link_target(self.path / n) == f"{STATE_DIR}/{CURRENT}/{n}")

    def _dir_problems(self) -> Iterator[Problem]:
        """The certs-dir, ``.vaultpki`` and the generations ``current``/``previous`` name, judged as the writer would."""
        def guard(role: str, path: Path, st: os.stat_result) -> Iterator[Problem]:
            problem = self._guard_problem(role, str(path), st)
            if problem is not None:
                yield Problem(*problem)

        with contextlib.suppress(FileNotFoundError):
            yield from guard("certs-dir", self.path, os.stat(self.path))
            st = os.lstat(self._state)
            if stat.S_ISLNK(st.st_mode):
                yield Problem(f"state dir {self._state}", f"is a symlink to {os.readlink(self._state)}, which "
                                 "vaultpki never writes through")
                return
            if not stat.S_ISDIR(st.st_mode):
                return
            yield from guard("state dir", self._state, st)
            for link in (CURRENT, PREVIOUS):
                path = self._state / link
                if not path.is_symlink():
                    continue
                target = os.readlink(path)
                if not GENERATION.fullmatch(target):
                    yield Problem(f"{STATE_DIR}/{link}", f"points at {target}, not at a generation inside "
                                     f"{STATE_DIR}" + (": CockroachDB loads its files from there" if link == CURRENT
                                                       else ""))
                    continue
                with contextlib.suppress(FileNotFoundError):
                    gen = os.lstat(self._state / target)
                    if stat.S_ISDIR(gen.st_mode):
                        yield from guard(f"{link} generation", self._state / target, gen)

    def _entry(self, name: str) -> FileState:
        from vaultpki.core.snapshot import FileState

        full = self.path / name
        lst = os.lstat(full)
        is_link = stat.S_ISLNK(lst.st_mode)
        try:
            st = os.stat(full)
        except OSError as exc:
            return FileState(name, is_symlink=is_link, target_is_regular=False, data=None,
                             read_error=f"broken link: {exc.strerror}")
        if stat.S_ISDIR(st.st_mode):
            return FileState(name, is_dir=True, is_symlink=is_link, target_is_regular=False)
        data, error = self._read_regular(full) if stat.S_ISREG(st.st_mode) else (None, None)
        return FileState(name, is_symlink=is_link, target_is_regular=stat.S_ISREG(st.st_mode),
                         mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data, read_error=error,
                         managed=is_link and _link_target(full) == f"{STATE_DIR}/{CURRENT}/{name}")

    @staticmethod
    def _read_regular(path: Path) -> tuple[bytes | None, str | None]:
        """(data, why not) for what ``path`` is now: a regular file of at most MAX_READ bytes (a FIFO swapped
        in after the stat is not read, so never blocks)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            return None, exc.strerror
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, "not a regular file"
            data = read_fd(fd)
            return (data, None) if data is not None else (None, f"larger than {MAX_READ} bytes")
        except OSError as exc:
            return None, exc.strerror
        finally:
            os.close(fd)


def _link_target(path: Path) -> str | None:
    """Where the link ``path`` points (None when it is gone or no longer a link)."""
    try:
        return os.readlink(path)
    except OSError:
        return None
