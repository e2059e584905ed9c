"""Reading the small files vaultpki is handed (its configuration, a user list, a token or secret-id):
bounded, regular files only, and never blocking.

``open()`` of a FIFO waits for a writer, forever; ``read()`` of ``/dev/zero`` never ends and of a huge
file fills memory. Each file is opened non-blocking, judged by what was opened (``fstat`` of the
descriptor, not a ``stat`` of the path that could be swapped in between), and read up to a bound.
"""

from __future__ import annotations

import os
import stat

__all__ = ["NotReadable", "read_limited", "read_regular"]

# Reads are made in pieces of this size, so that a file growing while it is read costs at most one more.
_CHUNK = 1 << 16


class NotReadable(Exception):
    """Why a file was refused, in words; the caller says which file it was and raises its own error."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_limited(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd``, to its end; NotReadable when there are more."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise NotReadable(f"it is larger than {limit:,} bytes")


def read_regular(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``path`` (links followed) and its status, as opened.

    Raises NotReadable, saying why in words, for a file that cannot be opened (missing, no permission),
    a name with a NUL character, anything that is not a regular file, or more than ``limit`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ValueError:          # an embedded NUL: no file has such a name
        raise NotReadable("its name has a NUL character") from None
    except FileNotFoundError:
        raise NotReadable("it does not exist") from None
    except OSError as exc:
        raise NotReadable(exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable(f"it is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise NotReadable(f"it is larger than {limit:,} bytes")
        return read_limited(fd, limit), st
    finally:
        os.close(fd)
