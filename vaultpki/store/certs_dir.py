"""``CertsDir``: the certs-dir store the rest of vaultpki uses (write a set, write one while it is
signed, roll back, read back).

Its steps are methods of this one class, each defined in the module of its concept (opening, building
a generation, switching, adopting, reading back), since all of them work on the same certs-dir: its
path, the owner its files are written for and who may hold its directories. The package docstring
tells how a write stays crash-safe and what other local users cannot do to it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from vaultpki.core.layout import FileContent
from vaultpki.errors import StoreError
from vaultpki.store.adoption import AdoptsPlainFiles
from vaultpki.store.descriptors import MAX_READ, close_if_open, os_errors, read_fd, rmtree
from vaultpki.store.generation import Stage
from vaultpki.store.opening import CURRENT, LOCK, PREVIOUS, STATE_DIR
from vaultpki.store.ownership import PROCESS_OWNER, Owner, describe_user
from vaultpki.store.reading import ReadsBack
from vaultpki.store.state_file import KeepsState

__all__ = ["CertsDir", "GenerationFiles"]


class GenerationFiles(msgspec.Struct, frozen=True):
    """One generation as it is on disk: its name under ``.vaultpki`` and its files' bytes."""

    name: str
    files: dict[str, bytes]


class CertsDir(AdoptsPlainFiles, ReadsBack, KeepsState):
    """One certs-dir on disk."""

    def __init__(self, path: Path, owner: Owner = PROCESS_OWNER) -> None:
        self.path = Path(os.path.abspath(path))
        self.owner = owner
        self._state = self.path / STATE_DIR

    def write_set(self, files: Sequence[FileContent], drop: Collection[str] = ()) -> str:
        """Replace/add ``files`` as one atomic set; returns the new generation's name.

        ``drop``: names the new set does not keep from the current one (what the configured layout no
        longer has: ``Plan.stray_names``). Only vaultpki's own files are in a set, so a file somebody else
        put under such a name stays where it is; the previous generation keeps what was dropped.

        Raises StoreError, leaving the previously visible set untouched (a failure after the
        switch switches back; a directory this call created is removed again).
        """
        with self.staged([f.name for f in files], drop) as stage:
            for content in files:
                stage.add(content)
        return stage.generation

    def ensure_state_dir(self) -> Path:
        """``.vaultpki``, made (with the certs-dir) as a write makes them when absent: for what vaultpki keeps
        beside the sets, such as the ACME account key, before the first set is written."""
        root_fd, _created = self._prepare_dir()
        try:
            with self._writing():
                os.close(self._ensure_state_dir(root_fd))
        finally:
            os.close(root_fd)
        return self._state

    @contextmanager
    def staged(self, names: Sequence[str], drop: Collection[str] = ()) -> Iterator[Stage]:
        """A set written while it is still being produced: ``write_set`` with the files handed over one by one.

        Any of ``names`` may be ``add``ed to the yielded stage, as each becomes known; they go straight
        into the new generation, which nobody sees yet. On a clean exit the added files become visible
        as one set, exactly as ``write_set`` would make them, and a name never added keeps what it had.
        An exception from the body leaves the dir as it was. Bulk issuance writes each certificate this
        way while the next ones are still being signed. The dir's lock is held throughout. ``drop`` as
        for ``write_set``.
        """
        names = list(names)
        if len(set(names)) != len(names) or any("/" in n or n.startswith(".") for n in [*names, *drop]) \
                or set(names) & set(drop):
            raise StoreError(f"invalid file set {names} (dropping {sorted(drop)})")
        root_fd, created_dir = self._prepare_dir()
        identity = self._identity(root_fd)
        committed = False
        try:
            state_fd = self._open_state(root_fd)
            created_state = state_fd is None
            try:
                with os_errors(f"cannot read certs-dir {self.path}"):
                    foreign = self._check_targets(root_fd, state_fd, names)
                with contextlib.ExitStack() as held:
                    with self._writing():
                        if state_fd is None:
                            state_fd = self._ensure_state_dir(root_fd)
                        held.enter_context(self._locked(state_fd))
                        if foreign:
                            self._adopt(root_fd, state_fd, foreign)
                        stage = self._begin_generation(state_fd, names, drop)
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
                    rmtree(STATE_DIR, dir_fd=root_fd)
                raise
            finally:
                close_if_open(state_fd)
        except BaseException:
            if not committed and created_dir:
                self._remove_created(identity)
            raise
        finally:
            os.close(root_fd)

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

    def rollback(self, expect: str | None = None) -> str:
        """Make the previous generation current again (operator's escape hatch); returns its name.

        ``expect``: the previous generation the caller looked at (``rollback_view``); when another writer
        replaced it meanwhile, nothing is switched."""
        with self._rollback_dirs() as (root_fd, state_fd):
            previous = self._generation_name(state_fd, PREVIOUS)
            if previous is None:
                raise self._nothing_to_roll_back()
            if expect is not None and previous != expect:
                raise StoreError(f"the previous set of {self.path} changed while it was being checked (another "
                                 "writer); nothing was rolled back: run rollback again")
            self._commit(root_fd, state_fd, previous, set())
            return previous

    def rollback_view(self) -> tuple[GenerationFiles | None, GenerationFiles]:
        """The current set, and the previous one ``rollback`` would make current, as they are on disk: for
        what a rollback changes to be judged before it is done. StoreError when there is no previous set."""
        with self._rollback_dirs() as (_, state_fd):
            previous = self._read_generation(state_fd, PREVIOUS)
            if previous is None:
                raise self._nothing_to_roll_back()
            return self._read_generation(state_fd, CURRENT), previous

    def _nothing_to_roll_back(self) -> StoreError:
        return StoreError(f"certs-dir {self.path} has no previous generation to roll back to")

    @contextmanager
    def _rollback_dirs(self) -> Iterator[tuple[int, int]]:
        """The certs-dir and its state dir, opened and locked. Every failure is one line, and a user who may
        not even look into the certs-dir (a parent dir closed to them) is told so, not shown a traceback."""
        try:
            with os_errors(f"cannot roll back certs-dir {self.path}"):
                root_fd = self._open_root()
                if root_fd is None:
                    raise self._nothing_to_roll_back()
                try:
                    state_fd = self._open_state(root_fd)
                    if state_fd is None:
                        raise self._nothing_to_roll_back()
                    try:
                        with self._locked(state_fd):
                            yield root_fd, state_fd
                    finally:
                        os.close(state_fd)
                finally:
                    os.close(root_fd)
        except StoreError as exc:
            if not isinstance(exc.__cause__, PermissionError):
                raise
            raise StoreError(f"{exc} (as {describe_user(os.geteuid())}: roll back as the user that writes the "
                             "certs-dir, usually root); nothing was changed") from exc.__cause__

    def _read_generation(self, state_fd: int, link: str) -> GenerationFiles | None:
        """The files of the generation ``link`` names, each read through the generation's descriptor."""
        opened = self._open_generation(state_fd, link)
        if opened is None:
            return None
        name, gen_fd = opened
        try:
            files: dict[str, bytes] = {}
            for entry in sorted(self._generation_files(gen_fd)):
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=gen_fd)
                try:
                    data = read_fd(fd)
                finally:
                    os.close(fd)
                if data is None:
                    raise StoreError(f"{self._state / name / entry} is larger than {MAX_READ} bytes")
                files[entry] = data
            return GenerationFiles(name, files)
        finally:
            os.close(gen_fd)
