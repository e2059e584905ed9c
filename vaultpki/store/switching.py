"""Switching generations: making one visible with a single rename, and switching back on failure.

``current`` is a symlink to one complete generation; every managed file is a symlink through it. A
switch renames a new ``current`` into place (the old one becomes ``previous``), then makes the files
visible, keys before certificates; if anything fails after the switch, the old pointers are restored
before the error is raised, so a reported failure always means the previous set is what is visible.
"""

from __future__ import annotations

import contextlib
import os
import stat

from vaultpki.errors import StoreError
from vaultpki.store.descriptors import rmtree
from vaultpki.store.opening import CURRENT, PREVIOUS, STATE_DIR, OpensDirs

__all__ = ["SwitchesGenerations"]


class SwitchesGenerations(OpensDirs):
    """Pointing ``current`` at a generation, linking its files into the certs-dir, pruning the rest."""

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
                    rmtree(gen, dir_fd=state_fd)  # never visible: not worth keeping
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
                rmtree(entry, dir_fd=state_fd)
            elif entry.startswith(".link-") and stat.S_ISLNK(st.st_mode):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=state_fd)      # a crash between symlink() and replace() left it
