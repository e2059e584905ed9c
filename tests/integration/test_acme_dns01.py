"""The ACME adapter's dns-01 against OpenBao's ACME server, which looks the TXT records up on a real BIND 9.

BIND (``tests/support/bind.py``) is the primary of ``acme.test`` and takes TSIG-signed RFC 2136 updates;
OpenBao's ``config/acme`` ``dns_resolver`` points at it. The record goes in through dnspython
(``Rfc2136``) or through a hook script running BIND's own ``nsupdate``, is seen on the server before the
challenge is answered, and is gone after the order, whatever happened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.acme_ca import AcmeCA, acme_ca
from tests.support.bind import KEY_NAME, Bind, bind_server, find_nsupdate
from vaultpki.acme.account import Account, AccountSettings, account_key_path, open_account
from vaultpki.acme.challenge import Task
from vaultpki.acme.dns01 import Hook, Nameserver, Rfc2136, TsigKey
from vaultpki.acme.order import order_certificate
from vaultpki.acme.problems import AcmeError
from vaultpki.core import crypto
from vaultpki.errors import ConfigError

pytestmark = pytest.mark.integration

NAME = "console.acme.test"
RECORD = f"_acme-challenge.{NAME}."
DEADLINE = 30.0


@pytest.fixture(scope="module")
def bind() -> Iterator[Bind]:
    with bind_server("acme.test") as server:
        yield server


@pytest.fixture(scope="module")
def ca(bind: Bind) -> Iterator[AcmeCA]:
    with acme_ca() as server:
        server.mount("acme", dns_resolver=bind.address)
        yield server


@pytest.fixture
def account(ca: AcmeCA, tmp_path: Path) -> Account:
    url = f"{ca.server.addr}/v1/acme/acme/directory"
    return open_account(AccountSettings(url, account_key_path(tmp_path, url), contact_email="ops@example.org"))


def rfc2136(bind: Bind, secret_file: Path | None = None) -> Rfc2136:
    return Rfc2136(Nameserver("127.0.0.1", bind.port), TsigKey(KEY_NAME, secret_file or bind.secret_file))


def leaf_names(chain_pem: bytes) -> list[str]:
    leaf = crypto.load_certs(chain_pem)[0]
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


class Watching(Rfc2136):
    """Records what BIND serves at the moment the order answers the challenge (right after ``present``)."""

    def __init__(self, bind: Bind) -> None:
        super().__init__(Nameserver("127.0.0.1", bind.port), TsigKey(KEY_NAME, bind.secret_file))
        self.bind = bind
        self.seen: set[str] = set()
        self.expected: set[str] = set()

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        super().present(tasks, deadline)
        self.seen = self.bind.txt(RECORD)
        self.expected = {t.txt_value for t in tasks}


def test_rfc2136_with_tsig_issues_and_removes_the_record(account: Account, bind: Bind) -> None:
    responder = Watching(bind)
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    issued = order_certificate(account, [NAME], responder, key, deadline=DEADLINE)
    assert leaf_names(issued.chain_pem) == [NAME]
    assert crypto.key_matches(crypto.load_certs(issued.chain_pem)[0], key)
    assert responder.seen == responder.expected != set()     # on the server before the challenge was answered
    assert bind.txt(RECORD) == set()                          # and gone after


def test_a_wrong_tsig_key_is_one_config_line(account: Account, bind: Bind, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("c2VjcmV0LXRoYXQtYmluZC1kb2VzLW5vdC1rbm93LTMyYg==\n")
    with pytest.raises(ConfigError) as caught:
        order_certificate(account, [NAME], rfc2136(bind, wrong), crypto.generate_key(crypto.KeyType.EC, 256),
                          deadline=DEADLINE)
    message = str(caught.value)
    assert message.startswith(f"dns-01 RFC 2136 update to 127.0.0.1:{bind.port}: ") and "\n" not in message
    assert "TSIG" in message
    assert bind.txt(RECORD) == set()


def test_a_zone_the_server_does_not_hold_is_refused(account: Account, bind: Bind) -> None:
    responder = Rfc2136(Nameserver("127.0.0.1", bind.port), TsigKey(KEY_NAME, bind.secret_file), zone="other.test")
    with pytest.raises(ConfigError, match=r"refused with (NOTAUTH|NOTZONE|REFUSED) \(check the zone"):
        order_certificate(account, [NAME], responder, crypto.generate_key(crypto.KeyType.EC, 256), deadline=DEADLINE)


def test_dns01_cannot_prove_an_ip_address(account: Account, bind: Bind) -> None:
    with pytest.raises(ConfigError, match=r"^ACME order: dns-01 cannot prove an IP address \(127.0.0.1\): use http-01$"):
        order_certificate(account, [NAME, "127.0.0.1"], rfc2136(bind), crypto.generate_key(crypto.KeyType.EC, 256))


HOOK = """#!/bin/sh
# $1: add | delete; $2: the server's port; $3: the TSIG key file. Records what it was told, then updates BIND.
set -eu
env | grep -E '^(ACME_|VAULT)' | sort > "{log}.$1"
printf 'server 127.0.0.1 %s\\nupdate %s %s 60 TXT "%s"\\nsend\\n' "$2" "$1" "$ACME_RECORD" "$ACME_VALIDATION" \\
    | {nsupdate} -k "$3"
