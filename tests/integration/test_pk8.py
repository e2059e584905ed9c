"""``client.<user>.key.pk8``: a user's key as PKCS#8 DER, for Java clients (issue 19 §4).

``cockroach cert create-client --also-generate-pkcs8-key`` writes it for Java's JDBC driver (pgjdbc),
which reads ``sslkey`` only as PKCS#8 DER. ``vaultpki issue-user --pk8`` and ``node.pk8`` write it in the
same set as the pair, with the key's owner and mode; ``sync`` renews it with the pair; a re-issue
without it drops the old copy (it would hold the replaced key); ``verify`` refuses one that holds another
key, is not PKCS#8 DER, or is more readable than the key. CockroachDB's loader skips the name (it does
not end in ``.crt``: ``CertificateLoader.Load`` in pkg/security/certificate_loader.go), so ``verify`` of a
node dir holding one is clean.

The real consumer: a Java program with pgjdbc (``tests/support/jdbc.py``) logs in to the test
PostgreSQL with ``sslmode=verify-full`` and ``client.marc.key.pk8``; OpenSSL-based PostgreSQL needs a
chain that ends at a self-signed root, so these configurations use ``ca_trust = "root"``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from ..support import jdbc
from ..support.postgres import PostgresServer, make_shared_tempdir
from .conftest import Deployment, run_cli

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class World:
    dep: Deployment
    base: Path
    node_dir: Path           # issue-node with node.users = ["marc"], node.pk8 = true
    node_config: Path
    user_dir: Path           # issue-user marc --pk8
    pg: PostgresServer


def _cli(dep: Deployment, *args: str) -> None:
    result = run_cli(list(args), {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, f"{args}: {result.stderr}"


def _node_config(dep: Deployment, base: Path, **top: object) -> Path:
    doc_node = {"hosts": list(dep.node_hosts), "users": ["marc"], "pk8": True}
    return dep.write_config(base / "vaultpki.toml", base / "certs", ca_trust="root", owner="postgres",
                            group="postgres", node=doc_node, **top)


@pytest.fixture(scope="module")
def world(deploy: Callable[..., Deployment]) -> Iterator[World]:
    jdbc.classes()                 # a missing JDK or driver fails here, before anything is issued
    dep = deploy(Mode.STANDARD)
    base = make_shared_tempdir("vaultpki-pk8-")
    try:
        config = _node_config(dep, base)
        _cli(dep, "--config", str(config), "issue-node")
        user_dir = base / "marc"
        _cli(dep, "--config", str(config), "issue-user", "marc", "--pk8", "--certs-dir", str(user_dir))
        certs = base / "certs"
        (base / "pg").mkdir(mode=0o755)
        with PostgresServer(base / "pg", certs / "node.crt", certs / "node.key", certs / "ca.crt") as pg:
            pg.create_user("marc")
            yield World(dep, base, certs, config, user_dir, pg)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _der_key(path: Path) -> crypto.PrivateKey:
    key = serialization.load_der_private_key(path.read_bytes(), password=None)
    assert isinstance(key, crypto.PrivateKey)
    return key


def _pem_key(path: Path) -> crypto.PrivateKey:
    return crypto.load_key(path.read_bytes())


def _java_login(world: World, certs_dir: Path, key: str = "client.marc.key.pk8") -> jdbc.Login:
    return jdbc.login("localhost", world.pg.port, "marc", certs_dir / "client.marc.crt", certs_dir / key,
                      certs_dir / "ca.crt")


def test_issue_user_pk8_lets_a_java_client_log_in(world: World) -> None:
    pk8, key = world.user_dir / "client.marc.key.pk8", world.user_dir / "client.marc.key"
    assert _der_key(pk8).public_key() == _pem_key(key).public_key()
    # The bytes are the key's PKCS#8 DER (what pgjdbc reads), in the same set as the pair.
    assert pk8.read_bytes() == _pem_key(key).private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption())
    assert os.readlink(pk8) == ".vaultpki/current/client.marc.key.pk8"
    assert stat.S_IMODE(os.stat(pk8).st_mode) == stat.S_IMODE(os.stat(key).st_mode) == 0o600
    login = _java_login(world, world.user_dir)
    assert login.ok and login.user == "marc", login


def test_node_pk8_writes_the_copy_for_node_users(world: World) -> None:
    """node.pk8 = true: client.marc.key.pk8 beside the node's set, owned and moded as its .key (here the
    configured owner postgres, 0600), and a Java client logs in with it."""
    pk8, key = world.node_dir / "client.marc.key.pk8", world.node_dir / "client.marc.key"
    key_st, pk8_st = os.stat(key), os.stat(pk8)
    assert (pk8_st.st_uid, pk8_st.st_gid, stat.S_IMODE(pk8_st.st_mode)) == \
        (key_st.st_uid, key_st.st_gid, stat.S_IMODE(key_st.st_mode))
    assert stat.S_IMODE(pk8_st.st_mode) == 0o600
    assert _der_key(pk8).public_key() == _pem_key(key).public_key()
    assert not (world.node_dir / "node.key.pk8").exists()          # users' keys only
    verify = run_cli(["--config", str(world.node_config), "verify"])
    assert verify.returncode == 0 and "key.pk8" not in verify.stdout + verify.stderr, verify
    login = _java_login(world, world.node_dir)
    assert login.ok and login.user == "marc", login


def test_the_pem_key_is_not_what_java_reads(world: World) -> None:
    """Why the copy exists: pgjdbc refuses the PEM key vaultpki (and CockroachDB) write as .key."""
    login = _java_login(world, world.user_dir, key="client.marc.key")
    assert not login.ok and "Could not read SSL key file" in login.error, login


def test_dry_run_and_json_list_the_pk8(world: World) -> None:
    dry = run_cli(["--config", str(world.node_config), "issue-user", "eve", "--pk8", "--dry-run", "--json",
                   "--certs-dir", str(world.base / "eve")], {"VAULT_TOKEN": world.dep.server.root_token})
    assert dry.returncode == 0, dry.stderr
    assert "client.eve.key.pk8" in json.loads(dry.stdout)["files"]
    assert not (world.base / "eve").exists()


def test_bulk_issue_writes_every_users_copy(world: World) -> None:
    users = world.base / "users.txt"
    users.write_text("ann\nbob\n")
    target = world.base / "bulk"
    _cli(world.dep, "--config", str(world.node_config), "issue-user", "--from-file", str(users), "--pk8",
         "--certs-dir", str(target))
    for user in ("ann", "bob"):
        key = _pem_key(target / f"client.{user}.key")
        assert _der_key(target / f"client.{user}.key.pk8").public_key() == key.public_key()
    assert run_cli(["verify", "--certs-dir", str(target)]).returncode == 0


def test_reissue_without_pk8_drops_the_old_copy(world: World) -> None:
    """A copy of a replaced key must not outlive it: re-issued without --pk8, the pair's old copy is gone."""
    target = world.base / "reissue"
    _cli(world.dep, "--config", str(world.node_config), "issue-user", "marc", "--pk8", "--certs-dir", str(target))
    first = _der_key(target / "client.marc.key.pk8")
    _cli(world.dep, "--config", str(world.node_config), "issue-user", "marc", "--pk8", "--certs-dir", str(target))
    second = _der_key(target / "client.marc.key.pk8")
    assert second.public_key() != first.public_key()
    assert second.public_key() == _pem_key(target / "client.marc.key").public_key()
    _cli(world.dep, "--config", str(world.node_config), "issue-user", "marc", "--certs-dir", str(target))
    assert not os.path.lexists(target / "client.marc.key.pk8")
    assert not (target / ".vaultpki" / "current" / "client.marc.key.pk8").exists()
    assert (target / ".vaultpki" / "previous" / "client.marc.key.pk8").exists()       # rollback brings the pair back
    assert run_cli(["verify", "--certs-dir", str(target)]).returncode == 0


