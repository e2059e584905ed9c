"""The ACME adapter against OpenBao's own ACME server, over http-01 on port 80 of 127.0.0.1.

The CA validates http-01 on port 80 only, so the standalone listener and nginx take turns on it: every test
of this file runs in the one module, one after another, and each checks that port 80 is free again after its
order, whatever happened (a listener left behind would hold the next order's port). A dedicated OpenBao dev
server (module-scoped) is the CA, so the session's server is untouched.
"""

from __future__ import annotations

import errno
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.acme_ca import AcmeCA, acme_ca
from tests.support.nginx import nginx_server
from vaultpki.acme.account import AccountSettings, ExternalBinding, account_key_path, open_account
from vaultpki.acme.challenge import Task
from vaultpki.acme.http01 import Standalone, Webroot
from vaultpki.acme.order import AcmeIssued, order_certificate
from vaultpki.acme.problems import AcmeError, AcmeUnavailable
from vaultpki.core import crypto
from vaultpki.dev.devserver import DevServer
from vaultpki.errors import ConfigError

pytestmark = pytest.mark.integration

HOSTS = ("localhost", "127.0.0.1")
DEADLINE = 30.0


@pytest.fixture(scope="module")
def ca() -> Iterator[AcmeCA]:
    with acme_ca() as server:
        server.mount("acme", roles={
            "rsa-only": {"key_type": "rsa", "allow_any_name": True, "allow_localhost": True, "allow_ip_sans": True},
            "org-only": {"allowed_domains": ["example.org"], "allow_subdomains": True, "allow_localhost": False,
                         "key_type": "any"},
        })
        server.mount("eab", eab_policy="always-required")
        yield server


def directory(ca: AcmeCA, mount: str = "acme") -> str:
    return f"{ca.server.addr}/v1/{mount}/acme/directory"


def port_80_free() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 80))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            return False
        return True


def new_key() -> crypto.PrivateKey:
    return crypto.generate_key(crypto.KeyType.EC, 256)


def check_issued(issued: AcmeIssued, ca: AcmeCA, mount: str, hosts: Sequence[str], key: crypto.PrivateKey) -> None:
    """The chain is the mount's: the leaf is signed by the mount's CA, for our key and exactly our names."""
    chain = crypto.load_certs(issued.chain_pem)
    root = crypto.load_certs(ca.client.adapter.get(f"/v1/{mount}/ca/pem").text.encode())[0]
    assert crypto.is_issued_by(chain[0], root)
    assert crypto.key_matches(chain[0], key)
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}
    assert names == set(hosts)
    assert issued.serial == crypto.format_serial(chain[0].serial_number)
    assert crypto.load_key(issued.key_pem).public_key().public_numbers() == key.public_key().public_numbers()
    assert "/order/" in issued.order_url and "/account/" in issued.account_url


def test_standalone_issues_and_the_account_key_is_kept_0600_and_reused(ca: AcmeCA, tmp_path: Path) -> None:
    url = directory(ca)
    key_file = account_key_path(tmp_path, url)
    first = open_account(AccountSettings(url, key_file, contact_email="ops@example.org"))
    assert first.created
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = new_key()
    issued = order_certificate(first, HOSTS, Standalone(80, "127.0.0.1"), key, deadline=DEADLINE)
    check_issued(issued, ca, "acme", HOSTS, key)
    assert issued.account_url == first.url
    assert port_80_free(), "the standalone listener outlived its order"

    # A second run: the same key file, the same account at the CA, no new registration.
    key_bytes = key_file.read_bytes()
    second = open_account(AccountSettings(url, key_file, contact_email="ops@example.org"))
    assert not second.created and second.url == first.url
    assert key_file.read_bytes() == key_bytes
    again = order_certificate(second, ["localhost"], Standalone(80, "127.0.0.1"), new_key(), deadline=DEADLINE)
    assert again.account_url == first.url and again.serial != issued.serial


def test_an_account_key_others_can_read_is_refused(ca: AcmeCA, tmp_path: Path) -> None:
    url = directory(ca)
    key_file = account_key_path(tmp_path, url)
    open_account(AccountSettings(url, key_file))
    key_file.chmod(0o644)
    with pytest.raises(Exception, match=r"account key .* is accessible by group or others \(mode 0644\)"):
        open_account(AccountSettings(url, key_file))


