"""How the database is told to reload its certificates: a signal by process name or
pidfile, a command, or nothing.

CockroachDB re-reads its certs-dir on SIGHUP, and so does PostgreSQL (our test
stand-in). A signal is fire-and-forget: it proves nothing about what is served
afterwards, which is why the sync daemon probes the endpoint after reloading
(``vaultpki.daemon.probe``). Every failure here is a ReloadError with one clear line.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import psutil

from vaultpki.errors import ConfigError, ReloadError
from vaultpki.redact import redacted_repr
from vaultpki.store.certs_dir import describe_user

__all__ = [
    "NoReload",
    "ProcessHandle",
    "ReloadOutcome",
    "Reloader",
    "RunCommand",
    "SignalByName",
    "SignalByPidfile",
    "parse_signal",
]

#: Linux keeps a process's name (``comm``) in 16 bytes including the NUL.
COMM_LEN = 15
#: How much of a pidfile we read: a pid is a few bytes; postmaster.pid is a few hundred.
PIDFILE_MAX = 4096
#: Longest stderr excerpt quoted in an error.
STDERR_TAIL = 200
#: Variables never handed to a reload command whose caller did not build its environment (in any
#: letter case), nor any other variable that carries one of their values.
SECRET_ENV_PREFIXES = ("VAULT_", "BAO_", "VAULTPKI_")
#: prctl(2) option: whether the process may be dumped, ptraced, or have its /proc files read by its user.
PR_SET_DUMPABLE = 4


class ReloadOutcome(msgspec.Struct, frozen=True):
    """What a reload did: the pids signalled (none for a command) and one line for logs."""

    signalled: tuple[int, ...]
    detail: str


class Reloader(Protocol):
    def reload(self) -> ReloadOutcome: ...

    def describe(self) -> str: ...


class ProcessHandle(Protocol):
    """The part of ``psutil.Process`` we use, so tests can hand in look-alikes."""

    @property
    def pid(self) -> int: ...

    def name(self) -> str: ...

    def cmdline(self) -> list[str]: ...

    def exe(self) -> str: ...

    def status(self) -> str: ...

    def send_signal(self, sig: int) -> None: ...


def parse_signal(name: str) -> signal.Signals:
    """``"SIGHUP"``, ``"HUP"``, ``"sighup"`` or ``"1"`` -> ``Signals.SIGHUP``; ConfigError otherwise."""
    text = name.strip()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        upper = text.upper()
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise ConfigError(f"{name!r} is not a signal name or number (e.g. 'SIGHUP', 'HUP' or '1')") from None


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
            raise ReloadError(f"no process named {self.name!r} is running")
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
        return _is_named(proc, self.name)


def _is_named(proc: ProcessHandle, name: str) -> bool:
    """Whether ``proc`` is the process called ``name`` (see SignalByName for the 15-character rule)."""
    current = proc.name()
    if current == name:
        return True
    if len(name) <= COMM_LEN or current[:COMM_LEN] != name[:COMM_LEN]:
        return False
    return name in (_basename(proc.cmdline), _basename(lambda: [proc.exe()]))


def _basename(read: Callable[[], list[str]]) -> str:
    """Basename of the first element *read* returns; '' when unreadable or empty."""
    try:
        values = read()
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return ""
    return os.path.basename(values[0]) if values and values[0] else ""


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
            raise ReloadError(f"no process with pid {pid}: stale pidfile {self.path}") from None
        try:
            self._check(pid)
            signal.pidfd_send_signal(handle, self.sig)
        except ProcessLookupError:          # gone since the pidfd was opened: whatever has the pid now is not it
            raise ReloadError(f"no process with pid {pid}: stale pidfile {self.path}") from None
        except PermissionError:
            raise ReloadError(_not_permitted(pid, self.sig)) from None
        finally:
            os.close(handle)
        return ReloadOutcome((pid,), f"sent {self.sig.name} to pid {pid} from {self.path}")

    def _check(self, pid: int) -> None:
        """ReloadError unless ``pid`` runs as the database's user and, if given, under its name."""
        ids = _process_ids(pid)
        if ids is None:
            raise ProcessLookupError(pid)
        uids, gids, groups = ids
        if self.gid is not None:
            if self.gid != gids[1] and self.gid not in groups:
                raise ReloadError(f"pid {pid} from pidfile {self.path} is not in group {_group_name(self.gid)}, "
                                  "through which the keys are read: nothing signalled")
        else:
            expected = os.geteuid() if self.uid is None else self.uid
            if uids[0] != expected or uids[1] != expected:
                raise ReloadError(f"pid {pid} from pidfile {self.path} runs as {describe_user(uids[1])}, but the keys "
                                  f"are written for {describe_user(expected)}: nothing signalled")
        if self.process is not None:
            try:
                named = _is_named(psutil.Process(pid), self.process)
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
            raise ReloadError(f"pidfile {self.path} does not exist: is the database running?") from None
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