"""


def write_hook(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "hook-env"
    script = tmp_path / "hook.sh"
    script.write_text(HOOK.format(log=log, nsupdate=find_nsupdate()))
    script.chmod(0o755)
    return script, log


def test_the_hook_publishes_through_nsupdate_and_cleans_up(account: Account, bind: Bind, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.a-token-the-hook-must-never-see")
    script, log = write_hook(tmp_path)
    hook = Hook([str(script), "add", str(bind.port), str(bind.key_file)],
                [str(script), "delete", str(bind.port), str(bind.key_file)],
                check=[Nameserver("127.0.0.1", bind.port)], timeout=20)
    issued = order_certificate(account, [NAME], hook, crypto.generate_key(crypto.KeyType.EC, 256), deadline=DEADLINE)
    assert leaf_names(issued.chain_pem) == [NAME]
    assert bind.txt(RECORD) == set()
    told = dict(line.split("=", 1) for line in Path(f"{log}.add").read_text().splitlines())
    assert told["ACME_DOMAIN"] == NAME and told["ACME_RECORD"] == RECORD
    assert told["ACME_ALL_DOMAINS"] == NAME and told["ACME_REMAINING_CHALLENGES"] == "0"
    assert len(told["ACME_VALIDATION"]) == 43 and told["ACME_TOKEN"]
    assert not any(k.startswith("VAULT") for k in told), json.dumps(told)
    assert Path(f"{log}.delete").read_text() == Path(f"{log}.add").read_text()


def test_a_record_that_never_shows_is_one_line_and_is_cleaned_up(account: Account, bind: Bind, tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    hook = Hook(["/bin/true"], ["/bin/sh", "-c", f'echo "$ACME_RECORD" > {marker}'],
                check=[Nameserver("127.0.0.1", bind.port)], timeout=5)
    with pytest.raises(AcmeError) as caught:
        order_certificate(account, [NAME], hook, crypto.generate_key(crypto.KeyType.EC, 256), deadline=2.0)
    assert str(caught.value) == (f"dns-01: the TXT record {RECORD} is not visible on 127.0.0.1:{bind.port} "
                                 "before the order's deadline")
    assert marker.read_text() == f"{RECORD}\n"


def test_a_failing_hook_is_one_line(account: Account, bind: Bind, tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho 'starting' ; echo 'provider said: zone locked' >&2; exit 3\n")
    script.chmod(0o755)
    with pytest.raises(AcmeError, match=rf"^dns-01 hook '{script}' exited 3: provider said: zone locked$"):
        order_certificate(account, [NAME], Hook([str(script)], check=[Nameserver("127.0.0.1", bind.port)]),
                          crypto.generate_key(crypto.KeyType.EC, 256), deadline=DEADLINE)