def test_webroot_served_by_nginx(ca: AcmeCA, tmp_path: Path) -> None:
    account = open_account(AccountSettings(directory(ca), account_key_path(tmp_path, directory(ca))))
    with nginx_server(port=80) as nginx:
        before = sorted(p.name for p in nginx.webroot.iterdir())
        key = new_key()
        issued = order_certificate(account, HOSTS, Webroot(nginx.webroot), key, deadline=DEADLINE)
        check_issued(issued, ca, "acme", HOSTS, key)
        # nginx (not a listener of ours) answered the CA, and what we wrote is gone again.
        assert "/.well-known/acme-challenge/" in nginx.access_log()
        assert " 200 " in nginx.access_log()
        assert sorted(p.name for p in nginx.webroot.iterdir()) == before
    assert port_80_free()


def test_webroot_keeps_an_existing_well_known_directory(ca: AcmeCA, tmp_path: Path) -> None:
    account = open_account(AccountSettings(directory(ca), account_key_path(tmp_path, directory(ca))))
    with nginx_server(port=80) as nginx:
        challenge_dir = nginx.webroot / ".well-known" / "acme-challenge"
        challenge_dir.mkdir(parents=True, mode=0o755)
        (challenge_dir / "someone-elses-file").write_text("keep me")
        order_certificate(account, ["localhost"], Webroot(nginx.webroot), new_key(), deadline=DEADLINE)
        assert sorted(p.name for p in challenge_dir.iterdir()) == ["someone-elses-file"]


class WrongAnswer(Standalone):
    """The standalone listener serving a key authorization that is not the one asked for."""

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        wrong = [Task(t.identifier, t.token, t.token + ".not-our-thumbprint", t.txt_value) for t in tasks]
        super().present(wrong, deadline)


def test_a_refused_challenge_is_one_line_and_leaves_nothing_listening(ca: AcmeCA, tmp_path: Path) -> None:
    account = open_account(AccountSettings(directory(ca), account_key_path(tmp_path, directory(ca))))
    before = set(ca.acme_certificates("acme"))
    with pytest.raises(AcmeError) as caught:
        # OpenBao retries a failed validation for minutes; the order reports the CA's error after the grace.
        order_certificate(account, ["localhost"], WrongAnswer(80, "127.0.0.1"), new_key(), deadline=DEADLINE,
                          error_grace=1.0)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ACME challenge: the CA could not validate localhost through the http-01 standalone")
    assert "http-01: response too small" in message         # the CA's own reason, quoted
    assert not isinstance(caught.value, ConfigError)
    assert port_80_free()
    assert set(ca.acme_certificates("acme")) == before          # nothing was issued


def test_finalize_refused_for_the_key_type_is_a_config_error(ca: AcmeCA, tmp_path: Path) -> None:
    url = ca.role_directory("acme", "rsa-only")
    account = open_account(AccountSettings(url, account_key_path(tmp_path, url)))
    with pytest.raises(ConfigError, match=r"^ACME finalize: the CA refused it: badCSR: .*role requires keys of type rsa$"):
        order_certificate(account, ["localhost"], Standalone(80, "127.0.0.1"), new_key(), deadline=DEADLINE)
    assert port_80_free()
    # The same role signs an RSA key: the refusal was about the key type, nothing else.
    rsa_key = crypto.generate_key(crypto.KeyType.RSA, 2048)
    issued = order_certificate(account, ["localhost"], Standalone(80, "127.0.0.1"), rsa_key, deadline=DEADLINE)
    assert isinstance(crypto.load_certs(issued.chain_pem)[0].public_key(), rsa.RSAPublicKey)


def test_a_name_the_role_refuses_is_a_config_error_before_any_challenge(ca: AcmeCA, tmp_path: Path) -> None:
    url = ca.role_directory("acme", "org-only")
    account = open_account(AccountSettings(url, account_key_path(tmp_path, url)))
    with pytest.raises(ConfigError, match=r"^ACME new order: the CA refused it: rejectedIdentifier: .*localhost$"):
        order_certificate(account, ["localhost"], Standalone(80, "127.0.0.1"), new_key(), deadline=DEADLINE)
    assert port_80_free()


class StopsTheCa(Standalone):
    """Takes the CA down once the challenge is being served: the order's next request finds nobody."""

    def __init__(self, server: DevServer) -> None:
        super().__init__(80, "127.0.0.1")
        self.server = server

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        super().present(tasks, deadline)
        self.server.stop()


