"""Reloading the database by a signal: to every process of a name, or to the pid in a pidfile, each
sent only to a process that is, as far as can be told, the database.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import psutil

from vaultpki.daemon.processes import ProcessHandle, is_named, process_ids
from vaultpki.daemon.reload import ReloadNotRunning, ReloadOutcome
from vaultpki.errors import ConfigError, ReloadError
from vaultpki.store.ownership import describe_group, describe_user

__all__ = ["SignalByName", "SignalByPidfile"]


#: How much of a pidfile we read: a pid is a few bytes; postmaster.pid is a few hundred.
PIDFILE_MAX = 4096


def _not_permitted(pid: int, sig: signal.Signals) -> str:
    return (f"not permitted to send {sig.name} to pid {pid}: "
            "the signal must come from the same user as the process, or root")


class SignalByName(msgspec.Struct, frozen=True):
    """Signal every process named *name*, like ``pkill -x NAME``, never this process.

    The name compared is psutil's ``name()``: on Linux the kernel's ``comm``, which
    is cut to 15 characters. psutil itself already widens a 15-character ``comm``
    to the basename of ``cmdline[0]`` when that starts with it. A NAME longer than
    15 characters also matches when the process's ``comm`` is NAME's first 15
    characters *and* the basename of ``cmdline[0]`` or of its executable equals
    NAME, so a renamed argv[0] still matches by its binary and a different program
    that merely shares the prefix does not. Zombies are skipped (they cannot
    reload), and so are processes that exit between listing and signalling.
    """

    name: str
    sig: signal.Signals = signal.SIGHUP
    proc_iter: Callable[[], Iterable[ProcessHandle]] | None = None   # None: psutil's process_iter

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\0" in self.name:
            raise ConfigError(f"{self.name!r} is not a process name (a bare program name such as 'cockroach')")

    def describe(self) -> str:
        return f"{self.sig.name} to every process named {self.name!r}"

    def reload(self) -> ReloadOutcome:
        me = os.getpid()
        signalled: list[int] = []
        denied: list[int] = []
        for proc in self._matching():
            if proc.pid == me:
                continue
            try:
                proc.send_signal(self.sig)
            except psutil.NoSuchProcess:  # gone since listing (ZombieProcess included)
                continue
            except psutil.AccessDenied:
                denied.append(proc.pid)
                continue
            signalled.append(proc.pid)
        if denied:
            also = f" (sent to {', '.join(map(str, signalled))})" if signalled else ""
            raise ReloadError(_not_permitted(denied[0], self.sig) + also)
        if not signalled:
            raise ReloadNotRunning(f"no process named {self.name!r} is running")
        pids = ", ".join(map(str, signalled))
        return ReloadOutcome(tuple(signalled), f"sent {self.sig.name} to {self.name!r} (pid {pids})")

    def _matching(self) -> list[ProcessHandle]:
        """Snapshot first, signal after: a signal handler cannot change what we match."""
        found: list[ProcessHandle] = []
        for proc in (self.proc_iter or psutil.process_iter)():
            try:
                if self._matches(proc) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def _matches(self, proc: ProcessHandle) -> bool:
        return is_named(proc, self.name)


class SignalByPidfile(msgspec.Struct, frozen=True):
    """Signal the pid on the first line of *path* (postmaster.pid and ordinary pidfiles), only if
    that pid is the database as far as we can tell:

    - never pid 1 (the init process) nor this process;
    - a process of the database's user: ``uid`` (None: the user running vaultpki), or, with
      ``gid`` set, a process in that group (a root-owned key read through the group);
    - with ``process`` set, a process of that name (compared as SignalByName compares).

    Anything else is refused with one line and nothing is signalled. The process is held by a pidfd
    from before the checks to the signal, so a pid reused in between cannot receive it. A process
    of the right user and name can still be the wrong one: keep the pidfile where only the database
    writes it, as its own data dir does.
    """

    path: Path
    sig: signal.Signals = signal.SIGHUP
    process: str | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_files_of(cls, path: Path, sig: signal.Signals, process: str | None,
                     owner_uid: int | None, owner_gid: int | None) -> SignalByPidfile:
        """The database is whoever reads the keys we write: their owner (``owner``; None: us), or the
        group when the owner is root and a group is set (the key is then 0640: read through the group)."""
        uid = os.geteuid() if owner_uid is None else owner_uid
        if uid == 0 and owner_gid is not None:
            return cls(path, sig, process, None, owner_gid)
        return cls(path, sig, process, uid, None)

    def describe(self) -> str:
        return f"{self.sig.name} to the pid in {self.path}"

    def reload(self) -> ReloadOutcome:
        pid = self._read_pid()
        if pid == os.getpid():
            raise ReloadError(f"pidfile {self.path} names this process (pid {pid}), not the database")
        if pid == 1:
            raise ReloadError(f"pidfile {self.path} names pid 1, the init process, not the database: "
                              "nothing signalled")
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            raise ReloadNotRunning(f"no process with pid {pid}: stale pidfile {self.path}") from None
        try:
            self._check(pid)
            signal.pidfd_send_signal(handle, self.sig)
        except ProcessLookupError:          # gone since the pidfd was opened: whatever has the pid now is not it
            raise ReloadNotRunning(f"no process with pid {pid}: stale pidfile {self.path}") from None
        except PermissionError:
            raise ReloadError(_not_permitted(pid, self.sig)) from None
        finally:
            os.close(handle)
        return ReloadOutcome((pid,), f"sent {self.sig.name} to pid {pid} from {self.path}")

    def _check(self, pid: int) -> None:
        """ReloadError unless ``pid`` runs as the database's user and, if given, under its name."""
        ids = process_ids(pid)
        if ids is None:
            raise ProcessLookupError(pid)
        uids, gids, groups = ids
        if self.gid is not None:
            if self.gid != gids[1] and self.gid not in groups:
                raise ReloadError(f"pid {pid} from pidfile {self.path} is not in group {describe_group(self.gid)}, "
                                  "through which the keys are read: nothing signalled")
        else:
            expected = os.geteuid() if self.uid is None else self.uid
            if uids[0] != expected or uids[1] != expected:
                raise ReloadError(f"pid {pid} from pidfile {self.path} runs as {describe_user(uids[1])}, but the keys "
                                  f"are written for {describe_user(expected)}: nothing signalled")
        if self.process is not None:
            try:
                named = is_named(psutil.Process(pid), self.process)
            except psutil.NoSuchProcess:
                raise ProcessLookupError(pid) from None
            if not named:
                raise ReloadError(f"pid {pid} from pidfile {self.path} is not the configured process "
                                  f"{self.process!r}: nothing signalled")

    def _read_pid(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(PIDFILE_MAX)
        except FileNotFoundError:
            raise ReloadNotRunning(f"pidfile {self.path} does not exist: is the database running?") from None
        except OSError as exc:
            raise ReloadError(f"cannot read pidfile {self.path}: {(exc.strerror or str(exc)).lower()}") from exc
        lines = data.decode("ascii", errors="replace").splitlines()
        first = lines[0].strip() if lines else ""
        if not first:
            raise ReloadError(f"pidfile {self.path} is empty")
        # A pid <= 0 would signal a process group or every process we may signal.
        if not first.isdigit() or int(first) <= 0:
            raise ReloadError(f"first line of pidfile {self.path} is not a pid: {first[:40]!r}")
        return int(first)
