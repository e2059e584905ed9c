"""The post-renewal actions: after a set is written, the reload signal (if one is configured), then each
reload command in the order given, every command told which files were renewed.

An action that fails stops the list: the ones after it may depend on it (a notification that the database
reloaded, a load balancer reloaded after the database), so they are not run, and the failure names the
action. A signal that finds nobody to tell (the database not running yet: ``ReloadNotRunning``) is no
failure and does not stop the list; it stays owed. What ran is remembered (``PendingReload.done``), so a
later pass, or the daemon after a restart, runs only what is still owed, in order, and never repeats a
command that already ran for these files.

A command's environment is vaultpki's own without any Vault credential (``reload_command``), plus two
variables, in the manner of certbot's ``RENEWED_LINEAGE``: ``RENEWED_CERTS_DIR`` (the certs-dir) and
``RENEWED_FILES`` (the names written within it, space-separated). They are not ``VAULTPKI_*`` names on
purpose: vaultpki reads every ``VAULTPKI_*`` variable as a configuration override, so a command that runs
``vaultpki verify`` must not inherit any.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Sequence

import msgspec

from vaultpki.daemon.reload import Reloader, ReloadNotRunning
from vaultpki.daemon.reload_command import RunCommand
from vaultpki.errors import ReloadError

__all__ = ["RENEWED_DIR_VAR", "RENEWED_FILES_VAR", "Actions", "ActionsResult", "Renewed", "run_actions"]

RENEWED_DIR_VAR = "RENEWED_CERTS_DIR"
RENEWED_FILES_VAR = "RENEWED_FILES"


class Renewed(msgspec.Struct, frozen=True):
    """What a command is told: the certs-dir, and the names written in it that nobody was told of yet."""

    certs_dir: str
    files: tuple[str, ...]

    def environment(self) -> dict[str, str]:
        return {RENEWED_DIR_VAR: self.certs_dir, RENEWED_FILES_VAR: " ".join(self.files)}


class ActionsResult(msgspec.Struct, frozen=True):
    """What running the actions owed did."""

    done: tuple[str, ...]                # every action done for these files, earlier passes' included
    remaining: tuple[str, ...]           # still owed, in order: nobody to signal, failed, or not run after a failure
    failed: str | None = None            # the one line saying which action failed and why
    not_running: str | None = None       # why a signal is still owed though nothing failed

    @property
    def complete(self) -> bool:
        return not self.remaining


class Actions(msgspec.Struct, frozen=True):
    """The configured actions, in the order they run (the signal first)."""

    items: tuple[Reloader, ...]

    def describe(self) -> str:
        return ", then ".join(a.describe() for a in self.items) if self.items else "no reload"


def run_actions(actions: Sequence[Reloader], renewed: Renewed, done: Iterable[str],
                log: logging.Logger) -> ActionsResult:
    """Run, in order, each action not in ``done`` (descriptions of the actions that already ran for these
    files; one entry per run, so a command listed twice runs twice). Stops at the first failure."""
    already = collections.Counter(done)
    finished: list[str] = []
    owed: list[str] = []
    not_running: str | None = None
    several = len(actions) > 1
    for index, action in enumerate(actions, start=1):
        what = action.describe()
        if already[what] > 0:
            already[what] -= 1
            finished.append(what)
            continue
        try:
            outcome = _told(action, renewed).reload()
        except ReloadNotRunning as exc:
            owed.append(what)
            not_running = not_running or (f"{_which(index, len(actions), what)}: {exc}" if several else str(exc))
            continue
        except ReloadError as exc:
            later = [a.describe() for a in actions[index:]]
            line = f"{_which(index, len(actions), what)} failed: {exc}" if several else str(exc)
            if later:
                line += f"; not run: {', '.join(later)}"
            return ActionsResult(tuple(finished), (*owed, what, *later), failed=line, not_running=not_running)
        finished.append(what)
        log.info("reloaded", extra={"how": what, "detail": outcome.detail, "action": f"{index}/{len(actions)}"})
    return ActionsResult(tuple(finished), tuple(owed), not_running=not_running)


def _told(action: Reloader, renewed: Renewed) -> Reloader:
    """A command gets the renewal in its environment; a signal carries nothing."""
    if isinstance(action, RunCommand):
        return msgspec.structs.replace(action, extra_env=renewed.environment())
    return action


def _which(index: int, count: int, what: str) -> str:
    return f"action {index} of {count} ({what})"
