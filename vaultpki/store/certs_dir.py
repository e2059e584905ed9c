"""The certs-dir adapter: the only module that writes files.

Every managed file is a symlink ``name -> .vaultpki/current/name``; ``current`` is
itself a symlink to one complete generation directory. A write builds a whole new
generation beside the old one (keys created 0600 with O_EXCL, all of it on disk),
then switches ``current`` with one ``rename()``. A crash at any instant leaves either
the old set or the new set visible, never a certificate beside a key it does not
match. CockroachDB skips directories and names not ending in ``.crt`` when it scans
the dir and follows symlinks when reading (as with Kubernetes' ``..data``), so
neither ``.vaultpki/`` nor the temporary links are ever loaded.

The previous generation is kept (``.vaultpki/previous``) so a bad set can be rolled back.

Other local users. The writer is often root, and a certs-dir is a place another user may
reach, so:

- the certs-dir, ``.vaultpki`` and every generation it uses must be owned by root, the
  writing user or the configured ``owner`` (the user the keys are written for), and not
  writable by group or others; anything else is refused before anything is written (and
  ``verify`` names it);
- the certs-dir is opened once, without following a link, and every later step works
  relative to that directory descriptor (``dir_fd=``, ``O_NOFOLLOW``, ``O_DIRECTORY``): a
  path swapped meanwhile changes nothing we touch;
- what was opened is what is checked (``fstat`` of the descriptor, not a second look
  at the path), and no link that leaves the certs-dir is ever followed: ``current`` must
  name a generation inside ``.vaultpki``, and a file being adopted is read through in-dir
  links only, component by component.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import grp
import os
import pwd
import re
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from vaultpki.core.layout import FileContent
from vaultpki.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from vaultpki.core.snapshot import DirProblem, DirState, FileState

__all__ = ["STATE_DIR", "CertsDir", "FileContent", "Owner", "Stage", "describe_user", "resolve_owner"]

STATE_DIR = ".vaultpki"
CURRENT = "current"
PREVIOUS = "previous"
LOCK = "lock"
MAX_READ = 1 << 20
# Up to this many files (the daemon's 3-8) a generation is made durable by fsyncing each; above it by one syncfs(2).
SYNC_EACH_MAX = 32
# What ``current`` and ``previous`` may point at: a generation directory right inside the state dir.
GENERATION = re.compile(r"gen-[0-9A-Za-z-]+")
# Group or others may write: such a directory is anybody's to change.
LOOSE = stat.S_IWGRP | stat.S_IWOTH
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 16
MAX_TREE_DEPTH = 8


class Owner(msgspec.Struct, frozen=True):
    uid: int | None
    gid: int | None

    def key_mode(self, euid: int) -> int:
        """0600, or 0640 when the key is root's and readable through the service's group (CockroachDB's rule)."""
        uid = euid if self.uid is None else self.uid
        return 0o640 if uid == 0 and self.gid is not None else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.gid is not None or self.uid is not None else 0o700


PROCESS_OWNER = Owner(None, None)     # no chown: files stay the writing process's own


def resolve_owner(owner: str | None, group: str | None) -> Owner:
    """Look up configured owner/group names (or numeric ids)."""
    def lookup(name: str | None, what: str, by_name: object, by_id: object) -> int | None:
        if name is None:
            return None
        try:
            entry = by_id(int(name)) if name.isdigit() else by_name(name)  # type: ignore[operator]
        except KeyError:
            raise ConfigError(f"{what} {name!r} does not exist on this machine") from None
        return int(entry[2])
    return Owner(
        uid=lookup(owner, "owner", pwd.getpwnam, pwd.getpwuid),
        gid=lookup(group, "group", grp.getgrnam, grp.getgrgid),
    )


def _store_error(what: str, exc: OSError) -> StoreError:
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
    return StoreError(f"{what}: {reason}")


@contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _store_error(what, exc) from exc


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


def _rmtree(name: str, dir_fd: int, depth: int = 0) -> None:
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
                _rmtree(entry, fd, depth + 1)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)


