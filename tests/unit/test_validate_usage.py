"""What CockroachDB requires of each file's extended key usages and identity, and no more: vaultpki refuses
what CockroachDB would refuse or what would grant another identity, and only warns about what is merely
unusual (issue 19, section 2).

- check_issued() (issuing, and the daemon's "is it still good?") returns errors only: a warning must never
  stop a renewal;
- judge() (verify, status) adds the warnings.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vaultpki.core.layout import CertSpec, Mode, PkiNames, plan_node, plan_user
from vaultpki.core.report import status_report, verify_report
from vaultpki.core.snapshot import DirState, judge, judge_leaf
from vaultpki.core.validate import Problem, check_issued

from .conftest import CLIENT, NOW, SERVER, CaSet, Issued, Pki, make_dir_state

ANY = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING
HOSTS = ("db1.example.com", "localhost", "127.0.0.1")
DNS = ["db1.example.com", "localhost"]
IPS = ["127.0.0.1"]
PKI_NAMES = PkiNames(mount="pki", client_mount="pki-client", node_role="node", client_node_role="client-node",
                     user_role="user", ui_mount="pki-ui", ui_role="ui")

Ekus = list[x509.ObjectIdentifier] | None


def spec(stem: str, mode: Mode) -> CertSpec:
    if stem.startswith("client.") and stem != "client.node":
        return plan_user(mode, PKI_NAMES, stem.split(".", 1)[1]).certs[0]
    return next(c for c in plan_node(mode, PKI_NAMES, HOSTS, ["console.example.com"]).certs if c.stem == stem)


def leaf_for(pki: Pki, cas: CaSet, stem: str, mode: Mode, ekus: Ekus) -> Issued:
    """A leaf exactly as the spec asks, but with ``ekus``."""
    s = spec(stem, mode)
    return pki.leaf(s.common_name, cas.root, dns=[*s.dns_sans], ips=[*s.ip_sans], ekus=ekus)


def messages(problems: list[Problem], severity: str) -> list[str]:
    return [f"{p.file}: {p.message}" for p in problems if p.severity == severity]


# --- check_issued: what is refused, what is not ----------------------------------------------------

@pytest.mark.parametrize(("stem", "mode", "ekus"), [
    # A Vault role's default (server_flag and client_flag both true), CockroachDB's own `cert create-node`,
    # and its Vault tutorial: refused before ("expected [serverAuth]"), so every issue and renewal failed.
    pytest.param("node", Mode.SPLIT_NODE, [SERVER, CLIENT], id="split-node-node-both-usages"),
    pytest.param("node", Mode.SPLIT_CA, [SERVER, CLIENT], id="split-ca-node-both-usages"),
    pytest.param("client.node", Mode.SPLIT_NODE, [CLIENT, SERVER], id="client-node-both-usages"),
    pytest.param("ui", Mode.STANDARD, [SERVER, CLIENT], id="ui-both-usages"),
    pytest.param("client.marc", Mode.STANDARD, [CLIENT, CODE_SIGNING], id="user-extra-code-signing"),
    pytest.param("node", Mode.SPLIT_NODE, None, id="node-without-eku-extension"),
    pytest.param("node", Mode.STANDARD, [ANY], id="node-any-eku"),
])
def test_check_issued_accepts_what_cockroachdb_accepts(pki: Pki, cas: CaSet, stem: str, mode: Mode, ekus: Ekus) -> None:
    leaf = leaf_for(pki, cas, stem, mode, ekus)
    assert check_issued(spec(stem, mode), [leaf.cert], leaf.key, [cas.root.cert], NOW) == []


@pytest.mark.parametrize(("stem", "mode", "ekus", "fragment"), [
    pytest.param("node", Mode.STANDARD, [SERVER], "extended key usage is [serverAuth], lacks clientAuth",
                 id="standard-node-is-also-the-client-certificate"),
    pytest.param("node", Mode.SPLIT_NODE, [CLIENT], "lacks serverAuth", id="split-node-node-without-server-auth"),
    pytest.param("client.node", Mode.SPLIT_NODE, [SERVER], "lacks clientAuth", id="client-node-without-client-auth"),
    pytest.param("client.marc", Mode.STANDARD, [CLIENT, SERVER], "serverAuth would let this user's key serve TLS",
                 id="user-with-server-auth"),
    pytest.param("client.marc", Mode.SPLIT_CA, [ANY], "allows anyExtendedKeyUsage", id="user-any-eku"),
    pytest.param("client.marc", Mode.STANDARD, None, "has no extended key usage extension", id="user-without-eku"),
])
def test_check_issued_refuses_what_grants_more(pki: Pki, cas: CaSet, stem: str, mode: Mode, ekus: Ekus,
                                               fragment: str) -> None:
    leaf = leaf_for(pki, cas, stem, mode, ekus)
    problems = check_issued(spec(stem, mode), [leaf.cert], leaf.key, [cas.root.cert], NOW)
    assert any(fragment in m for m in messages(problems, "error")), problems


def test_the_daemon_does_not_renew_for_an_extra_usage(pki: Pki, cas: CaSet) -> None:
    """judge_leaf (sync: is the file still what the configuration asks for?) shares check_issued's errors."""
    leaf = leaf_for(pki, cas, "node", Mode.SPLIT_NODE, [SERVER, CLIENT])
    state = make_dir_state({"node.crt": leaf.cert_pem, "node.key": leaf.key_pem})
    assert judge_leaf(spec("node", Mode.SPLIT_NODE), state, [cas.root.cert], NOW).problem is None


# --- judge: the same, plus the warnings ------------------------------------------------------------

