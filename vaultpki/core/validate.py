"""Judge certificates the way CockroachDB and its TLS peers will (pure).

``check_issued()`` judges a freshly issued leaf before anything is written: its key,
its names, SANs and EKUs against the spec, and its chain. ``verify_chain()`` is the
chain check that it and ``snapshot.judge()`` (a whole certs-dir) share.

Chain building follows Go's crypto/x509, which is what CockroachDB verifies with:
every certificate in a CA file is a trust anchor (an intermediate may be one),
parents must be CA:TRUE with keyCertSign, every certificate with an EKU extension
must allow the usage, dates are checked on the whole chain, and ``gochain`` adds
Go's name constraints, path lengths and unhandled critical extensions. Like Go, a
chain is accepted when any path to an anchor passes every rule.

Extended key usages: a leaf must allow what CockroachDB uses it for (``node.crt``
serverAuth, plus clientAuth when it is also the node's client certificate; client
certificates clientAuth; ``ui.crt`` serverAuth). Beyond that, an EKU that would let a
user's key serve TLS (serverAuth, anyExtendedKeyUsage, or no EKU extension at all) is
an error; any other extra EKU is only a warning (``extra_eku_findings``).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto, gochain
from vaultpki.core.layout import CertSpec, Eku, FileKind

__all__ = [
    "VAULT_BACKDATE", "Problem", "check_issued", "date_problem", "extra_eku_findings", "lifetime_problem", "verify_chain",
]

MAX_CHAIN_DEPTH = 8
# Paths to an anchor tried before giving up (Go caps its signature checks at 100): more than one path
# exists only with cross-signed CAs or a CA in several files.
MAX_PATHS = 16
ANY_EKU = "2.5.29.37.0"
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
    return usage in info.ekus or ANY_EKU in info.other_ekus


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
    """None when ``chain[0]`` verifies to one of ``anchors`` for every usage, else why not (the first path's
    problem, when every path Go could build has one)."""
    if not anchors:
        return "no CA certificate to verify against"
    leaf, pool = chain[0], list(chain[1:])
    wanted = list(usages)
    first: str | None = None
    for path in itertools.islice(_paths(leaf, pool, list(anchors), ()), MAX_PATHS):
        problem = _path_problem(path, now, wanted)
        if problem is None:
            return None
        first = first or problem
    if first is None:
        subjects = ", ".join(a.subject.rfc4514_string() for a in anchors)
        return f"does not chain to the trusted CA ({subjects}); issued by {leaf.issuer.rfc4514_string()}"
    return first


def _path_problem(path: list[x509.Certificate], now: dt.datetime, usages: list[Eku]) -> str | None:
    if (refusal := gochain.path_refusal(path)) is not None:
        return _explain(refusal, path)
    for i, cert in enumerate(path):
        what = "certificate" if i == 0 else f"issuer {cert.subject.rfc4514_string()}"
        if (problem := date_problem(cert, now, what)) is not None:
            return problem
        for usage in usages:
            if not _eku_allows(cert, usage):
                return f"{what} does not allow {usage.value}"
    return None


def _paths(
    cert: x509.Certificate,
    pool: list[x509.Certificate],
    anchors: list[x509.Certificate],
    below: tuple[x509.Certificate, ...],
) -> Iterator[list[x509.Certificate]]:
    """Every path from ``cert`` up to an anchor, anchors tried first (Go's order: roots, then intermediates)."""
    path = (*below, cert)
    if cert in anchors:              # certificates compare by their DER bytes
        yield list(path)
        return
    if len(path) > MAX_CHAIN_DEPTH:
        return
    for parent in dict.fromkeys(anchors + pool):
        if parent in path or not crypto.is_issued_by(cert, parent) or not crypto.can_sign_certs(parent):
            continue
        yield from _paths(parent, pool, anchors, path)


_REFUSED = "Go, and so CockroachDB, refuses it at every handshake"


def _explain(refusal: gochain.Refusal, path: list[x509.Certificate]) -> str:
    """Go's refusal, where it comes from, and what to do about it."""
    leaf = path[0]
    who = "the certificate" if refusal.subject == leaf.subject.rfc4514_string() else refusal.subject
    if refusal.kind == "critical":
        oid = refusal.name or ""
        return (f"{refusal.go_error} ({oid}, {gochain.extension_name(oid)}, in {who}): {_REFUSED}; that certificate "
                "must be reissued without the extension, or with it not critical")
    if refusal.kind == "pathlen":
        return (f"{refusal.go_error} ({who} allows {refusal.allowed} intermediate CA(s) below it, this chain has "
                f"{refusal.below}): {_REFUSED}; set ca_trust = \"issuer\" (the CA file then holds the issuing CA itself, "
                "which Go accepts as a trust anchor), or use a root without that limit")
    return f"{refusal.go_error} (name constraints of {who}): {_REFUSED}; {_name_advice(refusal, leaf)}"


def _name_advice(refusal: gochain.Refusal, leaf: x509.Certificate) -> str:
    info = crypto.describe(leaf)
    if refusal.name_type == "DNS name" and refusal.name == info.common_name and info.ekus == frozenset({Eku.CLIENT_AUTH}):
        return ("CockroachDB takes a client certificate's identity from its CN, so this copy of the CN among the DNS SANs "
                "is not needed: reissue it with vaultpki, which asks Vault to leave the CN out of the SANs "
                "(exclude_cn_from_sans = true in the request; the policies must allow it), or issue client certificates "
                "from a client CA whose constraints permit the name (mode = \"split-ca\")")
    if refusal.name_type == "DNS name" and refusal.name == "node":
        return ("use mode = \"split-node\" (node.crt then needs no 'node' name, and client.node.crt carries 'node' as its "
                "CN only: vaultpki asks Vault for client certificates with exclude_cn_from_sans = true), or a CA whose "
                "name constraints permit 'node'")
    return "issue it from a CA whose name constraints permit this name, or leave the name out of the configured hosts"


# --- extended key usages ------------------------------------------------------

_FLAG = {Eku.SERVER_AUTH: "server_flag", Eku.CLIENT_AUTH: "client_flag"}


def _missing_ekus(info: crypto.CertInfo, needed: frozenset[Eku]) -> str | None:
    """Why a leaf's EKUs do not allow what its file is used for (None: they do, or there is no EKU extension)."""
    if info.ekus is None or ANY_EKU in info.other_ekus or needed <= info.ekus:
        return None
    return f"extended key usage is [{_ekus(info)}], lacks {', '.join(sorted(e.value for e in needed - info.ekus))}"


def extra_eku_findings(info: crypto.CertInfo, needed: frozenset[Eku], user: bool) -> list[tuple[str, str]]:
    """(severity, message) for each extended key usage a leaf has beyond ``needed``, what its file is used for.

    ``user``: a user's client certificate. Its key must never be able to serve TLS: the CA that signed it
    also vouches for the nodes (outside split-ca), and a user name may look like a host name. Any
    other extra usage grants nothing the holder (the node itself) does not already have, or nothing
    CockroachDB uses: a warning. Vault roles set serverAuth and clientAuth both unless told otherwise."""
    if info.ekus is None or ANY_EKU in info.other_ekus:
        what = "has no extended key usage extension" if info.ekus is None else "allows anyExtendedKeyUsage"
        if user:
            return [("error", f"{what}: Go accepts it for any purpose, serverAuth included, so this user's key "
                              "could serve TLS for the cluster's CA")]
        return [("warning", f"{what}: Go accepts it for any purpose (unusual, not an error)")]
    findings = []
    extra = sorted(info.ekus - needed)
    if user and Eku.SERVER_AUTH in extra:
        findings.append(("error", f"extended key usage is [{_ekus(info)}], expected [{', '.join(sorted(needed))}]: "
                                  "serverAuth would let this user's key serve TLS for the cluster's CA (set server_flag = "
                                  "false on the Vault role)"))
        extra.remove(Eku.SERVER_AUTH)
    for eku in extra:
        findings.append(("warning", f"extended key usage also allows {eku.value}, which this file does not need "
                                    f"(unusual, not an error; a Vault role adds it unless {_FLAG[eku]} = false)"))
    others = [o for o in info.other_ekus if o != ANY_EKU]
    if others:
        findings.append(("warning", f"extended key usage also has {', '.join(others)}, which CockroachDB does not use "
                                    "(unusual, not an error)"))
    return findings


def _ekus(info: crypto.CertInfo) -> str:
    return ", ".join(sorted(e.value for e in info.ekus or ()) + list(info.other_ekus))


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
    if (eku_gap := _missing_ekus(info, spec.ekus)) is not None:
        problems.append(eku_gap)
    # Only errors: an extra usage that is merely unusual is for ``verify`` to mention, never a refusal.
    problems += [m for severity, m in extra_eku_findings(info, spec.ekus, spec.kind is FileKind.CLIENT) if severity == "error"]
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