def describe_user(uid: int) -> str:
    """'name (uid N)', or 'uid N' for a uid with no name: for messages."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _leaves(target: str) -> bool:
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


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


class _Outside(Exception):
    """A link on the way to an entry leads out of the certs-dir."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class _NotRegular(Exception):
    """The entry (through in-dir links) is not a regular file."""


def _open_within(root_fd: int, name: str) -> int | None:
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
                    raise _Outside(followed)
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
                    raise _Outside(target)
                if hops > MAX_LINK_HOPS:
                    raise _NotRegular("too many levels of symbolic links")
                pending[:0] = target.split("/")
                continue
            if pending:
                if not stat.S_ISDIR(st.st_mode):
                    return None
                walked.append(os.open(part, DIR_FLAGS, dir_fd=walked[-1]))
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _NotRegular("not a regular file")
            fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=walked[-1])
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                raise _NotRegular("replaced while being read")
            return fd
        raise _NotRegular("a directory")
    finally:
        for fd in walked:
            os.close(fd)


class Stage(msgspec.Struct, eq=False):
    """A set being written by ``CertsDir.staged``: ``add`` each of its files as it becomes known."""

    store: CertsDir
    path: Path                                                # the new generation's directory
    names: frozenset[str]                                     # what may be added
    dir_fd: int                                               # the generation's directory: every file is made in it
    syncfs: bool = False                                      # made durable by one syncfs (a big set), else per file
    written: set[str] = msgspec.field(default_factory=set)
    fds: list[int] = msgspec.field(default_factory=list)      # written but not yet fsynced (a small set)

    @property
    def generation(self) -> str:
        return self.path.name

    def add(self, content: FileContent) -> None:
        self.store._write_into(self, content)


