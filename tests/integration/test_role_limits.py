"""What each PKI role and policy lets a stolen token do, against a real OpenBao (issue 16, §3, §4, §7).

Each layout is provisioned on a server of its own exactly as ``vaultpki/provision.py`` provisions it
(``tests/terraform/test_module.py`` proves the Terraform module computes the same role arguments). The
attacker holds one role's legitimate token (a node's AppRole login, an operator's, a user's) and calls
OpenBao directly with hvac: a stolen token is not vaultpki, so nothing here goes through vaultpki's checks
unless the test says so.

Where the server can express a limit, the request is refused (400 from the role, 403 from the policy).
Where it cannot, the test shows the server issuing, and vaultpki's own check refusing that very
certificate or name: there vaultpki is the guard, and the docs say so.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames, plan_node, validate_username
from vaultpki.core.validate import check_issued
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import Provisioned, ProvisionSpec, load_roles, provision
from vaultpki.errors import InputError

from .conftest import run_cli, toml_dump

pytestmark = pytest.mark.integration

# n1: names and IPs; n3: names only (no IP); n4: an IP only.
NODES = {
    "n1": ("n1.db.internal", "localhost", "10.0.0.1", "fd00::1"),
    "n3": ("n3.db.internal", "localhost"),
    "n4": ("10.0.0.4",),
}
UI_WITHOUT_IP = ("console.db.internal",)
UI_WITH_IP = ("console.db.internal", "10.9.0.1")
# Addresses no role here may ever sign for a node or the UI that does not own them.
FOREIGN_IPS = ("10.0.0.1", "10.0.0.4", "8.8.8.8", "::1", "127.0.0.1", "fd00::1")


@dataclass
class World:
    """One layout on its own OpenBao, with a legitimate token for every actor."""

    mode: Mode
    server: DevServer
    admin: hvac.Client
    pki: PkiNames
    ui_hosts: tuple[str, ...]
    provisioned: Provisioned
    tokens: dict[str, hvac.Client]

    def node_path(self, node: str) -> str:
        return f"{self.pki.mount}/sign/{self.pki.node_role}-{node}"

    @property
    def ui_path(self) -> str:
        return f"{self.pki.ui_mount}/sign/{self.pki.ui_role}"

    def role(self, path: str) -> dict[str, Any]:
        """The role behind a sign path, as the server holds it."""
        mount, _, role = path.split("/", 2)
        return dict(self.admin.read(f"{mount}/roles/{role}")["data"])


def _client(server: DevServer, token: str) -> hvac.Client:
    return hvac.Client(url=server.addr, token=token)


def _make_world(mode: Mode, ui_hosts: tuple[str, ...]) -> Iterator[World]:
    with DevServer() as server:
        admin = hvac.Client(url=server.addr, token=server.root_token)
        pki = PkiNames(mount="rl-crdb", client_mount=None, node_role="node" if mode is Mode.STANDARD else "node-server",
                       client_node_role="client-node", user_role="user", ui_mount="rl-web", ui_role="ui")
        done = provision(admin, server.addr, ProvisionSpec(
            mode=mode, pki=pki, node_hosts=(), ui_hosts=ui_hosts, root_mount="rl-root", nodes=NODES, access=True))
        tokens: dict[str, hvac.Client] = {}
        for node in NODES:
            role_id = admin.read(f"auth/approle/role/{node}/role-id")["data"]["role_id"]
            secret_id = admin.write_data(f"auth/approle/role/{node}/secret-id", data={})["data"]["secret_id"]
            login = admin.write_data("auth/approle/login", data={"role_id": role_id, "secret_id": secret_id})
            tokens[node] = _client(server, login["auth"]["client_token"])
        for actor, policy in {"operator": "crdb-operator", "ui": "crdb-ui"}.items():
            made = admin.auth.token.create(policies=[policy], no_default_policy=True, ttl="1h")
            tokens[actor] = _client(server, made["auth"]["client_token"])
        admin.write_data("auth/userpass/users/marc", data={"password": "marc-pw", "token_policies": "crdb-user-self"})
        login = admin.write_data("auth/userpass/login/marc", data={"password": "marc-pw"})
        tokens["marc"] = _client(server, login["auth"]["client_token"])
        yield World(mode, server, admin, pki, ui_hosts, done, tokens)


@pytest.fixture(scope="module")
def standard() -> Iterator[World]:
    """Standard layout (node-<name> roles, CN=node), a UI whose hosts hold no IP."""
    yield from _make_world(Mode.STANDARD, UI_WITHOUT_IP)


@pytest.fixture(scope="module")
def split() -> Iterator[World]:
    """Split-node layout (node-server-<name> roles), a UI whose hosts hold an IP."""
    yield from _make_world(Mode.SPLIT_NODE, UI_WITH_IP)


@pytest.fixture(params=[Mode.STANDARD, Mode.SPLIT_NODE], ids=["standard", "split-node"])
def world(request: pytest.FixtureRequest) -> World:
    name = "standard" if request.param is Mode.STANDARD else "split"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


# --- requests, as an attacker makes them ----------------------------------------------------------------

def make_csr(cn: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
             emails: tuple[str, ...] = ()) -> tuple[crypto.PrivateKey, str]:
    """A CSR with whatever names the attacker likes (e-mail SANs included), and its key."""
    key = crypto.generate_key(crypto.KeyType.EC, 256)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.RFC822Name(e) for e in emails]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Outcome:
    status: str                                  # "issued", "400" (the role refused), "403" (the policy refused)
    response: dict[str, Any] | None = None
    message: str = ""

    @property
    def leaf(self) -> x509.Certificate:
        assert self.response is not None, self
        return crypto.load_certs(self.response["data"]["certificate"].encode())[0]

    @property
    def info(self) -> crypto.CertInfo:
        return crypto.describe(self.leaf)


def sign(client: hvac.Client, path: str, **data: Any) -> Outcome:
    try:
        response = client.write_data(path, data=data)
    except hvac.exceptions.Forbidden as exc:
        return Outcome("403", message=str(exc))
    except hvac.exceptions.InvalidRequest as exc:
        return Outcome("400", message=str(exc))
    return Outcome("issued", dict(response))


def vaultpki_verdict(world: World, kind: str, outcome: Outcome, key: crypto.PrivateKey) -> list[str]:
    """What vaultpki's own check (validate.check_issued) says of a certificate the server issued."""
    plan = plan_node(world.mode, world.pki, NODES["n1"], world.ui_hosts)
    spec = next(c for c in plan.certs if c.stem == kind)
    assert outcome.response is not None
    chain = [outcome.leaf, *crypto.load_certs("\n".join(outcome.response["data"]["ca_chain"]).encode())]
    anchors = crypto.load_certs(outcome.response["data"]["issuing_ca"].encode())
    now = dt.datetime.now(dt.UTC)
    return [p.message for p in check_issued(spec, chain, key, anchors, now)]


