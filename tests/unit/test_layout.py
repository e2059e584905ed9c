"""layout: user-name validation, host splitting and the per-mode plans."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultpki.core.layout import (
    CA_CLIENT_FILE,
    CA_FILE,
    CertSpec,
    Eku,
    FileKind,
    Mode,
    PkiNames,
    TrustSpec,
    plan_node,
    plan_user,
    split_hosts,
    validate_username,
)
from vaultpki.errors import ConfigError, InputError

BOTH = frozenset({Eku.SERVER_AUTH, Eku.CLIENT_AUTH})
SERVER = frozenset({Eku.SERVER_AUTH})
CLIENT = frozenset({Eku.CLIENT_AUTH})


def names(
    *, client_mount: str | None = None, ui_mount: str | None = None, ui_role: str | None = "ui",
    mount: str = "pki-crdb",
) -> PkiNames:
    return PkiNames(
        mount=mount, client_mount=client_mount, node_role="node", client_node_role="client-node",
        user_role="user", ui_mount=ui_mount, ui_role=ui_role,
    )


def by_stem(certs: tuple[CertSpec, ...]) -> dict[str, CertSpec]:
    result = {c.stem: c for c in certs}
    assert len(result) == len(certs), "duplicate stems in a plan"
    return result


# --- validate_username -------------------------------------------------------

@pytest.mark.parametrize(
    "name",
    [
        pytest.param("marc", id="plain"),
        pytest.param("root", id="root"),
        pytest.param("roach_user", id="underscore"),
        pytest.param("a.b-c", id="dot-dash"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("0day", id="leading-digit"),
        pytest.param("a" * 63, id="63-bytes"),
        pytest.param("x.", id="trailing-dot"),
        pytest.param("x-", id="trailing-dash"),
        pytest.param("nodes", id="node-prefix"),
    ],
)
def test_username_accepted(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("../x", id="dotdot-slash"),
        pytest.param("/", id="slash"),
        pytest.param("/etc/passwd", id="abs-path"),
        pytest.param("/../../x", id="escape"),
        pytest.param("a/b", id="inner-slash"),
        pytest.param("Marc", id="uppercase"),
        pytest.param("-x", id="leading-dash"),
        pytest.param(".x", id="leading-dot"),
        pytest.param("..", id="dotdot"),
        pytest.param("a b", id="space"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("node", id="node"),
        pytest.param("a" * 64, id="64-bytes"),
        pytest.param("\u00e9" * 32, id="64-bytes-32-chars"),
        pytest.param("e\u0301", id="decomposed-e-acute"),
        pytest.param("\uff2d", id="fullwidth-uppercase-M"),
        pytest.param("\u00c9", id="uppercase-e-acute"),
        pytest.param("\u03a3", id="uppercase-sigma"),
        pytest.param("\u01c5", id="titlecase-dz"),
        pytest.param("\u0661", id="arabic-indic-digit"),
        pytest.param("a:b", id="colon"),
        pytest.param("a*", id="glob"),
        # CockroachDB accepts these (\p{Ll}); vaultpki does not: Vault would add a punycode DNS SAN.
        pytest.param("\u00e9", id="e-acute-nfc"),
        pytest.param("\uff4d\uff41\uff52\uff43", id="fullwidth-lowercase"),
        pytest.param("m\u0430rc", id="cyrillic-a"),
        pytest.param("r\u03bf\u03bft", id="greek-omicron"),
    ],
)
def test_username_refused(name: str) -> None:
    with pytest.raises(InputError) as info:
        validate_username(name)
    assert info.value.exit_code == 2
    assert str(info.value)


def test_username_refusal_message_is_ascii_safe() -> None:
    with pytest.raises(InputError) as info:
        validate_username("a\u202eb")   # right-to-left override must not reach a terminal raw
    assert "\u202e" not in str(info.value)
    assert "\\u202e" in str(info.value)


@settings(max_examples=500, deadline=None, database=None)
@given(st.one_of(st.text(), st.text(st.sampled_from(list("ab_-./0\u00e9E \u0301")), max_size=70)))
def test_property_accepted_names_are_safe_path_parts(name: str) -> None:
    try:
        result = validate_username(name)
    except InputError:
        return
    assert result == name
    assert name.isascii()
    assert "/" not in name
    assert "\x00" not in name
    assert not name.startswith((".", "-"))
    assert 0 < len(name.encode("utf-8")) <= 63
    assert unicodedata.normalize("NFC", name) == name
    assert not any(unicodedata.category(c) in ("Lu", "Lt") for c in name)
    assert name != "node"


# --- split_hosts ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("hosts", "dns", "ips"),
    [
        pytest.param([], (), (), id="empty"),
        pytest.param(["db1.example.com", "10.0.0.1"], ("db1.example.com",), ("10.0.0.1",), id="mixed"),
        pytest.param(["a", "b", "a"], ("a", "b"), (), id="dns-dedup"),
        pytest.param(["10.0.0.1", "10.0.0.1"], (), ("10.0.0.1",), id="ip-dedup"),
        pytest.param(["::1", "0:0::1", "127.0.0.1"], (), ("::1", "127.0.0.1"), id="ipv6-normalised-dedup"),
        pytest.param(["DB1.Example.COM", "db1.example.com."], ("db1.example.com",), (), id="case-and-root-dot"),
        pytest.param(["localhost", "127.0.0.1", "node1"], ("localhost", "node1"), ("127.0.0.1",), id="order-kept"),
    ],
)
def test_split_hosts(hosts: list[str], dns: tuple[str, ...], ips: tuple[str, ...]) -> None:
    assert split_hosts(hosts) == (dns, ips)


# --- plan_node -----------------------------------------------------------------

HOSTS = ["db1.example.com", "localhost", "10.0.0.1", "127.0.0.1"]


def test_plan_node_standard() -> None:
    plan = plan_node(Mode.STANDARD, names(), HOSTS, [])
    assert plan.trusts == (TrustSpec("pki-crdb", CA_FILE),)
    assert plan.ca_files == plan.trusts
    certs = by_stem(plan.certs)
    assert set(certs) == {"node"}
    node = certs["node"]
    assert (node.cert_file, node.key_file) == ("node.crt", "node.key")
    assert node.kind is FileKind.NODE
    assert node.common_name == "node"
    assert node.ekus == BOTH
    assert node.dns_sans == ("db1.example.com", "localhost")
    assert node.ip_sans == ("10.0.0.1", "127.0.0.1")
    assert (node.mount, node.role) == ("pki-crdb", "node")
    assert node.trust == TrustSpec("pki-crdb", CA_FILE)
    assert node.send_common_name is False


def test_plan_node_split_node() -> None:
    plan = plan_node(Mode.SPLIT_NODE, names(), HOSTS, [])
    assert plan.trusts == (TrustSpec("pki-crdb", CA_FILE),)
    certs = by_stem(plan.certs)
    assert set(certs) == {"node", "client.node"}
    node, client_node = certs["node"], certs["client.node"]
    assert node.common_name == "db1.example.com"      # first DNS host, not "node"
    assert node.ekus == SERVER
    assert node.dns_sans == ("db1.example.com", "localhost")
    assert node.ip_sans == ("10.0.0.1", "127.0.0.1")
    assert client_node.cert_file == "client.node.crt"
    assert client_node.key_file == "client.node.key"
    assert client_node.kind is FileKind.CLIENT_NODE
    assert client_node.common_name == "node"
    assert client_node.ekus == CLIENT
    assert (client_node.dns_sans, client_node.ip_sans) == ((), ())
    assert (client_node.mount, client_node.role) == ("pki-crdb", "client-node")
    assert client_node.trust == TrustSpec("pki-crdb", CA_FILE)


def test_plan_node_split_node_ip_only_uses_first_ip_as_cn() -> None:
    plan = plan_node(Mode.SPLIT_NODE, names(), ["10.0.0.9", "10.0.0.8"], [])
    assert by_stem(plan.certs)["node"].common_name == "10.0.0.9"


def test_plan_node_split_ca() -> None:
    plan = plan_node(Mode.SPLIT_CA, names(client_mount="pki-crdb-client"), HOSTS, [])
    assert plan.trusts == (TrustSpec("pki-crdb", CA_FILE), TrustSpec("pki-crdb-client", CA_CLIENT_FILE))
    assert [t.file for t in plan.ca_files] == ["ca.crt", "ca-client.crt"]
    certs = by_stem(plan.certs)
    assert set(certs) == {"node", "client.node"}
    node, client_node = certs["node"], certs["client.node"]
    assert node.mount == "pki-crdb"
    assert node.trust == TrustSpec("pki-crdb", CA_FILE)
    assert node.ekus == SERVER
    # peers verify client.node.crt against ca-client.crt (cockroachdb/cockroach#47603)
    assert client_node.mount == "pki-crdb-client"
    assert client_node.trust == TrustSpec("pki-crdb-client", CA_CLIENT_FILE)
    assert client_node.common_name == "node"
    assert client_node.ekus == CLIENT


@pytest.mark.parametrize("mode", [pytest.param(m, id=m.value) for m in Mode])
def test_plan_node_adds_client_certs_for_node_users(mode: Mode) -> None:
    plan = plan_node(mode, names(client_mount="pki-crdb-client"), HOSTS, [], ["root", "marc", "root"])
    certs = by_stem(plan.certs)
    client_trust = plan.trusts[-1]
    assert client_trust.file == (CA_CLIENT_FILE if mode is Mode.SPLIT_CA else CA_FILE)
    for user, role in (("root", "root"), ("marc", "user")):
        spec = certs[f"client.{user}"]
        assert (spec.common_name, spec.role, spec.kind, spec.ekus) == (user, role, FileKind.CLIENT, CLIENT)
        assert spec.trust == client_trust and spec.mount == client_trust.mount and spec.send_common_name
    assert [c.stem for c in plan.certs].count("client.root") == 1
    assert plan.trusts == plan_node(mode, names(client_mount="pki-crdb-client"), HOSTS, []).trusts


@pytest.mark.parametrize("bad", ["node", "../x", "Marc", ""])
def test_plan_node_refuses_a_bad_node_user(bad: str) -> None:
    with pytest.raises(InputError):
        plan_node(Mode.STANDARD, names(), HOSTS, [], [bad])


@pytest.mark.parametrize("mode", [pytest.param(m, id=m.value) for m in Mode])
def test_plan_node_adds_ui_when_ui_mount_set(mode: Mode) -> None:
    pki = names(client_mount="pki-client", ui_mount="pki-ui", ui_role="console")
    plan = plan_node(mode, pki, HOSTS, ["console.example.com", "192.0.2.7", "console.example.com"])
    certs = by_stem(plan.certs)
    ui = certs["ui"]
    assert (ui.cert_file, ui.key_file) == ("ui.crt", "ui.key")
    assert ui.kind is FileKind.UI
    assert (ui.mount, ui.role) == ("pki-ui", "console")
    assert ui.common_name == "console.example.com"
    assert ui.dns_sans == ("console.example.com",)
    assert ui.ip_sans == ("192.0.2.7",)
    assert ui.ekus == SERVER
    assert ui.trust == TrustSpec("pki-ui", "ca-ui.crt")
    assert TrustSpec("pki-ui", "ca-ui.crt") in plan.ca_files   # CockroachDB's own console client trusts ca-ui.crt


@pytest.mark.parametrize("mode", [pytest.param(m, id=m.value) for m in Mode])
def test_plan_node_without_ui_mount_has_no_ui(mode: Mode) -> None:
    plan = plan_node(mode, names(client_mount="pki-client"), HOSTS, ["ignored.example.com"])
    assert "ui" not in by_stem(plan.certs)


@pytest.mark.parametrize(
    ("mode", "pki", "hosts", "ui_hosts", "fragment"),
    [
        pytest.param(Mode.STANDARD, names(), [], [], "node.hosts", id="empty-hosts"),
        pytest.param(Mode.SPLIT_NODE, names(), ["."], [], "node.hosts", id="only-root-dot"),
        pytest.param(Mode.SPLIT_CA, names(), HOSTS, [], "client_mount", id="split-ca-no-client-mount"),
        pytest.param(Mode.SPLIT_CA, names(client_mount="pki-crdb"), HOSTS, [], "differ",
                     id="client-mount-equals-mount"),
        pytest.param(Mode.STANDARD, names(ui_mount="pki-ui"), HOSTS, [], "ui.hosts", id="ui-without-hosts"),
        pytest.param(Mode.STANDARD, names(ui_mount="pki-ui", ui_role=None), HOSTS, ["ui.example.com"], "ui_role",
                     id="ui-without-role"),
    ],
)
def test_plan_node_errors(mode: Mode, pki: PkiNames, hosts: list[str], ui_hosts: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_node(mode, pki, hosts, ui_hosts)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


# --- plan_user -----------------------------------------------------------------

@pytest.mark.parametrize("mode", [pytest.param(Mode.STANDARD, id="standard"), pytest.param(Mode.SPLIT_NODE, id="split-node")])
def test_plan_user_single_ca(mode: Mode) -> None:
    plan = plan_user(mode, names(), "marc")
    assert plan.trusts == (TrustSpec("pki-crdb", CA_FILE),)
    (cert,) = plan.certs
    assert (cert.cert_file, cert.key_file) == ("client.marc.crt", "client.marc.key")
    assert cert.kind is FileKind.CLIENT
    assert (cert.mount, cert.role) == ("pki-crdb", "user")
    assert cert.common_name == "marc"
    assert (cert.dns_sans, cert.ip_sans) == ((), ())
    assert cert.ekus == CLIENT
    assert cert.trust == TrustSpec("pki-crdb", CA_FILE)
    assert cert.send_common_name is True


def test_plan_user_split_ca() -> None:
    plan = plan_user(Mode.SPLIT_CA, names(client_mount="pki-crdb-client"), "marc")
    (cert,) = plan.certs
    assert cert.mount == "pki-crdb-client"               # leaf from the client CA
    assert cert.trust == TrustSpec("pki-crdb-client", None)
    # the client's ca.crt verifies the *server*, so it comes from the node mount
    assert plan.ca_files == (TrustSpec("pki-crdb", CA_FILE),)
    assert all(t.file != CA_CLIENT_FILE for t in plan.trusts)
    assert TrustSpec("pki-crdb-client", None) in plan.trusts


def test_plan_user_validates_name_before_anything() -> None:
    with pytest.raises(InputError):
        plan_user(Mode.STANDARD, names(), "../../etc/x")
    with pytest.raises(InputError):
        plan_user(Mode.STANDARD, names(), "node")


def test_plan_user_split_ca_without_client_mount() -> None:
    with pytest.raises(ConfigError, match="client_mount"):
        plan_user(Mode.SPLIT_CA, names(), "marc")
