"""HttpVault over hvac and requests: status mapping, proxies, headers, redirects, failover, one login for many threads.

The Vault here is a few lines of ``http.server`` on loopback that record what they were sent; the
adapter's behaviour against a real OpenBao (HA, sealed, TLS, policies) is in tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vaultpki.config import parse
from vaultpki.core.ports import IssuedCert, SignRequest
from vaultpki.dev.devserver import free_port
from vaultpki.errors import VaultDenied, VaultRequestError, VaultUnavailable
from vaultpki.vault.client import HttpVault
from vaultpki.vault.transport import NotFollowed, _redirect_target, proxy_for

from .conftest import DROP


def vault_for(*addrs: str, secret_id_file: Path | None = None) -> HttpVault:
    raw: dict[str, Any] = {"vault": {"addr": list(addrs), "retry_for": "1s"}}
    if secret_id_file is not None:
        raw["vault"] |= {"auth": "approle", "role_id": "r", "secret_id_file": str(secret_id_file)}
    return HttpVault(parse(raw, {"VAULT_TOKEN": "t0ken"}).vault, max_wait=0.05, one_shot=True, env={})


SIGNED = {"data": {"certificate": "CERT", "ca_chain": ["CA"], "serial_number": "01"}}


# ------------------------------------------------------------------------------------- statuses

@pytest.mark.parametrize(("status", "error", "text"), [
    (403, VaultDenied, "Vault denied signing with pki/sign/node: permission denied"),
    (401, VaultDenied, "Vault denied signing with pki/sign/node"),
    (503, VaultUnavailable, "is unavailable while signing with pki/sign/node: Vault is sealed"),
    (429, VaultUnavailable, "is unavailable"),
    (500, VaultUnavailable, "is unavailable"),
    (504, VaultUnavailable, "is unavailable"),
    (404, VaultRequestError, "no such path while signing with pki/sign/node"),
    (400, VaultRequestError, "Vault refused signing with pki/sign/node: common name marc not allowed"),
])
def test_statuses_map_to_the_hierarchy(server: Any, status: int, error: type[Exception], text: str) -> None:
    message = {403: "permission denied", 503: "Vault is sealed", 400: "1 error occurred:\n\t* common name marc not allowed\n\n"}
    body = {"errors": [message[status]]} if status in message else None
    addr, _ = server(lambda m, p, h, b: (status, {}, body))
    with pytest.raises(error, match=text.replace(".", r"\.")) as info:
        vault_for(addr).sign("pki", "node", "CSR", None, None)
    assert "\n" not in str(info.value)


def test_success_with_no_body_is_no_data(server: Any) -> None:
    addr, _ = server(lambda m, p, h, b: (204, {}, None))
    with pytest.raises(VaultRequestError, match="Vault returned no data while signing"):
        vault_for(addr).sign("pki", "node", "CSR", None, None)


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


def test_a_standby_redirect_to_another_configured_address_is_followed_with_method_body_and_token(server: Any) -> None:
    active, rec_active = server(lambda m, p, h, b: (200, {}, SIGNED))
    standby, rec_standby = server(lambda m, p, h, b: (307, {"Location": f"{active}{p}"}, None))
    vault_for(standby, active).sign("pki", "user", "CSR", "marc", None)
    assert len(rec_standby.requests) == 1
    [(method, path, headers, body)] = rec_active.requests
    assert (method, path, body) == ("POST", "/v1/pki/sign/user", {"csr": "CSR", "common_name": "marc"})
    assert headers["x-vault-token"] == "t0ken"


def test_a_redirect_elsewhere_is_refused_and_nothing_is_sent_there(server: Any) -> None:
    elsewhere, rec_elsewhere = server(lambda m, p, h, b: (200, {}, SIGNED))
    standby, _ = server(lambda m, p, h, b: (307, {"Location": f"{elsewhere}{p}"}, None))
    with pytest.raises(VaultUnavailable, match="redirect to http://127.0.0.1:[0-9]+ refused: not a configured Vault address"):
        vault_for(standby).sign("pki", "user", "CSR", "marc", None)
    assert rec_elsewhere.requests == []


def test_a_redirect_from_https_to_http_is_refused_even_to_a_configured_origin() -> None:
    allowed = frozenset({("https", "vault", 8200), ("http", "vault", 8200)})
    with pytest.raises(NotFollowed, match="not https"):
        _redirect_target("https://vault:8200/v1/pki/sign/node", "http://vault:8200/v1/pki/sign/node", allowed)
    assert _redirect_target("http://vault:8200/v1/x", "/v1/y", allowed) == "http://vault:8200/v1/y"


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


def test_a_login_token_no_header_can_carry_is_refused_not_sent(server: Any, tmp_path: Path) -> None:
    def handler(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        if path.endswith("/login"):
            return 200, {}, {"auth": {"client_token": "s.login\r\nX-Evil: 1", "lease_duration": 3600}}
        return 200, {}, SIGNED
    addr, rec = server(handler)
    secret = tmp_path / "secret-id"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    with pytest.raises(VaultDenied, match="login at auth/approle returned a token that has a character an HTTP header") as info:
        vault_for(addr, secret_id_file=secret).sign("pki", "node", "CSR", None, None)
    assert "Evil" not in str(info.value)
    assert [r[1] for r in rec.requests] == ["/v1/auth/approle/login"]


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


# ------------------------------------------------------------------------- many requests in flight

def many(vault: HttpVault, csrs: list[str], parallel: int = 4) -> dict[str, Any]:
    """sign_many over ``csrs`` (each its own tag), as {csr: certificate or error}."""
    requests = ((csr, SignRequest("pki", "node", csr, None, "1h")) for csr in csrs)
    return dict(vault.sign_many(requests, parallel))


def signed_for(body: Any) -> dict[str, Any]:
    return {"data": {"certificate": f"CERT-{body['csr']}", "ca_chain": ["CA"], "serial_number": "01"}}


def test_sign_many_keeps_its_requests_in_flight_together_over_keep_alive_connections(server: Any) -> None:
    """Each group of four requests is only answered once all four have arrived: sent one after the
    other, the first would wait for ever (and fail after 5 s)."""
    import threading

    together = threading.Barrier(4, timeout=5)

    def handler(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, str], Any]:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            return 400, {}, {"errors": ["the requests were not in flight together"]}
        return 200, {}, signed_for(body)

    addr, rec = server(handler, keep_alive=True)
    results = many(vault_for(addr), [f"CSR{i}" for i in range(8)])
    assert {csr: r.certificate for csr, r in results.items()} == {f"CSR{i}": f"CERT-CSR{i}" for i in range(8)}
    assert len(set(rec.peers)) <= 4          # eight requests over at most four keep-alive connections


def test_sign_many_sends_exactly_what_sign_sends(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (200, {}, SIGNED), keep_alive=True)
    cfg = parse({"vault": {"addr": addr, "namespace": "team-a"}}, {"VAULT_TOKEN": "t0ken"}).vault
    vault = HttpVault(cfg, one_shot=True, env={})
    [(tag, issued)] = vault.sign_many([("me", SignRequest("pki", "user", "CSR", "marc", "1h"))], 4)
    assert tag == "me" and isinstance(issued, IssuedCert) and (issued.certificate, issued.ca_chain) == ("CERT", ("CA",))
    [(method, path, headers, body)] = rec.requests
    assert (method, path, body) == ("POST", "/v1/pki/sign/user", {"csr": "CSR", "common_name": "marc", "ttl": "1h"})
    assert (headers["x-vault-token"], headers["x-vault-namespace"], headers["x-vault-request"]) == ("t0ken", "team-a", "true")


def test_a_refusal_in_sign_many_is_signs_own_error_and_does_not_stop_the_others(server: Any) -> None:
    def handler(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, str], Any]:
        if body["csr"] == "BAD":
            return 400, {}, {"errors": ["1 error occurred:\n\t* common name bad not allowed by this role\n\n"]}
        return 200, {}, signed_for(body)

    addr, rec = server(handler, keep_alive=True)
    results = many(vault_for(addr), ["A", "BAD", "B"])
    assert sorted(r[3]["csr"] for r in rec.requests) == ["A", "B", "BAD"]
    with pytest.raises(VaultRequestError) as direct:
        vault_for(addr).sign("pki", "node", "BAD", None, "1h")
    assert isinstance(results["BAD"], VaultRequestError) and str(results["BAD"]) == str(direct.value)
    assert str(direct.value) == "Vault refused signing with pki/sign/node: common name bad not allowed by this role"
    assert results["A"].certificate == "CERT-A" and results["B"].certificate == "CERT-B"


@pytest.mark.parametrize("hiccup", ["sealed once", "standby redirect", "dropped connection"])
def test_sign_many_rides_out_a_hiccup_and_signs_each_request_once(server: Any, hiccup: str) -> None:
    """A 5xx (retried), a redirect to another configured address, a connection closed mid-request (the
    next address): every request still gets its certificate, and each is signed once."""
    active, rec_active = server(lambda m, p, h, b: (200, {}, signed_for(b)))
    first: list[str] = []

    def handler(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, str], Any]:
        if body["csr"] == "ODD" and not first:
            first.append("ODD")
            if hiccup == "sealed once":
                return 503, {}, {"errors": ["Vault is sealed"]}
            if hiccup == "dropped connection":
                return 0, {}, DROP
        if hiccup == "standby redirect" and body["csr"] == "ODD":
            return 307, {"Location": f"{active}{path}"}, None
        return 200, {}, signed_for(body)

    addr, rec = server(handler, keep_alive=True)
    requests = ((csr, SignRequest("pki", "node", csr, None, None)) for csr in ["A", "ODD", "B", "C"])
    results = dict(vault_for(addr, active).sign_many(requests, 1))
    assert {csr: r.certificate for csr, r in results.items()} == {c: f"CERT-{c}" for c in ["A", "ODD", "B", "C"]}
    served = [r[3]["csr"] for r in rec.requests + rec_active.requests]
    assert served.count("A") == 1 and served.count("B") == 1 and served.count("C") == 1


def test_sign_many_through_a_proxy(server: Any) -> None:
    proxy, rec = server(lambda m, p, h, b: (200, {}, signed_for(b)))
    cfg = parse({"vault": {"addr": "http://vault.invalid:8200"}}, {"VAULT_TOKEN": "t0ken"}).vault
    vault = HttpVault(cfg, one_shot=True, env={"http_proxy": proxy})
    results = many(vault, ["A", "B"])
    assert {csr: r.certificate for csr, r in results.items()} == {"A": "CERT-A", "B": "CERT-B"}
    assert {r[1] for r in rec.requests} == {"http://vault.invalid:8200/v1/pki/sign/node"}


def test_sign_many_draws_lazily_and_stops_when_closed(server: Any) -> None:
    addr, rec = server(lambda m, p, h, b: (200, {}, signed_for(b)), keep_alive=True)
    drawn: list[int] = []

    def requests() -> Iterator[tuple[int, SignRequest]]:
        for i in range(100):
            drawn.append(i)
            yield i, SignRequest("pki", "node", f"CSR{i}", None, None)

    results = vault_for(addr).sign_many(requests(), 2)
    next(results)
    results.close()
    # two in flight, then one more for the one that came back before the loop paused
    assert len(drawn) <= 4
    assert len(rec.requests) <= len(drawn)


def test_an_error_while_making_a_request_stops_sign_many(server: Any) -> None:
    addr, _ = server(lambda m, p, h, b: (200, {}, signed_for(b)), keep_alive=True)

    def requests() -> Iterator[tuple[int, SignRequest]]:
        yield 0, SignRequest("pki", "node", "CSR0", None, None)
        raise OSError("no entropy")

    with pytest.raises(OSError, match="no entropy"):
        list(vault_for(addr).sign_many(requests(), 2))


def test_a_ca_cert_that_cannot_be_read_is_one_tls_error_naming_it(tmp_path: Path) -> None:
    cfg = parse({"vault": {"addr": "https://127.0.0.1:1", "ca_cert": str(tmp_path / "missing.pem")}},
                {"VAULT_TOKEN": "t0ken"}).vault
    with pytest.raises(VaultUnavailable, match="TLS set-up for Vault at https://127.0.0.1:1 failed: .*No such file"):
        HttpVault(cfg, one_shot=True, env={}).sign("pki", "node", "CSR", None, None)


# ------------------------------------------------------------------------------------- login tokens and denials
# A login token is replaced only when it is really gone (Vault no longer knows it); a denial with a token
# Vault still knows is the policy's, reported as it is. Against a real OpenBao: integration/test_relogin.py.

class FakeLogins:
    """A Vault whose logins hand out s.1, s.2, ...; ``alive`` is the set of tokens it still knows, and
    ``lookup`` whether its tokens may read auth/token/lookup-self. Signing is allowed to nobody."""

    def __init__(self, lookup: bool = True) -> None:
        self.logins = 0
        self.alive: set[str] = set()
        self.lookup = lookup

    def __call__(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        token = headers.get("x-vault-token", "")
        if path.endswith("/login"):
            self.logins += 1
            self.alive.add(f"s.{self.logins}")
            return 200, {}, {"auth": {"client_token": f"s.{self.logins}", "lease_duration": 3600, "renewable": True}}
        if path == "/v1/auth/token/lookup-self" and token in self.alive and self.lookup:
            return 200, {}, {"data": {"ttl": 3000}}
        return 403, {}, {"errors": ["permission denied"]}


def approle_vault(addr: str, tmp_path: Path) -> HttpVault:
    secret = tmp_path / "secret-id"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    return vault_for(addr, secret_id_file=secret)


def test_a_denial_with_a_live_login_token_is_reported_with_no_new_login(server: Any, tmp_path: Path) -> None:
    vault_ = FakeLogins()
    addr, rec = server(vault_)
    with pytest.raises(VaultDenied, match="^Vault denied signing with pki/sign/user: permission denied$"):
        approle_vault(addr, tmp_path).sign("pki", "user", "CSR", "marc", None)
    assert [r[1] for r in rec.requests] == ["/v1/auth/approle/login", "/v1/pki/sign/user", "/v1/auth/token/lookup-self"]


def test_a_login_token_vault_no_longer_knows_is_replaced_by_one_login(server: Any, tmp_path: Path) -> None:
    vault_ = FakeLogins()
    addr, rec = server(vault_)
    client = approle_vault(addr, tmp_path)
    with pytest.raises(VaultDenied):
        client.sign("pki", "user", "CSR", "marc", None)        # logs in (s.1)
    vault_.alive.clear()                                         # s.1 revoked
    with pytest.raises(VaultDenied):
        client.sign("pki", "user", "CSR", "marc", None)
    paths = [r[1] for r in rec.requests]
    assert paths.count("/v1/auth/approle/login") == 2 and vault_.logins == 2
    # denied -> Vault no longer knows s.1 -> one login -> asked again with s.2 (still denied: a real denial)
    assert paths[-4:] == ["/v1/pki/sign/user", "/v1/auth/token/lookup-self", "/v1/auth/approle/login",
                          "/v1/pki/sign/user"]
    assert rec.requests[-1][2]["x-vault-token"] == "s.2"


def test_tokens_that_may_not_look_themselves_up_cost_at_most_one_extra_login(server: Any, tmp_path: Path) -> None:
    """A policy without the lookup-self grant: the first denial cannot be told from a gone token, so it logs
    in once more; seeing that even a fresh token may not look itself up, later denials log in no more."""
    vault_ = FakeLogins(lookup=False)
    addr, _ = server(vault_)
    client = approle_vault(addr, tmp_path)
    for _ in range(5):
        with pytest.raises(VaultDenied, match="Vault denied signing"):
            client.sign("pki", "user", "CSR", "marc", None)
    assert vault_.logins == 2


def test_a_renewal_capped_by_the_max_ttl_is_followed_by_a_new_login(server: Any, tmp_path: Path) -> None:
    now = [0.0]
    renewals: list[str] = []

    def handler(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        if path.endswith("/login"):
            return 200, {}, {"auth": {"client_token": "s.login", "lease_duration": 60, "renewable": True}}
        if path.endswith("/renew-self"):
            renewals.append(headers["x-vault-token"])
            lease = 60 if len(renewals) == 1 else 20                # the second renewal reaches the max TTL
            return 200, {}, {"auth": {"client_token": "s.login", "lease_duration": lease, "renewable": True}}
        return 200, {}, SIGNED
    addr, rec = server(handler)
    secret = tmp_path / "secret-id"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    cfg = parse({"vault": {"addr": addr, "auth": "approle", "role_id": "r", "secret_id_file": str(secret)}}, {}).vault
    client = HttpVault(cfg, clock=lambda: now[0], env={})
    client.ensure_token()
    for at in (41.0, 82.0):                                       # two thirds of each 60 s lease
        now[0] = at
        client.ensure_token()
    assert [r[1].rsplit("/", 1)[-1] for r in rec.requests] == ["login", "renew-self", "renew-self", "login"]
    assert client.seconds_until_token_refresh() == pytest.approx(40.0)