class CertsDir:
    """One certs-dir on disk."""

    def __init__(self, path: Path, owner: Owner = PROCESS_OWNER) -> None:
        self.path = Path(os.path.abspath(path))
        self.owner = owner
        self._state = self.path / STATE_DIR

    @property
    def key_mode(self) -> int:
        """The mode keys get here (0600, or 0640 for root-owned keys read through the service's group)."""
        return self.owner.key_mode(os.geteuid())

    # --- who may hold the directories -------------------------------------------

    def _trusted_uids(self) -> set[int]:
        """Root, the writing user and the configured owner: the only users who may own the certs-dir, its
        state dir and generations (the owner gets the keys anyway; anybody else could change the set)."""
        return {0, os.geteuid()} | ({self.owner.uid} if self.owner.uid is not None else set())

    def _guard_problem(self, role: str, path: str, st: os.stat_result) -> tuple[str, str, str] | None:
        """(subject, what is wrong, severity for ``verify``) when a directory the set rests on is another
        user's to change. The writer refuses either; ``verify`` only warns about an owner it does not
        know, since without a configuration it cannot tell the service user from a stranger."""
        subject = f"{role} {path}"
        if st.st_mode & LOOSE:
            return subject, (f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}), so another "
                             "local user could change what CockroachDB loads (chmod go-w it)"), "error"
        if st.st_uid not in self._trusted_uids():
            configured = ", the writing user or the configured owner" if self.owner.uid is not None else \
                " or the writing user"
            return subject, (f"is owned by {describe_user(st.st_uid)}, not by root{configured}, so that user could "
                             "change what CockroachDB loads (chown it, or configure that user as owner)"), "warning"
        return None

    def _guard(self, role: str, path: str, fd: int) -> None:
        """Refuse to write through the directory ``fd`` (as opened) if another user could change it."""
        problem = self._guard_problem(role, path, os.fstat(fd))
        if problem is not None:
            raise StoreError(f"refusing to write: the {problem[0]} {problem[1]}")

    # --- reading ------------------------------------------------------------

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

    def _dir_problems(self) -> Iterator[DirProblem]:
        """The certs-dir, ``.vaultpki`` and the generations ``current``/``previous`` name, judged as the writer would."""
        from vaultpki.core.snapshot import DirProblem

        def guard(role: str, path: Path, st: os.stat_result) -> Iterator[DirProblem]:
            problem = self._guard_problem(role, str(path), st)
            if problem is not None:
                yield DirProblem(*problem)

        with contextlib.suppress(FileNotFoundError):
            yield from guard("certs-dir", self.path, os.stat(self.path))
            st = os.lstat(self._state)
            if stat.S_ISLNK(st.st_mode):
                yield DirProblem(f"state dir {self._state}", f"is a symlink to {os.readlink(self._state)}, which "
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
                    yield DirProblem(f"{STATE_DIR}/{link}", f"points at {target}, not at a generation inside "
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
                         mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data, read_error=error)

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
            data = _read_fd(fd)
            return (data, None) if data is not None else (None, f"larger than {MAX_READ} bytes")
        except OSError as exc:
            return None, exc.strerror
        finally:
            os.close(fd)

    # --- writing ------------------------------------------------------------

    def write_set(self, files: Sequence[FileContent]) -> str:
        """Replace/add ``files`` as one atomic set; returns the new generation's name.

        Raises StoreError, leaving the previously visible set untouched (a failure after the
        switch switches back; a directory this call created is removed again).
        """
        with self.staged([f.name for f in files]) as stage:
            for content in files:
                stage.add(content)
        return stage.generation

    @contextmanager
    def staged(self, names: Sequence[str]) -> Iterator[Stage]:
        """A set written while it is still being produced: ``write_set`` with the files handed over one by one.

        Any of ``names`` may be ``add``ed to the yielded stage, as each becomes known; they go straight
        into the new generation, which nobody sees yet. On a clean exit the added files become visible
        as one set, exactly as ``write_set`` would make them, and a name never added keeps what it had.
        An exception from the body leaves the dir as it was. Bulk issuance writes each certificate this
        way while the next ones are still being signed. The dir's lock is held throughout.
        """
        names = list(names)
        if len(set(names)) != len(names) or any("/" in n or n.startswith(".") for n in names):
            raise StoreError(f"invalid file set {names}")
        root_fd, created_dir = self._prepare_dir()
        identity = self._identity(root_fd)
        committed = False
        try:
            state_fd = self._open_state(root_fd)
            created_state = state_fd is None
            try:
                with _os_errors(f"cannot read certs-dir {self.path}"):
                    foreign = self._check_targets(root_fd, state_fd, names)
                with contextlib.ExitStack() as held:
                    with self._writing():
                        if state_fd is None:
                            state_fd = self._ensure_state_dir(root_fd)
                        held.enter_context(self._locked(state_fd))
                        if foreign:
                            self._adopt(root_fd, state_fd, foreign)
                        stage = self._begin_generation(state_fd, names)
                    try:
                        yield stage
                        with self._writing():
                            self._finish_generation(state_fd, stage)
                            self._still_the_same_dir(identity)
                            self._commit(root_fd, state_fd, stage.generation, stage.written)
                            committed = True
                            self._prune(state_fd)
                    finally:
                        if not committed:
                            self._abandon(state_fd, stage)
            except BaseException:
                # Nothing of ours is visible at this point; take away what this call created.
                if not committed and created_state and state_fd is not None and not self._has_current(state_fd):
                    _rmtree(STATE_DIR, dir_fd=root_fd)
                raise
            finally:
                _close(state_fd)
        except BaseException:
            if not committed and created_dir:
                self._remove_created(identity)
            raise
        finally:
            os.close(root_fd)

    @staticmethod
    def _has_current(state_fd: int) -> bool:
        try:
            os.readlink(CURRENT, dir_fd=state_fd)
        except OSError:
            return False
        return True

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """OS errors while writing the dir, as one StoreError line."""
        return _os_errors(f"cannot write to certs-dir {self.path}")

    @contextmanager
    def _locked(self, state_fd: int) -> Iterator[None]:
        """One writer at a time per certs-dir (the daemon and an operator's issue-user, say).

        O_NOFOLLOW: a lock that is a link is somebody else's doing, and following it with O_CREAT
        would create whatever file it names."""
        try:
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                         dir_fd=state_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise StoreError(f"refusing to write: {self._state / LOCK} is a symlink (to "
                             f"{os.readlink(LOCK, dir_fd=state_fd)}); the lock must be a file of its own") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"refusing to write: {self._state / LOCK} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open_root(self) -> int | None:
        """The certs-dir, opened without following a link and checked as opened; None if it does not exist."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            self._refuse_symlinked_dir()
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"certs-dir {self.path} is not a directory")
        try:
            fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise StoreError(f"certs-dir {self.path} was replaced while being opened") from None
            raise _store_error(f"cannot open certs-dir {self.path}", exc) from exc
        try:
            self._guard("certs-dir", str(self.path), fd)
        except BaseException:
            os.close(fd)
            raise
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
        with _os_errors(f"cannot create certs-dir {self.path}"):
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
                    _rmtree(self.path.name, parent)
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
                raise _store_error(f"cannot open {self._state}", exc) from exc
            try:
                target = os.readlink(STATE_DIR, dir_fd=root_fd)
            except OSError:
                raise StoreError(f"refusing to write: {self._state} is not a directory") from None
            where = ", outside the certs-dir" if _leaves(target) else ""
            raise StoreError(f"refusing to write: {self._state} is a symlink to {target}{where}; "
                             "the state dir must be a directory of its own") from None
        try:
            self._guard("state dir", str(self._state), fd)
        except BaseException:
            os.close(fd)
            raise
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
        try:
            self._guard("generation", str(self._state / name), fd)
        except BaseException:
            os.close(fd)
            raise
        return name, fd

    def _check_targets(self, root_fd: int, state_fd: int | None, names: Sequence[str]) -> list[str]:
        """Names whose current entry is a regular file (or another in-dir link) to adopt first.

        Our own links all resolve through ``current``, so that is looked at once rather than per link.
        Only names the dir holds are looked at: a bulk run into a new dir has thousands that it does not.
        """
        current = self._open_generation(state_fd, CURRENT) if state_fd is not None else None
        try:
            ours_ok = self._generation_files(current[1]) if current is not None else set()
            present = set(os.listdir(root_fd))
            foreign = []
            for name in names:
                if name in present and self._is_foreign(root_fd, current, ours_ok, name):
                    foreign.append(name)
            return foreign
        finally:
            _close(current[1] if current is not None else None)

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

    def _is_foreign(self, root_fd: int, current: tuple[str, int] | None, ours_ok: set[str], name: str) -> bool:
        """Whether the entry ``name`` must be adopted before it is replaced (raises when it may not be replaced)."""
        full = self.path / name
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISREG(st.st_mode):
            return True
        if not stat.S_ISLNK(st.st_mode):
            raise StoreError(f"{full} is not a regular file; refusing to replace it")
        target = os.readlink(name, dir_fd=root_fd)
        if target == f"{STATE_DIR}/{CURRENT}/{name}" and (name in ours_ok or current is None):
            return False                # ours (or dangling: nothing that could be lost)
        try:
            fd = _open_within(root_fd, name)
        except _Outside as exc:
            raise StoreError(f"{full} is a symlink to {exc.target}, outside the certs-dir; refusing to replace it") \
                from None
        except _NotRegular:
            raise StoreError(f"{full} is not a regular file; refusing to replace it") from None
        if fd is None:
            return False                # a dangling in-dir link shows nothing that could be lost: just replace it
        os.close(fd)
        return True

    def _chown(self, fd: int) -> None:
        if self.owner.uid is None and self.owner.gid is None:
            return
        uid = -1 if self.owner.uid is None else self.owner.uid
        gid = -1 if self.owner.gid is None else self.owner.gid
        os.fchown(fd, uid, gid)

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
            _rmtree(name, dir_fd=state_fd)
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

    def _begin_generation(self, state_fd: int, names: Sequence[str]) -> Stage:
        """An empty generation directory for ``names``, open, and how it will be made durable.

        On ext4 an fsync between creates costs a journal commit each. Up to SYNC_EACH_MAX files (the
        daemon's case), each is fsynced once all are written: nothing unrelated is flushed. Above it,
        one syncfs(2) of the generation's filesystem: one journal commit instead of thousands, at the
        price of flushing the filesystem's other dirty data too, which a bulk operator command can
        afford. It goes through the generation's fd, opened before the writes, because Linux (5.8+)
        reports to syncfs the writeback errors since that open. Without syncfs, files are fsynced in
        batches of SYNC_EACH_MAX, which also bounds the fds held open.
        """
        name, fd = self._new_gen_dir(state_fd)
        return Stage(self, self._state / name, frozenset(names), fd,
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
        place, so a hard link is a copy), and all of it on disk before it can be switched to."""
        current = self._open_generation(state_fd, CURRENT)
        if current is not None:
            gen_fd = current[1]
            try:
                for name in self._generation_files(gen_fd):
                    if name not in stage.written:
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
        _rmtree(stage.generation, dir_fd=state_fd)

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

    def _commit(self, root_fd: int, state_fd: int, gen: str, replace: set[str]) -> None:
        """Make ``gen`` visible. If anything fails after the switch, switch back before raising,
        so that a reported failure always means the previous set is what is visible."""
        old, old_previous = self._generation_name(state_fd, CURRENT), self._generation_name(state_fd, PREVIOUS)
        try:
            self._switch(state_fd, gen)
            self._link_all(root_fd, state_fd, replace)
            self._unlink_stale(root_fd, state_fd)
        except OSError:
            with contextlib.suppress(OSError):
                for link, target in ((CURRENT, old), (PREVIOUS, old_previous)):
                    if target is not None:
                        self._replace_link(state_fd, link, target)
                    else:
                        with contextlib.suppress(FileNotFoundError):   # rollback must not lead anywhere new
                            os.unlink(link, dir_fd=state_fd)
                self._unlink_stale(root_fd, state_fd, undo=True)
                if old is None or old != gen:
                    _rmtree(gen, dir_fd=state_fd)  # never visible: not worth keeping
                os.fsync(state_fd)
            raise

    def _unlink_stale(self, root_fd: int, state_fd: int, undo: bool = False) -> None:
        """Remove our links to names the current generation no longer has (after a rollback or an undo);
        the .crt goes before its .key so that a certificate never lacks its key.

        With no current generation at all, only an undo may do this (it removes the links its own
        write made); otherwise it means the state is not what this write built, and nothing is removed.
        """
        current = self._open_generation(state_fd, CURRENT)
        if current is None and not undo:
            return
        if current is not None:
            try:
                have = set(os.listdir(current[1]))
            finally:
                os.close(current[1])
        else:
            have = set()
        stale = [n for n in os.listdir(root_fd) if n not in have and self._is_our_link(root_fd, n)]
        for name in sorted(stale, key=lambda n: (n.endswith(".key"), n)):
            os.unlink(name, dir_fd=root_fd)
        if stale:
            os.fsync(root_fd)

    @staticmethod
    def _is_our_link(root_fd: int, name: str) -> bool:
        try:
            return os.readlink(name, dir_fd=root_fd) == f"{STATE_DIR}/{CURRENT}/{name}"
        except OSError:           # not a link (EINVAL) or gone
            return False

    def _switch(self, state_fd: int, gen: str) -> None:
        """Point ``current`` at ``gen`` with one rename; remember the old one as ``previous``."""
        try:
            st = os.stat(gen, dir_fd=state_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"generation {gen} is missing from {self._state}; nothing was switched")
        old = self._generation_name(state_fd, CURRENT)
        if old is not None:
            self._replace_link(state_fd, PREVIOUS, old)
        self._replace_link(state_fd, CURRENT, gen)
        os.fsync(state_fd)

    def _replace_link(self, dir_fd: int, name: str, target: str) -> None:
        """``name`` (in ``dir_fd``) made a link to ``target`` with one rename."""
        tmp = f".link-{os.urandom(6).hex()}"
        os.symlink(target, tmp, dir_fd=dir_fd)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise

    def _link_all(self, root_fd: int, state_fd: int, replace: set[str]) -> None:
        """Make every file of the current generation visible; keys first, so a .crt never lacks its key.

        A file or link an operator put in place of one of ours is only replaced
        when it is in ``replace`` (being written or adopted now): nothing is lost silently.
        """
        current = self._open_generation(state_fd, CURRENT)
        if current is None:
            return
        try:
            names = sorted(os.listdir(current[1]), key=lambda n: (not n.endswith(".key"), n))
        finally:
            os.close(current[1])
        changed = False
        for name in names:
            want = f"{STATE_DIR}/{CURRENT}/{name}"
            try:
                os.symlink(want, name, dir_fd=root_fd)        # a new name: creating the link is already atomic
            except FileExistsError:
                if name not in replace or self._is_our_link(root_fd, name):
                    continue
                self._replace_link(root_fd, name, want)
            changed = True
        if changed:
            os.fsync(root_fd)

    def _adopt(self, root_fd: int, state_fd: int, names: Sequence[str]) -> None:
        """Turn existing plain files into links without changing what is visible.

        A generation holding copies of the current bytes becomes ``current`` first;
        then each plain file is swapped for a link to its identical copy. Each is read through
        in-dir links only, and what is copied is what was opened (see ``_open_within``).
        """
        copies = [FileContent(n, self._read_to_adopt(root_fd, n), secret=n.endswith(".key")) for n in names]
        self._switch(state_fd, self._build_generation(state_fd, copies))
        self._link_all(root_fd, state_fd, set(names))

    def _read_to_adopt(self, root_fd: int, name: str) -> bytes:
        """The bytes of the plain file (or in-dir link) ``name``, as opened; refused if it leads outside,
        is no longer a regular file, or is a key with other hard links (a copy of a file kept elsewhere)."""
        full = self.path / name
        try:
            fd = _open_within(root_fd, name)
        except _Outside as exc:
            raise StoreError(f"{full} is a symlink to {exc.target}, outside the certs-dir; refusing to replace it") \
                from None
        except _NotRegular as exc:
            raise StoreError(f"{full} is not a regular file ({exc}); refusing to replace it") from None
        if fd is None:
            raise StoreError(f"{full} vanished while being adopted; nothing was switched")
        try:
            st = os.fstat(fd)
            if name.endswith(".key") and st.st_nlink != 1:
                raise StoreError(f"{full} has {st.st_nlink} hard links; refusing to adopt a key that is also "
                                 "elsewhere (give it a file of its own)")
            data = _read_fd(fd)
            if data is None:
                raise StoreError(f"{full} is larger than {MAX_READ} bytes: not a certificate or key; "
                                 "refusing to adopt it")
            return data
        finally:
            os.close(fd)

    def _prune(self, state_fd: int) -> None:
        """Drop generations other than current and previous (best effort: the new set is already live)."""
        try:
            keep = {self._generation_name(state_fd, CURRENT), self._generation_name(state_fd, PREVIOUS)}
            entries = os.listdir(state_fd)
        except (OSError, StoreError):
            return
        for entry in entries:
            try:
                st = os.stat(entry, dir_fd=state_fd, follow_symlinks=False)
            except OSError:
                continue
            if entry.startswith("gen-") and entry not in keep and stat.S_ISDIR(st.st_mode):
                _rmtree(entry, dir_fd=state_fd)
            elif entry.startswith(".link-") and stat.S_ISLNK(st.st_mode):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=state_fd)      # a crash between symlink() and replace() left it

    def rollback(self) -> str:
        """Make the previous generation current again (operator's escape hatch)."""
        none = StoreError(f"certs-dir {self.path} has no previous generation to roll back to")
        root_fd = self._open_root()
        if root_fd is None:
            raise none
        try:
            state_fd = self._open_state(root_fd)
            if state_fd is None:
                raise none
            try:
                with _os_errors(f"cannot roll back certs-dir {self.path}"), self._locked(state_fd):
                    previous = self._generation_name(state_fd, PREVIOUS)
                    if previous is None:
                        raise none
                    self._commit(root_fd, state_fd, previous, set())
                return previous
            finally:
                os.close(state_fd)
        finally:
            os.close(root_fd)


def _read_fd(fd: int) -> bytes | None:
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
