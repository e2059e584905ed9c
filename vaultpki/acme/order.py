"""One ACME order: the DB Console names, their authorizations answered, finalized with a CSR made here.

The certificate key is made locally (``vaultpki.core.crypto``) and never leaves the machine; the CA sees
only the CSR. The whole order has one deadline: the authorizations are polled as the CA's ``Retry-After``
asks (one second when it does not say), and whatever the responder published is removed after the order,
whatever happened. Every failure is one line (``problems``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Sequence

import msgspec
from acme import challenges, messages
from acme.client import ClientV2
from cryptography import x509

from vaultpki.acme.account import Account
from vaultpki.acme.challenge import Responder, Task
from vaultpki.acme.problems import AcmeError, AcmeUnavailable, problem_text, retry_after, translate
from vaultpki.core import crypto
from vaultpki.errors import ConfigError, IssuanceRefused
from vaultpki.redact import redacted_repr

__all__ = ["AcmeIssued", "order_certificate"]

DEFAULT_DEADLINE = 300.0          # seconds for the whole order: a public CA validates in seconds, DNS may lag
# A CA may retry a validation that failed (RFC 8555 8.2; OpenBao keeps retrying for about two minutes) and says
# so with an error on a challenge still "processing". Our answer is published, and for dns-01 already seen on
# the authoritative servers, so a retry rarely changes the outcome: after this long we report the CA's error.
DEFAULT_ERROR_GRACE = 10.0
_CHALLENGE_TYPES = {"http-01": challenges.HTTP01, "dns-01": challenges.DNS01}


class AcmeIssued(msgspec.Struct, frozen=True):
    """What an order brought: the chain as the CA sent it (leaf first), our key, and where it came from."""

    chain_pem: bytes
    key_pem: bytes
    serial: str
    not_after: dt.datetime
    directory_url: str
    account_url: str
    order_url: str

    def __repr__(self) -> str:
        return redacted_repr(self, "key_pem")

    @property
    def leaf_pem(self) -> bytes:
        return crypto.certs_to_pem(crypto.load_certs(self.chain_pem)[:1])


def _split(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.append(host.rstrip(".").lower())
    return dns, ips


def order_certificate(account: Account, hosts: Sequence[str], responder: Responder, key: crypto.PrivateKey,
                      deadline: float = DEFAULT_DEADLINE, error_grace: float = DEFAULT_ERROR_GRACE) -> AcmeIssued:
    """A certificate for *hosts* (DNS names and IP addresses) with *key*, proved with *responder*."""
    if not hosts:
        raise ConfigError("ACME order: no names to order a certificate for")
    if responder.challenge_type not in _CHALLENGE_TYPES:
        raise ConfigError(f"ACME order: unknown challenge type {responder.challenge_type!r}")
    dns, ips = _split(hosts)
    if ips and responder.challenge_type == "dns-01":
        raise ConfigError(f"ACME order: dns-01 cannot prove an IP address ({', '.join(ips)}): use http-01")
    end = time.monotonic() + deadline
    csr_pem = crypto.build_csr(key, (dns or ips)[0], dns, ips)
    client, network = account.client, account.network
    step = "new order"
    try:
        orderr = client.new_order(csr_pem)
        step = "challenge"
        tasks, challbs = _tasks(account, orderr, responder.challenge_type)
        try:
            if tasks:
                responder.present(tasks, end)
                for challb in challbs:
                    client.answer_challenge(challb, challb.response(account.jwk))
                orderr = _poll_authorizations(client, orderr, end, responder, error_grace)
        finally:
            responder.cleanup()
        step = "finalize"
        orderr = client.finalize_order(orderr, _wall_deadline(end))
    except Exception as exc:
        raise translate(exc, step, account.settings.directory_url, network.last_response) from exc
    return _issued(account, orderr, key)


def _tasks(account: Account, orderr: messages.OrderResource, kind: str
           ) -> tuple[list[Task], list[messages.ChallengeBody]]:
    tasks, challbs = [], []
    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_VALID:
            continue                       # proved recently for this account: the CA does not ask again
        identifier = authzr.body.identifier.value
        offered = [c for c in authzr.body.challenges if isinstance(c.chall, _CHALLENGE_TYPES[kind])]
        if not offered:
            names = ", ".join(sorted({c.chall.typ for c in authzr.body.challenges})) or "none"
            raise ConfigError(f"ACME challenge: the CA offers no {kind} challenge for {identifier} (it offers: {names})")
        challb = offered[0]
        token = challb.chall.encode("token")
        key_authorization = challb.chall.key_authorization(account.jwk)
        txt = challb.chall.validation(account.jwk) if kind == "dns-01" else ""
        tasks.append(Task(identifier=identifier, token=token, key_authorization=key_authorization, txt_value=txt))
        challbs.append(challb)
    return tasks, challbs


def _poll_authorizations(client: ClientV2, orderr: messages.OrderResource, end: float,
                         responder: Responder, error_grace: float) -> messages.OrderResource:
    """Each authorization until it is no longer pending, at the pace the CA's Retry-After sets."""
    done = []
    for authzr in orderr.authorizations:
        failing_since: float | None = None
        while authzr.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
            if time.monotonic() >= end:
                raise AcmeUnavailable(f"ACME challenge: {authzr.body.identifier.value} still pending at the order's "
                                      "deadline")
            authzr, response = client.poll(authzr)
            if any(c.error is not None for c in authzr.body.challenges):
                failing_since = time.monotonic() if failing_since is None else failing_since
                if time.monotonic() - failing_since >= error_grace:
                    raise _refused(authzr, responder)
            if authzr.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                when = retry_after(response)
                wait = (when - dt.datetime.now(dt.UTC)).total_seconds() if when else 1.0
                time.sleep(min(max(wait, 0.2), max(end - time.monotonic(), 0), *([error_grace] if failing_since else [])))
        if authzr.body.status != messages.STATUS_VALID:
            raise _refused(authzr, responder)
        done.append(authzr)
    updated: messages.OrderResource = orderr.update(authorizations=done)
    return updated