class RunCommand(msgspec.Struct, frozen=True):
    """Run *argv* (no shell) and require exit 0 within *timeout* seconds.

    The command gets *env* exactly as given. With ``env=None`` it inherits ours minus the
    Vault credentials (``scrubbed_environment``), so a Vault token never reaches a reload
    script by accident. It runs as our user, which could read our own environment in
    /proc/$PPID/environ: this process makes itself non-dumpable first (``_undumpable``), so
    it cannot. It runs in its own session so a timeout kills whatever it started, not
    only the direct child.
    """

    argv: Sequence[str]
    timeout: float
    env: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "argv", tuple(self.argv))     # the caller's list can't change it later
        if not self.argv or not self.argv[0]:
            raise ConfigError("the reload command is empty")
        if not self.timeout > 0:
            raise ConfigError(f"the reload command timeout must be positive, not {self.timeout!r}")

    def __repr__(self) -> str:
        return redacted_repr(self, "env")

    def describe(self) -> str:
        return f"run {shlex.join(self.argv)}"

    def reload(self) -> ReloadOutcome:
        program = self.argv[0]
        env = dict(self.env) if self.env is not None else scrubbed_environment(os.environ)
        _undumpable()
        try:
            proc = subprocess.Popen(
                list(self.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, start_new_session=True,
            )
        except FileNotFoundError:
            raise ReloadError(f"reload command not found: {program!r}") from None
        except PermissionError:
            raise ReloadError(f"reload command {program!r} is not executable") from None
        except OSError as exc:
            raise ReloadError(f"reload command {program!r} could not start: {exc.strerror or exc}") from exc
        with proc:
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_session(proc)
                raise ReloadError(f"reload command {program!r} did not finish within {self.timeout:g}s") from None
        if proc.returncode != 0:
            tail = _last_line(stderr) or _last_line(stdout)
            how = f"was killed by {_signal_name(-proc.returncode)}" if proc.returncode < 0 else f"exited {proc.returncode}"
            raise ReloadError(f"reload command {program!r} {how}" + (f": {tail}" if tail else ""))
        return ReloadOutcome((), f"ran {program!r} (exit 0)")


def _process_ids(pid: int) -> tuple[tuple[int, ...], tuple[int, ...], frozenset[int]] | None:
    """(real, effective, saved, fs uids), (the same gids) and the supplementary groups of ``pid``, from
    /proc; None when it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None
    def numbers(key: str) -> tuple[int, ...]:
        return tuple(int(n) for n in fields.get(key, "").split())
    return numbers("Uid"), numbers("Gid"), frozenset(numbers("Groups"))


def _group_name(gid: int) -> str:
    import grp

    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def scrubbed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the Vault credentials: every VAULT_*, BAO_* and VAULTPKI_* variable in any letter
    case, and any other variable holding one of their values (a token copied under another name)."""
    secret = {k for k in env if k.upper().startswith(SECRET_ENV_PREFIXES)}
    values = {env[k] for k in secret if len(env[k]) >= 8}     # shorter values (a "1", an "http") are no secret
    return {k: v for k, v in env.items() if k not in secret and not any(s in v for s in values)}


def _undumpable() -> None:
    """Make this process non-dumpable: its /proc files (environ, mem) then belong to root, and a child
    running as our user, such as a reload command, can neither read them nor ptrace us. (A child's own
    dumpable flag is reset by exec, so the command itself is not affected.)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise ReloadError(f"cannot protect this process's environment from the reload command: {os.strerror(errno)}")


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole session (it leads it), then reap the command."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= STDERR_TAIL else last[: STDERR_TAIL - 1] + "…"


class NoReload(msgspec.Struct, frozen=True):
    """Reloading is switched off: the database picks up new files some other way."""

    def describe(self) -> str:
        return "no reload"

    def reload(self) -> ReloadOutcome:
        return ReloadOutcome((), "reload disabled")
