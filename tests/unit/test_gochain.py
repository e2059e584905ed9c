"""gochain: Go's crypto/x509 rules beyond chain building (name constraints, path length, unhandled critical
extensions), and how verify_chain, check_issued and judge() apply them: each refused case beside its allowed
twin. tests/integration/test_go_rules.py runs the same sets through the Go consumer and the real CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core import gochain
from vaultpki.core.layout import Eku, Mode, PkiNames, plan_node
from vaultpki.core.report import verify_report
from vaultpki.core.snapshot import judge
from vaultpki.core.validate import check_issued, verify_chain

from .conftest import CLIENT, DAY, NOW, SERVER, Issued, make_dir_state

UNKNOWN = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
HOSTS = ("db1.example.com", "localhost", "127.0.0.1")
PKI_NAMES = PkiNames(mount="pki", client_mount=None, node_role="node", client_node_role="client-node",
                     user_role="user", ui_mount=None, ui_role=None)
Ext = tuple[x509.ExtensionType, bool]


def make(cn: str | None, issuer: Issued | None = None, *, ca: bool = True, path_length: int | None = None,
         permitted: Sequence[x509.GeneralName] | None = None, excluded: Sequence[x509.GeneralName] | None = None,
         dns: Iterable[str] = (), ips: Iterable[str] = (), sans: Sequence[x509.GeneralName] = (),
         san_critical: bool = False, ekus: Sequence[x509.ObjectIdentifier] | None = None,
         extra: Sequence[Ext] = (), key: ec.EllipticCurvePrivateKey | None = None) -> Issued:
    """A CA (``ca``) or a leaf, with any of the extensions Go's rules look at."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - 30 * DAY).not_valid_after(NOW + 300 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    if permitted is not None or excluded is not None:
        builder = builder.add_extension(x509.NameConstraints(permitted, excluded), critical=True)
    names = [*(x509.DNSName(d) for d in dns), *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips), *sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=san_critical)
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def node_leaf(issuer: Issued, **kw: object) -> Issued:
    """Standard mode's node.crt: CN=node, the name node among the DNS SANs, both usages."""
    return make("node", issuer, ca=False, dns=["node", "db1.example.com", "localhost"], ips=["127.0.0.1"],
                ekus=[SERVER, CLIENT], **kw)  # type: ignore[arg-type]


def dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


# --- Go's domain matching -------------------------------------------------------------

@pytest.mark.parametrize(("domain", "constraint", "expected"), [
    ("example.com", "example.com", True),
    ("db1.example.com", "example.com", True),            # a constraint covers its subdomains
    ("a.b.example.com", "example.com", True),
    ("badexample.com", "example.com", False),            # whole labels only
    ("node", "example.com", False),
    ("example.com", ".example.com", False),              # a leading dot: subdomains only
    ("db1.example.com", ".example.com", True),
    ("DB1.Example.COM", "example.com", True),            # letter case is ignored
    ("db1.example.com", "EXAMPLE.com", True),
    ("anything", "", True),                              # the empty constraint matches everything (as NSS)
    ("com", "example.com", False),
    ("example.com.", "example.com", None),               # an absolute name does not parse: Go refuses
    ("a..example.com", "example.com", None),
])
def test_match_domain_is_gos(domain: str, constraint: str, expected: bool | None) -> None:
    assert gochain.match_domain(domain, constraint) is expected


# --- name constraints ---------------------------------------------------------------------

