"""validate: verify_chain(), check_issued(), judge() and key_mode_problem()."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vaultpki.core.layout import CertSpec, Eku, Mode, PkiNames, plan_node, plan_user
from vaultpki.core.snapshot import DirState, Expectation, FileState, judge, key_mode_problem
from vaultpki.core.validate import Problem, check_issued, verify_chain

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
DAY = dt.timedelta(days=1)
HOSTS = ("db1.example.com", "localhost", "127.0.0.1")
DNS = ["db1.example.com", "localhost"]
IPS = ["127.0.0.1"]

PKI_NAMES = PkiNames(
    mount="pki-crdb", client_mount="pki-crdb-client", node_role="node", client_node_role="client-node",
    user_role="user", ui_mount="pki-ui", ui_role="ui",
)


def errors(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.file, p.message) for p in problems if p.severity == "error"]


def error_files(problems: list[Problem]) -> set[str]:
    return {p.file for p in problems if p.severity == "error"}


def has(problems: list[Problem], file: str, fragment: str) -> bool:
    return any(p.file == file and fragment in p.message and p.severity == "error" for p in problems)


# --- verify_chain -----------------------------------------------------------------

def test_chain_leaf_intermediate_root(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    assert verify_chain([leaf.cert, cas.inter.cert], [cas.root.cert], now, {Eku.SERVER_AUTH, Eku.CLIENT_AUTH}) is None


def test_chain_without_bundled_intermediate_fails(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    problem = verify_chain([leaf.cert], [cas.root.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None and "does not chain" in problem


def test_chain_intermediate_as_anchor(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    assert verify_chain([leaf.cert], [cas.inter.cert], now, {Eku.SERVER_AUTH}) is None


def test_chain_anchor_found_among_several(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.other)
    assert verify_chain([leaf.cert], [cas.root.cert, cas.other.cert], now, {Eku.SERVER_AUTH}) is None


def test_chain_wrong_ca(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter)
    problem = verify_chain([leaf.cert, cas.inter.cert], [cas.other.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None
    assert "does not chain" in problem and "Unrelated CA" in problem


def test_chain_no_anchors(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root)
    assert verify_chain([leaf.cert], [], now, {Eku.SERVER_AUTH}) == "no CA certificate to verify against"


def test_chain_same_name_other_key_is_not_an_anchor(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    impostor = pki.ca("Test Root CA")
    leaf = pki.leaf("node", impostor)
    assert verify_chain([leaf.cert], [cas.root.cert], now, {Eku.SERVER_AUTH}) is not None


def test_chain_expired_intermediate(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    old = pki.ca("Old Intermediate", cas.root, not_before=now - 400 * DAY, not_after=now - DAY)
    leaf = pki.leaf("node", old)
    problem = verify_chain([leaf.cert, old.cert], [cas.root.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None
    assert "issuer CN=Old Intermediate expired" in problem


def test_chain_expired_anchor(pki, now) -> None:  # type: ignore[no-untyped-def]
    root = pki.ca("Expired Root", not_before=now - 400 * DAY, not_after=now - DAY)
    leaf = pki.leaf("node", root)
    problem = verify_chain([leaf.cert], [root.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None and "expired" in problem


def test_chain_intermediate_eku_forbids_client_auth(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    server_only = pki.ca("Server-only Intermediate", cas.root, ekus=[SERVER])
    leaf = pki.leaf("node", server_only)
    chain = [leaf.cert, server_only.cert]
    problem = verify_chain(chain, [cas.root.cert], now, {Eku.CLIENT_AUTH})
    assert problem is not None
    assert "Server-only Intermediate" in problem and "does not allow clientAuth" in problem
    assert verify_chain(chain, [cas.root.cert], now, {Eku.SERVER_AUTH}) is None


def test_chain_any_eku_on_intermediate_allows_everything(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    any_eku = pki.ca("AnyEKU Intermediate", cas.root, ekus=[ANY_EKU])
    leaf = pki.leaf("node", any_eku)
    assert verify_chain([leaf.cert, any_eku.cert], [cas.root.cert], now, {Eku.CLIENT_AUTH, Eku.SERVER_AUTH}) is None


def test_chain_leaf_without_eku_allows_any_use(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root, ekus=None)
    assert verify_chain([leaf.cert], [cas.root.cert], now, {Eku.CLIENT_AUTH, Eku.SERVER_AUTH}) is None


def test_chain_leaf_eku_missing_usage(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root, ekus=[SERVER])
    assert verify_chain([leaf.cert], [cas.root.cert], now, {Eku.CLIENT_AUTH}) == "certificate does not allow clientAuth"


@pytest.mark.parametrize(
    "make_parent",
    [
        pytest.param(lambda pki, root: pki.leaf("Not A CA", root, is_ca=False), id="ca-false"),
        pytest.param(lambda pki, root: pki.leaf("No Basic Constraints", root, is_ca=None), id="no-basic-constraints"),
        pytest.param(lambda pki, root: pki.ca("CA without keyCertSign", root, key_cert_sign=False), id="no-keycertsign"),
    ],
)
def test_chain_parent_not_a_ca(pki, cas, now, make_parent) -> None:  # type: ignore[no-untyped-def]
    parent = make_parent(pki, cas.root)
    leaf = pki.leaf("node", parent)
    problem = verify_chain([leaf.cert, parent.cert], [cas.root.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None and "does not chain" in problem
    # even when the non-CA parent is itself trusted
    assert verify_chain([leaf.cert], [parent.cert], now, {Eku.SERVER_AUTH}) is not None


@pytest.mark.parametrize(
    ("not_before", "not_after", "fragment"),
    [
        pytest.param(-10, -1, "expired", id="expired"),
        pytest.param(1, 10, "is not valid before", id="not-yet-valid"),
    ],
)
def test_chain_leaf_dates(pki, cas, now, not_before, not_after, fragment) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.root, not_before=now + not_before * DAY, not_after=now + not_after * DAY)
    problem = verify_chain([leaf.cert], [cas.root.cert], now, {Eku.SERVER_AUTH})
    assert problem is not None and problem.startswith(f"certificate {fragment}")


# --- check_issued ------------------------------------------------------------------

def spec(stem: str, mode: Mode = Mode.STANDARD) -> CertSpec:
    if stem.startswith("client.") and stem != "client.node":
        return plan_user(mode, PKI_NAMES, stem.split(".", 1)[1]).certs[0]
    plan = plan_node(mode, PKI_NAMES, HOSTS, ["console.example.com"])
    return next(c for c in plan.certs if c.stem == stem)


def test_spec_helper_sanity() -> None:
    assert spec("node").common_name == "node"
    assert spec("client.marc").common_name == "marc"
    assert spec("client.node", Mode.SPLIT_NODE).common_name == "node"
    assert spec("ui").common_name == "console.example.com"


def test_check_issued_good_client(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("marc", cas.inter, ekus=[CLIENT])
    assert check_issued(spec("client.marc"), [leaf.cert, cas.inter.cert], leaf.key, [cas.root.cert], now) == []


def test_check_issued_good_client_with_cn_copied_to_dns(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("marc", cas.root, ekus=[CLIENT], dns=["marc"])
    assert check_issued(spec("client.marc"), [leaf.cert], leaf.key, [cas.root.cert], now) == []


def test_check_issued_good_node(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("node", cas.inter, dns=DNS, ips=IPS)
    assert check_issued(spec("node"), [leaf.cert, cas.inter.cert], leaf.key, [cas.root.cert], now) == []


def test_check_issued_good_split_node_server(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("db1.example.com", cas.root, dns=DNS, ips=IPS, ekus=[SERVER])
    assert check_issued(spec("node", Mode.SPLIT_NODE), [leaf.cert], leaf.key, [cas.root.cert], now) == []


def test_check_issued_good_ui_with_extra_client_auth(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("console.example.com", cas.root, dns=["console.example.com"])
    assert check_issued(spec("ui"), [leaf.cert], leaf.key, [cas.root.cert], now) == []


def _client(pki, cas, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("ekus", [CLIENT])
    return pki.leaf(kw.pop("cn", "marc"), cas.root, **kw)


def _node(pki, cas, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("dns", DNS)
    kw.setdefault("ips", IPS)
    return pki.leaf(kw.pop("cn", "node"), cas.root, **kw)


@pytest.mark.parametrize(
    ("stem", "build", "fragment"),
    [
        pytest.param("client.marc", lambda p, c, n: _client(p, c, cn="marcus"), "CN is 'marcus', expected 'marc'",
                     id="wrong-cn"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, dns=["root"]), "unexpected DNS SANs root",
                     id="extra-dns-san-root"),
        pytest.param("node", lambda p, c, n: _node(p, c, dns=["db1.example.com"]), "DNS SANs lack localhost",
                     id="missing-dns-san"),
        pytest.param("node", lambda p, c, n: _node(p, c, dns=DNS + ["evil.example.com"]),
                     "unexpected DNS SANs evil.example.com", id="extra-node-dns-san"),
        pytest.param("node", lambda p, c, n: _node(p, c, ips=["10.9.9.9"]), "IP SANs are [10.9.9.9], expected [127.0.0.1]",
                     id="wrong-ip-sans"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, ips=["10.0.0.1"]), "IP SANs", id="client-with-ip"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, uris=["crdb://tenant/2/user/marc"]),
                     "unexpected SANs crdb://tenant/2/user/marc", id="uri-san"),
        pytest.param("node", lambda p, c, n: _node(p, c, ekus=[SERVER]), "extended key usage is [serverAuth]",
                     id="node-missing-client-auth"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, ekus=[CLIENT, SERVER]),
                     "extended key usage is [clientAuth, serverAuth], expected [clientAuth]", id="client-extra-server-auth"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, ekus=None), "no extended key usage", id="no-eku-ext"),
        pytest.param("ui", lambda p, c, n: p.leaf("console.example.com", c.root, dns=["console.example.com"], ekus=[CLIENT]),
                     "lacks serverAuth", id="ui-without-server-auth"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, is_ca=True), "is a CA certificate", id="ca-true-leaf"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, not_before=n + DAY, not_after=n + 9 * DAY),
                     "not valid before", id="not-yet-valid"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, not_before=n - 9 * DAY, not_after=n - DAY),
                     "expired", id="expired"),
        pytest.param("client.marc", lambda p, c, n: _client(p, c, ou="Tenants"), "OU=Tenants", id="tenant-ou"),
        pytest.param("client.marc", lambda p, c, n: p.leaf("marc", c.other, ekus=[CLIENT]), "does not chain",
                     id="wrong-ca"),
    ],
)
def test_check_issued_problem(pki, cas, now, stem, build, fragment) -> None:  # type: ignore[no-untyped-def]
    leaf = build(pki, cas, now)
    problems = check_issued(spec(stem), [leaf.cert], leaf.key, [cas.root.cert], now)
    assert problems, "expected at least one problem"
    assert all(p.file == f"{stem}.crt" and p.severity == "error" for p in problems)
    assert any(fragment in p.message for p in problems), [p.message for p in problems]


def test_check_issued_key_mismatch(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = _client(pki, cas)
    other = pki.new_key()
    problems = check_issued(spec("client.marc"), [leaf.cert], other, [cas.root.cert], now)
    assert [p.message for p in problems] == ["certificate does not match its private key"]


def test_check_issued_chain_problem_names_the_trust_target(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    leaf = pki.leaf("marc", cas.other, ekus=[CLIENT])
    (problem,) = check_issued(spec("client.marc", Mode.SPLIT_CA), [leaf.cert], leaf.key, [cas.client_root.cert], now)
    assert "the CA of mount pki-crdb-client" in problem.message


# A lying signer (issue 16): the lifetime asked for, plus Vault's 30 s back-dating (and a second of
# rounding), is the most an honest leaf lives.
@pytest.mark.parametrize(("ttl", "lifetime", "ok"), [
    pytest.param(dt.timedelta(hours=1), dt.timedelta(hours=1, seconds=30), True, id="ttl-plus-backdate"),
    pytest.param(dt.timedelta(hours=1), dt.timedelta(hours=1, seconds=31), True, id="plus-a-second-of-rounding"),
    pytest.param(dt.timedelta(hours=1), dt.timedelta(minutes=10), True, id="shorter-capped-by-the-role"),
    pytest.param(dt.timedelta(hours=1), dt.timedelta(hours=1, seconds=32), False, id="two-seconds-over"),
    pytest.param(dt.timedelta(days=90), 4 * 365 * DAY, False, id="four-years-for-a-90-day-role"),
])
def test_check_issued_refuses_a_lifetime_beyond_the_ttl(pki, cas, now, ttl, lifetime, ok) -> None:  # type: ignore[no-untyped-def]
    not_before = now - dt.timedelta(seconds=30)
    leaf = _client(pki, cas, not_before=not_before, not_after=not_before + lifetime)
    problems = check_issued(spec("client.marc"), [leaf.cert], leaf.key, [cas.root.cert], now, ttl)
    if ok:
        assert problems == []
        return
    (problem,) = problems
    assert problem.message.startswith("is valid for ") and "longer than a ttl of" in problem.message, problem.message
    assert "Vault dates NotBefore back" in problem.message


def test_check_issued_without_a_ttl_does_not_judge_the_lifetime(pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    """snapshot.judge() (verify) calls it without one: a certs-dir's leaf is judged by its dates, not by a request."""
    leaf = _client(pki, cas, not_before=now - DAY, not_after=now + 4 * 365 * DAY)
    assert check_issued(spec("client.marc"), [leaf.cert], leaf.key, [cas.root.cert], now) == []


