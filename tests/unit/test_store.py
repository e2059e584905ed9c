"""store.CertsDir on a real temporary directory: layout, atomic switch, refusals, faults."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import FileContent
from vaultpki.core.snapshot import judge
from vaultpki.errors import StoreError
from vaultpki.store import generation
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.generation import SYNC_EACH_MAX
from vaultpki.store.opening import STATE_DIR
from vaultpki.store.ownership import Owner

# --- helpers -----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (lstat, links not followed) with its mode and bytes or link target."""
    out: dict[str, tuple[object, ...]] = {".": ("dir", stat.S_IMODE(os.lstat(root).st_mode))}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def files_of(issued_by_stem: dict[str, object], ca_pem: bytes | None = None) -> list[FileContent]:
    files = [] if ca_pem is None else [FileContent("ca.crt", ca_pem, secret=False)]
    for stem, issued in issued_by_stem.items():
        files.append(FileContent(f"{stem}.crt", issued.cert_pem, secret=False))  # type: ignore[attr-defined]
        files.append(FileContent(f"{stem}.key", issued.key_pem, secret=True))   # type: ignore[attr-defined]
    return files


def as_map(files: Sequence[FileContent]) -> dict[str, bytes]:
    return {f.name: f.data for f in files}


def visible(root: Path) -> dict[str, bytes]:
    """What CockroachDB would read: every top-level non-hidden name, through links."""
    out: dict[str, bytes] = {}
    if not root.exists():
        return out
    for name in os.listdir(root):
        path = root / name
        if name.startswith(".") or not path.is_file():
            continue
        out[name] = path.read_bytes()
    return out


def link_target(root: Path, name: str) -> str:
    return os.readlink(root / name)


class Fault:
    """Make the k-th call of ``os.<func>`` raise ENOSPC once; count calls otherwise."""

    def __init__(self, func: str, fail_at: int | None) -> None:
        self.func = func
        self.fail_at = fail_at
        self.calls = 0
        self.fired = False
        self.real = getattr(os, func)

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.calls == self.fail_at:
            self.fired = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(*args, **kwargs)


@contextmanager
def injected(func: str, fail_at: int | None) -> Iterator[Fault]:
    fault = Fault(func, fail_at)
    mp = pytest.MonkeyPatch()
    mp.setattr(os, func, fault)
    try:
        yield fault
    finally:
        mp.undo()