def test_ca_down_mid_order_is_one_operational_line_and_the_listener_stops() -> None:
    with acme_ca() as own:
        url = own.mount("acme")
        state = Path(own.server.log_path).parent.parent / f"acme-state-{own.server.port}"
        state.mkdir()
        try:
            account = open_account(AccountSettings(url, account_key_path(state, url)))
            with pytest.raises(AcmeUnavailable) as caught:
                order_certificate(account, ["localhost"], StopsTheCa(own.server), new_key(), deadline=DEADLINE)
        finally:
            subprocess.run(["rm", "-rf", str(state)], check=True)
    assert str(caught.value) == (f"ACME challenge: the CA at {url} is unreachable (ConnectionError); "
                                 "keeping the current certificate")
    assert port_80_free()


def test_the_ca_down_before_the_order_is_the_same_line(tmp_path: Path) -> None:
    with acme_ca() as own:
        url = own.mount("acme")
    with pytest.raises(AcmeUnavailable, match=r"^ACME directory: the CA at .* is unreachable \(ConnectionError\)"):
        open_account(AccountSettings(url, account_key_path(tmp_path, url)))


def test_external_account_binding_required(ca: AcmeCA, tmp_path: Path) -> None:
    url = directory(ca, "eab")
    key_file = account_key_path(tmp_path, url)
    with pytest.raises(ConfigError, match="requires an external account binding"):
        open_account(AccountSettings(url, key_file))

    key_id, hmac_key = ca.new_eab("eab")
    hmac_file = tmp_path / "eab.hmac"
    hmac_file.write_text(hmac_key + "\n")
    hmac_file.chmod(0o600)
    account = open_account(AccountSettings(url, key_file, contact_email="ops@example.org",
                                           eab=ExternalBinding(key_id, hmac_file)))
    assert account.created
    key = new_key()
    issued = order_certificate(account, HOSTS, Standalone(80, "127.0.0.1"), key, deadline=DEADLINE)
    check_issued(issued, ca, "eab", HOSTS, key)
    assert port_80_free()


def test_a_wrong_eab_key_is_refused_in_one_line(ca: AcmeCA, tmp_path: Path) -> None:
    url = directory(ca, "eab")
    key_id, _ = ca.new_eab("eab")
    _, other_hmac = ca.new_eab("eab")
    hmac_file = tmp_path / "eab.hmac"
    hmac_file.write_text(other_hmac)
    with pytest.raises(AcmeError) as caught:
        open_account(AccountSettings(url, account_key_path(tmp_path, url), eab=ExternalBinding(key_id, hmac_file)))
    assert str(caught.value).startswith("ACME account registration: ") and "\n" not in str(caught.value)


def test_the_ec_key_is_what_the_csr_carries(ca: AcmeCA, tmp_path: Path) -> None:
    account = open_account(AccountSettings(directory(ca), account_key_path(tmp_path, directory(ca))))
    key = crypto.generate_key(crypto.KeyType.EC, 384)
    issued = order_certificate(account, ["localhost"], Standalone(80, "127.0.0.1"), key, deadline=DEADLINE)
    public = crypto.load_certs(issued.chain_pem)[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"


def test_the_standalone_listener_serves_only_the_orders_tokens_and_refuses_a_hostile_token() -> None:
    import time
    import urllib.error
    import urllib.request

    from vaultpki.dev.devserver import free_port

    port = free_port()
    token = "T" * 43
    listener = Standalone(port)                      # the default address: IPv6 and IPv4
    listener.present([Task("localhost", token, f"{token}.thumbprint", "")], time.monotonic() + 5)
    try:
        for host in ("127.0.0.1", "[::1]") if socket.has_ipv6 else ("127.0.0.1",):
            base = f"http://{host}:{port}"
            with urllib.request.urlopen(f"{base}/.well-known/acme-challenge/{token}", timeout=5) as answer:
                assert answer.read() == f"{token}.thumbprint".encode()
            for other in ("/", "/.well-known/acme-challenge/" + "U" * 43, "/etc/passwd"):
                with pytest.raises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(base + other, timeout=5)
                assert caught.value.code == 404
    finally:
        listener.cleanup()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    # A token is a file name and a URL path: a CA sending anything but base64url gets nothing published.
    with pytest.raises(AcmeError, match="token that is not base64url"):
        Standalone(port).present([Task("localhost", "../../etc/x" + "A" * 20, "x", "")], time.monotonic() + 5)
