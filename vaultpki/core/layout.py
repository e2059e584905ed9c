"""What a certs-dir must contain, per layout mode: pure planning, no I/O.

The three modes are those of CockroachDB's "Advanced PKI" guide:

- ``standard``: ``node.crt`` is dual-purpose (CN=node, serverAuth+clientAuth);
- ``split-node``: ``node.crt`` is a pure server certificate and the node also
  gets ``client.node.crt`` (CN=node, clientAuth) for node-to-node dialing;
- ``split-ca``: as split-node, but client certificates (``client.node`` and every
  ``client.<user>``) come from a second CA published as ``ca-client.crt``.
  CockroachDB verifies *every* incoming client certificate, including other
  nodes', against ``ca-client.crt`` when it exists, so a split-CA node without a
  ``client.node.crt`` from the client CA cannot talk to its peers
  (cockroachdb/cockroach#47603). The planner never produces that layout.

In every mode, a DB Console certificate from a CA of its own (``pki.ui_mount``) comes with that CA in
``ca-ui.crt``: CockroachDB's own HTTPS client for the console trusts ``ca-ui.crt``, else ``ca.crt``
(``GetUIClientTLSConfig``/``getUICACertLocked`` in pkg/security/certificate_manager.go). A user's key
may also be written as ``client.<user>.key.pk8`` (PKCS#8 DER, for Java's JDBC driver), which
CockroachDB's loader skips like every name not ending in ``.crt``.

The names a node's layout decides on (``LAYOUT_NAMES``: the CA files, and the ``node``, ``client.node`` and
``ui`` pairs) are the layout's whichever mode is configured: a plan lists those it lacks as
``Plan.stray_names``, and a file of vaultpki's under such a name leaves the next set (a split-ca dir
re-issued as split-node loses its ``ca-client.crt``, against which CockroachDB would check every client
certificate). Every other name (another user's ``client.<user>.*``, tenant files, ``.pk8`` copies) is the
operator's, and so is any file vaultpki did not write.
"""

from __future__ import annotations

import enum
import ipaddress
import unicodedata
from collections.abc import Mapping, Sequence

import msgspec

from vaultpki.errors import ConfigError, InputError

__all__ = [
    "CA_CLIENT_FILE",
    "CA_FILE",
    "CA_UI_FILE",
    "CertSpec",
    "Eku",
    "FileContent",
    "FileKind",
    "LAYOUT_NAMES",
    "Mode",
    "PK8_SUFFIX",
    "Plan",
    "TrustSpec",
    "UI_NAMES",
    "layout_files",
    "pk8_key_file",
    "plan_node",
    "plan_user",
    "split_hosts",
    "stray_findings",
    "stray_reason",
    "validate_username",
]

CA_FILE = "ca.crt"
CA_CLIENT_FILE = "ca-client.crt"
CA_UI_FILE = "ca-ui.crt"
# What `cockroach cert create-client --also-generate-pkcs8-key` appends to the key's name (pkg/security/certs.go).
PK8_SUFFIX = ".pk8"
MAX_USERNAME_BYTES = 63
# The names whose presence a node's layout decides: what the layout has is written, what it lacks goes.
LAYOUT_NAMES = frozenset({CA_FILE, CA_CLIENT_FILE, CA_UI_FILE, "node.crt", "node.key", "client.node.crt",
                          "client.node.key", "ui.crt", "ui.key"})
# The DB Console's files: from a UI mount in the plan, or from an ACME CA beside it.
UI_NAMES = frozenset({CA_UI_FILE, "ui.crt", "ui.key"})


class Mode(enum.StrEnum):
    STANDARD = "standard"
    SPLIT_NODE = "split-node"
    SPLIT_CA = "split-ca"


class FileKind(enum.StrEnum):
    """A leaf certificate's role in the certs-dir, named as CockroachDB names it."""

    NODE = "node"
    CLIENT_NODE = "client-node"
    CLIENT = "client"
    UI = "ui"


class Eku(enum.StrEnum):
    SERVER_AUTH = "serverAuth"
    CLIENT_AUTH = "clientAuth"


class FileContent(msgspec.Struct, frozen=True):
    """Bytes for one certs-dir file; ``secret`` files are created 0600 from the first byte."""

    name: str
    data: bytes
    secret: bool


class TrustSpec(msgspec.Struct, frozen=True):
    """A mount whose CA certificates anchor some leaves; ``file`` is where they go (None: not written)."""

    mount: str
    file: str | None