@pytest.fixture
def leaves(pki, cas):  # type: ignore[no-untyped-def]
    """Two generations of real certificates: old and new node / client.node pairs."""
    return {
        "old_node": pki.leaf("node", cas.root, dns=["localhost"]),
        "new_node": pki.leaf("node", cas.root, dns=["localhost"]),
        "new_client_node": pki.leaf("node", cas.root, ekus=[crypto.x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
    }


# --- layout of a write ----------------------------------------------------------------------

def test_first_write_layout(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    files = files_of({"node": leaves["new_node"]}, cas.root.cert_pem)
    gen = CertsDir(root).write_set(files)

    assert gen.startswith("gen-")
    assert sorted(os.listdir(root)) == sorted([".vaultpki", "ca.crt", "node.crt", "node.key"])
    for name in ("ca.crt", "node.crt", "node.key"):
        assert (root / name).is_symlink()
        assert link_target(root, name) == f"{STATE_DIR}/current/{name}"
    assert os.readlink(root / STATE_DIR / "current") == gen
    assert (root / STATE_DIR / gen).is_dir()
    assert visible(root) == as_map(files)
    assert stat.S_IMODE(os.stat(root / "node.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(root / "node.crt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(root / "ca.crt").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o700
    assert not (root / STATE_DIR / "previous").exists()


def test_mode_of_key_ignores_umask(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    old = os.umask(0o077)
    try:
        CertsDir(tmp_path / "c").write_set(files_of({"node": leaves["new_node"]}))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "c" / "node.crt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "c" / "node.key").st_mode) == 0o600


def test_owner_key_mode_rule() -> None:
    assert Owner(None, None).key_mode(euid=0) == 0o600
    assert Owner(None, 999).key_mode(euid=0) == 0o640
    assert Owner(0, 999).key_mode(euid=1000) == 0o640
    assert Owner(1000, 999).key_mode(euid=0) == 0o600
    assert Owner(None, None).dir_mode == 0o700
    assert Owner(None, 999).dir_mode == 0o750


def test_group_owner_gives_group_readable_root_key(tmp_path: Path, leaves, now) -> None:  # type: ignore[no-untyped-def]
    gid = os.getgid()
    root = tmp_path / "certs"
    store = CertsDir(root, Owner(None, gid))
    store.write_set(files_of({"node": leaves["new_node"]}))
    expected = 0o640 if os.geteuid() == 0 else 0o600     # CockroachDB allows 0640 only for root-owned keys
    assert stat.S_IMODE(os.stat(root / "node.key").st_mode) == expected
    assert os.stat(root / "node.key").st_gid == gid
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o750
    state = store.snapshot()
    assert state.service_gid == gid
    assert not any("too open" in p.message for p in judge(state, now))


def test_second_write_replaces_and_keeps_previous(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    store = CertsDir(root)
    first = files_of({"node": leaves["old_node"]}, cas.root.cert_pem)
    second = files_of({"node": leaves["new_node"]})
    gen1 = store.write_set(first)
    gen2 = store.write_set(second)

    assert gen1 != gen2
    assert os.readlink(root / STATE_DIR / "current") == gen2
    assert os.readlink(root / STATE_DIR / "previous") == gen1
    assert visible(root) == {**as_map(first), **as_map(second)}
    # the old generation is intact (it is what rollback() returns to)
    assert (root / STATE_DIR / gen1 / "node.crt").read_bytes() == leaves["old_node"].cert_pem
    assert (root / STATE_DIR / gen1 / "node.key").read_bytes() == leaves["old_node"].key_pem
    # top-level links did not need to change: the switch is the single rename of `current`
    assert link_target(root, "node.crt") == f"{STATE_DIR}/current/node.crt"


def test_carries_over_files_not_rewritten(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    store = CertsDir(root)
    gen1 = store.write_set(files_of({"node": leaves["old_node"]}, cas.root.cert_pem))
    gen2 = store.write_set(files_of({"client.node": leaves["new_client_node"]}))
    assert (root / "ca.crt").read_bytes() == cas.root.cert_pem
    assert (root / "node.crt").read_bytes() == leaves["old_node"].cert_pem
    assert (root / "client.node.crt").read_bytes() == leaves["new_client_node"].cert_pem
    # carried files are hard links, never rewritten
    assert os.stat(root / STATE_DIR / gen1 / "ca.crt").st_ino == os.stat(root / STATE_DIR / gen2 / "ca.crt").st_ino
    assert stat.S_IMODE(os.stat(root / "client.node.key").st_mode) == 0o600


def test_only_two_generations_are_kept(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    store = CertsDir(root)
    gens = [store.write_set(files_of({"node": leaves[k]})) for k in ("old_node", "new_node", "old_node", "new_node")]
    kept = sorted(n for n in os.listdir(root / STATE_DIR) if n.startswith("gen-"))
    assert kept == sorted(gens[-2:])


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["../evil.crt"], id="slash"),
        pytest.param([".hidden.crt"], id="hidden"),
        pytest.param(["node.crt", "node.crt"], id="duplicate"),
        pytest.param([".vaultpki"], id="state-dir"),
    ],
)
def test_write_set_refuses_bad_names(tmp_path: Path, names: list[str]) -> None:
    root = tmp_path / "certs"
    root.mkdir()
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="invalid file set"):
        CertsDir(root).write_set([FileContent(n, b"x", secret=False) for n in names])
    assert tree(tmp_path) == before


def test_missing_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        CertsDir(tmp_path / "no" / "certs").write_set([FileContent("ca.crt", b"x", secret=False)])
    assert list(tmp_path.iterdir()) == []


# --- rollback -------------------------------------------------------------------------------

def test_rollback(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    store = CertsDir(root)
    gen1 = store.write_set(files_of({"node": leaves["old_node"]}, cas.root.cert_pem))
    gen2 = store.write_set(files_of({"node": leaves["new_node"]}))
    assert store.rollback() == gen1
    assert (root / "node.crt").read_bytes() == leaves["old_node"].cert_pem
    assert (root / "node.key").read_bytes() == leaves["old_node"].key_pem
    assert os.readlink(root / STATE_DIR / "previous") == gen2
    assert store.rollback() == gen2            # a second rollback undoes the first
    assert (root / "node.crt").read_bytes() == leaves["new_node"].cert_pem


def test_rollback_without_previous(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    store = CertsDir(tmp_path / "certs")
    with pytest.raises(StoreError, match="no previous generation"):
        store.rollback()
    store.write_set(files_of({"node": leaves["new_node"]}))
    with pytest.raises(StoreError, match="no previous generation"):
        store.rollback()


def test_rollback_past_an_added_file_leaves_no_dangling_links(tmp_path: Path, leaves, cas, now) -> None:  # type: ignore[no-untyped-def]
    # standard -> split-node adds client.node.*; rolling back must not leave links that point
    # at files the restored generation does not have (CockroachDB would load a broken client.node.crt).
    root = tmp_path / "certs"
    store = CertsDir(root)
    store.write_set(files_of({"node": leaves["old_node"]}, cas.root.cert_pem))
    store.write_set(files_of({"client.node": leaves["new_client_node"]}))
    store.rollback()
    dangling = sorted(n for n in os.listdir(root) if (root / n).is_symlink() and not (root / n).exists())
    # BUG (store/switching.py rollback/_link_all): links of files absent from the restored generation stay behind.
    assert dangling == [], f"dangling links after rollback: {dangling}"
    assert [p for p in judge(store.snapshot(), now) if p.severity == "error"] == []


# --- adopting plain files ------------------------------------------------------------------------

def _plain(root: Path, files: dict[str, bytes], key_mode: int = 0o600) -> None:
    root.mkdir(exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
        os.chmod(root / name, key_mode if name.endswith(".key") else 0o644)


def test_adopt_plain_files_preserves_others(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    old = leaves["old_node"]
    _plain(root, {"ca.crt": cas.root.cert_pem, "node.crt": old.cert_pem, "node.key": old.key_pem,
                  "client.root.crt": b"operator's", "client.root.key": b"own files"})
    CertsDir(root).write_set(files_of({"client.node": leaves["new_client_node"]}))
    # files not being written stay exactly as they were: plain, same bytes
    for name, data in {"node.crt": old.cert_pem, "node.key": old.key_pem, "ca.crt": cas.root.cert_pem,
                       "client.root.crt": b"operator's"}.items():
        assert not (root / name).is_symlink()
        assert (root / name).read_bytes() == data
    assert (root / "client.node.crt").read_bytes() == leaves["new_client_node"].cert_pem


def test_adopt_then_replace_and_roll_back(tmp_path: Path, leaves, cas) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    old, new = leaves["old_node"], leaves["new_node"]
    _plain(root, {"ca.crt": cas.root.cert_pem, "node.crt": old.cert_pem, "node.key": old.key_pem})
    store = CertsDir(root)
    store.write_set(files_of({"node": new}))
    assert (root / "node.crt").is_symlink() and (root / "node.key").is_symlink()
    assert (root / "node.crt").read_bytes() == new.cert_pem
    assert not (root / "ca.crt").is_symlink()
    store.rollback()    # the adopted copies are the previous generation
    assert (root / "node.crt").read_bytes() == old.cert_pem
    assert (root / "node.key").read_bytes() == old.key_pem


def test_adopt_in_dir_symlink(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    # Kubernetes-style: node.crt -> ..data/node.crt inside the certs-dir is adopted, not refused
    root = tmp_path / "certs"
    (root / "..2025").mkdir(parents=True)
    (root / "..2025" / "node.crt").write_bytes(leaves["old_node"].cert_pem)
    os.symlink("..2025", root / "..data")
    os.symlink("..data/node.crt", root / "node.crt")
    CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    assert link_target(root, "node.crt") == f"{STATE_DIR}/current/node.crt"
    assert (root / "node.crt").read_bytes() == leaves["new_node"].cert_pem
    assert (root / "..2025" / "node.crt").read_bytes() == leaves["old_node"].cert_pem


# --- refusals leave everything byte-identical ----------------------------------------------------

@pytest.fixture
def managed(tmp_path: Path, leaves, cas) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    CertsDir(root).write_set(files_of({"node": leaves["old_node"]}, cas.root.cert_pem))
    return root


def test_refuses_symlinked_certs_dir(tmp_path: Path, managed: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    link = tmp_path / "certs-link"
    os.symlink(managed, link)
    before, before_real = tree(tmp_path), tree(managed)
    with pytest.raises(StoreError, match="symlink"):
        CertsDir(link).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before
    assert tree(managed) == before_real


def test_refuses_entry_linking_outside(tmp_path: Path, managed: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "node.key").write_bytes(b"precious")
    (managed / "node.key").unlink()
    os.symlink(outside / "node.key", managed / "node.key")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="outside the certs-dir"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before
    assert (outside / "node.key").read_bytes() == b"precious"


def test_refuses_relative_link_escaping(tmp_path: Path, managed: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "elsewhere.crt").write_bytes(b"not ours")
    (managed / "node.crt").unlink()
    os.symlink("../elsewhere.crt", managed / "node.crt")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="outside the certs-dir"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


@pytest.mark.parametrize("tampered", ["generation-entry", "state-dir"])
def test_refuses_own_link_resolving_outside(tmp_path: Path, managed: Path, leaves, tampered: str) -> None:  # type: ignore[no-untyped-def]
    """Our own links are resolved through ``current`` once, not per link: a file of the generation,
    or ``.vaultpki`` itself, made a link to outside must still be refused."""
    outside = tmp_path / "outside"
    state = managed / STATE_DIR
    if tampered == "generation-entry":
        outside.mkdir()
        (outside / "node.key").write_bytes(b"precious")
        entry = state / os.readlink(state / "current") / "node.key"
        entry.unlink()
        os.symlink(outside / "node.key", entry)
    else:
        os.rename(state, outside)
        os.symlink(outside, state)
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="outside the certs-dir"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


def test_refuses_directory_named_like_a_file(tmp_path: Path, managed: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    (managed / "node.crt").unlink()
    (managed / "node.crt").mkdir()
    (managed / "node.crt" / "inside").write_bytes(b"keep me")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="not a regular file"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


def test_dangling_foreign_link_is_replaced_or_refused_cleanly(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    # e.g. a Kubernetes-style node.crt -> ..data/node.crt after ..data was removed
    root = tmp_path / "certs"
    root.mkdir()
    os.symlink("..data/node.crt", root / "node.crt")
    before = tree(tmp_path)
    try:
        CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    except StoreError:
        # BUG (store/adoption.py _check_targets/_adopt): the dangling link is classed as "foreign", .vaultpki/
        # is created, then _adopt() fails reading it ("no such file or directory"): the dir is changed.
        assert tree(tmp_path) == before, "refusal modified the certs-dir"
    else:
        assert (root / "node.crt").read_bytes() == leaves["new_node"].cert_pem


def test_refuses_certs_dir_that_is_a_file(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "certs").write_bytes(b"a file")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="not a directory"):
        CertsDir(tmp_path / "certs").write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


def test_refusal_on_fresh_dir_creates_nothing(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    root.mkdir()
    os.mkdir(root / "node.key")
    before = tree(tmp_path)
    with pytest.raises(StoreError):
        CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


# --- durability: fsync each file of a small set, one syncfs for a big one ----------------------------

def bulk_set(count: int, tag: bytes) -> list[FileContent]:
    """Exactly ``count`` files: ca.crt, then .crt/.key of filler bytes (the store does not parse what it writes)."""
    files = [FileContent("ca.crt", b"ca " + tag, secret=False)]
    for i in range(count - 1):
        name = f"client.u{i // 2}.{'key' if i % 2 else 'crt'}"
        files.append(FileContent(name, name.encode() + tag, secret=name.endswith(".key")))
    return files


class Syncs:
    """Which regular files were fsynced and which directories syncfs'ed (by inode); the real calls still run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert generation._syncfs is not None, "this libc has no syncfs"
        self.files: list[int] = []
        self.syncfs: list[int] = []
        real_fsync, real_syncfs = os.fsync, generation._syncfs

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                self.files.append(st.st_ino)
            real_fsync(fd)

        def syncfs(fd: int) -> None:
            self.syncfs.append(os.fstat(fd).st_ino)
            real_syncfs(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(generation, "_syncfs", syncfs)


def inodes(gen_dir: Path) -> list[int]:
    return sorted(os.lstat(gen_dir / name).st_ino for name in os.listdir(gen_dir))


@pytest.mark.parametrize("count", [3, SYNC_EACH_MAX])
def test_small_set_fsyncs_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    syncs = Syncs(monkeypatch)
    root = tmp_path / "certs"
    files = bulk_set(count, b"new")
    gen = CertsDir(root).write_set(files)
    assert syncs.syncfs == []
    assert sorted(syncs.files) == inodes(root / STATE_DIR / gen)
    assert visible(root) == as_map(files)


def test_big_set_is_made_durable_by_one_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    root = tmp_path / "certs"
    files = bulk_set(SYNC_EACH_MAX + 1, b"new")
    gen = CertsDir(root).write_set(files)
    assert syncs.syncfs == [os.stat(root / STATE_DIR / gen).st_ino], "one syncfs, through the new generation's dir"
    assert syncs.files == [], "no file of a big set is fsynced on its own"
    assert visible(root) == as_map(files)
    assert stat.S_IMODE(os.stat(root / "client.u0.key").st_mode) == 0o600


def test_libc_syncfs_reports_errno() -> None:
    assert generation._syncfs is not None
    with pytest.raises(OSError) as failed:
        generation._syncfs(-1)
    assert failed.value.errno == errno.EBADF


@pytest.mark.parametrize("before_write", ["fresh", "renewal"])
def test_syncfs_failure_leaves_the_old_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before_write: str) -> None:
    """EIO from syncfs: a StoreError, and the dir exactly as before (the unsynced generation removed, nothing switched)."""
    root = tmp_path / "certs"
    certs = CertsDir(root)
    if before_write == "renewal":
        certs.write_set(bulk_set(SYNC_EACH_MAX + 1, b"old"))
    before = tree(tmp_path)

    def syncfs(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(generation, "_syncfs", syncfs)
    with pytest.raises(StoreError, match=f"cannot write to certs-dir {root}: input/output error"):
        certs.write_set(bulk_set(SYNC_EACH_MAX + 1, b"new"))
    assert tree(tmp_path) == before


def test_without_syncfs_a_big_set_is_fsynced_in_bounded_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    monkeypatch.setattr(generation, "_libc_syncfs", lambda: None)
    writing: set[int] = set()
    peak = 0
    real_open, real_close = os.open, os.close

    def open_(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        nonlocal peak
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_EXCL:
            writing.add(fd)
            peak = max(peak, len(writing))
        return fd

    def close(fd: int) -> None:
        writing.discard(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "close", close)
    root = tmp_path / "certs"
    files = bulk_set(2 * SYNC_EACH_MAX + 5, b"new")
    gen = CertsDir(root).write_set(files)
    assert sorted(syncs.files) == inodes(root / STATE_DIR / gen)
    assert peak == SYNC_EACH_MAX, "files are fsynced in batches, holding at most SYNC_EACH_MAX open"
    assert visible(root) == as_map(files)


# --- snapshot -------------------------------------------------------------------------------------

def test_snapshot_reads_through_links(managed: Path, leaves, cas, now) -> None:  # type: ignore[no-untyped-def]
    state = CertsDir(managed).snapshot(service_gid=4242)
    assert state.exists and state.service_gid == 4242
    assert set(state.entries) == {STATE_DIR, "ca.crt", "node.crt", "node.key"}
    key = state.entries["node.key"]
    assert key.is_symlink and key.target_is_regular and not key.is_dir
    assert key.mode == 0o600
    assert key.data == leaves["old_node"].key_pem
    assert (key.uid, key.gid) == (os.getuid(), os.getgid())
    crt = state.entries["node.crt"]
    assert crt.mode == 0o644 and crt.data == leaves["old_node"].cert_pem
    assert state.entries[STATE_DIR].is_dir and not state.entries[STATE_DIR].is_symlink
    assert judge(state, now) == []


def test_snapshot_default_service_gid(managed: Path) -> None:
    assert CertsDir(managed).snapshot().service_gid == os.getgid()
    assert CertsDir(managed, Owner(None, 777)).snapshot().service_gid == 777


def test_snapshot_missing_dir(tmp_path: Path) -> None:
    state = CertsDir(tmp_path / "absent").snapshot()
    assert state.exists is False and state.entries == {}


def test_snapshot_odd_entries(managed: Path) -> None:
    os.symlink("nowhere", managed / "client.x.key")
    os.symlink(STATE_DIR, managed / "dirlink.crt")
    os.chmod(managed / ".vaultpki" / "current" / "node.key", 0o640)
    state = CertsDir(managed).snapshot()
    broken = state.entries["client.x.key"]
    assert broken.is_symlink and not broken.target_is_regular and broken.data is None
    assert broken.read_error and "broken link" in broken.read_error
    dirlink = state.entries["dirlink.crt"]
    assert dirlink.is_symlink and dirlink.is_dir and dirlink.data is None
    assert state.entries["node.key"].mode == 0o640


# --- fault injection ---------------------------------------------------------------------------------

FAULT_FUNCS = ["replace", "link", "fsync", "symlink", "open", "mkdir", "fchmod", "write"]


def _pair_ok(root: Path, stem: str, allowed: list[tuple[bytes, bytes]], may_be_absent: bool) -> str | None:
    crt, key = root / f"{stem}.crt", root / f"{stem}.key"
    if not crt.exists():
        return None if may_be_absent else f"{stem}.crt vanished"
    if not key.exists():
        return f"{stem}.crt is visible without {stem}.key"
    pair = (crt.read_bytes(), key.read_bytes())
    if pair not in allowed:
        return f"{stem}: visible pair is neither the old nor the new one"
    if not crypto.key_matches(crypto.load_certs(pair[0])[0], crypto.load_key(pair[1])):
        return f"{stem}: key does not match certificate"
    return None


Scenario = Callable[[Path], tuple[CertsDir, list[FileContent], dict[str, tuple[bytes, bytes] | None]]]


def _scenarios(leaves, cas) -> dict[str, Scenario]:  # type: ignore[no-untyped-def]
    old, new, cnode = leaves["old_node"], leaves["new_node"], leaves["new_client_node"]

    def managed_replace(root: Path):  # type: ignore[no-untyped-def]
        store = CertsDir(root)
        store.write_set(files_of({"node": old}, cas.root.cert_pem))
        store.write_set(files_of({"node": old}))          # so that `previous` exists too
        return store, files_of({"node": new, "client.node": cnode}), {
            "node": (old.cert_pem, old.key_pem), "client.node": None}

    def plain_adopt(root: Path):  # type: ignore[no-untyped-def]
        _plain(root, {"ca.crt": cas.root.cert_pem, "node.crt": old.cert_pem, "node.key": old.key_pem})
        return CertsDir(root), files_of({"node": new}, cas.root.cert_pem), {"node": (old.cert_pem, old.key_pem)}

    def fresh(root: Path):  # type: ignore[no-untyped-def]
        return CertsDir(root), files_of({"node": new, "client.node": cnode}, cas.root.cert_pem), {
            "node": None, "client.node": None}

    return {"managed-replace": managed_replace, "plain-adopt": plain_adopt, "fresh": fresh}


def _count_calls(tmp_path: Path, scenario: Scenario, func: str) -> int:
    store, files, _ = scenario(tmp_path / f"count-{func}")
    with injected(func, None) as fault:
        store.write_set(files)
    return fault.calls


def _run_faults(tmp_path: Path, scenario: Scenario, func: str) -> list[dict[str, object]]:
    """Run the write once per possible failure point; return what was visible after each failure."""
    results = []
    total = _count_calls(tmp_path, scenario, func)
    for k in range(1, total + 1):
        root = tmp_path / f"{func}-{k}"
        store, files, old_pairs = scenario(root)
        old_visible = visible(root)
        with injected(func, k) as fault:
            try:
                store.write_set(files)
                raised = None
            except StoreError as exc:
                raised = exc
        results.append({"k": k, "root": root, "store": store, "files": files, "old_pairs": old_pairs,
                        "old_visible": old_visible, "raised": raised, "fired": fault.fired})
    return results


@pytest.mark.parametrize("scenario_name", ["managed-replace", "plain-adopt", "fresh"])
@pytest.mark.parametrize("func", FAULT_FUNCS)
def test_fault_injection_never_shows_a_mixed_pair(  # type: ignore[no-untyped-def]
    tmp_path: Path, leaves, cas, now, func: str, scenario_name: str,
) -> None:
    scenario = _scenarios(leaves, cas)[scenario_name]
    runs = _run_faults(tmp_path, scenario, func)
    if not runs:   # os.link is only used to carry files over from an existing generation
        assert (func, scenario_name) in {("link", "plain-adopt"), ("link", "fresh")}
    for run in runs:
        root: Path = run["root"]  # type: ignore[assignment]
        where = f"os.{func} failing at call #{run['k']}"
        new = as_map(run["files"])  # type: ignore[arg-type]
        if run["raised"] is not None:
            assert run["fired"], where
            assert "no space left on device" in str(run["raised"]), where
        else:
            # the fault hit a best-effort step (pruning old generations): the write must be complete
            assert visible(root) == {**run["old_visible"], **new}, f"{where}: succeeded but incomplete"  # type: ignore[dict-item]
        for stem, old_pair in run["old_pairs"].items():  # type: ignore[attr-defined]
            allowed = [(new[f"{stem}.crt"], new[f"{stem}.key"])]
            if old_pair is not None:
                allowed.append(old_pair)
            problem = _pair_ok(root, stem, allowed, may_be_absent=old_pair is None)
            assert problem is None, f"{where}: {problem}"
        if (root / "ca.crt").exists():
            assert (root / "ca.crt").read_bytes() in {cas.root.cert_pem}, where
        # whatever happened, a retry without the fault completes the new set
        store: CertsDir = run["store"]  # type: ignore[assignment]
        store.write_set(run["files"])  # type: ignore[arg-type]
        assert visible(root) == {**run["old_visible"], **new}, f"{where}: retry did not converge"  # type: ignore[dict-item]
        assert [p for p in judge(store.snapshot(), now) if p.severity == "error"] == [], where


@pytest.mark.parametrize("func", ["replace", "fsync"])
def test_failed_write_leaves_the_old_set_visible(tmp_path: Path, leaves, cas, func: str) -> None:  # type: ignore[no-untyped-def]
    # write_set's docstring: "Raises StoreError, leaving the previously visible set untouched."
    scenario = _scenarios(leaves, cas)["managed-replace"]
    runs = _run_faults(tmp_path, scenario, func)
    assert runs, "no calls to inject into"
    broken = [run["k"] for run in runs if run["raised"] is not None and visible(run["root"]) != run["old_visible"]]  # type: ignore[arg-type]
    # BUG (store write_set/_switch): failures after `current` was renamed (fsync of the state dir,
    # linking newly added files, fsync of the certs-dir) raise StoreError although the new set is live.
    assert broken == [], f"os.{func} failure at calls {broken} raised StoreError but the new set is visible"


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM])
def test_a_refused_syncfs_falls_back_to_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    synced: list[str] = []

    def refuse(fd: int) -> None:
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(generation, "_syncfs", refuse)
    monkeypatch.setattr(generation.os, "sync", lambda: synced.append("sync"))
    certs = CertsDir(tmp_path / "certs")
    certs.write_set(bulk_set(SYNC_EACH_MAX + 1, b"new"))
    assert synced == ["sync"]
    assert (tmp_path / "certs" / "client.u0.crt").read_bytes() == b"client.u0.crtnew"


# --- staged: a set written while it is still being produced ---------------------------------


@pytest.mark.parametrize("count", [5, SYNC_EACH_MAX + 5])
def test_staged_files_stay_hidden_until_the_set_is_complete(tmp_path: Path, count: int) -> None:
    root = tmp_path / "certs"
    store_ = CertsDir(root)
    old = bulk_set(count, b"old")
    store_.write_set(old)
    new = bulk_set(count, b"new")
    with store_.staged([f.name for f in new]) as stage:
        for content in new:
            stage.add(content)
            assert visible(root) == as_map(old), f"{content.name} became visible before the set was complete"
    assert visible(root) == as_map(new)
    assert os.readlink(root / STATE_DIR / "current") == stage.generation
    for name in (f.name for f in new if f.secret):
        assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o600


def test_staged_names_never_added_keep_what_they_had(tmp_path: Path) -> None:
    root = tmp_path / "certs"
    store_ = CertsDir(root)
    old = bulk_set(SYNC_EACH_MAX + 5, b"old")
    store_.write_set(old)
    new = bulk_set(SYNC_EACH_MAX + 5, b"new")
    skipped = {"client.u3.crt", "client.u3.key"}      # say client u3 failed to be issued
    with store_.staged([f.name for f in new]) as stage:
        for content in new:
            if content.name not in skipped:
                stage.add(content)
    expected = {**as_map(new), **{n: d for n, d in as_map(old).items() if n in skipped}}
    assert visible(root) == expected


@pytest.mark.parametrize("fresh", [True, False], ids=["new-dir", "existing-set"])
def test_an_exception_in_the_staged_body_leaves_the_dir_as_it_was(tmp_path: Path, fresh: bool) -> None:
    root = tmp_path / "certs"
    store_ = CertsDir(root)
    if not fresh:
        store_.write_set(bulk_set(5, b"old"))
    before = tree(root) if root.exists() else None
    new = bulk_set(SYNC_EACH_MAX + 5, b"new")
    with pytest.raises(RuntimeError, match="vault went away"):
        with store_.staged([f.name for f in new]) as stage:
            for content in new[:10]:
                stage.add(content)
            raise RuntimeError("vault went away")
    if fresh:
        assert not root.exists(), "a certs-dir the aborted set created is removed again"
    else:
        assert tree(root) == before, "the half-written generation is gone and nothing else changed"


def test_staged_refuses_a_file_it_was_not_told_about(tmp_path: Path) -> None:
    root = tmp_path / "certs"
    store_ = CertsDir(root)
    store_.write_set(bulk_set(5, b"old"))
    before = tree(root)
    with pytest.raises(StoreError, match="client.eve.crt is not a file this set may add"):
        with store_.staged(["ca.crt"]) as stage:
            stage.add(FileContent("ca.crt", b"ca new", secret=False))
            stage.add(FileContent("client.eve.crt", b"eve", secret=False))
    assert tree(root) == before
    with pytest.raises(StoreError, match="ca.crt is not a file this set may add"):
        with store_.staged(["ca.crt"]) as stage:
            stage.add(FileContent("ca.crt", b"ca new", secret=False))
            stage.add(FileContent("ca.crt", b"ca newer", secret=False))
    assert tree(root) == before


def test_staged_holds_the_dir_lock_while_the_set_is_being_produced(tmp_path: Path) -> None:
    import fcntl

    root = tmp_path / "certs"
    store_ = CertsDir(root)
    store_.write_set(bulk_set(5, b"old"))
    with store_.staged(["ca.crt"]) as stage:
        fd = os.open(root / STATE_DIR / "lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        stage.add(FileContent("ca.crt", b"ca new", secret=False))
    assert (root / "ca.crt").read_bytes() == b"ca new"


# --- other local users: loose or foreign directories, links that lead out (issue 16) ------------------
# The real attacks, by a second uid racing each step, are tests/integration/test_local_attacks.py.

OTHER_UID = 65534


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o757], ids=["0777", "1777", "group-writable", "0757"])
def test_refuses_a_certs_dir_group_or_others_can_write(tmp_path: Path, leaves, mode: int) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    root.mkdir()
    root.chmod(mode)
    before = tree(tmp_path)
    with pytest.raises(StoreError, match=rf"certs-dir {root} is writable by group or others \(mode {mode:04o}\)"):
        CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["certs-dir", "state-dir", "generation"])
def test_refuses_a_directory_another_user_owns(managed: Path, leaves, now, where: str) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.fail("chown to another uid needs root; this suite runs as root")
    state = managed / STATE_DIR
    target = {"certs-dir": managed, "state-dir": state, "generation": state / os.readlink(state / "current")}[where]
    os.chown(target, OTHER_UID, -1)
    before = tree(managed)
    with pytest.raises(StoreError, match=rf"{target} is owned by .*uid {OTHER_UID}"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(managed) == before
    # verify, which cannot tell a stranger from the service user without an owner, warns
    role = {"certs-dir": "certs-dir", "state-dir": "state dir", "generation": "current generation"}[where]
    problems = judge(CertsDir(managed).snapshot(), now)
    assert [(p.severity, p.file) for p in problems] == [("warning", f"{role} {target}")]
    # ... unless that user is the configured owner, the one the keys are written for
    CertsDir(managed, Owner(OTHER_UID, None)).write_set(files_of({"node": leaves["new_node"]}))
    assert (managed / "node.crt").read_bytes() == leaves["new_node"].cert_pem


def test_a_lock_that_is_a_link_is_refused_not_followed(tmp_path: Path, managed: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    victim = tmp_path / "somefile"
    (managed / STATE_DIR / "lock").unlink()
    os.symlink(victim, managed / STATE_DIR / "lock")
    before = tree(managed)
    with pytest.raises(StoreError, match="lock is a symlink"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert not victim.exists()
    with pytest.raises(StoreError, match="lock is a symlink"):
        CertsDir(managed).rollback()
    assert tree(managed) == before


@pytest.mark.parametrize("target", ["absolute", "../elsewhere", "gen-x/../../elsewhere"])
def test_current_must_name_a_generation_inside_the_state_dir(tmp_path: Path, managed: Path, leaves, now,  # type: ignore[no-untyped-def]
                                                             target: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shadow").write_bytes(b"secret")
    link = str(elsewhere) if target == "absolute" else target
    state = managed / STATE_DIR
    os.symlink(link, state / ".swap")
    os.replace(state / ".swap", state / "current")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match=f"current points at {link}, not at a generation"):
        CertsDir(managed).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before
    assert os.stat(elsewhere / "shadow").st_nlink == 1, "nothing was hard-linked from where current points"
    problems = [str(p) for p in judge(CertsDir(managed).snapshot(), now)]
    assert f".vaultpki/current: points at {link}, not at a generation inside .vaultpki: CockroachDB loads its " \
           "files from there" in problems


def test_a_key_with_other_hard_links_is_not_adopted(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "certs"
    _plain(root, {"node.crt": leaves["old_node"].cert_pem, "node.key": leaves["old_node"].key_pem})
    os.link(root / "node.key", tmp_path / "kept-elsewhere.key")
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="node.key has 2 hard links; refusing to adopt"):
        CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    assert tree(tmp_path) == before


def test_adoption_reads_through_in_dir_links_only(tmp_path: Path, leaves) -> None:  # type: ignore[no-untyped-def]
    """node.crt -> ..data/node.crt, ..data -> ..2025 (Kubernetes) is adopted; a link in the chain that
    leaves the dir is refused, wherever in the chain it is."""
    root = tmp_path / "certs"
    (root / "..2025").mkdir(parents=True)
    (root / "..2025" / "node.crt").write_bytes(leaves["old_node"].cert_pem)
    os.symlink("..2025", root / "..data")
    os.symlink("..data/./node.crt", root / "node.crt")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "node.crt").write_bytes(b"not ours")
    os.symlink("../outside", root / "..evil")
    os.symlink("..evil/node.crt", root / "node.key")
    with pytest.raises(StoreError, match=f"{root}/node.key is a symlink to .*outside the certs-dir"):
        CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    os.unlink(root / "node.key")
    CertsDir(root).write_set(files_of({"node": leaves["new_node"]}))
    gens = [g for g in os.listdir(root / STATE_DIR) if g.startswith("gen-")]
    assert any((root / STATE_DIR / g / "node.crt").read_bytes() == leaves["old_node"].cert_pem for g in gens)
    assert (root / "node.crt").read_bytes() == leaves["new_node"].cert_pem


@pytest.mark.parametrize("where", ["certs-dir", "state-dir", "generation"])
def test_snapshot_names_loose_directories(managed: Path, now, where: str) -> None:  # type: ignore[no-untyped-def]
    state = managed / STATE_DIR
    gen = state / os.readlink(state / "current")
    target = {"certs-dir": managed, "state-dir": state, "generation": gen}[where]
    target.chmod(0o777)
    role = {"certs-dir": "certs-dir", "state-dir": "state dir", "generation": "current generation"}[where]
    errors = [str(p) for p in judge(CertsDir(managed).snapshot(), now) if p.severity == "error"]
    assert errors == [f"{role} {target}: is writable by group or others (mode 0777), so another local user could "
                      "change what CockroachDB loads (chmod go-w it)"]
    target.chmod(0o700)
    assert judge(CertsDir(managed).snapshot(), now) == []


def test_snapshot_never_blocks_on_a_fifo(managed: Path) -> None:
    """A FIFO planted as ``client.x.crt`` (or swapped in after the stat) must not hang verify/status/the daemon."""
    import threading

    os.mkfifo(managed / "client.x.crt")
    states = []
    reader = threading.Thread(target=lambda: states.append(CertsDir(managed).snapshot()), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert states, "snapshot blocked on the FIFO"
    entry = states[0].entries["client.x.crt"]
    assert entry.data is None and not entry.target_is_regular


def test_a_state_record_is_written_whole_read_back_and_removed(tmp_path: Path) -> None:
    """The daemon's pending-reload record: 0600 in the state dir, replaced atomically, never through a link."""
    store = CertsDir(tmp_path / "certs")
    assert store.read_record("pending-reload.json") is None            # no certs-dir yet: nothing pending
    with pytest.raises(StoreError, match="does not exist"):
        store.write_record("pending-reload.json", b"{}")               # nothing written, nothing to remember
    store.write_set([FileContent("ca.crt", b"x", False)])
    store.write_record("pending-reload.json", b'{"a": 1}')
    store.write_record("pending-reload.json", b'{"a": 2}')
    record = tmp_path / "certs" / STATE_DIR / "pending-reload.json"
    assert store.read_record("pending-reload.json") == b'{"a": 2}'
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert [p.name for p in record.parent.iterdir() if p.name.endswith(".tmp")] == []
    store.write_record("pending-reload.json", None)
    assert not record.exists() and store.read_record("pending-reload.json") is None
    os.symlink("/etc/passwd", record)
    with pytest.raises(StoreError):
        store.read_record("pending-reload.json")                      # a link is never followed
    for bad in ("../x.json", "lock", "current", ".hidden.json"):
        with pytest.raises(StoreError, match="invalid state record name"):
            store.write_record(bad, b"{}")