@pytest.mark.parametrize(("constraints", "leaf_kw", "refused"), [
    pytest.param({"permitted": dns("example.com", "localhost")}, {"dns": ["node", "localhost"]},
                 'DNS name "node" is not permitted by any constraint', id="dns-not-permitted"),
    pytest.param({"permitted": dns("example.com", "localhost", "node")}, {"dns": ["node", "localhost"]},
                 None, id="dns-permitted"),
    pytest.param({"excluded": dns("evil.example.com")}, {"dns": ["db1.evil.example.com"]},
                 'DNS name "db1.evil.example.com" is excluded by constraint "evil.example.com"', id="dns-excluded"),
    pytest.param({"permitted": dns("example.com"), "excluded": dns("db1.example.com")}, {"dns": ["db1.example.com"]},
                 'is excluded by constraint "db1.example.com"', id="excluded-wins-over-permitted"),
    pytest.param({"permitted": dns(".example.com")}, {"dns": ["example.com"]},
                 'DNS name "example.com" is not permitted', id="leading-dot-subdomains-only"),
    pytest.param({"permitted": dns("example.com")}, {"ips": ["10.1.2.3"]}, None,
                 id="dns-constraints-leave-ips-free"),
    pytest.param({"permitted": [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]}, {"ips": ["192.168.1.1"]},
                 'IP address "192.168.1.1" is not permitted by any constraint', id="ip-not-permitted"),
    pytest.param({"permitted": [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]}, {"ips": ["10.9.8.7"]},
                 None, id="ip-permitted"),
    pytest.param({"excluded": [x509.IPAddress(ipaddress.ip_network("127.0.0.0/8"))]}, {"ips": ["127.0.0.1"]},
                 'IP address "127.0.0.1" is excluded by constraint "127.0.0.0/8"', id="ip-excluded"),
    pytest.param({"permitted": [x509.IPAddress(ipaddress.ip_network("::/0"))]}, {"ips": ["10.9.8.7"]},
                 'IP address "10.9.8.7" is not permitted', id="ipv4-name-never-matches-an-ipv6-range"),
    pytest.param({"permitted": [x509.RFC822Name("example.com")]}, {"sans": [x509.RFC822Name("ops@example.com")]},
                 None, id="email-domain-permitted"),
    pytest.param({"permitted": [x509.RFC822Name("ops@example.com")]}, {"sans": [x509.RFC822Name("dev@example.com")]},
                 'email address "dev@example.com" is not permitted', id="email-mailbox-not-permitted"),
    pytest.param({"permitted": [x509.UniformResourceIdentifier(".example.com")]},
                 {"sans": [x509.UniformResourceIdentifier("spiffe://db1.example.com/node")]}, None, id="uri-permitted"),
    pytest.param({"permitted": [x509.UniformResourceIdentifier("example.com")]},
                 {"sans": [x509.UniformResourceIdentifier("crdb://tenant/2/user/marc")]},
                 'URI "crdb://tenant/2/user/marc" is not permitted', id="uri-not-permitted"),
])
def test_name_constraints(constraints: dict[str, list[x509.GeneralName]], leaf_kw: dict[str, object],
                          refused: str | None) -> None:
    ca = make("Constrained CA", **constraints)  # type: ignore[arg-type]
    leaf = make("leaf", ca, ca=False, **leaf_kw)  # type: ignore[arg-type]
    refusal = gochain.name_refusal(ca.cert, leaf.cert)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.kind == "name"
        assert refusal.go_error.startswith("x509: a root or intermediate certificate is not authorized to sign for this name: ")
        assert refused in refusal.go_error, refusal.go_error


def test_a_leaf_without_sans_escapes_name_constraints() -> None:
    """Go checks SANs only (never the CN), and nothing at all when the leaf has no SAN extension."""
    ca = make("Constrained CA", permitted=dns("example.com"))
    assert gochain.name_refusal(ca.cert, make("node", ca, ca=False).cert) is None


def test_the_cas_own_sans_are_checked_too() -> None:
    """verify.go checks the leaf's SANs and then the constrained CA's own."""
    ca = make("Constrained CA", permitted=dns("example.com"), dns=["ca.other.org"])
    refusal = gochain.name_refusal(ca.cert, make("db1", ca, ca=False, dns=["db1.example.com"]).cert)
    assert refusal is not None and 'DNS name "ca.other.org"' in refusal.go_error


# --- unhandled critical extensions ---------------------------------------------------------

