"""What Go's crypto/x509 verifier, which CockroachDB verifies with, would refuse in a chain (pure).

``validate.verify_chain`` builds the paths (issuer names, signatures, CA:TRUE, keyCertSign) and checks
dates and extended key usages; this module adds the rules of Go's ``Certificate.isValid``
(``src/crypto/x509/verify.go``) that go beyond those, each refusing the chain at every handshake:

- an unhandled critical extension, on any certificate of the path, the leaf and the anchor included:
  ``x509: unhandled critical extension``. What Go handles is what ``processExtensions``
  (``src/crypto/x509/parser.go``) parses, as of Go 1.19 (Debian's ``golang-go``; the same up to Go 1.21);
- name constraints of every CA above the leaf, the anchor included, against the leaf's SANs and the
  CA's own (``checkNameConstraints`` and the ``match*Constraint`` functions): ``x509: a root or
  intermediate certificate is not authorized to sign for this name: …``;
- path length: a CA with pathLen N may have at most N intermediates below it, down to the leaf:
  ``x509: too many intermediates for path length constraint``.

Go judges a path while it builds it and tries every other path before it refuses; ``verify_chain`` does
the same by asking this module about each complete path it finds.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec
from cryptography import x509

from vaultpki.core import crypto

__all__ = [
    "GO_HANDLED_EXTENSIONS", "Refusal", "critical_refusal", "extension_name", "match_domain", "name_refusal",
    "path_refusal", "unhandled_critical",
]

# Go 1.19 parser.go processExtensions: keyUsage, basicConstraints, subjectAltName, nameConstraints,
# cRLDistributionPoints, authorityKeyIdentifier, extKeyUsage, subjectKeyIdentifier, certificatePolicies,
# and authorityInfoAccess. Go 1.22 also parses policyMappings, policyConstraints and inhibitAnyPolicy (and
# then enforces certificate policies, which vaultpki does not judge): those stay refused here, as
# CockroachDB releases built with an older Go, and the Go of the test suite, refuse them.
GO_HANDLED_EXTENSIONS = {
    "2.5.29.15": "keyUsage", "2.5.29.19": "basicConstraints", "2.5.29.17": "subjectAltName",
    "2.5.29.30": "nameConstraints", "2.5.29.31": "cRLDistributionPoints", "2.5.29.35": "authorityKeyIdentifier",
    "2.5.29.37": "extKeyUsage", "2.5.29.14": "subjectKeyIdentifier", "2.5.29.32": "certificatePolicies",
    "1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
}
_KNOWN_NAMES = {"2.5.29.33": "policyMappings", "2.5.29.36": "policyConstraints", "2.5.29.54": "inhibitAnyPolicy"}
# The name types Go understands, in SANs and in name constraints (tag numbers of GeneralName).
_GO_NAME_TYPES = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier)

_NOT_AUTHORIZED = "x509: a root or intermediate certificate is not authorized to sign for this name: "


class Refusal(msgspec.Struct, frozen=True):
    """Why Go refuses a path: its own error text, the certificate it is about, and what to name in advice."""

    kind: str                    # "critical", "name" or "pathlen"
    subject: str                 # the certificate the rule refused (RFC 4514)
    go_error: str                # Go's error, word for word where Go has one
    name: str | None = None      # "name": the SAN refused ("node"); "critical": the extension's OID
    name_type: str | None = None  # "name": "DNS name", "IP address", "email address" or "URI"
    allowed: int | None = None   # "pathlen": the CA's pathLen
    below: int | None = None     # "pathlen": the intermediates between it and the leaf


@functools.lru_cache(maxsize=1024)
def unhandled_critical(cert: x509.Certificate) -> tuple[str, ...]:
    """The OIDs of the critical extensions Go leaves unhandled (``Certificate.UnhandledCriticalExtensions``).

    A subjectAltName with no name Go reads (only other names, say) counts as unhandled, and so does a
    nameConstraints extension with a subtree of a type Go does not read (a directory name, say). Cached: a
    bulk run asks about the same CAs for every leaf."""
    found = []
    for ext in cert.extensions:
        if not ext.critical:
            continue
        oid = ext.oid.dotted_string
        unhandled = oid not in GO_HANDLED_EXTENSIONS
        if isinstance(ext.value, x509.SubjectAlternativeName):
            unhandled = not any(isinstance(n, _GO_NAME_TYPES) for n in ext.value)
        elif isinstance(ext.value, x509.NameConstraints):
            subtrees = [*(ext.value.permitted_subtrees or ()), *(ext.value.excluded_subtrees or ())]
            unhandled = not all(isinstance(n, _GO_NAME_TYPES) for n in subtrees)
        if unhandled:
            found.append(oid)
    return tuple(found)


def critical_refusal(cert: x509.Certificate) -> Refusal | None:
    oids = unhandled_critical(cert)
    if not oids:
        return None
    return Refusal("critical", cert.subject.rfc4514_string(), "x509: unhandled critical extension", name=oids[0])


def extension_name(oid: str) -> str:
    """A person's name for an extension OID, when it has one."""
    return GO_HANDLED_EXTENSIONS.get(oid) or _KNOWN_NAMES.get(oid) or "an extension Go does not know"


# --- name constraints --------------------------------------------------------

