"""Reloading the database by running a command: no shell, a deadline, and an environment without
the Vault credentials unless the caller built one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence

import msgspec

from vaultpki.daemon.reload import ReloadOutcome
from vaultpki.errors import ConfigError, ReloadError
from vaultpki.redact import redacted_repr

__all__ = ["RunCommand", "scrubbed_environment"]


#: Longest stderr excerpt quoted in an error.
STDERR_TAIL = 200
#: Variables never handed to a reload command whose caller did not build its environment (in any
#: letter case), nor any other variable that carries one of their values.
SECRET_ENV_PREFIXES = ("VAULT_", "BAO_", "VAULTPKI_")
#: prctl(2) option: whether the process may be dumped, ptraced, or have its /proc files read by its user.
PR_SET_DUMPABLE = 4


class RunCommand(msgspec.Struct, frozen=True):
    """Run *argv* (no shell) and require exit 0 within *timeout* seconds.

    The command gets *env* exactly as given. With ``env=None`` it inherits ours minus the
    Vault credentials (``scrubbed_environment``), so a Vault token never reaches a reload
    script by accident. It runs as our user, which could read our own environment in
    /proc/$PPID/environ: this process makes itself non-dumpable first (``_undumpable``), so
    it cannot. It runs in its own session so a timeout kills whatever it started, not
    only the direct child. ``extra_env`` is set last, over either: what the command is told
    of the renewal (``vaultpki.daemon.actions``), which the scrub must not remove.
    """

    argv: Sequence[str]
    timeout: float
    env: Mapping[str, str] | None = None
    extra_env: Mapping[str, str] | None = None

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
        env.update(self.extra_env or {})
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
