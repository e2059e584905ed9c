"""Who the files are written for, and who may hold the directories a set rests on.

The writer is often root, and a certs-dir is a place another user may reach: the certs-dir, ``.vaultpki``
and every generation it uses must be owned by root, the writing user or the configured ``owner`` (the
user the keys are written for), and not writable by group or others. The writer refuses anything else
before it writes; ``verify`` reports it through the same judgement.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from pathlib import Path

import msgspec

from vaultpki.errors import ConfigError, StoreError
from vaultpki.store.descriptors import os_errors

__all__ = ["PROCESS_OWNER", "OwnedDir", "Owner", "describe_group", "describe_user", "needed_chown", "resolve_owner"]

# Group or others may write: such a directory is anybody's to change.
LOOSE = stat.S_IWGRP | stat.S_IWOTH


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


def describe_user(uid: int) -> str:
    """'name (uid N)', or 'uid N' for a uid with no name: for messages."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def describe_group(gid: int) -> str:
    """'name (gid N)', or 'gid N' for a gid with no name: for messages."""
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


class OwnedDir:
    """A certs-dir and the owner its files are written for: the part of ``CertsDir`` every step relies on
    (who may hold its directories, the owner and mode its files get, OS errors as one StoreError line)."""

    path: Path
    owner: Owner
    _state: Path                    # the state dir, ``.vaultpki`` inside ``path``

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

    def _guard_or_close(self, role: str, path: str, fd: int) -> None:
        """``_guard``, closing the just-opened ``fd`` when it refuses, so a refusal leaks no descriptor."""
        try:
            self._guard(role, path, fd)
        except BaseException:
            os.close(fd)
            raise

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """OS errors while writing the dir, as one StoreError line."""
        return os_errors(f"cannot write to certs-dir {self.path}")

    def _chown(self, fd: int) -> None:
        """Give ``fd`` the configured owner and group, calling ``fchown`` only when one of them differs.

        A service that runs as the configured user already creates its files with that owner, and a
        systemd unit with ``SystemCallFilter=~@privileged`` kills a process that calls ``fchown`` at all
        (SIGSYS, before any cleanup can run), even a call that would change nothing."""
        change = needed_chown(self.owner, os.fstat(fd))
        if change is not None:
            os.fchown(fd, *change)


def needed_chown(owner: Owner, st: os.stat_result) -> tuple[int, int] | None:
    """The (uid, gid) arguments of the ``fchown`` that gives a file with status ``st`` the configured
    owner (-1: leave as is), or None when it already has them."""
    uid = -1 if owner.uid is None or owner.uid == st.st_uid else owner.uid
    gid = -1 if owner.gid is None or owner.gid == st.st_gid else owner.gid
    return None if uid == -1 and gid == -1 else (uid, gid)
