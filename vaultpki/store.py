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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import grp
import os
import pwd
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigError, StoreError
from .layout import FileContent

if TYPE_CHECKING:
    from .snapshot import DirState, FileState

__all__ = ["STATE_DIR", "CertsDir", "FileContent", "Owner", "Stage", "resolve_owner"]

STATE_DIR = ".vaultpki"
CURRENT = "current"
PREVIOUS = "previous"
MAX_READ = 1 << 20
# Up to this many files (the daemon's 3-8) a generation is made durable by fsyncing each; above it by one syncfs(2).
SYNC_EACH_MAX = 32


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


@contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
        raise StoreError(f"{what}: {reason}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _rmtree(path: str | Path) -> None:
    """Best-effort removal (shutil loads only when something is to be removed)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _is_within(child: str, parent: str) -> bool:
    """For normalized absolute paths (realpath's): what ``commonpath([child, parent]) == parent`` says, without its cost."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


class Stage(msgspec.Struct, eq=False):
    """A set being written by ``CertsDir.staged``: ``add`` each of its files as it becomes known."""

    store: CertsDir
    path: Path                                                # the new generation's directory
    names: frozenset[str]                                     # what may be added
    written: set[str] = msgspec.field(default_factory=set)
    fds: list[int] = msgspec.field(default_factory=list)      # written but not yet fsynced (a small set)
    dir_fd: int | None = None                                 # the generation's dir, for one syncfs (a big set)

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

    # --- reading ------------------------------------------------------------

    def snapshot(self, service_gid: int | None = None) -> DirState:
        """The dir as CockroachDB's loader will see it (entries lstat'ed, contents read through links)."""
        from .snapshot import DirState  # verify, status and the daemon read the dir back; issuing never does

        gid = service_gid if service_gid is not None else (self.owner.gid if self.owner.gid is not None else os.getgid())
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return DirState(str(self.path), exists=False, service_gid=gid)
        except OSError as exc:
            raise StoreError(f"cannot list certs-dir {self.path}: {exc.strerror}") from exc
        return DirState(str(self.path), True, {n: self._entry(n) for n in names}, service_gid=gid)

    def _entry(self, name: str) -> FileState:
        from .snapshot import FileState

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
        data, error = None, None
        if stat.S_ISREG(st.st_mode):
            try:
                with open(full, "rb") as fh:
                    data = fh.read(MAX_READ)
            except OSError as exc:
                error = exc.strerror
        return FileState(name, is_symlink=is_link, target_is_regular=stat.S_ISREG(st.st_mode),
                         mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, data=data, read_error=error)

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
        created_dir = self._prepare_dir()
        identity = self._identity()
        foreign = self._check_targets(names)
        created_state = not self._state.exists()
        committed = False
        try:
            with contextlib.ExitStack() as held:
                with self._writing():
                    self._ensure_state_dir()
                    held.enter_context(self._locked())
                    if foreign:
                        self._adopt(foreign)
                    stage = self._begin_generation(names)
                try:
                    yield stage
                    with self._writing():
                        self._finish_generation(stage)
                        self._still_the_same_dir(identity)
                        self._commit(stage.generation, stage.written)
                        committed = True
                        self._prune()
                finally:
                    if not committed:
                        self._abandon(stage, identity)
        except BaseException:
            # Nothing of ours is visible at this point; take away what this call created.
            if not committed:
                if created_dir:
                    _rmtree(self.path)
                elif created_state and self._current() is None:
                    _rmtree(self._state)
            raise

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """OS errors while writing the dir, as one StoreError line."""
        return _os_errors(f"cannot write to certs-dir {self.path}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time per certs-dir (the daemon and an operator's issue-user, say)."""
        fd = os.open(self._state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _prepare_dir(self) -> bool:
        """Check (or create) the certs-dir; True when this call created it."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                raise StoreError(f"cannot create certs-dir {self.path}: {self.path.parent} does not exist") from None
            with _os_errors(f"cannot create certs-dir {self.path}"):
                os.mkdir(self.path, self.owner.dir_mode)
                self._chown_path(self.path)
            return True
        if stat.S_ISLNK(st.st_mode):
            raise StoreError(f"certs-dir {self.path} is a symlink to {os.readlink(self.path)}; "
                             "refusing to write through it (use the real path)")
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"certs-dir {self.path} is not a directory")
        return False

    def _identity(self) -> tuple[int, int]:
        st = os.lstat(self.path)
        return st.st_dev, st.st_ino

    def _is_same_dir(self, identity: tuple[int, int]) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return not stat.S_ISLNK(st.st_mode) and (st.st_dev, st.st_ino) == identity

    def _still_the_same_dir(self, identity: tuple[int, int]) -> None:
        """Every step works by path: if the certs-dir was replaced meanwhile (by a symlink, say), stop
        before switching anything, or the switch would land in whatever the path now names."""
        if not self._is_same_dir(identity):
            raise StoreError(f"certs-dir {self.path} was replaced during the write; nothing was switched")

    def _check_targets(self, names: Sequence[str]) -> list[str]:
        """Names whose current entry is a regular file (or another in-dir link) to adopt first.

        Our own links all resolve through ``current``, so that is resolved once rather than per link
        (a realpath walks every component): ``<current>/<name>`` is already real unless it is a link.
        Only names the dir holds are looked at: a bulk run into a new dir has thousands that it does not.
        """
        root = os.path.realpath(self.path)
        current = os.path.realpath(os.path.join(root, STATE_DIR, CURRENT))
        try:
            with os.scandir(current) as entries:
                real = {e.name for e in entries if not e.is_symlink()}
        except OSError:
            real = set()
        top = str(self.path)
        with _os_errors(f"cannot read certs-dir {self.path}"):
            present = set(os.listdir(top))
        foreign = []
        for name in names:
            if name not in present:
                continue
            full = os.path.join(top, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                ours = os.readlink(full) == f"{STATE_DIR}/{CURRENT}/{name}"
                target = os.path.join(current, name) if ours and name in real else os.path.realpath(full)
                if not _is_within(target, root):
                    raise StoreError(f"{full} is a symlink to {target}, outside the certs-dir; refusing to replace it")
                # A dangling in-dir link shows nothing that could be lost: just replace it.
                if not ours and os.path.exists(full):
                    foreign.append(name)
            elif stat.S_ISREG(st.st_mode):
                foreign.append(name)
            else:
                raise StoreError(f"{full} is not a regular file; refusing to replace it")
        return foreign

    def _chown_path(self, path: Path | int) -> None:
        if self.owner.uid is None and self.owner.gid is None:
            return
        uid = -1 if self.owner.uid is None else self.owner.uid
        gid = -1 if self.owner.gid is None else self.owner.gid
        if isinstance(path, int):
            os.fchown(path, uid, gid)
        else:
            os.chown(path, uid, gid, follow_symlinks=False)

    def _ensure_state_dir(self) -> None:
        if not self._state.exists():
            os.mkdir(self._state, self.owner.dir_mode)
            self._chown_path(self._state)

    def _generation(self, link_name: str) -> Path | None:
        """The generation directory ``.vaultpki/<link_name>`` points at, if any."""
        link = self._state / link_name
        if not link.is_symlink():
            return None
        target = self._state / os.readlink(link)
        return target if target.is_dir() else None

    def _current(self) -> Path | None:
        return self._generation(CURRENT)

    def _previous(self) -> Path | None:
        return self._generation(PREVIOUS)

    def _new_gen_dir(self) -> Path:
        name = f"gen-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(4).hex()}"
        path = self._state / name
        os.mkdir(path, self.owner.dir_mode)
        self._chown_path(path)
        return path

    def _write_file(self, directory: str, content: FileContent) -> int:
        """Create and fill one file; returns its open fd, so that the caller decides when it is fsynced."""
        mode = self.key_mode if content.secret else 0o644
        # 0600 at creation: the key is never readable by anyone else, not even for an instant.
        fd = os.open(os.path.join(directory, content.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600 if content.secret else 0o644)
        try:
            self._chown_path(fd)
            os.fchmod(fd, mode)
            view = memoryview(content.data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _begin_generation(self, names: Sequence[str]) -> Stage:
        """An empty generation directory for ``names``, and how it will be made durable.

        On ext4 an fsync between creates costs a journal commit each (2,000 files: 0.56 s fsyncing
        each as written, 0.07 s with one syncfs). Up to SYNC_EACH_MAX files (the daemon's case), each
        is fsynced once all are written: nothing unrelated is flushed. Above it, one syncfs(2) of the
        generation's filesystem: one journal commit instead of thousands, at the price of flushing the
        filesystem's other dirty data too, which a bulk operator command can afford. Its fd is opened
        before the writes because Linux (5.8+) reports to syncfs the writeback errors since that open.
        Without syncfs, files are fsynced in batches of SYNC_EACH_MAX, which also bounds the fds held open.
        """
        path = self._new_gen_dir()
        stage = Stage(self, path, frozenset(names))
        if len(names) > SYNC_EACH_MAX and _libc_syncfs() is not None:
            try:
                stage.dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except BaseException:
                _rmtree(path)
                raise
        return stage

    def _write_into(self, stage: Stage, content: FileContent) -> None:
        """One file into a generation being built (see ``_begin_generation`` for when it is made durable)."""
        if content.name not in stage.names or content.name in stage.written:
            raise StoreError(f"{content.name} is not a file this set may add (or was added already)")
        with self._writing():
            fd = self._write_file(str(stage.path), content)
            stage.written.add(content.name)
            if stage.dir_fd is not None:
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

    def _finish_generation(self, stage: Stage) -> None:
        """Complete a generation: the current one's other files joined in (files are never modified in
        place, so a hard link is a copy), and all of it on disk before it can be switched to."""
        current = self._current()
        if current is not None:
            src, dst = str(current), str(stage.path)
            for name in os.listdir(src):
                if name not in stage.written:
                    os.link(os.path.join(src, name), os.path.join(dst, name))
        self._make_durable(stage)
        _fsync_dir(stage.path)

    def _make_durable(self, stage: Stage) -> None:
        """The files of a generation on disk: one syncfs for a big set, else each file's fsync."""
        if stage.dir_fd is None:
            self._fsync_batch(stage)
            return
        try:
            _syncfs(stage.dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            os.sync()            # syncfs refused (a seccomp filter, say): flush everything instead
        finally:
            os.close(stage.dir_fd)
            stage.dir_fd = None

    def _abandon(self, stage: Stage, identity: tuple[int, int] | None = None) -> None:
        """Drop a generation that will not be switched to: its fds closed, its directory removed, except
        when the certs-dir was replaced meanwhile (nothing is removed through a path that now names
        something else; the next write prunes the leftover)."""
        for fd in stage.fds:
            os.close(fd)
        stage.fds = []
        if stage.dir_fd is not None:
            os.close(stage.dir_fd)
            stage.dir_fd = None
        if identity is None or self._is_same_dir(identity):
            _rmtree(stage.path)

    def _build_generation(self, files: Sequence[FileContent]) -> str:
        """A complete new generation, on disk before it is returned: the current one's files, with
        ``files`` replaced or added."""
        stage = self._begin_generation([f.name for f in files])
        try:
            for content in files:
                self._write_into(stage, content)
            self._finish_generation(stage)
        except BaseException:
            self._abandon(stage)
            raise
        return stage.generation

    def _commit(self, gen: str, replace: set[str]) -> None:
        """Make ``gen`` visible. If anything fails after the switch, switch back before raising,
        so that a reported failure always means the previous set is what is visible."""
        old, old_previous = self._current(), self._previous()
        try:
            self._switch(gen)
            self._link_all(replace)
            self._unlink_stale()
        except OSError:
            with contextlib.suppress(OSError):
                if old is not None:
                    self._replace_link(self._state / CURRENT, old.name)
                else:
                    (self._state / CURRENT).unlink(missing_ok=True)
                if old_previous is not None:
                    self._replace_link(self._state / PREVIOUS, old_previous.name)
                else:
                    (self._state / PREVIOUS).unlink(missing_ok=True)     # rollback must not lead anywhere new
                self._unlink_stale(undo=True)
                if old is None or old.name != gen:
                    _rmtree(self._state / gen)  # never visible: not worth keeping
                _fsync_dir(self._state)
            raise

    def _unlink_stale(self, undo: bool = False) -> None:
        """Remove our links to names the current generation no longer has (after a rollback or an undo);
        the .crt goes before its .key so that a certificate never lacks its key.

        With no current generation at all, only an undo may do this (it removes the links its own
        write made); otherwise it means the state is not what this write built, and nothing is removed.
        """
        current = self._current()
        if current is None and not undo:
            return
        have = set(os.listdir(current)) if current is not None else set()
        stale = [n for n in os.listdir(self.path) if n not in have and (self.path / n).is_symlink()
                 and os.readlink(self.path / n) == f"{STATE_DIR}/{CURRENT}/{n}"]
        for name in sorted(stale, key=lambda n: (n.endswith(".key"), n)):
            (self.path / name).unlink()
        if stale:
            _fsync_dir(self.path)

    def _switch(self, gen: str) -> None:
        """Point ``current`` at ``gen`` with one rename; remember the old one as ``previous``."""
        if not (self._state / gen).is_dir():
            raise StoreError(f"generation {gen} is missing from {self._state}; nothing was switched")
        old = self._current()
        if old is not None:
            self._replace_link(self._state / PREVIOUS, old.name)
        self._replace_link(self._state / CURRENT, gen)
        _fsync_dir(self._state)

    def _replace_link(self, link: Path | str, target: str) -> None:
        tmp = os.path.join(os.path.dirname(link), f".link-{os.urandom(6).hex()}")
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _link_all(self, replace: set[str]) -> None:
        """Make every file of the current generation visible; keys first, so a .crt never lacks its key.

        A file or link an operator put in place of one of ours is only replaced
        when it is in ``replace`` (being written or adopted now): nothing is lost silently.
        """
        current = self._current()
        if current is None:
            return
        names = sorted(os.listdir(current), key=lambda n: (not n.endswith(".key"), n))
        top = str(self.path)
        changed = False
        for name in names:
            link = os.path.join(top, name)
            want = f"{STATE_DIR}/{CURRENT}/{name}"
            try:
                os.symlink(want, link)        # a new name: creating the link is already atomic
            except FileExistsError:
                if name not in replace or (os.path.islink(link) and os.readlink(link) == want):
                    continue
                self._replace_link(link, want)
            changed = True
        if changed:
            _fsync_dir(self.path)

    def _adopt(self, names: Sequence[str]) -> None:
        """Turn existing plain files into links without changing what is visible.

        A generation holding copies of the current bytes becomes ``current`` first;
        then each plain file is swapped for a link to its identical copy.
        """
        copies = [FileContent(n, (self.path / n).read_bytes(), secret=n.endswith(".key")) for n in names]
        self._switch(self._build_generation(copies))
        self._link_all(set(names))

    def _prune(self) -> None:
        """Drop generations other than current and previous (best effort: the new set is already live)."""
        keep = {p.name for p in (self._current(), self._previous()) if p is not None}
        try:
            entries = os.listdir(self._state)
        except OSError:
            return
        for entry in entries:
            path = self._state / entry
            if entry.startswith("gen-") and entry not in keep and not path.is_symlink():
                _rmtree(path)
            elif entry.startswith(".link-") and path.is_symlink():
                path.unlink(missing_ok=True)      # a crash between symlink() and replace() left it

    def rollback(self) -> str:
        """Make the previous generation current again (operator's escape hatch)."""
        previous = self._previous()
        if previous is None:
            raise StoreError(f"certs-dir {self.path} has no previous generation to roll back to")
        with _os_errors(f"cannot roll back certs-dir {self.path}"), self._locked():
            self._commit(previous.name, set())
        return previous.name