class CertSpec(msgspec.Struct, frozen=True):
    """One leaf certificate to obtain: where from, and exactly what it must say."""

    stem: str                    # "node", "client.node", "client.marc", "ui"
    kind: FileKind
    mount: str
    role: str
    common_name: str
    dns_sans: tuple[str, ...]
    ip_sans: tuple[str, ...]
    ekus: frozenset[Eku]
    trust: TrustSpec             # the CA set this leaf must chain to
    send_common_name: bool       # user roles take the CN from the request, so an ACL can police it
    pk8: bool = False            # also the key as PKCS#8 DER (``pk8_file``), for Java clients

    @property
    def cert_file(self) -> str:
        return f"{self.stem}.crt"

    @property
    def key_file(self) -> str:
        return f"{self.stem}.key"

    @property
    def pk8_file(self) -> str:
        return self.key_file + PK8_SUFFIX

    @property
    def file_names(self) -> tuple[str, ...]:
        """The files of this leaf: certificate, key, and the key's PKCS#8 copy when asked for."""
        return (self.cert_file, self.key_file, *((self.pk8_file,) if self.pk8 else ()))


class Plan(msgspec.Struct, frozen=True):
    """Everything one command will obtain: CA files to write and leaves to issue."""

    trusts: tuple[TrustSpec, ...]
    certs: tuple[CertSpec, ...]
    owned: frozenset[str] = frozenset()     # the names this plan's layout decides on (a node's: LAYOUT_NAMES)

    @property
    def ca_files(self) -> tuple[TrustSpec, ...]:
        return tuple(t for t in self.trusts if t.file is not None)

    @property
    def file_names(self) -> tuple[str, ...]:
        """Every file the plan may write: each CA file once, then every leaf's certificate and key (and pk8)."""
        cas = dict.fromkeys(t.file for t in self.ca_files if t.file is not None)
        return (*cas, *(name for c in self.certs for name in c.file_names))

    @property
    def stray_names(self) -> tuple[str, ...]:
        """The layout's names this plan does not have: a file of vaultpki's under one of them leaves the next set."""
        return tuple(sorted(self.owned - set(self.file_names)))


_STRAY_WHY = {
    CA_CLIENT_FILE: "CockroachDB verifies every client certificate against it",
    "client.node.crt": "CockroachDB presents it instead of node.crt when it dials other nodes",
    "ui.crt": "CockroachDB serves it on the DB Console instead of node.crt",
    CA_UI_FILE: "CockroachDB's own HTTPS client for the DB Console trusts it instead of ca.crt",
}


def layout_files(mode: Mode, ui: bool, ui_ca: bool) -> frozenset[str]:
    """The names of ``LAYOUT_NAMES`` a node's plan in ``mode`` has (``plan_node``'s, without asking for mounts):
    ``ui`` with a UI mount, ``ui_ca`` when that mount is not the node CA's."""
    names = {CA_FILE, "node.crt", "node.key"}
    if mode is not Mode.STANDARD:
        names |= {"client.node.crt", "client.node.key"}
    if mode is Mode.SPLIT_CA:
        names.add(CA_CLIENT_FILE)
    if ui:
        names |= {"ui.crt", "ui.key", *((CA_UI_FILE,) if ui_ca else ())}
    return frozenset(names)


def stray_reason(name: str, mode: Mode) -> str:
    """Why a file of the layout's names that ``mode`` (as configured) lacks must not stay, for a message that
    begins with the file's name (a key goes with its certificate)."""
    if name.endswith(".key"):
        cert = name[:-len(".key")] + ".crt"
        return f"is the key of {cert}, which {stray_reason(cert, mode)}"
    where = mode.value if name in (CA_CLIENT_FILE, "client.node.crt") else "this configuration"
    return f"is not part of {where}: {_STRAY_WHY.get(name, 'CockroachDB loads it')}"


def stray_findings(present: Mapping[str, bool], mode: Mode, ui: bool, ui_ca: bool | None) -> list[tuple[str, str, str]]:
    """(file, message, severity) for each certificate under the layout's names that the configured layout lacks,
    of ``present`` (each name: whether vaultpki wrote it). vaultpki's own, left by an earlier layout, leave at
    the next write. Another's ``ca-client.crt`` breaks every client login; another's ``client.node.crt`` in
    standard mode works until it expires; an operator's own DB Console certificate (``ui.crt``, ``ca-ui.crt``
    without a UI mount) is theirs. ``ui_ca`` None: whether ``ca-ui.crt`` belongs is not known."""
    found = []
    for name in sorted(LAYOUT_NAMES - layout_files(mode, ui, bool(ui_ca))):
        if name not in present or not name.endswith(".crt") or (name == CA_UI_FILE and ui and ui_ca is None):
            continue
        reason = stray_reason(name, mode)
        if present[name]:
            found.append((name, f"{reason}; vaultpki removes it at the next issue-node/sync", "error"))
        elif name == CA_CLIENT_FILE:
            found.append((name, f"{reason}; vaultpki did not write it, so it leaves it there: remove it", "error"))
        elif name == "client.node.crt":
            found.append((name, f"{reason}; vaultpki did not write it and does not renew it", "warning"))
    return found