# --- judge: building blocks -------------------------------------------------------------

class Dir:
    """A certs-dir under construction, turned into a DirState without touching disk."""

    def __init__(self, make_state: Callable[..., DirState]) -> None:
        self.files: dict[str, bytes | FileState] = {}
        self.make_state = make_state

    def put(self, stem: str, issued, *chain) -> Dir:  # type: ignore[no-untyped-def]
        self.files[f"{stem}.crt"] = issued.chain_pem(*chain)
        self.files[f"{stem}.key"] = issued.key_pem
        return self

    def state(self, **kw) -> DirState:  # type: ignore[no-untyped-def]
        return self.make_state(self.files, **kw)


@pytest.fixture
def standard(pki, cas, dir_state):  # type: ignore[no-untyped-def]
    """A good standard-mode dir: ca.crt (root), node.crt (+intermediate), client.marc.crt."""
    d = Dir(dir_state)
    d.files["ca.crt"] = cas.root.cert_pem
    d.put("node", pki.leaf("node", cas.inter, dns=DNS, ips=IPS), cas.inter)
    d.put("client.marc", pki.leaf("marc", cas.inter, ekus=[CLIENT]), cas.inter)
    return d


@pytest.fixture
def split_ca(pki, cas, dir_state):  # type: ignore[no-untyped-def]
    """A good split-ca dir: node CA = root, client CA = client_root."""
    d = Dir(dir_state)
    d.files["ca.crt"] = cas.root.cert_pem
    d.files["ca-client.crt"] = cas.client_root.cert_pem
    d.put("node", pki.leaf("db1.example.com", cas.root, dns=DNS, ips=IPS, ekus=[SERVER]))
    d.put("client.node", pki.leaf("node", cas.client_root, ekus=[CLIENT]))
    d.put("client.marc", pki.leaf("marc", cas.client_root, ekus=[CLIENT]))
    return d