def _reverse_labels(domain: str) -> list[str] | None:
    """Go's ``domainToReverseLabels``: labels last first; None when the name does not parse."""
    labels = domain.split(".")[::-1] if domain else []
    if labels and labels[0] == "":
        return None                          # an absolute name (a trailing dot)
    if any(not label or any(ord(c) < 33 or ord(c) > 126 for c in label) for label in labels):
        return None
    return labels


def match_domain(domain: str, constraint: str) -> bool | None:
    """Go's ``matchDomainConstraint``: "example.com" matches the name and its subdomains, ".example.com" only
    subdomains, "" everything; letter case is ignored. None when either does not parse (Go refuses)."""
    if not constraint:
        return True
    labels = _reverse_labels(domain)
    subdomains_only = constraint.startswith(".")
    wanted = _reverse_labels(constraint[1:] if subdomains_only else constraint)
    if labels is None or wanted is None:
        return None
    if len(labels) < len(wanted) or (subdomains_only and len(labels) == len(wanted)):
        return False
    return all(c.lower() == d.lower() for c, d in zip(wanted, labels, strict=False))


def _match(name: x509.GeneralName, constraint: x509.GeneralName) -> bool | None:
    """Does ``constraint`` cover ``name`` (both of the same type)? None: Go cannot tell, and refuses."""
    if isinstance(name, x509.DNSName):
        return match_domain(name.value, str(constraint.value))
    if isinstance(name, x509.IPAddress):
        network = constraint.value
        # Go compares addresses of the same length only: an IPv4 name never matches an IPv6 range.
        return isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and name.value in network
    if isinstance(name, x509.RFC822Name):
        local, _, domain = name.value.rpartition("@")
        if not local:
            return None
        wanted = str(constraint.value)
        if "@" in wanted:
            want_local, _, want_domain = wanted.rpartition("@")
            return local == want_local and domain.lower() == want_domain.lower()
        return match_domain(domain, wanted)
    host = urlsplit(str(name.value)).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return match_domain(host, str(constraint.value)) if host else None
    return None                              # Go: "URI with IP … cannot be matched against constraints"


_TYPE_NAMES = {x509.DNSName: "DNS name", x509.IPAddress: "IP address", x509.RFC822Name: "email address",
               x509.UniformResourceIdentifier: "URI"}


def _shown(name: x509.GeneralName) -> str:
    return str(name.value)


def name_refusal(ca: x509.Certificate, leaf: x509.Certificate) -> Refusal | None:
    """Go's name-constraint check of ``ca`` (an intermediate or the anchor) for a path ending in ``leaf``:
    every name of a type Go reads, in the leaf's SANs and then in the CA's own, is checked against the
    excluded subtrees of its type, then must match one permitted subtree of its type when there are any."""
    constraints = crypto.extension(ca, x509.NameConstraints)
    if constraints is None:
        return None
    for holder in (leaf, ca):
        sans = crypto.extension(holder, x509.SubjectAlternativeName)
        for name in sans or ():
            kind = type(name)
            if kind not in _TYPE_NAMES:
                continue                     # Go ignores the SAN types it does not read
            refusal = _name_refusal(ca, name, [c for c in constraints.excluded_subtrees or () if type(c) is kind],
                                    [c for c in constraints.permitted_subtrees or () if type(c) is kind])
            if refusal is not None:
                return refusal
    return None


def _name_refusal(ca: x509.Certificate, name: x509.GeneralName, excluded: Sequence[x509.GeneralName],
                  permitted: Sequence[x509.GeneralName]) -> Refusal | None:
    type_name = _TYPE_NAMES[type(name)]
    shown = _shown(name)

    def refusal(detail: str) -> Refusal:
        return Refusal("name", ca.subject.rfc4514_string(), _NOT_AUTHORIZED + detail, name=shown, name_type=type_name)

    for constraint in excluded:
        matched = _match(name, constraint)
        if matched is None:
            return refusal(f"cannot match {type_name} \"{shown}\" against constraints")
        if matched:
            return refusal(f"{type_name} \"{shown}\" is excluded by constraint \"{_shown(constraint)}\"")
    if not permitted:
        return None
    for constraint in permitted:
        matched = _match(name, constraint)
        if matched is None:
            return refusal(f"cannot match {type_name} \"{shown}\" against constraints")
        if matched:
            return None
    return refusal(f"{type_name} \"{shown}\" is not permitted by any constraint")


# --- a whole path -----------------------------------------------------------------

def path_refusal(path: Sequence[x509.Certificate]) -> Refusal | None:
    """The first of Go's rules a path (leaf first, anchor last) breaks, certificate by certificate from the
    leaf up, as Go meets them while building it; None when Go accepts it on these counts."""
    leaf = path[0]
    for position, cert in enumerate(path):
        if (critical := critical_refusal(cert)) is not None:
            return critical
        if position == 0:
            continue
        if (named := name_refusal(cert, leaf)) is not None:
            return named
        constraints = crypto.extension(cert, x509.BasicConstraints)
        below = position - 1
        if constraints is not None and constraints.path_length is not None and below > constraints.path_length:
            return Refusal("pathlen", cert.subject.rfc4514_string(), "x509: too many intermediates for path length constraint",
                           allowed=constraints.path_length, below=below)
    return None
