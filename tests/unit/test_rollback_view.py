"""``CertsDir.rollback_view`` and ``rollback(expect=…)`` on a real temporary directory: what a rollback would
restore is read as it is on disk, and a rollback checked against one previous set never switches to another."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaultpki.core.layout import FileContent
from vaultpki.errors import StoreError
from vaultpki.store.certs_dir import CertsDir, GenerationFiles
from vaultpki.store.opening import STATE_DIR


def one_set(store: CertsDir, **files: bytes) -> str:
    return store.write_set([FileContent(name.replace("_", "."), data, secret=name.endswith("_key"))
                            for name, data in files.items()])


def test_the_view_is_both_sets_as_they_are_on_disk(tmp_path: Path) -> None:
    store = CertsDir(tmp_path / "certs")
    first = one_set(store, ca_crt=b"ca", node_crt=b"old crt", node_key=b"old key")
    second = one_set(store, node_crt=b"new crt", node_key=b"new key")
    current, previous = store.rollback_view()
    assert previous == GenerationFiles(first, {"ca.crt": b"ca", "node.crt": b"old crt", "node.key": b"old key"})
    assert current == GenerationFiles(second, {"ca.crt": b"ca", "node.crt": b"new crt", "node.key": b"new key"})


def test_a_previous_set_replaced_meanwhile_is_not_switched_to(tmp_path: Path) -> None:
    root = tmp_path / "certs"
    store = CertsDir(root)
    one_set(store, node_crt=b"a")
    one_set(store, node_crt=b"b")
    _, looked_at = store.rollback_view()
    one_set(store, node_crt=b"c")                   # another writer: previous is now the "b" set
    with pytest.raises(StoreError, match="changed while it was being checked"):
        store.rollback(expect=looked_at.name)
    assert (root / "node.crt").read_bytes() == b"c"
    assert store.rollback(expect=store.rollback_view()[1].name) != looked_at.name
    assert (root / "node.crt").read_bytes() == b"b"


def test_no_previous_set_is_one_line(tmp_path: Path) -> None:
    store = CertsDir(tmp_path / "certs")
    with pytest.raises(StoreError, match="no previous generation"):
        store.rollback_view()
    one_set(store, node_crt=b"a")
    with pytest.raises(StoreError, match="no previous generation"):
        store.rollback_view()
    assert os.readlink(tmp_path / "certs" / STATE_DIR / "current").startswith("gen-")
