"""Adopting plain files: turning files an operator put in the certs-dir into our links, losing nothing.

A file that is not one of our links is copied into a generation first, read through in-dir links only
and as opened; a link that leads outside the certs-dir, or a key that is also elsewhere (hard links),
is refused rather than replaced.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from vaultpki.core.layout import FileContent, pk8_key_file
from vaultpki.errors import StoreError
from vaultpki.store.descriptors import MAX_READ, NotRegular, Outside, close_if_open, open_within, read_fd
from vaultpki.store.generation import BuildsGenerations
from vaultpki.store.opening import CURRENT, STATE_DIR
from vaultpki.store.switching import SwitchesGenerations

__all__ = ["AdoptsPlainFiles"]


class AdoptsPlainFiles(BuildsGenerations, SwitchesGenerations):
    """Which names hold something that must be adopted before it is replaced, and adopting it."""

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
            close_if_open(current[1] if current is not None else None)

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
            fd = open_within(root_fd, name)
        except Outside as exc:
            raise StoreError(f"{full} is a symlink to {exc.target}, outside the certs-dir; refusing to replace it") \
                from None
        except NotRegular:
            raise StoreError(f"{full} is not a regular file; refusing to replace it") from None
        if fd is None:
            return False                # a dangling in-dir link shows nothing that could be lost: just replace it
        os.close(fd)
        return True

    def _adopt(self, root_fd: int, state_fd: int, names: Sequence[str]) -> None:
        """Turn existing plain files into links without changing what is visible.

        A generation holding copies of the current bytes becomes ``current`` first;
        then each plain file is swapped for a link to its identical copy. Each is read through
        in-dir links only, and what is copied is what was opened (see ``open_within``).
        """
        copies = [FileContent(n, self._read_to_adopt(root_fd, n), secret=_is_secret(n)) for n in names]
        self._switch(state_fd, self._build_generation(state_fd, copies))
        self._link_all(root_fd, state_fd, set(names))

    def _read_to_adopt(self, root_fd: int, name: str) -> bytes:
        """The bytes of the plain file (or in-dir link) ``name``, as opened; refused if it leads outside,
        is no longer a regular file, or is a key with other hard links (a copy of a file kept elsewhere)."""
        full = self.path / name
        try:
            fd = open_within(root_fd, name)
        except Outside as exc:
            raise StoreError(f"{full} is a symlink to {exc.target}, outside the certs-dir; refusing to replace it") \
                from None
        except NotRegular as exc:
            raise StoreError(f"{full} is not a regular file ({exc}); refusing to replace it") from None
        if fd is None:
            raise StoreError(f"{full} vanished while being adopted; nothing was switched")
        try:
            st = os.fstat(fd)
            if _is_secret(name) and st.st_nlink != 1:
                raise StoreError(f"{full} has {st.st_nlink} hard links; refusing to adopt a key that is also "
                                 "elsewhere (give it a file of its own)")
            data = read_fd(fd)
            if data is None:
                raise StoreError(f"{full} is larger than {MAX_READ} bytes: not a certificate or key; "
                                 "refusing to adopt it")
            return data
        finally:
            os.close(fd)


def _is_secret(name: str) -> bool:
    """A key, or a key's PKCS#8 copy: adopted as secret (the key mode), and refused with other hard links."""
    return name.endswith(".key") or pk8_key_file(name) is not None