def split_node_dir(pki: Pki, cas: CaSet, node_ekus: tuple[x509.ObjectIdentifier, ...] = (SERVER,),
                   client_node: Issued | None = None, user: Issued | None = None) -> DirState:
    """A split-node dir: ca.crt, node.crt (``node_ekus``), client.node.crt, and client.marc.crt when given."""
    node = pki.leaf("db1.example.com", cas.root, dns=DNS, ips=IPS, ekus=node_ekus)
    files = {"ca.crt": cas.root.cert_pem, "node.crt": node.cert_pem, "node.key": node.key_pem}
    client_node = client_node or pki.leaf("node", cas.root, dns=["node"], ekus=[CLIENT])
    files |= {"client.node.crt": client_node.cert_pem, "client.node.key": client_node.key_pem}
    if user is not None:
        files |= {"client.marc.crt": user.cert_pem, "client.marc.key": user.key_pem}
    return make_dir_state(files)


def test_verify_warns_about_node_crt_with_client_auth_in_split_node(pki: Pki, cas: CaSet) -> None:
    state = split_node_dir(pki, cas, (SERVER, CLIENT))
    problems = judge(state, NOW)
    assert messages(problems, "error") == []
    assert messages(problems, "warning") == [
        "node.crt: extended key usage also allows clientAuth, which this file does not need (unusual, not an error; "
        "a Vault role adds it unless client_flag = false)"]
    assert verify_report(state, problems).ok
    (row,) = [r for r in status_report(state, problems, NOW, {}).files if r.file == "node.crt"]
    assert any("also allows clientAuth" in m for m in row.problems)


def test_verify_is_silent_about_a_dual_purpose_node_crt(pki: Pki, cas: CaSet) -> None:
    """Standard mode: node.crt is also the client certificate, so clientAuth is needed, not extra."""
    node = pki.leaf("node", cas.root, dns=["node", *DNS], ips=IPS, ekus=[SERVER, CLIENT])
    state = make_dir_state({"ca.crt": cas.root.cert_pem, "node.crt": node.cert_pem, "node.key": node.key_pem})
    assert judge(state, NOW) == []


@pytest.mark.parametrize(("user_ekus", "severity", "fragment"), [
    pytest.param([CLIENT, SERVER], "error", "serverAuth would let this user's key serve TLS", id="server-auth"),
    pytest.param([CLIENT, CODE_SIGNING], "warning", "also has 1.3.6.1.5.5.7.3.3, which CockroachDB does not use",
                 id="code-signing"),
    pytest.param(None, "error", "has no extended key usage extension", id="no-eku"),
])
def test_verify_judges_a_users_extra_usages(pki: Pki, cas: CaSet, user_ekus: Ekus, severity: str, fragment: str) -> None:
    user = pki.leaf("marc", cas.root, dns=["marc"], ekus=user_ekus)
    problems = judge(split_node_dir(pki, cas, user=user), NOW)
    assert [m for m in messages(problems, severity) if m.startswith("client.marc.crt")], problems
    assert any(fragment in m for m in messages(problems, severity)), problems


def test_verify_warns_about_client_node_with_server_auth(pki: Pki, cas: CaSet) -> None:
    client_node = pki.leaf("node", cas.root, dns=["node"], ekus=[CLIENT, SERVER])
    problems = judge(split_node_dir(pki, cas, client_node=client_node), NOW)
    assert messages(problems, "error") == []
    assert messages(problems, "warning") == [
        "client.node.crt: extended key usage also allows serverAuth, which this file does not need (unusual, not an "
        "error; a Vault role adds it unless server_flag = false)"]


# --- identity in a DNS SAN rather than the CN -------------------------------------------------------
# CockroachDB logs a client certificate in as its CN and as each DNS SAN (pkg/security/auth.go,
# GetCertificateUserScope; pkg/rpc/auth.go checkRootOrNodeInScope for 'node').

def test_a_user_named_only_in_a_dns_san_is_a_warning(pki: Pki, cas: CaSet) -> None:
    user = pki.leaf(None, cas.root, dns=["marc"], ekus=[CLIENT])
    problems = judge(split_node_dir(pki, cas, user=user), NOW)
    assert messages(problems, "error") == []
    assert messages(problems, "warning") == [
        "client.marc.crt: has no CN: CockroachDB takes the user 'marc' from its DNS SAN, but its docs and CN-mapping "
        "tools expect CN=marc"]


def test_node_named_only_in_a_dns_san_is_a_warning(pki: Pki, cas: CaSet) -> None:
    client_node = pki.leaf(None, cas.root, dns=["node"], ekus=[CLIENT])
    problems = judge(split_node_dir(pki, cas, client_node=client_node), NOW)
    assert messages(problems, "error") == []
    assert [m for m in messages(problems, "warning") if "has no CN" in m] == [
        "client.node.crt: has no CN: CockroachDB takes the user 'node' from its DNS SAN, but its docs and CN-mapping "
        "tools expect CN=node"]


@pytest.mark.parametrize(("cn", "sans", "fragment"), [
    pytest.param("root", ["marc"], "CN is 'root', expected 'marc'", id="cn-names-another-user"),
    pytest.param(None, ["marc", "root"], "DNS SANs root authenticate as other SQL users", id="second-dns-san"),
    pytest.param("marc", ["node"], "DNS SANs node authenticate as other SQL users", id="node-on-a-user-certificate"),
    pytest.param(None, [], "CN is None, expected 'marc'", id="no-identity-at-all"),
])
def test_another_identity_is_an_error(pki: Pki, cas: CaSet, cn: str | None, sans: list[str], fragment: str) -> None:
    user = pki.leaf(cn, cas.root, dns=sans, ekus=[CLIENT])
    problems = judge(split_node_dir(pki, cas, user=user), NOW)
    assert any(m.startswith("client.marc.crt") and fragment in m for m in messages(problems, "error")), problems