def _refused(authzr: messages.AuthorizationResource, responder: Responder) -> Exception:
    identifier = authzr.body.identifier.value
    problems = [c.error for c in authzr.body.challenges if c.error is not None]
    if not problems:
        return AcmeError(f"ACME challenge: the authorization for {identifier} is {authzr.body.status}, with no reason given")
    text = "; ".join(problem_text(p) for p in problems)
    line = f"ACME challenge: the CA could not validate {identifier} through the {responder.describe()}: {text}"
    if any(p.code in ("caa", "rejectedIdentifier", "unsupportedIdentifier") for p in problems):
        return ConfigError(line)
    return AcmeError(line)


def _wall_deadline(end: float) -> dt.datetime:
    """The monotonic deadline in the form the library polls against (its own naive local ``now()``)."""
    return dt.datetime.now() + dt.timedelta(seconds=max(end - time.monotonic(), 0))


def _issued(account: Account, orderr: messages.OrderResource, key: crypto.PrivateKey) -> AcmeIssued:
    chain_pem = (orderr.fullchain_pem or "").encode()
    try:
        chain = crypto.load_certs(chain_pem)
    except Exception as exc:
        raise IssuanceRefused(f"ACME download: the CA sent no parseable certificate chain: {exc}") from exc
    if not chain:
        raise IssuanceRefused("ACME download: the CA sent an empty certificate chain")
    leaf: x509.Certificate = chain[0]
    if not crypto.key_matches(leaf, key):
        raise IssuanceRefused("ACME download: the certificate the CA sent is not for the key of our CSR")
    return AcmeIssued(chain_pem=crypto.certs_to_pem(chain), key_pem=crypto.key_to_pem(key),
                      serial=crypto.format_serial(leaf.serial_number), not_after=leaf.not_valid_after_utc,
                      directory_url=account.settings.directory_url, account_url=account.url,
                      order_url=orderr.uri or "")