# --- §3: no IP in a host list means no IP SAN; IPs in it mean those IPs only ------------------------------

def _own_names(world: World, node: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(CN, DNS SANs, IP SANs) of the certificate vaultpki asks for on ``node``'s behalf."""
    spec = next(c for c in plan_node(world.mode, world.pki, NODES[node], world.ui_hosts).certs if c.stem == "node")
    return spec.common_name, spec.dns_sans, spec.ip_sans


def test_node_role_without_ip_hosts_signs_no_ip_san(world: World) -> None:
    """n3's hosts hold no IP: its own token gets no IP SAN at all (today: n1's address, 8.8.8.8, ::1)."""
    path = world.node_path("n3")
    assert world.role(path)["allow_ip_sans"] is False
    cn, dns, _ = _own_names(world, "n3")
    for ip in FOREIGN_IPS:
        outcome = sign(world.tokens["n3"], path, csr=make_csr(cn, dns, (ip,))[1])
        assert outcome.status == "400", (ip, outcome)
    own = sign(world.tokens["n3"], path, csr=make_csr(cn, dns)[1])
    assert own.status == "issued" and own.info.ip_sans == ()


def test_node_role_with_ip_hosts_signs_those_ips_only(world: World) -> None:
    _signs_own_ips_only(world, "n1")


def test_ip_only_node_role_signs_its_ip_only(standard: World) -> None:
    # (Standard layout only: split layouts make an IP-only node's CN its IP, which a node-server role,
    # allowing names, does not sign.)
    _signs_own_ips_only(standard, "n4")


def _signs_own_ips_only(world: World, node: str) -> None:
    path = world.node_path(node)
    cn, dns, ips = _own_names(world, node)
    assert world.role(path)["allow_ip_sans"] is True
    assert sorted(world.role(path)["allowed_ip_sans_cidr"]) == sorted(
        f"{ip}/{128 if ':' in ip else 32}" for ip in ips)
    own = sign(world.tokens[node], path, csr=make_csr(cn, dns, ips)[1])
    assert own.status == "issued", own
    assert set(own.info.ip_sans) == set(ips)
    for ip in set(FOREIGN_IPS) - set(ips):
        outcome = sign(world.tokens[node], path, csr=make_csr(cn, dns, (*ips, ip))[1])
        assert outcome.status == "400", (ip, outcome)


def test_ui_role_without_ip_hosts_signs_no_ip_san(standard: World) -> None:
    path = standard.ui_path
    assert standard.role(path)["allow_ip_sans"] is False
    for ip in FOREIGN_IPS + ("10.9.0.1",):
        outcome = sign(standard.tokens["ui"], path, csr=make_csr("console.db.internal", UI_WITHOUT_IP, (ip,))[1])
        assert outcome.status == "400", (ip, outcome)
    own = sign(standard.tokens["ui"], path, csr=make_csr("console.db.internal", UI_WITHOUT_IP)[1])
    assert own.status == "issued" and own.info.ip_sans == ()


def test_ui_role_with_ip_hosts_signs_those_ips_only(split: World) -> None:
    path = split.ui_path
    assert split.role(path)["allow_ip_sans"] is True and split.role(path)["allowed_ip_sans_cidr"] == ["10.9.0.1/32"]
    own = sign(split.tokens["ui"], path, csr=make_csr("console.db.internal", UI_WITH_IP[:1], ("10.9.0.1",))[1])
    assert own.status == "issued" and own.info.ip_sans == ("10.9.0.1",)
    for ip in FOREIGN_IPS:
        outcome = sign(split.tokens["ui"], path, csr=make_csr("console.db.internal", UI_WITH_IP[:1], (ip,))[1])
        assert outcome.status == "400", (ip, outcome)


@pytest.mark.parametrize("role", ["client-node", "user", "root", "user-self"])
def test_client_roles_allow_no_ip_san_at_all(split: World, role: str) -> None:
    assert split.role(f"{split.pki.mount}/sign/{role}")["allow_ip_sans"] is False


# --- §4: what the server cannot express, and vaultpki refusing it -------------------------------------------

def test_email_sans_are_signed_by_node_and_ui_roles_and_refused_by_vaultpki(world: World) -> None:
    """Vault checks an e-mail SAN's domain against allowed_domains (and localhost), and has no role
    field to forbid e-mail SANs from the CSR: root@node and root@localhost are signed. vaultpki
    refuses such a certificate."""
    cn, dns, ips = _own_names(world, "n1")
    key, request = make_csr(cn, dns, ips, ("root@node" if world.mode is Mode.STANDARD else "root@localhost",
                                           "root@localhost"))
    outcome = sign(world.tokens["n1"], world.node_path("n1"), csr=request)
    assert outcome.status == "issued", outcome
    assert outcome.info.other_sans
    problems = vaultpki_verdict(world, "node", outcome, key)
    assert any("unexpected SANs" in p and "root@localhost" in p for p in problems), problems

    ui_key, ui_request = make_csr("console.db.internal", world.ui_hosts[:1], world.ui_hosts[1:],
                                  ("root@console.db.internal",))
    ui = sign(world.tokens["ui"], world.ui_path, csr=ui_request)
    assert ui.status == "issued", ui
    assert any("unexpected SANs" in p for p in vaultpki_verdict(world, "ui", ui, ui_key))


def test_upper_case_dns_sans_are_signed_and_refused_by_vaultpki(standard: World) -> None:
    """Vault matches names against allowed_domains ignoring case: NODE, LOCALHOST, N1.DB.INTERNAL are
    signed. vaultpki asks for lower-case names only and compares exactly, so it refuses them."""
    key, request = make_csr("node", ("N1.DB.INTERNAL", "LOCALHOST", "NODE"), ("10.0.0.1", "fd00::1"))
    outcome = sign(standard.tokens["n1"], standard.node_path("n1"), csr=request)
    assert outcome.status == "issued", outcome
    assert "LOCALHOST" in outcome.info.dns_sans
    problems = vaultpki_verdict(standard, "node", outcome, key)
    assert any("unexpected DNS SANs" in p and "LOCALHOST" in p and "NODE" in p for p in problems), problems
    assert any("DNS SANs lack" in p and "n1.db.internal" in p for p in problems), problems


# The operator's CNs from the report, each one CockroachDB could never create as a user.
BAD_OPERATOR_CNS = [
    pytest.param("root\x00", id="root-nul"),
    pytest.param("root ", id="root-space"),
    pytest.param("root\t", id="root-tab"),
    pytest.param("root\n", id="root-newline"),
    pytest.param("root,O=x", id="root-comma-O"),
    pytest.param("node ", id="node-space"),
    pytest.param("ROOT", id="ROOT"),
    pytest.param("rOoT", id="rOoT"),
    pytest.param("Node", id="Node"),
    pytest.param("Marc", id="Marc"),
    pytest.param("-marc", id="leading-dash"),
    pytest.param(".marc", id="leading-dot"),
    pytest.param("ma*rc", id="star"),
    pytest.param('ma"rc', id="quote"),
    pytest.param("ma\\rc", id="backslash"),
    pytest.param("root+cn=x", id="plus"),
]


@pytest.mark.parametrize("cn", BAD_OPERATOR_CNS)
def test_operator_cannot_sign_a_cn_cockroachdb_refuses(standard: World, cn: str) -> None:
    outcome = sign(standard.tokens["operator"], f"{standard.pki.mount}/sign/user", csr=make_csr("x")[1], common_name=cn)
    assert outcome.status == "403", outcome


USER_NAME_CHARS = set(string.ascii_lowercase + string.digits + "_-.")
REFUSED_ASCII = [chr(i) for i in range(128) if chr(i) not in USER_NAME_CHARS]


@pytest.mark.parametrize("actor", ["operator", "marc"])
def test_every_ascii_character_cockroachdb_refuses_is_denied_in_a_cn(standard: World, actor: str) -> None:
    """All 89 of them, inside a name: the policy's "*X*" patterns (a substring match) cover each one."""
    path = f"{standard.pki.mount}/sign/{'user' if actor == 'operator' else 'user-self'}"
    request = make_csr("x")[1]
    issued = {ascii(ch) for ch in REFUSED_ASCII
              if sign(standard.tokens[actor], path, csr=request, common_name=f"ma{ch}rc").status != "403"}
    assert issued == set()
    assert len(REFUSED_ASCII) == 89


def test_operator_still_signs_every_character_cockroachdb_allows(standard: World) -> None:
    # (Not ending in "." nor holding "..": OpenBao refuses those itself, as an empty DNS label.)
    name = "a" + string.ascii_lowercase + string.digits + "_-.x"
    outcome = sign(standard.tokens["operator"], f"{standard.pki.mount}/sign/user", csr=make_csr("x")[1], common_name=name)
    assert outcome.status == "issued", outcome
    assert outcome.info.common_name == name


@pytest.mark.parametrize("cn", ["MARC", "Marc", "mArc", "marC"])
def test_user_self_cannot_fold_the_case_of_its_own_name(standard: World, cn: str) -> None:
    """Vault compares the CN with the templated allowed_domains ignoring case; the policy refuses it."""
    path = f"{standard.pki.mount}/sign/user-self"
    assert sign(standard.tokens["marc"], path, csr=make_csr("x")[1], common_name=cn).status == "403"
    own = sign(standard.tokens["marc"], path, csr=make_csr("x")[1], common_name="marc")
    assert own.status == "issued" and own.info.common_name == "marc"


NON_ASCII = [
    pytest.param("\uff52\uff4f\uff4f\uff54", id="fullwidth-root"),
    pytest.param("r\u03bf\u03bft", id="greek-root"),
    pytest.param("m\u0430rc", id="cyrillic-marc"),
]


@pytest.mark.parametrize("name", NON_ASCII)
def test_non_ascii_cns_are_signed_with_a_punycode_san_and_refused_by_vaultpki(standard: World, name: str) -> None:
    """No policy pattern can list every non-ASCII character, and the server signs such a CN with its
    punycode form as a DNS SAN: a second name CockroachDB would accept as a user. vaultpki refuses
    the name before it asks (exit 2)."""
    outcome = sign(standard.tokens["operator"], f"{standard.pki.mount}/sign/user", csr=make_csr("x")[1],
                   common_name=name)
    assert outcome.status == "issued", outcome
    assert outcome.info.common_name == name
    assert [d[:4] for d in outcome.info.dns_sans] == ["xn--"]
    with pytest.raises(InputError) as refused:
        validate_username(name)
    assert refused.value.exit_code == 2 and "non-ASCII" in str(refused.value)


@pytest.mark.parametrize(("role", "actor", "cn"), [
    pytest.param("user", "operator", "marc", id="user"),
    pytest.param("user-self", "marc", "marc", id="user-self"),
    pytest.param("ui", "ui", "console.db.internal", id="ui"),
])
def test_a_ttl_beyond_the_role_max_is_capped_at_that_role_max(standard: World, role: str, actor: str, cn: str) -> None:
    """Vault caps a longer ttl at the role's max_ttl, with a warning and no error (the server cannot be
    told to refuse it). The cap is the role's own: a person's certificate (user, user-self) never lives
    longer than 30 days, a server's (ui, like node) 90."""
    definitions = load_roles()
    max_ttl = definitions["roles"][role].get("max_ttl", definitions["common"]["max_ttl"])
    expected = dt.timedelta(hours=int(max_ttl.removesuffix("h")))
    if role in ("user", "user-self"):
        assert expected == dt.timedelta(days=30)
    path = standard.ui_path if role == "ui" else f"{standard.pki.mount}/sign/{role}"
    fields = {} if role == "ui" else {"common_name": cn}
    outcome = sign(standard.tokens[actor], path, csr=make_csr(cn, (cn,) if role == "ui" else ())[1],
                   ttl="100000h", **fields)
    assert outcome.status == "issued", outcome
    assert outcome.response is not None and any("maxTTL" in w for w in outcome.response.get("warnings") or [])
    lifetime = outcome.leaf.not_valid_after_utc - outcome.leaf.not_valid_before_utc
    assert expected <= lifetime <= expected + dt.timedelta(seconds=60)


# --- §7: a non-ASCII user name through the real CLI ----------------------------------------------------

def test_issue_user_refuses_a_non_ascii_name_before_any_request(standard: World, tmp_path: Path) -> None:
    """Today OpenBao mints client.mаrc (Cyrillic а) with the DNS SAN xn--mrc-6cd and vaultpki then refuses
    it: every non-ASCII name fails after a certificate was issued. Now: one line, exit 2, nothing minted,
    nothing written."""
    certs = tmp_path / "certs"
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump({
        "certs_dir": str(certs), "mode": "standard",
        "vault": {"addr": standard.server.addr}, "pki": {"mount": standard.pki.mount},
        "node": {"hosts": list(NODES["n1"])},
    }))
    before = set(standard.admin.list(f"{standard.pki.mount}/certs")["data"]["keys"])
    env = {"VAULT_TOKEN": standard.tokens["operator"].token}
    result = run_cli(["--config", str(config), "issue-user", "m\u0430rc", "--certs-dir", str(certs)], env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaultpki: error: user name 'm\\u0430rc'"), result.stderr
    assert "non-ASCII" in lines[0]
    assert not certs.exists()
    assert set(standard.admin.list(f"{standard.pki.mount}/certs")["data"]["keys"]) == before
    # The same operator, an ASCII name: issued, and the client certificate names that user alone.
    ok = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(certs)], env)
    assert ok.returncode == 0, ok.stderr
    info = crypto.describe(crypto.load_certs((certs / "client.marc.crt").read_bytes())[0])
    assert info.common_name == "marc" and set(info.dns_sans) <= {"marc"} and info.ip_sans == ()