@pytest.mark.parametrize(("extra", "kw", "unhandled"), [
    pytest.param([(x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), True)], {}, (UNKNOWN.dotted_string,), id="unknown-critical"),
    pytest.param([(x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), False)], {}, (), id="unknown-not-critical"),
    pytest.param([(x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]),
                   True)], {}, (), id="policies-critical-are-handled"),
    pytest.param([(x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0), True)], {},
                 ("2.5.29.36",), id="policy-constraints-unhandled-before-go-1.22"),
    pytest.param([], {"sans": [x509.OtherName(UNKNOWN, b"\x05\x00")], "san_critical": True}, ("2.5.29.17",),
                 id="critical-san-with-no-name-go-reads"),
    pytest.param([], {"dns": ["db1.example.com"], "san_critical": True}, (), id="critical-san-with-dns"),
    pytest.param([], {"permitted": [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]))]},
                 ("2.5.29.30",), id="name-constraints-with-a-directory-name"),
])
def test_unhandled_critical(extra: list[Ext], kw: dict[str, object], unhandled: tuple[str, ...]) -> None:
    assert gochain.unhandled_critical(make("CA", extra=extra, **kw).cert) == unhandled  # type: ignore[arg-type]


# --- path length --------------------------------------------------------------------------

@pytest.mark.parametrize(("root_len", "inter_lens", "refused_at"), [
    pytest.param(0, [None], "Root", id="root-0-over-an-intermediate"),
    pytest.param(0, [], None, id="root-0-signing-the-leaf"),
    pytest.param(1, [None], None, id="root-1-over-an-intermediate"),
    pytest.param(1, [None, None], "Root", id="root-1-over-two"),
    pytest.param(None, [0, None], "Inter 0", id="intermediate-0-over-another"),
    pytest.param(None, [None, 0], None, id="intermediate-0-signing-the-leaf"),
])
def test_path_length(root_len: int | None, inter_lens: list[int | None], refused_at: str | None) -> None:
    chain = [make("Root", path_length=root_len)]
    for i, length in enumerate(inter_lens):
        chain.append(make(f"Inter {i}", chain[-1], path_length=length))
    leaf = make("leaf", chain[-1], ca=False, dns=["db1.example.com"])
    refusal = gochain.path_refusal([leaf.cert, *(c.cert for c in reversed(chain))])
    if refused_at is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.kind == "pathlen" and refusal.subject == f"CN={refused_at}"
        assert refusal.go_error == "x509: too many intermediates for path length constraint"


# --- verify_chain, check_issued and judge apply them -----------------------------------------

def test_verify_chain_name_constraints_and_the_advice() -> None:
    root = make("Org Root", permitted=dns("example.com", "localhost"))
    problem = verify_chain([node_leaf(root).cert], [root.cert], NOW, {Eku.SERVER_AUTH})
    assert problem is not None
    assert problem.startswith('x509: a root or intermediate certificate is not authorized to sign for this name: '
                              'DNS name "node" is not permitted by any constraint (name constraints of CN=Org Root)')
    assert 'mode = "split-node"' in problem and "a CA whose name constraints permit 'node'" in problem
    twin = make("Org Root", permitted=dns("example.com", "localhost", "node"))
    assert verify_chain([node_leaf(twin).cert], [twin.cert], NOW, {Eku.SERVER_AUTH}) is None


def test_a_client_certificates_cn_copy_gets_the_client_advice() -> None:
    root = make("Org Root", permitted=dns("example.com"))
    leaf = make("node", root, ca=False, dns=["node"], ekus=[CLIENT])
    problem = verify_chain([leaf.cert], [root.cert], NOW, {Eku.CLIENT_AUTH})
    assert problem is not None and 'DNS name "node" is not permitted' in problem
    assert "exclude_cn_from_sans = true" in problem


def test_constraints_above_the_anchor_are_not_seen() -> None:
    """With ca_trust = "issuer" the intermediate is the anchor: Go never looks at the root's constraints."""
    root = make("Org Root", permitted=dns("example.com"))
    inter = make("Issuing CA", root)
    leaf = node_leaf(inter)
    assert verify_chain([leaf.cert, inter.cert], [inter.cert], NOW, {Eku.SERVER_AUTH}) is None
    assert verify_chain([leaf.cert, inter.cert], [root.cert], NOW, {Eku.SERVER_AUTH}) is not None


