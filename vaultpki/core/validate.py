"""Judge certificates the way CockroachDB and its TLS peers will (pure).

``check_issued()`` judges a freshly issued leaf before anything is written: its key,
its names, SANs and EKUs against the spec, and its chain. ``verify_chain()`` is the
chain check that it and ``snapshot.judge()`` (a whole certs-dir) share.

Chain building follows Go's crypto/x509, which is what CockroachDB verifies with:
every certificate in a CA file is a trust anchor (an intermediate may be one),
parents must be CA:TRUE with keyCertSign, every certificate with an EKU extension
must allow the usage, and dates are checked on the whole chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.layout import CertSpec, Eku, FileKind

__all__ = ["VAULT_BACKDATE", "Problem", "check_issued", "date_problem", "lifetime_problem", "verify_chain"]

MAX_CHAIN_DEPTH = 8
# How far Vault and OpenBao date a leaf's NotBefore back (a role's not_before_duration, default 30 s;
# vaultpki's roles keep the default), so that a peer whose clock is a little behind accepts it.
VAULT_BACKDATE = dt.timedelta(seconds=30)
_ROUNDING = dt.timedelta(seconds=1)


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with one file; warnings do not fail ``verify``."""

    file: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{self.file}: {self.message}"


# --- chains -----------------------------------------------------------------

def _eku_allows(cert: x509.Certificate, usage: Eku) -> bool:
    info = crypto.describe(cert)
    if info.ekus is None:
        return True
    return usage in info.ekus or "2.5.29.37.0" in info.other_ekus   # anyExtendedKeyUsage


def date_problem(cert: x509.Certificate, now: dt.datetime, what: str) -> str | None:
    """Why ``cert`` (called ``what`` in the message) is not valid at ``now``; None when it is."""
    if now < cert.not_valid_before_utc:
        return f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
    if now > cert.not_valid_after_utc:
        return f"{what} expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def verify_chain(
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    usages: Iterable[Eku],
) -> str | None:
    """None when ``chain[0]`` verifies to one of ``anchors`` for every usage, else why not."""
    if not anchors:
        return "no CA certificate to verify against"
    leaf, pool = chain[0], list(chain[1:])
    path = _build_path(leaf, pool, list(anchors), [])
    if path is None:
        subjects = ", ".join(a.subject.rfc4514_string() for a in anchors)
        return f"does not chain to the trusted CA ({subjects}); issued by {leaf.issuer.rfc4514_string()}"
    for i, cert in enumerate(path):
        what = "certificate" if i == 0 else f"issuer {cert.subject.rfc4514_string()}"
        if (problem := date_problem(cert, now, what)) is not None:
            return problem
        for usage in usages:
            if not _eku_allows(cert, usage):
                return f"{what} does not allow {usage.value}"
    return None


def _build_path(
    cert: x509.Certificate,
    pool: list[x509.Certificate],
    anchors: list[x509.Certificate],
    path: list[x509.Certificate],
) -> list[x509.Certificate] | None:
    path = path + [cert]
    if cert in anchors:              # certificates compare by their DER bytes
        return path
    if len(path) > MAX_CHAIN_DEPTH:
        return None
    for parent in anchors + pool:
        if parent in path or not crypto.is_issued_by(cert, parent) or not crypto.can_sign_certs(parent):
            continue
        found = _build_path(parent, pool, anchors, path)
        if found is not None:
            return found
    return None


# --- identity ---------------------------------------------------------------

def _identity_problems(info: crypto.CertInfo, spec: CertSpec) -> list[str]:
    problems = []
    if info.common_name != spec.common_name:
        problems.append(f"CN is {info.common_name!r}, expected {spec.common_name!r}")
    # Compared exactly, letter case included: vaultpki asks for lower-case names, and a role matches
    # names ignoring case, so an upper-case SAN (NODE, LOCALHOST) is one nobody asked for.
    want_dns = set(spec.dns_sans)
    got_dns = set(info.dns_sans)
    missing = sorted(want_dns - got_dns)
    # Vault copies a hostname-like CN into the DNS SANs; that adds no new principal.
    extra = sorted(got_dns - want_dns - {spec.common_name})
    if missing:
        problems.append(f"DNS SANs lack {', '.join(missing)}")
    if extra:
        why = " (each DNS SAN of a client certificate is a SQL identity)" if spec.kind in (
            FileKind.CLIENT, FileKind.CLIENT_NODE) else ""
        problems.append(f"unexpected DNS SANs {', '.join(extra)}{why}")
    if set(info.ip_sans) != set(spec.ip_sans):
        problems.append(f"IP SANs are [{', '.join(info.ip_sans)}], expected [{', '.join(spec.ip_sans)}]")
    if info.uri_sans or info.other_sans:
        problems.append(f"unexpected SANs {', '.join(info.uri_sans + info.other_sans)}")
    if info.ekus is None:
        problems.append("has no extended key usage extension (it would be accepted for any purpose)")
    elif spec.kind is FileKind.UI:
        if Eku.SERVER_AUTH not in info.ekus:
            problems.append("extended key usage lacks serverAuth")
    elif info.ekus != spec.ekus or info.other_ekus:
        got = sorted(e.value for e in info.ekus) + list(info.other_ekus)
        problems.append(f"extended key usage is [{', '.join(got)}], expected [{', '.join(sorted(e.value for e in spec.ekus))}]")
    if info.is_ca:
        problems.append("is a CA certificate, not a leaf")
    if spec.kind is FileKind.CLIENT and "Tenants" in info.ou:
        problems.append("has OU=Tenants, which CockroachDB refuses as a user certificate")
    return problems


def lifetime_problem(cert: x509.Certificate, ttl: dt.timedelta) -> str | None:
    """Why ``cert`` lives longer than a ``ttl`` asked of Vault allows; None when it does not.

    Vault dates NotBefore ``VAULT_BACKDATE`` back and NotAfter ``ttl`` ahead of the moment it signs:
    an honest leaf lives at most their sum (and a second, as both are whole seconds read from the clock
    at two moments). A longer one comes from a signer that ignores what it was asked, and would leave
    a stolen key useful for that much longer."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime <= ttl + VAULT_BACKDATE + _ROUNDING:
        return None
    return (f"is valid for {_span(lifetime)}, longer than a ttl of {_span(ttl)} allows "
            f"(plus the {_span(VAULT_BACKDATE)} Vault dates NotBefore back)")


def _span(delta: dt.timedelta) -> str:
    """A time span as a vaultpki duration is written (``1461d30s``, ``1h``)."""
    rest = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def check_issued(
    spec: CertSpec,
    chain: Sequence[x509.Certificate],
    key: crypto.PrivateKey,
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    ttl: dt.timedelta | None = None,
) -> list[Problem]:
    """Everything wrong with a freshly issued leaf; empty means it may be written. ``ttl``: the
    lifetime asked for, when the caller asked for one (or knows the longest the role may give)."""
    leaf = chain[0]
    messages = []
    if not crypto.key_matches(leaf, key):
        messages.append("certificate does not match its private key")
    messages += _identity_problems(crypto.describe(leaf), spec)
    if ttl is not None and (too_long := lifetime_problem(leaf, ttl)) is not None:
        messages.append(too_long)
    chain_problem = verify_chain(chain, anchors, now, spec.ekus if spec.kind is not FileKind.UI else {Eku.SERVER_AUTH})
    if chain_problem:
        target = spec.trust.file or f"the CA of mount {spec.trust.mount}"
        messages.append(f"{chain_problem} [checked against {target}]")
    return [Problem(spec.cert_file, m) for m in messages]