class PkiNames(msgspec.Struct, frozen=True):
    """The mounts and roles a plan draws on (a view of the ``[pki]`` config table)."""

    mount: str
    client_mount: str | None
    node_role: str
    client_node_role: str
    user_role: str
    ui_mount: str | None
    ui_role: str | None
    root_role: str = "root"        # client.root.crt has a role (and a policy) of its own


def pk8_key_file(name: str) -> str | None:
    """The key a ``<stem>.key.pk8`` file is a copy of (None for any other name)."""
    return name.removesuffix(PK8_SUFFIX) if name.endswith(".key" + PK8_SUFFIX) else None


def split_hosts(hosts: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split configured host names into (DNS names, IP addresses), each de-duplicated in order."""
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            name = host.lower().rstrip(".")
            if name and name not in dns:
                dns.append(name)
        else:
            if ip not in ips:
                ips.append(ip)
    return tuple(dns), tuple(ips)


def validate_username(name: str) -> str:
    """Return ``name`` if vaultpki may issue a client certificate for it, else raise InputError.

    CockroachDB's creation rule is ``^[\\p{Ll}0-9_][-\\p{Ll}0-9_.]*$`` and at most 63 bytes; vaultpki
    takes its ASCII part, ``[a-z0-9_][-a-z0-9_.]*``. A non-ASCII name cannot be issued as itself alone:
    Vault and OpenBao copy the CN into the DNS SANs in punycode (``m\\u0430rc`` gets ``xn--mrc-6cd``),
    and CockroachDB takes every DNS SAN of a client certificate as one more user it may log in as;
    and look-alikes of ``root`` (full-width, Greek) are names no Vault policy can list.
    We check before any path is built: a name such as ``/../../x`` would otherwise
    escape the certs-dir through ``client.<name>.crt``.
    """
    shown = ascii(name)
    if not name:
        raise InputError("user name is empty")
    if unicodedata.normalize("NFC", name) != name:
        raise InputError(f"user name {shown} is not in Unicode NFC form")
    if len(name.encode("utf-8")) > MAX_USERNAME_BYTES:
        raise InputError(f"user name {shown} is longer than {MAX_USERNAME_BYTES} bytes")
    for i, char in enumerate(name):
        if _is_name_char(char, first=(i == 0)):
            continue
        if not char.isascii():
            raise InputError(
                f"user name {shown} has the non-ASCII character {ascii(char)}: vaultpki issues ASCII user names"
                " only (Vault would add its punycode form as a second SQL identity); map such a user with"
                " CockroachDB's --cert-principal-map"
            )
        where = "start with" if i == 0 else "contain"
        raise InputError(
            f"user name {shown} is not a valid CockroachDB user name: it may not {where} {ascii(char)}"
            " (allowed: lower-case letters, digits, '_', and after the first character '-' and '.')"
        )
    if name == "node":
        raise InputError("user name 'node' is the node's own identity; use 'vaultpki issue-node'")
    return name


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _is_name_char(char: str, *, first: bool) -> bool:
    return char in _NAME_CHARS or (not first and char in "-.")


def _require(value: str | None, key: str, why: str) -> str:
    if not value:
        raise ConfigError(f"pki.{key} is required {why}")
    return value


def _trusts(mode: Mode, pki: PkiNames) -> tuple[TrustSpec, TrustSpec]:
    """(node CA, client CA) for a mode; the same spec twice unless split-ca."""
    node_ca = TrustSpec(pki.mount, CA_FILE)
    if mode is Mode.SPLIT_CA:
        client_mount = _require(pki.client_mount, "client_mount", "in split-ca mode")
        if client_mount == pki.mount:
            raise ConfigError("pki.client_mount must differ from pki.mount in split-ca mode")
        return node_ca, TrustSpec(client_mount, CA_CLIENT_FILE)
    return node_ca, node_ca


def plan_node(mode: Mode, pki: PkiNames, hosts: Sequence[str], ui_hosts: Sequence[str],
              users: Sequence[str] = (), pk8: bool = False, acme_ui: bool = False) -> Plan:
    """Everything a node's certs-dir needs in ``mode`` (plus ``ui`` when a UI mount is configured),
    and ``client.<user>`` for each of ``users`` (``root``, say, for ``cockroach init`` on the node),
    each with its key's PKCS#8 copy when ``pk8``. ``acme_ui``: an ACME CA issues the ``ui`` pair and
    ``ca-ui.crt`` outside this plan, so those names are not the plan's strays."""
    users = [validate_username(u) for u in users]    # 'node' is refused: it is the node's own identity
    dns, ips = split_hosts(hosts)
    if not dns and not ips:
        raise ConfigError("node.hosts is empty: the node certificate needs the names clients use to reach it")
    node_ca, client_ca = _trusts(mode, pki)
    trusts = [node_ca] if client_ca is node_ca else [node_ca, client_ca]
    client_node = CertSpec(
        stem="client.node", kind=FileKind.CLIENT_NODE, mount=client_ca.mount, role=pki.client_node_role,
        common_name="node", dns_sans=(), ip_sans=(), ekus=frozenset({Eku.CLIENT_AUTH}),
        trust=client_ca, send_common_name=False,
    )
    if mode is Mode.STANDARD:
        node = CertSpec(
            stem="node", kind=FileKind.NODE, mount=pki.mount, role=pki.node_role, common_name="node",
            dns_sans=dns, ip_sans=ips, ekus=frozenset({Eku.SERVER_AUTH, Eku.CLIENT_AUTH}),
            trust=node_ca, send_common_name=False,
        )
        certs = [node]
    else:
        node = CertSpec(
            stem="node", kind=FileKind.NODE, mount=pki.mount, role=pki.node_role,
            common_name=(dns or ips)[0], dns_sans=dns, ip_sans=ips, ekus=frozenset({Eku.SERVER_AUTH}),
            trust=node_ca, send_common_name=False,
        )
        certs = [node, client_node]
    if pki.ui_mount:
        ui_dns, ui_ips = split_hosts(ui_hosts)
        if not ui_dns and not ui_ips:
            raise ConfigError("ui.hosts is empty: the DB Console certificate needs the names browsers use")
        # From a CA of its own, ui.crt needs that CA in ca-ui.crt; from the node CA, ca.crt serves.
        ui_trust = node_ca if pki.ui_mount == pki.mount else TrustSpec(pki.ui_mount, CA_UI_FILE)
        if ui_trust not in trusts:
            trusts.append(ui_trust)
        certs.append(CertSpec(
            stem="ui", kind=FileKind.UI, mount=pki.ui_mount, role=_require(pki.ui_role, "ui_role", "with ui_mount"),
            common_name=(ui_dns or ui_ips)[0], dns_sans=ui_dns, ip_sans=ui_ips,
            ekus=frozenset({Eku.SERVER_AUTH}), trust=ui_trust, send_common_name=False,
        ))
    certs += [_client_cert(pki, user, client_ca, pk8) for user in dict.fromkeys(users)]
    return Plan(trusts=tuple(trusts), certs=tuple(certs), owned=LAYOUT_NAMES - UI_NAMES if acme_ui else LAYOUT_NAMES)


def plan_user(mode: Mode, pki: PkiNames, user: str, pk8: bool = False) -> Plan:
    """``client.<user>.crt/.key`` (and ``.key.pk8`` when ``pk8``) plus the ``ca.crt`` a client needs to
    verify the nodes.

    In split-ca the client certificate comes from the client CA, while the client's
    ``ca.crt`` is still the node CA: it verifies the server, not itself.
    """
    user = validate_username(user)
    node_ca, client_ca = _trusts(mode, pki)
    # In split-ca the client CA anchors the leaf but is not written into a client's dir.
    leaf_trust = client_ca if client_ca is node_ca else TrustSpec(client_ca.mount, None)
    trusts = (node_ca,) if leaf_trust is node_ca else (node_ca, leaf_trust)
    return Plan(trusts=trusts, certs=(_client_cert(pki, user, leaf_trust, pk8),))


def _client_cert(pki: PkiNames, user: str, trust: TrustSpec, pk8: bool) -> CertSpec:
    return CertSpec(
        stem=f"client.{user}", kind=FileKind.CLIENT, mount=trust.mount,
        role=pki.root_role if user == "root" else pki.user_role,
        common_name=user, dns_sans=(), ip_sans=(), ekus=frozenset({Eku.CLIENT_AUTH}),
        trust=trust, send_common_name=True, pk8=pk8,
    )
