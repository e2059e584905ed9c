"""files: bounded reads of regular files, judged by what was opened, that never block (issue 16)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from vaultpki.files import NotReadable, read_limited, read_regular, secret_exposure


def test_a_regular_file_up_to_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    data, st = read_regular(path, 100)
    assert data == b"x" * 100 and stat.S_ISREG(st.st_mode) and st.st_size == 100


def test_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(NotReadable, match="larger than 100 bytes"):
        read_regular(path, 100)


def test_a_link_to_a_regular_file_is_followed_and_its_target_judged(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "target").chmod(0o600)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    data, st = read_regular(tmp_path / "link", 64)
    assert data == b"secret" and stat.S_IMODE(st.st_mode) == 0o600       # the file's mode, not the link's


@pytest.mark.parametrize(("path", "kind"), [
    pytest.param("/dev/zero", "a character device", id="dev-zero"),
    pytest.param("/dev/null", "a character device", id="dev-null"),
    pytest.param("/", "a directory", id="directory"),
])
def test_what_is_not_a_regular_file_is_refused(path: str, kind: str) -> None:
    with pytest.raises(NotReadable, match=f"it is {kind}, not a regular file"):
        read_regular(path, 1 << 20)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            read_regular(fifo, 64)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_regular() blocked on a FIFO")
    assert isinstance(outcome[0], NotReadable) and "it is a FIFO" in str(outcome[0])


def test_a_name_with_a_nul_is_refused() -> None:
    with pytest.raises(NotReadable, match="NUL"):
        read_regular("/etc/pass\x00wd", 64)


def test_a_missing_file_is_said_in_words() -> None:
    with pytest.raises(NotReadable, match="it does not exist"):
        read_regular("/nonexistent/vaultpki/file", 64)


def test_a_stream_is_read_up_to_the_limit_and_no_further() -> None:
    """What stdin gets: a pipe with more than the limit is refused after limit + 1 bytes, not read to its end."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"y" * 300)
        with pytest.raises(NotReadable, match="larger than 200 bytes"):
            read_limited(read_end, 200)
        assert len(os.read(read_end, 1000)) == 99                 # the rest was left unread
        os.close(write_end)
        write_end = -1
        assert read_limited(read_end, 200) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


# --- secret files: only their owner may read them, except the kubelet's fsGroup 0440 (issue 18) -------

OTHER_GID = 2345        # a group this (root) test process is not in
OTHER_UID = 2346


@pytest.mark.parametrize(("uid", "gid", "mode", "accepted"), [
    pytest.param(0, None, 0o600, True, id="0600-own"),
    pytest.param(0, None, 0o400, True, id="0400-own"),
    pytest.param(0, None, 0o440, True, id="0440-root-in-our-group"),
    pytest.param(0, OTHER_GID, 0o440, False, id="0440-group-not-ours"),
    pytest.param(OTHER_UID, None, 0o440, False, id="0440-owned-by-another-user"),
    pytest.param(0, None, 0o444, False, id="0444"),
    pytest.param(0, None, 0o404, False, id="0404"),
    pytest.param(0, None, 0o460, False, id="0460-group-writable"),
    pytest.param(0, None, 0o640, False, id="0640-root-in-our-group"),
    pytest.param(0, None, 0o450, False, id="0450-group-exec"),
])
def test_who_may_read_a_secret_file(tmp_path: Path, uid: int, gid: int | None, mode: int, accepted: bool) -> None:
    """Judged on a real file with that owner, group and mode; "our group" is this process's effective group."""
    path = tmp_path / "secret"
    path.write_text("s.token")
    os.chown(path, uid, os.getegid() if gid is None else gid)
    path.chmod(mode)
    exposure = secret_exposure(os.stat(path))
    assert (exposure is None) is accepted, exposure
    if not accepted:
        assert exposure == f"is accessible by group or others (mode {mode:04o})"