def test_judge_good_standard_dir(standard, now) -> None:  # type: ignore[no-untyped-def]
    assert judge(standard.state(), now) == []
    assert judge(standard.state(), now, Expectation(Mode.STANDARD, HOSTS, users=("marc",))) == []


def test_judge_good_split_ca_dir(split_ca, now) -> None:  # type: ignore[no-untyped-def]
    assert judge(split_ca.state(), now) == []
    assert judge(split_ca.state(), now, Expectation(Mode.SPLIT_CA, HOSTS, users=("marc",))) == []


def test_judge_missing_dir(now) -> None:  # type: ignore[no-untyped-def]
    assert judge(DirState("/nope", exists=False), now) == [Problem("/nope", "certs-dir does not exist")]


def test_judge_ignores_non_crt_and_real_dirs(standard, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["ca.key"] = b"not even a key"
    standard.files["stray.key"] = b"junk"
    standard.files["notes.txt"] = b"junk"
    standard.files[".vaultpki"] = FileState(".vaultpki", is_dir=True, target_is_regular=False)
    standard.files["old.crt.d"] = FileState("old.crt.d", is_dir=True, target_is_regular=False)
    standard.files["..data"] = FileState("..data", is_dir=True, is_symlink=True, target_is_regular=False)
    assert judge(standard.state(), now) == []


# --- judge: one defect each -------------------------------------------------------------

def test_judge_mismatched_pair(standard, pki, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["node.key"] = pki.leaf("node", pki.ca("x")).key_pem
    assert errors(judge(standard.state(), now)) == [("node.crt", "certificate does not match node.key")]


def test_judge_node_signed_by_wrong_ca(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("node", pki.leaf("node", cas.other, dns=DNS, ips=IPS))
    problems = judge(standard.state(), now)
    assert error_files(problems) == {"node.crt"}
    assert has(problems, "node.crt", "does not chain")


def test_judge_key_mode_0644(standard, now) -> None:  # type: ignore[no-untyped-def]
    problems = judge(standard.state(key_mode=0o644), now)
    assert error_files(problems) == {"node.key", "client.marc.key"}
    assert has(problems, "node.key", "0644 is too open")


@pytest.mark.parametrize(
    ("uid", "gid", "service_gid", "ok"),
    [
        pytest.param(0, 999, 999, True, id="root-owned-service-group"),
        pytest.param(0, 0, 999, False, id="root-owned-root-group"),
        pytest.param(1000, 999, 999, False, id="user-owned-service-group"),
    ],
)
def test_judge_key_mode_0640(standard, now, uid, gid, service_gid, ok) -> None:  # type: ignore[no-untyped-def]
    problems = judge(standard.state(key_mode=0o640, uid=uid, gid=gid, service_gid=service_gid), now)
    if ok:
        assert problems == []
    else:
        assert error_files(problems) == {"node.key", "client.marc.key"}
        assert has(problems, "node.key", "0640 is too open")


def test_judge_missing_key(standard, now) -> None:  # type: ignore[no-untyped-def]
    del standard.files["node.key"]
    problems = judge(standard.state(), now)
    assert has(problems, "node.crt", "its key node.key is missing")
    assert error_files(problems) == {"node.crt"}


def test_judge_key_not_regular(standard, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["node.key"] = FileState("node.key", is_dir=True, target_is_regular=False)
    assert has(judge(standard.state(), now), "node.key", "not a regular file")


def test_judge_unparsable_key(standard, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["node.key"] = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    assert has(judge(standard.state(), now), "node.key", "does not parse")


def test_judge_unreadable_cert(standard, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["node.crt"] = FileState("node.crt", data=None, read_error="Permission denied")
    assert has(judge(standard.state(), now), "node.crt", "Permission denied")


def test_judge_missing_ca(standard, now) -> None:  # type: ignore[no-untyped-def]
    del standard.files["ca.crt"]
    problems = judge(standard.state(), now)
    assert has(problems, "ca.crt", "is missing")


def test_judge_split_ca_without_client_node(split_ca, now) -> None:  # type: ignore[no-untyped-def]
    del split_ca.files["client.node.crt"], split_ca.files["client.node.key"]
    problems = judge(split_ca.state(), now)
    assert has(problems, "client.node.crt", "47603")


def test_judge_split_ca_client_node_from_node_ca(split_ca, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    split_ca.put("client.node", pki.leaf("node", cas.root, ekus=[CLIENT]))
    problems = judge(split_ca.state(), now)
    assert error_files(problems) == {"client.node.crt"}
    assert has(problems, "client.node.crt", "does not chain")


def test_judge_expired_node(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("node", pki.leaf("node", cas.inter, dns=DNS, ips=IPS, not_before=now - 90 * DAY,
                                  not_after=now - DAY), cas.inter)
    problems = judge(standard.state(), now)
    assert error_files(problems) == {"node.crt"}
    assert has(problems, "node.crt", "certificate expired at")


def test_judge_not_yet_valid_node(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("node", pki.leaf("node", cas.inter, dns=DNS, ips=IPS, not_before=now + DAY,
                                  not_after=now + 90 * DAY), cas.inter)
    problems = judge(standard.state(), now)
    assert error_files(problems) == {"node.crt"}
    assert has(problems, "node.crt", "not valid before")


def test_judge_bad_tenant_id(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("client-tenant.abc", pki.leaf("abc", cas.root, ou="Tenants"))
    problems = judge(standard.state(), now)
    assert error_files(problems) == {"client-tenant.abc.crt"}
    assert has(problems, "client-tenant.abc.crt", "invalid tenant id 'abc'")


def test_judge_private_key_in_crt(standard, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["node.crt"] = standard.files["node.crt"] + standard.files["node.key"]  # type: ignore[operator]
    problems = judge(standard.state(), now)
    assert has(problems, "node.crt", "is of type PRIVATE KEY, not CERTIFICATE")


def test_judge_ca_not_a_ca(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["ca.crt"] = cas.root.cert_pem + pki.leaf("leafy", cas.root).cert_pem
    problems = judge(standard.state(), now)
    assert errors(problems) == [("ca.crt", "CN=leafy is not a CA certificate")]


def test_judge_client_cn_root(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("client.marc", pki.leaf("root", cas.inter, ekus=[CLIENT]), cas.inter)
    assert errors(judge(standard.state(), now)) == [("client.marc.crt", "CN is 'root', expected 'marc'")]


def test_judge_client_dns_san_root(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("client.marc", pki.leaf("marc", cas.inter, ekus=[CLIENT], dns=["root"]), cas.inter)
    problems = judge(standard.state(), now)
    assert errors(problems) == [("client.marc.crt", "DNS SANs root authenticate as other SQL users")]


def test_judge_client_crdb_uri(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("client.marc", pki.leaf("marc", cas.inter, ekus=[CLIENT], uris=["crdb://tenant/1/user/root"]),
                 cas.inter)
    assert has(judge(standard.state(), now), "client.marc.crt", "crdb:// URI SANs")


def test_judge_unknown_crt_is_only_a_warning(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.files["foo.crt"] = b"not even pem"
    standard.files["node.old.crt"] = standard.files["node.crt"]
    problems = judge(standard.state(), now)
    assert errors(problems) == []
    assert {p.file for p in problems} == {"foo.crt", "node.old.crt"}
    assert all(p.severity == "warning" for p in problems)
    assert all(str(p).startswith("warning: ") for p in problems)


def test_judge_node_without_node_principal(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("node", pki.leaf("db1.example.com", cas.inter, dns=DNS, ips=IPS), cas.inter)
    problems = judge(standard.state(), now)
    assert errors(problems) == [
        ("node.crt", "has no 'node' principal (CN or DNS SAN) and there is no client.node.crt")
    ]


def test_judge_node_principal_from_dns_san_is_enough(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("node", pki.leaf("db1.example.com", cas.inter, dns=DNS + ["node"], ips=IPS), cas.inter)
    assert judge(standard.state(), now) == []


def test_judge_split_node_expectation_missing_client_node(pki, cas, dir_state, now) -> None:  # type: ignore[no-untyped-def]
    d = Dir(dir_state)
    d.files["ca.crt"] = cas.root.cert_pem
    d.put("node", pki.leaf("node", cas.root, dns=DNS, ips=IPS))      # dual-purpose, so only the expectation fails
    assert judge(d.state(), now) == []
    problems = judge(d.state(), now, Expectation(Mode.SPLIT_NODE, HOSTS))
    assert errors(problems) == [("client.node.crt", "is missing (required in split-node mode)")]


def test_judge_node_lacks_configured_host(standard, now) -> None:  # type: ignore[no-untyped-def]
    expect = Expectation(Mode.STANDARD, HOSTS + ("db9.example.com", "10.0.0.9"))
    assert errors(judge(standard.state(), now, expect)) == [
        ("node.crt", "SANs lack configured hosts db9.example.com, 10.0.0.9")
    ]


def test_judge_expectation_standard_needs_cn_node(pki, cas, dir_state, now) -> None:  # type: ignore[no-untyped-def]
    d = Dir(dir_state)
    d.files["ca.crt"] = cas.root.cert_pem
    d.put("node", pki.leaf("db1.example.com", cas.root, dns=DNS + ["node"], ips=IPS))
    assert has(judge(d.state(), now, Expectation(Mode.STANDARD, HOSTS)), "node.crt", "standard mode needs CN=node")


def test_judge_expectation_required_files(standard, now) -> None:  # type: ignore[no-untyped-def]
    problems = judge(standard.state(), now, Expectation(Mode.SPLIT_CA, HOSTS, ui=True, users=("marc", "bob")))
    missing = {p.file for p in problems if "is missing (required in split-ca mode)" in p.message}
    assert missing == {"client.node.crt", "ca-client.crt", "ui.crt", "client.bob.crt"}


def test_judge_rotated_ca_bundle(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    # new CA first, old CA kept: leaves from either still verify
    standard.files["ca.crt"] = cas.other.cert_pem + cas.root.cert_pem
    standard.put("client.marc", pki.leaf("marc", cas.other, ekus=[CLIENT]))
    assert judge(standard.state(), now) == []


def test_judge_ui_checked_against_ca_ui(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("ui", pki.leaf("console.example.com", cas.other, dns=["console.example.com"], ekus=[SERVER]))
    # no ca-ui.crt: CockroachDB's own console client falls back to ca.crt, which did not sign ui.crt
    assert [(p.file, p.severity) for p in judge(standard.state(), now)] == [("ca-ui.crt", "warning")]
    standard.files["ca-ui.crt"] = cas.root.cert_pem
    assert has(judge(standard.state(), now), "ui.crt", "does not chain")
    standard.files["ca-ui.crt"] = cas.other.cert_pem
    assert judge(standard.state(), now) == []


def test_judge_ui_expired_without_ca_ui(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    standard.put("ui", pki.leaf("console.example.com", cas.other, dns=["console.example.com"],
                                not_before=now - 9 * DAY, not_after=now - DAY))
    assert has(judge(standard.state(), now), "ui.crt", "expired")


def test_judge_client_tenant_cert_from_tenant_ca(standard, pki, cas, now) -> None:  # type: ignore[no-untyped-def]
    # CockroachDB verifies client-tenant.<id>.crt against ca-client-tenant.crt (falling back to
    # ca-client.crt, then ca.crt); CockroachDB's own generator signs it with the tenant CA.
    tenant_ca = pki.ca("Tenant CA")
    standard.files["ca-client-tenant.crt"] = tenant_ca.cert_pem
    standard.put("client-tenant.5", pki.leaf("5", tenant_ca, ou="Tenants", dns=["localhost"]))
    problems = judge(standard.state(), now)
    # BUG (validate.py _judge_layout): tenant certs are checked against the client CA pool,
    # ignoring ca-client-tenant.crt, so a correctly issued tenant cert is reported as broken.
    assert errors(problems) == [], errors(problems)


def test_judge_tenant_signing_cert_is_self_signed(standard, now) -> None:  # type: ignore[no-untyped-def]
    # cockroach `GenerateTenantSigningCert`: self-signed ed25519, IsCA=false, KeyUsage digitalSignature, no EKU.
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenant 5 Token Signing Certificate")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - DAY).not_valid_after(now + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)
    )
    standard.files["tenant-signing.5.crt"] = cert.public_bytes(serialization.Encoding.PEM)
    standard.files["tenant-signing.5.key"] = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    problems = judge(standard.state(), now)
    # BUG (validate.py _judge_layout): tenant-signing certs fall into the "client CA pool" branch
    # and must chain to ca.crt, but CockroachDB makes them self-signed and never verifies a chain.
    assert errors(problems) == [], errors(problems)


def test_judge_split_ca_user_dir(pki, cas, dir_state, now) -> None:  # type: ignore[no-untyped-def]
    # Exactly what plan_user(Mode.SPLIT_CA, ...) writes: ca.crt from the *node* mount (to verify the
    # servers) and client.marc.crt from the client mount; ca-client.crt is deliberately not written.
    d = Dir(dir_state)
    d.files["ca.crt"] = cas.root.cert_pem
    d.put("client.marc", pki.leaf("marc", cas.client_root, ekus=[CLIENT]))
    problems = judge(d.state(), now)
    # BUG (validate.py _judge_layout): with no ca-client.crt the client pool falls back to ca.crt, so
    # the client leaf of a correct split-ca user dir is reported as "does not chain". The client never
    # verifies its own certificate; only the server does, against its ca-client.crt.
    assert errors(problems) == [], errors(problems)


def test_judge_problem_str() -> None:
    assert str(Problem("node.crt", "broken")) == "node.crt: broken"
    assert str(Problem("x.crt", "odd", "warning")) == "warning: x.crt: odd"


# --- key_mode_problem ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mode", "uid", "gid", "service_gid", "ok"),
    [
        pytest.param(0o600, 1000, 1000, 1000, True, id="0600"),
        pytest.param(0o400, 1000, 1000, 1000, True, id="0400"),
        pytest.param(0o700, 1000, 1000, 1000, True, id="0700-owner-bits-free"),
        pytest.param(0o100600, 1000, 1000, 1000, True, id="full-st-mode"),
        pytest.param(0o4600, 1000, 1000, 1000, True, id="setuid-ignored"),
        pytest.param(0o644, 1000, 1000, 1000, False, id="0644"),
        pytest.param(0o604, 1000, 1000, 1000, False, id="other-read"),
        pytest.param(0o640, 1000, 1000, 1000, False, id="0640-not-root"),
        pytest.param(0o640, 0, 1000, 1000, True, id="0640-root-service-group"),
        pytest.param(0o740, 0, 1000, 1000, True, id="0740-root-service-group"),
        pytest.param(0o440, 0, 1000, 1000, True, id="0440-root-service-group"),
        pytest.param(0o660, 0, 1000, 1000, False, id="0660-group-write"),
        pytest.param(0o650, 0, 1000, 1000, False, id="0650-group-exec"),
        pytest.param(0o644, 0, 1000, 1000, False, id="0644-root-service-group"),
        pytest.param(0o640, 0, 0, 1000, False, id="0640-root-root-group"),
        pytest.param(0o440, 0, 0, 0, True, id="0440-root-root-service-gid-0"),
    ],
)
def test_key_mode_problem(mode: int, uid: int, gid: int, service_gid: int, ok: bool) -> None:
    problem = key_mode_problem(mode, uid, gid, service_gid)
    if ok:
        assert problem is None
    else:
        assert problem is not None
        assert f"{mode & 0o777:04o}" in problem and "too open" in problem
