"""Revocation end to end on real OpenBao: revoke-user / revoke, OCSP as CockroachDB asks, status, verify, sync."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from vaultpki.core import crypto, ocsp
from vaultpki.core.layout import Mode

from .conftest import Deployment, run_cli, toml_dump
from .test_cli_errors import one_error_line


def leaf(path: Path) -> list:  # type: ignore[type-arg]
    return crypto.load_certs(path.read_bytes())


def cockroach_ocsp(chain: list) -> ocsp.OcspResult:  # type: ignore[type-arg]
    """Exactly CockroachDB's request: SHA-256 CertID, HTTP POST, application/ocsp-request."""
    cert, issuer = chain[0], chain[1]
    url = ocsp.responder_urls(cert)[0]
    answer = requests.post(url, data=ocsp.build_request(cert, issuer), timeout=5,
                           headers={"Content-Type": "application/ocsp-request"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/ocsp-response"
    return ocsp.parse_response(answer.content, cert, issuer, crypto_now())


def crypto_now():  # type: ignore[no-untyped-def]
    import datetime as dt
    return dt.datetime.now(dt.UTC)


def test_revoke_user_then_ocsp_status_and_verify(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "node")
    issue = lambda user, d: run_cli(["--config", str(config), "issue-user", user, "--certs-dir", str(d)], token)  # noqa: E731
    assert issue("revme", tmp_path / "laptop").returncode == 0
    assert issue("revme", tmp_path / "ci").returncode == 0           # a second certificate for the same user
    assert issue("keepme", tmp_path / "keep").returncode == 0
    first, second = leaf(tmp_path / "laptop" / "client.revme.crt"), leaf(tmp_path / "ci" / "client.revme.crt")
    info = crypto.describe(first[0])
    assert info.common_name == "revme"
    assert ocsp.responder_urls(first[0]) == (f"{dep.server.addr}/v1/{dep.pki.mount}/ocsp",)  # AIA from config/urls
    assert cockroach_ocsp(first).status is ocsp.OcspStatus.GOOD

    result = run_cli(["--config", str(config), "revoke-user", "revme", "--json"], token)
    assert result.returncode == 0, result.stderr
    revoked = json.loads(result.stdout)["revoked"]
    assert {r["serial"] for r in revoked} == {crypto.describe(first[0]).serial, crypto.describe(second[0]).serial}
    assert all(r["common_name"] == "revme" and r["revocation_time"] > 0 for r in revoked)

    answer = cockroach_ocsp(first)
    assert answer.status is ocsp.OcspStatus.REVOKED and answer.revocation_time is not None
    assert cockroach_ocsp(leaf(tmp_path / "keep" / "client.keepme.crt")).status is ocsp.OcspStatus.GOOD

    status = run_cli(["status", "--ocsp", "--json", "--certs-dir", str(tmp_path / "laptop")])
    rows = {r["file"]: r for r in json.loads(status.stdout)["files"]}
    assert rows["client.revme.crt"]["ocsp"] == "revoked"
    assert any("is revoked" in p for p in rows["client.revme.crt"]["problems"])
    verify = run_cli(["verify", "--ocsp", "--certs-dir", str(tmp_path / "laptop")])
    assert verify.returncode == 1 and "client.revme.crt: is revoked" in verify.stderr
    assert run_cli(["verify", "--ocsp", "--certs-dir", str(tmp_path / "keep")]).returncode == 0
    assert run_cli(["verify", "--certs-dir", str(tmp_path / "laptop")]).returncode == 0   # OCSP is opt-in

    again = run_cli(["--config", str(config), "revoke-user", "revme"], token)
    assert again.returncode == 0 and "nothing to revoke" in again.stdout
    serial = crypto.describe(leaf(tmp_path / "keep" / "client.keepme.crt")[0]).serial
    one = run_cli(["--config", str(config), "revoke", "--serial", serial.replace(":", "")], token)
    assert one.returncode == 0 and f"revoked {serial} CN=keepme" in one.stdout
    one_error_line(run_cli(["--config", str(config), "revoke", "--serial", "zz"], token), 2, "not a certificate serial")
    one_error_line(run_cli(["--config", str(config), "revoke", "--serial", "01:02"], token), 2, "no certificate with serial")
    one_error_line(run_cli(["--config", str(config), "revoke-user", "../x"], token), 2, "user name")


def test_sync_reissues_a_revoked_node_certificate_and_revokes_what_it_replaced(
    deploy: Callable[..., Deployment], tmp_path: Path,
) -> None:
    dep = deploy(Mode.SPLIT_NODE, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    doc = dep.config_doc(tmp_path / "certs", ttl="1h", renew={"revoke_replaced": True})
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump(doc))
    assert run_cli(["--config", str(config), "sync", "--once"], token).returncode == 0
    node = leaf(tmp_path / "certs" / "node.crt")
    serial = crypto.describe(node[0]).serial
    assert run_cli(["--config", str(config), "revoke", "--serial", serial], token).returncode == 0

    result = run_cli(["--config", str(config), "sync", "--once", "--log-format", "json"], token)
    assert result.returncode == 0, result.stderr
    due = [json.loads(line) for line in result.stderr.splitlines() if '"msg": "due"' in line]
    assert [(d["file"], d["reason"].split(" (")[0]) for d in due] == [("node.crt", "revoked")]
    renewed = leaf(tmp_path / "certs" / "node.crt")
    assert renewed[0].serial_number != node[0].serial_number
    assert cockroach_ocsp(renewed).status is ocsp.OcspStatus.GOOD

    # revoke_replaced: the certificate a renewal replaces is revoked (by proof of key possession).
    client_node = leaf(tmp_path / "certs" / "client.node.crt")
    doc["node"] = {"hosts": ["node1.test.internal", "localhost"]}             # node.crt is due again
    config.write_text(toml_dump(doc))
    result = run_cli(["--config", str(config), "sync", "--once"], token)
    assert result.returncode == 0, result.stderr
    assert cockroach_ocsp(renewed).status is ocsp.OcspStatus.REVOKED
    assert cockroach_ocsp(client_node).status is ocsp.OcspStatus.GOOD                # not replaced, not revoked
