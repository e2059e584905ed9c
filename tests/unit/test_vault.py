"""vaultpki.vault's HTTP plumbing: status mapping, proxies, headers, redirects, failover, one login for many threads.

The Vault here is a few lines of ``http.server`` on loopback that record what they were sent; the
adapter's behaviour against a real OpenBao (HA, sealed, TLS, policies) is in tests/integration.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vaultpki.config import parse
from vaultpki.errors import VaultDenied, VaultRequestError, VaultUnavailable
from vaultpki.vault import HttpVault, _judge, _Reply, proxy_for


def vault_for(*addrs: str, secret_id_file: Path | None = None) -> HttpVault:
    raw: dict[str, Any] = {"vault": {"addr": list(addrs), "retry_for": "1s"}}
    if secret_id_file is not None:
        raw["vault"] |= {"auth": "approle", "role_id": "r", "secret_id_file": str(secret_id_file)}
    return HttpVault(parse(raw, {"VAULT_TOKEN": "t0ken"}).vault, max_wait=0.05, one_shot=True, env={})


SIGNED = {"data": {"certificate": "CERT", "ca_chain": ["CA"], "serial_number": "01"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- statuses

@pytest.mark.parametrize(("status", "error", "text"), [
    (403, VaultDenied, "Vault denied signing: permission denied"),
    (401, VaultDenied, "Vault denied signing"),
    (503, VaultUnavailable, "is unavailable while signing: Vault is sealed"),
    (429, VaultUnavailable, "is unavailable"),
    (500, VaultUnavailable, "is unavailable"),
    (404, VaultRequestError, "no such path while signing"),
    (400, VaultRequestError, "Vault refused signing: common name marc not allowed"),
])
def test_statuses_map_to_the_hierarchy(status: int, error: type[Exception], text: str) -> None:
    message = {403: "permission denied", 503: "Vault is sealed", 400: "1 error occurred:\n\t* common name marc not allowed\n\n"}
    body = {"errors": [message[status]]} if status in message else None
    with pytest.raises(error, match=text.replace(".", r"\.")) as info:
        _judge(_Reply(status, body), "http://v:8200", "signing")
    assert "\n" not in str(info.value)


def test_success_returns_the_decoded_body() -> None:
    assert _judge(_Reply(200, {"data": {"a": 1}}), "http://v", "x") == {"data": {"a": 1}}
    assert _judge(_Reply(204, None), "http://v", "x") is None


# ------------------------------------------------------------------------------------- proxies

def test_no_proxy_variables_mean_a_direct_connection() -> None:
    assert proxy_for("https://vault:8200", {"PATH": "/bin"}) is None


def test_the_scheme_proxy_is_used_and_no_proxy_bypasses_it() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "http_proxy": "http://plain:3128", "NO_PROXY": "internal.example"}
    assert proxy_for("https://vault:8200", env) == "http://proxy:3128"
    assert proxy_for("http://vault:8200", env) == "http://plain:3128"
    assert proxy_for("https://vault.internal.example:8200", env) is None


# ------------------------------------------------------------------------------------- requests

def test_sign_sends_token_namespace_and_exactly_the_allowed_parameters(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (200, {}, SIGNED))
    cfg = parse({"vault": {"addr": addr, "namespace": "team-a"}}, {"VAULT_TOKEN": "t0ken"}).vault
    issued = HttpVault(cfg, one_shot=True, env={}).sign("pki", "node", "CSR", None, "1h")
    assert (issued.certificate, issued.ca_chain, issued.serial) == ("CERT", ("CA",), "01")
    [(method, path, headers, body)] = rec.requests          # one_shot: no token lookup first
    assert (method, path, body) == ("POST", "/v1/pki/sign/node", {"csr": "CSR", "ttl": "1h"})
    assert headers["x-vault-token"] == "t0ken" and headers["x-vault-namespace"] == "team-a"


def test_a_standby_redirect_is_followed_with_method_body_and_token(server: Any) -> None:
    active, rec_active = server(lambda m, p, h, b: (200, {}, SIGNED))
    standby, rec_standby = server(lambda m, p, h, b: (307, {"Location": f"{active}{p}"}, None))
    vault_for(standby).sign("pki", "user", "CSR", "marc", None)
    assert len(rec_standby.requests) == 1
    [(method, path, headers, body)] = rec_active.requests
    assert (method, path, body) == ("POST", "/v1/pki/sign/user", {"csr": "CSR", "common_name": "marc"})
    assert headers["x-vault-token"] == "t0ken"


def test_a_dead_address_fails_over_to_the_next_and_is_skipped_afterwards(server: Any) -> None:
    live, rec = server(lambda m, p, h, b: (200, {}, SIGNED))
    dead = f"http://127.0.0.1:{free_port()}"
    vault = vault_for(dead, live)
    vault.sign("pki", "node", "CSR", None, None)
    vault.sign("pki", "node", "CSR", None, None)
    assert len(rec.requests) == 2


def test_unreachable_everywhere_is_one_line_naming_the_address() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VaultUnavailable, match=f"cannot reach Vault at {dead} while signing with pki/sign/node: "
                                               "connection refused"):
        vault_for(dead).sign("pki", "node", "CSR", None, None)


def test_a_body_that_is_not_json_is_reported_not_crashed_on(server: Any) -> None:
    addr, _ = server(lambda m, p, h, b: (502, {}, None))
    with pytest.raises(VaultUnavailable, match="HTTP 502"):
        vault_for(addr).ca_material("pki")


def test_list_uses_the_list_verb_and_an_empty_mount_lists_nothing(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (404, {}, {"errors": []}))
    assert vault_for(addr).list_serials("pki") == ()
    assert rec.requests[0][:2] == ("LIST", "/v1/pki/certs")


def test_parallel_requests_log_in_once(server: Any, tmp_path: Path) -> None:
    def handler(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        if path.endswith("/login"):
            return 200, {}, {"auth": {"client_token": "s.login", "lease_duration": 3600, "renewable": True}}
        return (200, {}, SIGNED) if headers.get("x-vault-token") == "s.login" else (403, {}, {"errors": ["no"]})
    addr, rec = server(handler)
    secret = tmp_path / "secret-id"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    vault = vault_for(addr, secret_id_file=secret)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: vault.sign("pki", "node", "CSR", None, None), range(16)))
    logins = [r for r in rec.requests if r[1].endswith("/login")]
    assert len(logins) == 1 and logins[0][3] == {"role_id": "r", "secret_id": "s3cret"}


def test_the_ca_reads_are_in_flight_together(server: Any) -> None:
    """The default issuer and the issuer list are independent reads: one round trip, not two in a row."""
    import threading

    listed = threading.Event()

    def handler(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, str], Any]:
        if method == "LIST":
            listed.set()
            return 200, {}, {"data": {"keys": ["a"], "key_info": {"a": {"key_id": ""}}}}
        if not listed.wait(5):
            return 500, {}, {"errors": ["the issuer list was not asked for while the default issuer was"]}
        return 200, {}, {"data": {"certificate": "CERT", "issuer_id": "a", "ca_chain": ["CERT"]}}

    addr, record = server(handler)
    material = vault_for(addr).ca_material("pki")
    assert material.issuer == "CERT" and material.others == ()
    assert sorted(m for m, *_ in record.requests) == ["GET", "LIST"]
