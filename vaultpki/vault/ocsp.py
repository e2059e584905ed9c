"""The OCSP query: CockroachDB's question (``vaultpki.core.ocsp`` builds it and judges the answers) asked over
HTTP, of each responder a certificate names, within one timeout for the whole check.

``query`` takes the transport as a parameter (``post``) so tests need no network.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from functools import partial

import requests
from cryptography import x509

from vaultpki.core.crypto import format_serial
from vaultpki.core.ocsp import (
    REQUEST_TYPE,
    HttpAnswer,
    OcspError,
    OcspResult,
    OcspStatus,
    build_request,
    judge_answer,
    responder_urls,
)
from vaultpki.vault.http_session import new_session, tls_context
from vaultpki.vault.transport import BodyTooLarge, one_line, send

# What ``query`` answers and raises, named with it (the records themselves are the core's).
__all__ = ["MAX_RESPONSE_BYTES", "Post", "http_post", "query"]

MAX_RESPONSE_BYTES = 1 << 20        # an OCSP answer is a few KiB; refuse to buffer a runaway body

# (url, DER request, timeout in seconds) -> answer; raises OcspError when no answer arrives.
Post = Callable[[str, bytes, float], HttpAnswer]


def http_post(url: str, body: bytes, timeout: float, ca_cert: str | None = None) -> HttpAnswer:
    """POST like Go's ``http.DefaultClient`` (proxy variables honoured, 307/308 redirects followed, never
    from https to http), over the same HTTP as Vault's (``transport.send``): the whole exchange within
    ``timeout``, the body capped at ``MAX_RESPONSE_BYTES``. An OCSP request carries nothing secret, so a
    redirect may lead to any host.

    Over https the system's trust store is used, plus ``ca_cert`` (``vault.ca_cert``): the responders
    vaultpki's certificates name are Vault's own (the mount's ``config/urls``), so a Vault behind a private
    CA must not make every check fail. CockroachDB's own client trusts the system store alone
    (docs/revocation.md says what that means for the URLs a mount should publish)."""
    tls = tls_context()
    if ca_cert:
        tls.load_verify_locations(ca_cert)
    session = new_session(tls)
    try:
        answer = send(session, "POST", url, timeout=timeout, limit=MAX_RESPONSE_BYTES, env=os.environ,
                      allowed=None, headers={"Content-Type": REQUEST_TYPE}, body=body)
    except BodyTooLarge as exc:
        raise OcspError(f"response body exceeds {MAX_RESPONSE_BYTES} bytes") from exc
    except requests.exceptions.RequestException as exc:
        raise OcspError(f"{type(exc).__name__}: {one_line(str(exc))[:300]}") from exc
    except (OSError, ValueError) as exc:              # the system trust store unreadable
        raise OcspError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        session.close()
    return HttpAnswer(answer.status, answer.headers.get("Content-Type"), answer.body)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def query(
    cert: x509.Certificate, issuer: x509.Certificate, timeout: float = 3.0, now: dt.datetime | None = None,
    post: Post | None = None, ca_cert: str | None = None,
) -> OcspResult:
    """Ask the certificate's responders in order; the first GOOD/REVOKED wins, as in CockroachDB.

    ``timeout`` bounds the whole check (``security.ocsp.timeout``), not each URL. ``ca_cert`` is also
    trusted over https (see ``http_post``).
    """
    if post is None:
        post = partial(http_post, ca_cert=ca_cert)
    urls = responder_urls(cert)
    if not urls:
        raise OcspError("certificate has no OCSP responder URL (AIA)")
    request = build_request(cert, issuer)
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for url in urls:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{url}: not tried, {timeout:g}s timeout spent")
            continue
        try:
            result = judge_answer(post(url, request, remaining), cert, issuer, now or dt.datetime.now(dt.UTC), url)
        except OcspError as exc:
            failures.append(f"{url}: {_one_line(str(exc))}")
            continue
        if result.status is OcspStatus.UNKNOWN:
            failures.append(f"{url}: status unknown")
            continue
        return result
    raise OcspError(
        f"no OCSP responder gave a definitive answer for serial {format_serial(cert.serial_number)}: " + "; ".join(failures)
    )
