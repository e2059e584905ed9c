"""``client.<user>.key.pk8`` in the pure core and the store: what a copy must be, when the daemon finds the
pair due because of it, and that the store never carries a copy past the key it was made from."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from vaultpki.core import crypto, pkcs8
from vaultpki.core.layout import FileContent, FileKind, Mode, pk8_key_file, plan_node, plan_user
from vaultpki.core.snapshot import DirState, FileState, judge, judge_leaf
from vaultpki.store.certs_dir import CertsDir

from .conftest import CLIENT, CaSet, Pki
from .test_layout import HOSTS, names

EC = crypto.generate_key(crypto.KeyType.EC, 256)
RSA = crypto.generate_key(crypto.KeyType.RSA, 2048)
DER = serialization.Encoding.DER


def _encode(key: crypto.PrivateKey, form: serialization.PrivateFormat,
            encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    return key.private_bytes(DER, form, encryption or serialization.NoEncryption())


@pytest.mark.parametrize("key", [EC, RSA, crypto.generate_key(crypto.KeyType.EC, 384)], ids=["ec256", "rsa", "ec384"])
def test_to_der_is_the_keys_own_pkcs8(key: crypto.PrivateKey) -> None:
    der = pkcs8.to_der(key)
    assert pkcs8.content_problem(der, key, "client.marc.key") is None
    assert b"".join(crypto.key_to_pem(key).splitlines()[1:-1]) == base64.b64encode(der)      # the PEM's own bytes


@pytest.mark.parametrize(("data", "fragment"), [
    pytest.param(_encode(RSA, serialization.PrivateFormat.TraditionalOpenSSL), "not an unencrypted PKCS#8", id="pkcs1"),
    pytest.param(_encode(EC, serialization.PrivateFormat.TraditionalOpenSSL), "not an unencrypted PKCS#8", id="sec1"),
    pytest.param(_encode(EC, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")),
                 "not an unencrypted PKCS#8", id="encrypted"),
    pytest.param(crypto.key_to_pem(EC), "not an unencrypted PKCS#8", id="pem"),
    pytest.param(b"", "not an unencrypted PKCS#8", id="empty"),
    pytest.param(pkcs8.to_der(EC)[:20], "does not parse", id="truncated"),
    pytest.param(pkcs8.to_der(crypto.generate_key(crypto.KeyType.EC, 256)), "holds another key than client.marc.key",
                 id="another-key"),
])
def test_content_problems(data: bytes, fragment: str) -> None:
    problem = pkcs8.content_problem(data, EC, "client.marc.key")
    assert problem is not None and fragment in problem


def test_a_copy_beside_no_key() -> None:
    assert "has no usable client.marc.key beside it" in (pkcs8.content_problem(pkcs8.to_der(EC), None, "client.marc.key") or "")


@pytest.mark.parametrize(("mode", "uid", "gid", "ok"), [
    (0o600, 1000, 1000, True), (0o400, 1000, 1000, True), (0o640, 0, 50, True),       # root's, the service's group
    (0o640, 0, 51, False), (0o640, 1000, 50, False), (0o644, 1000, 1000, False), (0o604, 0, 50, False),
    (0o700, 1000, 1000, False),
])
def test_mode(mode: int, uid: int, gid: int, ok: bool) -> None:
    assert (pkcs8.mode_problem(stat.S_IFREG | mode, uid, gid, service_gid=50) is None) is ok


def test_names() -> None:
    assert pk8_key_file("client.marc.key.pk8") == "client.marc.key"
    assert pk8_key_file("client.a.b.key.pk8") == "client.a.b.key"
    assert pk8_key_file("client.marc.pk8") is None and pk8_key_file("client.marc.key") is None


def test_plans() -> None:
    user = plan_user(Mode.STANDARD, names(), "marc", pk8=True)
    assert user.file_names == ("ca.crt", "client.marc.crt", "client.marc.key", "client.marc.key.pk8")
    assert plan_user(Mode.STANDARD, names(), "marc").file_names == ("ca.crt", "client.marc.crt", "client.marc.key")
    node = plan_node(Mode.SPLIT_NODE, names(), HOSTS, [], ["root"], pk8=True)
    assert [s.pk8 for s in node.certs] == [s.kind is FileKind.CLIENT for s in node.certs]       # users' keys only
    assert "client.node.key.pk8" not in node.file_names and "client.root.key.pk8" in node.file_names


def test_judge_names_every_bad_copy_and_passes_a_good_one(now: dt.datetime) -> None:
    def state(pk8: bytes, mode: int) -> DirState:
        return DirState("/d", True, {
            "client.marc.key": FileState("client.marc.key", mode=0o600, uid=1000, gid=1000, data=crypto.key_to_pem(EC)),
            "client.marc.key.pk8": FileState("client.marc.key.pk8", mode=mode, uid=1000, gid=1000, data=pk8)})

    assert judge(state(pkcs8.to_der(EC), 0o600), now) == []
    bad = judge(state(pkcs8.to_der(RSA), 0o644), now)
    assert [(p.file, p.severity) for p in bad] == [("client.marc.key.pk8", "error")] * 2
    assert "too open" in bad[0].message and "holds another key than client.marc.key" in bad[1].message


def test_judge_leaf_makes_the_pair_due_for_its_copy(tmp_path: Path, pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    """Through a real store: the pair and its copy written, then the copy re-moded, replaced, or removed."""
    spec = plan_user(Mode.STANDARD, names(), "marc", pk8=True).certs[0]
    leaf = pki.leaf("marc", cas.root, dns=["marc"], ekus=[CLIENT])
    store = CertsDir(tmp_path / "d")
    store.write_set([FileContent("ca.crt", cas.root.cert_pem, False), FileContent(spec.cert_file, leaf.cert_pem, False),
                     FileContent(spec.key_file, leaf.key_pem, True),
                     FileContent(spec.pk8_file, pkcs8.to_der(leaf.key), True)])
    anchors = [cas.root.cert]
    assert judge_leaf(spec, store.snapshot(), anchors, now).problem is None
    copy = tmp_path / "d" / spec.pk8_file
    copy.chmod(0o640)                  # through the link: the generation's file itself
    assert "owner/mode" in (judge_leaf(spec, store.snapshot(), anchors, now).problem or "")
    store.write_set([FileContent(spec.pk8_file, pkcs8.to_der(EC), True)])
    assert "holds another key" in (judge_leaf(spec, store.snapshot(), anchors, now).problem or "")
    os.unlink(copy)
    assert judge_leaf(spec, store.snapshot(), anchors, now).problem == "missing"


def test_the_store_drops_a_copy_whose_key_is_replaced_without_it(tmp_path: Path) -> None:
    store = CertsDir(tmp_path / "d")
    store.write_set([FileContent("client.marc.key", crypto.key_to_pem(EC), True),
                     FileContent("client.marc.key.pk8", pkcs8.to_der(EC), True),
                     FileContent("client.bob.key", crypto.key_to_pem(RSA), True),
                     FileContent("client.bob.key.pk8", pkcs8.to_der(RSA), True)])
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "client.marc.key.pk8").st_mode) == 0o600
    other = crypto.generate_key(crypto.KeyType.EC, 256)
    store.write_set([FileContent("client.marc.key", crypto.key_to_pem(other), True)])
    assert not os.path.lexists(tmp_path / "d" / "client.marc.key.pk8")
    assert (tmp_path / "d" / "client.bob.key.pk8").read_bytes() == pkcs8.to_der(RSA)      # its key was not replaced
    store.write_set([FileContent("client.bob.key.pk8", pkcs8.to_der(RSA), True)])       # a copy alone: the key stays
    assert (tmp_path / "d" / "client.bob.key").read_bytes() == crypto.key_to_pem(RSA)


def test_adopting_a_plain_copy_keeps_it_secret(tmp_path: Path) -> None:
    """A copy `cockroach cert create-client --also-generate-pkcs8-key` left (a plain file) is adopted as a key
    is: its copy in the generation is never more readable than the key mode."""
    certs = tmp_path / "d"
    certs.mkdir(mode=0o700)
    (certs / "client.marc.key.pk8").write_bytes(pkcs8.to_der(EC))
    (certs / "client.marc.key.pk8").chmod(0o600)
    CertsDir(certs).write_set([FileContent("client.marc.key", crypto.key_to_pem(EC), True),
                               FileContent("client.marc.key.pk8", pkcs8.to_der(EC), True)])
    previous = certs / ".vaultpki" / "previous" / "client.marc.key.pk8"
    assert stat.S_IMODE(os.stat(previous).st_mode) == 0o600