def test_sync_renews_the_pk8_with_its_pair(world: World, tmp_path: Path) -> None:
    """A missing copy makes the pair due: one pass re-issues the pair and writes its copy in the same set."""
    base = make_shared_tempdir("vaultpki-pk8-sync-")
    try:
        config = _node_config(world.dep, base)
        _cli(world.dep, "--config", str(config), "issue-node")
        certs = base / "certs"
        old = _pem_key(certs / "client.marc.key").public_key()
        (certs / "client.marc.key.pk8").unlink()
        _cli(world.dep, "--config", str(config), "sync", "--once")
        new = _pem_key(certs / "client.marc.key").public_key()
        assert new != old
        assert _der_key(certs / "client.marc.key.pk8").public_key() == new
        current = certs / ".vaultpki" / "current"
        assert os.path.samefile(certs / "client.marc.key.pk8", current / "client.marc.key.pk8")
        assert os.path.samefile(certs / "client.marc.key", current / "client.marc.key")
        login = _java_login(world, certs)
        assert login.ok and login.user == "marc", login
        again = run_cli(["--config", str(config), "sync", "--once", "--dry-run", "--json"],
                        {"VAULT_TOKEN": world.dep.server.root_token})
        assert again.returncode == 0 and json.loads(again.stdout)["due"] == [], again.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _bad(kind: str, source: Path, target: Path) -> None:
    """A copy of a user dir (plain files) whose pk8 is wrong in one way."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".vaultpki"))
    pk8 = target / "client.marc.key.pk8"
    if kind == "another-key":
        other = crypto.generate_key(crypto.KeyType.EC, 256)
        pk8.write_bytes(other.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    elif kind == "pem":
        pk8.write_bytes((target / "client.marc.key").read_bytes())
    elif kind == "sec1-der":
        pk8.write_bytes(_pem_key(target / "client.marc.key").private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    elif kind == "world-readable":
        pk8.chmod(0o644)
    elif kind == "without-key":
        (target / "client.marc.key").unlink()
        (target / "client.marc.crt").unlink()


@pytest.mark.parametrize(("kind", "message"), [
    ("another-key", "client.marc.key.pk8: holds another key than client.marc.key"),
    ("pem", "client.marc.key.pk8: is not an unencrypted PKCS#8 DER private key"),
    ("sec1-der", "client.marc.key.pk8: is not an unencrypted PKCS#8 DER private key"),
    ("world-readable", "client.marc.key.pk8: mode 0644 is too open for a private key"),
    ("without-key", "client.marc.key.pk8: has no usable client.marc.key beside it"),
])
def test_verify_refuses_a_bad_pk8(world: World, tmp_path: Path, kind: str, message: str) -> None:
    copy = tmp_path / kind
    _bad(kind, world.user_dir, copy)
    verify = run_cli(["verify", "--certs-dir", str(copy)])
    assert verify.returncode == 1 and message in verify.stderr, verify


def test_verify_of_a_good_copy_is_clean(world: World, tmp_path: Path) -> None:
    copy = tmp_path / "good"
    shutil.copytree(world.user_dir, copy, ignore=shutil.ignore_patterns(".vaultpki"))
    verify = run_cli(["verify", "--certs-dir", str(copy)])
    assert verify.returncode == 0 and "key.pk8" not in verify.stdout + verify.stderr, verify


def test_a_missing_jdk_fails_naming_the_packages(tmp_path: Path) -> None:
    """The real consumer is never skipped: without javac/java or the driver, the harness says what to install."""
    with pytest.raises(RuntimeError, match="apt-get install default-jdk-headless libpostgresql-jdbc-java"):
        jdbc.tools(path=str(tmp_path))
    with pytest.raises(RuntimeError, match=r"/nonexistent/postgresql\.jar: apt-get install"):
        jdbc.tools(jar=Path("/nonexistent/postgresql.jar"))
