"""ACME problems no real CA here can be made to send on demand: a rate limit and a bad nonce.

OpenBao does not rate-limit and always accepts its own nonces, so a small ACME stand-in on loopback (as the
hostile servers of test_http_safety.py) answers the directory, nonces and ``newAccount`` from a script of
responses. The client under it is the real one: certbot's ``acme`` with our network and account code.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultpki.acme.account import AccountSettings, account_key_path, open_account
from vaultpki.acme.problems import AcmeRateLimited
from vaultpki.errors import ConfigError

pytestmark = pytest.mark.integration

Reply = tuple[int, dict[str, str], dict[str, Any]]


class StandIn(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.script: list[Reply] = []
        self.posts: list[str] = []


class Handler(http.server.BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, headers: dict[str, str], body: dict[str, Any] | None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Replay-Nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode())
        self.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        base = self.server.base
        self._send(200, {}, {"newNonce": f"{base}/nonce", "newAccount": f"{base}/account", "newOrder": f"{base}/order",
                             "revokeCert": f"{base}/revoke", "keyChange": f"{base}/key-change", "meta": {}})

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(200, {}, None)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posts.append(self.path)
        status, headers, body = self.server.script.pop(0)
        self._send(status, headers, body)


def problem(kind: str, detail: str) -> dict[str, Any]:
    return {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def settings(standin: StandIn, tmp_path: Path) -> AccountSettings:
    url = f"{standin.base}/directory"
    return AccountSettings(url, account_key_path(tmp_path, url), contact_email="ops@example.org")


def test_a_bad_nonce_is_retried(standin: StandIn, tmp_path: Path) -> None:
    account_url = f"{standin.base}/account/1"
    standin.script = [
        (400, {}, problem("badNonce", "stale")), (400, {}, problem("accountDoesNotExist", "no account")),
        (400, {}, problem("badNonce", "stale again")),
        (201, {"Location": account_url}, {"status": "valid", "contact": ["mailto:ops@example.org"]}),
    ]
    account = open_account(settings(standin, tmp_path))
    assert account.created and account.url == account_url
    assert standin.posts == ["/account"] * 4 and standin.script == []


@pytest.mark.parametrize("retry_after", ["3600", "http-date"])
def test_rate_limited_says_when_to_come_back_and_keeps_the_certificate(standin: StandIn, tmp_path: Path,
                                                                       retry_after: str) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    header = "3600" if retry_after == "3600" else email.utils.format_datetime(when, usegmt=True)
    standin.script = [(429, {"Retry-After": header}, problem("rateLimited", "too many new registrations"))]
    with pytest.raises(AcmeRateLimited) as caught:
        open_account(settings(standin, tmp_path))
    assert caught.value.retry_after is not None
    assert abs((caught.value.retry_after - when).total_seconds()) < 5
    shown = caught.value.retry_after.strftime("%Y-%m-%d %H:%M:%S")
    assert str(caught.value) == (f"ACME account lookup: rate limited by the CA (rateLimited: too many new "
                                 f"registrations); retry after {shown}Z; keeping the current certificate")
    assert caught.value.exit_code == 1


def test_a_refused_contact_is_a_config_error(standin: StandIn, tmp_path: Path) -> None:
    standin.script = [(400, {}, problem("accountDoesNotExist", "no account")),
                      (400, {}, problem("invalidContact", "mailto:ops@example.org is not allowed"))]
    with pytest.raises(ConfigError, match=r"^ACME account registration: the CA refused it: invalidContact: mailto:"):
        open_account(settings(standin, tmp_path))