def test_verify_chain_path_length_and_the_advice() -> None:
    root = make("Root 0", path_length=0)
    inter = make("Issuing CA", root)
    leaf = node_leaf(inter)
    problem = verify_chain([leaf.cert, inter.cert], [root.cert], NOW, {Eku.SERVER_AUTH})
    assert problem is not None and problem.startswith("x509: too many intermediates for path length constraint "
                                                      "(CN=Root 0 allows 0 intermediate CA(s) below it, this chain has 1)")
    assert 'set ca_trust = "issuer"' in problem
    assert verify_chain([leaf.cert, inter.cert], [inter.cert], NOW, {Eku.SERVER_AUTH}) is None


@pytest.mark.parametrize("where", ["leaf", "intermediate", "anchor"])
def test_verify_chain_unhandled_critical_extension(where: str) -> None:
    def ext(at: str, critical: bool) -> list[Ext]:
        return [(x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), critical)] if at == where else []

    for critical in (True, False):
        root = make("Root", extra=ext("anchor", critical))
        inter = make("Issuing CA", root, extra=ext("intermediate", critical))
        leaf = node_leaf(inter, extra=ext("leaf", critical))
        problem = verify_chain([leaf.cert, inter.cert], [root.cert], NOW, {Eku.SERVER_AUTH})
        if not critical:
            assert problem is None
            continue
        assert problem is not None and problem.startswith(f"x509: unhandled critical extension ({UNKNOWN.dotted_string}")
        assert ("in the certificate" if where == "leaf" else "in CN=") in problem


def test_any_path_that_passes_is_enough() -> None:
    """Go tries every path: an intermediate cross-signed by a limited root and by a free one verifies."""
    limited, free = make("Limited Root", path_length=0), make("Free Root")
    key = ec.generate_private_key(ec.SECP256R1())
    via_limited, via_free = make("Issuing CA", limited, key=key), make("Issuing CA", free, key=key)
    sub = make("Sub CA", via_free)
    leaf = node_leaf(sub)
    chain = [leaf.cert, sub.cert, via_limited.cert, via_free.cert]
    assert verify_chain(chain, [limited.cert, free.cert], NOW, {Eku.SERVER_AUTH}) is None
    assert verify_chain(chain, [limited.cert], NOW, {Eku.SERVER_AUTH}) is not None


def test_check_issued_refuses_what_go_refuses() -> None:
    spec = plan_node(Mode.STANDARD, PKI_NAMES, HOSTS, ()).certs[0]
    root = make("Org Root", permitted=dns("example.com", "localhost"))
    leaf = make("node", root, ca=False, dns=["node", "db1.example.com", "localhost"], ips=["127.0.0.1"], ekus=[SERVER, CLIENT])
    (problem,) = check_issued(spec, [leaf.cert], leaf.key, [root.cert], NOW)
    assert problem.file == "node.crt" and problem.severity == "error"
    assert 'DNS name "node" is not permitted by any constraint' in problem.message
    twin = make("Org Root", permitted=dns("example.com", "localhost", "node"))
    ok = make("node", twin, ca=False, dns=["node", "db1.example.com", "localhost"], ips=["127.0.0.1"], ekus=[SERVER, CLIENT])
    assert check_issued(spec, [ok.cert], ok.key, [twin.cert], NOW) == []


def test_judge_reports_it_and_verify_fails() -> None:
    root = make("Root 0", path_length=0)
    inter = make("Issuing CA", root)
    leaf = node_leaf(inter)
    state = make_dir_state({"ca.crt": root.cert_pem, "node.crt": leaf.chain_pem(inter), "node.key": leaf.key_pem})
    problems = judge(state, NOW)
    assert [(p.file, p.severity) for p in problems] == [("node.crt", "error")]
    assert "too many intermediates for path length constraint" in problems[0].message
    assert not verify_report(state, problems).ok
    twin = make_dir_state({"ca.crt": inter.cert_pem, "node.crt": leaf.chain_pem(inter), "node.key": leaf.key_pem})
    assert judge(twin, NOW) == []


def test_dates_still_count_on_a_path_go_accepts() -> None:
    root = make("Root")
    leaf = make("node", root, ca=False, dns=["node"], ekus=[SERVER, CLIENT])
    assert verify_chain([leaf.cert], [root.cert], NOW + dt.timedelta(days=400), {Eku.SERVER_AUTH}) == \
        f"certificate expired at {leaf.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
