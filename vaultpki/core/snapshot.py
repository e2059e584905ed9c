"""A certs-dir as CockroachDB's loader sees it, and what CockroachDB would make of it (pure).

The store takes the snapshot (``DirState``: every entry, its mode, owner and bytes); this module
judges it without touching the disk:

- ``judge()``: the whole dir, for ``vaultpki verify``: the directories the set rests on (who
  besides root, the writer and the configured owner could change them), CockroachDB's loader
  rules (names, PEM blocks, key files and their modes) plus what start-up and handshakes enforce
  later (cert/key match, chains, EKUs, principals, dates);
- ``judge_leaf()``: one planned leaf, for the daemon: may it stay, or is it due now?

Apart from ``validate`` (a freshly issued leaf) so that issuing, which never reads a dir back,
does not load any of this.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto, pkcs8
from vaultpki.core.certnames import BadFilename, CertName, PemUsage, classify
from vaultpki.core.layout import CA_CLIENT_FILE, CA_FILE, CA_UI_FILE, CertSpec, Eku, Mode, pk8_key_file, split_hosts, stray_findings
from vaultpki.core.validate import Problem, check_issued, date_problem, extra_eku_findings, verify_chain
from vaultpki.errors import CertificateError

__all__ = ["DirState", "Expectation", "FileState", "LeafJudgement", "judge", "judge_leaf", "key_mode_problem"]


class FileState(msgspec.Struct, frozen=True):
    """One directory entry as the store saw it (lstat for the entry, stat for what it points at)."""

    name: str
    is_dir: bool = False
    is_symlink: bool = False
    target_is_regular: bool = True
    mode: int = 0o644                # permission bits of the target
    uid: int = 0
    gid: int = 0
    data: bytes | None = None        # None when unreadable
    read_error: str | None = None
    managed: bool = False            # one of vaultpki's links (through .vaultpki/current): a file it wrote


class DirState(msgspec.Struct, frozen=True):
    path: str
    exists: bool
    entries: dict[str, FileState] = msgspec.field(default_factory=dict)
    service_gid: int = 0             # the gid of the process that will read the keys
    # the directories the set rests on (the certs-dir, .vaultpki, a generation) that another user could
    # change, or a current leading out of the state dir: the store finds these, the writer refuses them
    dir_problems: tuple[Problem, ...] = ()


class Expectation(msgspec.Struct, frozen=True):
    """What the configuration says the dir must hold (None of this when verifying without config)."""

    mode: Mode
    node_hosts: tuple[str, ...] = ()
    ui: bool = False
    users: tuple[str, ...] = ()
    ui_ca: bool | None = None        # ca-ui.crt is part of the layout (ui.crt from a CA of its own); None: unknown


def key_mode_problem(mode: int, uid: int, gid: int, service_gid: int) -> str | None:
    """CockroachDB's key permission rule (pkg/security/permission_check.go)."""
    perm = stat.S_IMODE(mode) & 0o777
    allowed = 0o740 if uid == 0 and gid == service_gid else 0o700
    if perm & ~allowed:
        rule = "0740 when owned by root and the service's group" if allowed == 0o740 else "0700"
        return f"key file mode {perm:04o} is too open (CockroachDB allows at most {rule})"
    return None


class LeafJudgement(msgspec.Struct, frozen=True):
    """A planned leaf as found on disk: why it must be replaced (None: it may stay), and its validity."""

    problem: str | None
    validity: tuple[dt.datetime, dt.datetime, int] | None = None     # not_before, not_after, serial


def judge_leaf(
    spec: CertSpec,
    state: DirState,
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    key_owner: tuple[int | None, int | None, int] | None = None,
) -> LeafJudgement:
    """Is the file on disk still what the configuration asks for?

    Missing, unparseable, a key that does not match, other names/SANs/EKUs than the
    spec, a chain that no longer reaches ``anchors`` (the CA changed), expiry, or a
    key whose (uid, gid, mode) differs from ``key_owner``: each makes it due now; so
    does a PKCS#8 copy the spec asks for that is missing, another key's, or not owned as the key is.
    """
    cert_entry, key_entry = state.entries.get(spec.cert_file), state.entries.get(spec.key_file)
    if cert_entry is None or key_entry is None:
        return LeafJudgement("missing")
    if cert_entry.data is None or key_entry.data is None:
        return LeafJudgement(f"unreadable: {cert_entry.read_error or key_entry.read_error}")
    try:
        chain = crypto.load_certs(cert_entry.data)
        key = crypto.load_key(key_entry.data)
    except CertificateError as exc:
        return LeafJudgement(f"invalid: {exc}")
    leaf = chain[0]
    validity = (leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number)
    problems = check_issued(spec, chain, key, anchors, now)
    if problems:
        return LeafJudgement("; ".join(p.message for p in problems), validity)
    if key_owner is not None:
        uid, gid, mode = key_owner
        if (uid is not None and key_entry.uid != uid) or (gid is not None and key_entry.gid != gid) \
                or key_entry.mode != mode:
            return LeafJudgement(f"{spec.key_file} owner/mode ({key_entry.uid}:{key_entry.gid} {key_entry.mode:04o}) "
                                 "differs from the configuration", validity)
    if spec.pk8 and (problem := _pk8_due(spec, state, key, key_entry)) is not None:
        return LeafJudgement(problem, validity)
    return LeafJudgement(None, validity)


def _pk8_due(spec: CertSpec, state: DirState, key: crypto.PrivateKey, key_entry: FileState) -> str | None:
    """Why the PKCS#8 copy of a leaf's key makes the pair due (None: it is the key's, owned as the key is)."""
    entry = state.entries.get(spec.pk8_file)
    if entry is None or entry.data is None:
        return "missing" if entry is None else f"{spec.pk8_file} unreadable: {entry.read_error}"
    if (problem := pkcs8.content_problem(entry.data, key, spec.key_file)) is not None:
        return f"{spec.pk8_file} {problem}"
    if (entry.uid, entry.gid, entry.mode) != (key_entry.uid, key_entry.gid, key_entry.mode):
        return f"{spec.pk8_file} owner/mode ({entry.uid}:{entry.gid} {entry.mode:04o}) differs from {spec.key_file}'s"
    return None


class _Loaded(msgspec.Struct):
    name: CertName
    certs: list[x509.Certificate]
    key: crypto.PrivateKey | None = None


def judge(state: DirState, now: dt.datetime, expect: Expectation | None = None) -> list[Problem]:
    """Every problem CockroachDB would have with this certs-dir, at start-up or at the first handshake."""
    if not state.exists:
        return [Problem(state.path, "certs-dir does not exist")]
    problems = list(state.dir_problems)
    loaded: dict[str, _Loaded] = {}
    for entry in sorted(state.entries.values(), key=lambda e: e.name):
        if entry.is_dir and not entry.is_symlink:
            continue
        try:
            name = classify(entry.name)
        except BadFilename as exc:
            problems.append(Problem(entry.name, f"ignored by CockroachDB ({exc})", "warning"))
            continue
        if name is None:
            continue
        if name.error:
            problems.append(Problem(entry.name, name.error))
            continue
        item = _load_entry(state, entry, name, problems)
        if item is not None:
            loaded[entry.name] = item
    problems += _judge_layout(loaded, now, expect)
    problems += _pk8_problems(state)
    if expect is not None:
        managed = {name: entry.managed for name, entry in state.entries.items()}
        problems += [Problem(*found) for found in stray_findings(managed, expect.mode, expect.ui, expect.ui_ca)]
    return problems


def _pk8_problems(state: DirState) -> list[Problem]:
    """Every ``<stem>.key.pk8`` (which CockroachDB skips): the PKCS#8 DER of the key beside it, no more readable
    than that key may be."""
    problems = []
    for name, entry in sorted(state.entries.items()):
        key_file = pk8_key_file(name)
        if key_file is None or (entry.is_dir and not entry.is_symlink):
            continue
        if not entry.target_is_regular or entry.data is None:
            problems.append(Problem(name, f"cannot be read: {entry.read_error or 'not a regular file'}"))
            continue
        if (problem := pkcs8.mode_problem(entry.mode, entry.uid, entry.gid, state.service_gid)) is not None:
            problems.append(Problem(name, problem))
        key_entry = state.entries.get(key_file)
        try:
            key = crypto.load_key(key_entry.data) if key_entry is not None and key_entry.data else None
        except CertificateError:
            key = None
        if (problem := pkcs8.content_problem(entry.data, key, key_file)) is not None:
            problems.append(Problem(name, problem))
    return problems


def _load_entry(state: DirState, entry: FileState, name: CertName, problems: list[Problem]) -> _Loaded | None:
    if entry.data is None:
        problems.append(Problem(entry.name, f"cannot be read: {entry.read_error or 'unknown error'}"))
        return None
    try:
        certs = crypto.load_certs(entry.data)
    except CertificateError as exc:
        problems.append(Problem(entry.name, str(exc)))
        return None
    item = _Loaded(name, certs)
    if name.key_file is None:
        return item
    key = state.entries.get(name.key_file)
    if key is None:
        problems.append(Problem(entry.name, f"its key {name.key_file} is missing"))
        return None
    if not key.target_is_regular:
        problems.append(Problem(name.key_file, "is not a regular file"))
        return None
    if (mode_problem := key_mode_problem(key.mode, key.uid, key.gid, state.service_gid)) is not None:
        problems.append(Problem(name.key_file, mode_problem))
    if key.data is None:
        problems.append(Problem(name.key_file, f"cannot be read: {key.read_error or 'unknown error'}"))
        return None
    try:
        item.key = crypto.load_key(key.data)
    except CertificateError as exc:
        problems.append(Problem(name.key_file, str(exc)))
        return None
    if not crypto.key_matches(certs[0], item.key):
        problems.append(Problem(entry.name, f"certificate does not match {name.key_file}"))
    return item


def _judge_layout(loaded: dict[str, _Loaded], now: dt.datetime, expect: Expectation | None) -> list[Problem]:
    problems: list[Problem] = []
    for item in loaded.values():
        if item.name.usage.is_ca:
            problems += _ca_file_problems(item, now)
    ca = loaded.get(CA_FILE)
    client_ca = loaded.get(CA_CLIENT_FILE)
    leaves = [i for i in loaded.values() if not i.name.usage.is_ca]
    if leaves and ca is None:
        problems.append(Problem(CA_FILE, "is missing"))
    node, client_node = loaded.get("node.crt"), loaded.get("client.node.crt")
    pools = _pools(loaded)
    for item in leaves:
        usage = item.name.usage
        pool = pools[usage]
        if usage is PemUsage.NODE:
            usages = {Eku.SERVER_AUTH} if client_node else {Eku.SERVER_AUTH, Eku.CLIENT_AUTH}
        else:
            usages = _LEAF_USAGES[usage]
        problem = verify_chain(item.certs, pool, now, usages) if pool is not None else \
            date_problem(item.certs[0], now, "certificate")
        if problem is not None:
            if usage is PemUsage.CLIENT and node is None and client_ca is None and pool is not None:
                # A client-only dir's ca.crt verifies the *server*; in split-ca the client's own
                # certificate comes from the cluster's client CA, which such a dir never holds.
                problems.append(Problem(item.name.filename, f"{problem} (fine only if the cluster uses a "
                                        "separate client CA: split-ca)", "warning"))
            else:
                problems.append(Problem(item.name.filename, problem))
        if usage in (PemUsage.NODE, PemUsage.CLIENT, PemUsage.UI):
            user = usage is PemUsage.CLIENT and item.name.name != "node"
            problems += [Problem(item.name.filename, message, severity) for severity, message
                         in extra_eku_findings(crypto.describe(item.certs[0]), frozenset(usages), user)]
        if usage is PemUsage.CLIENT:
            problems += _client_principals(item)
    if node is not None and client_node is None and "node" not in _principals(node.certs[0]):
        problems.append(Problem("node.crt", "has no 'node' principal (CN or DNS SAN) and there is no client.node.crt"))
    ui = loaded.get("ui.crt")
    if ui is not None and ca is not None and CA_UI_FILE not in loaded \
            and verify_chain(ui.certs, ca.certs, now, {Eku.SERVER_AUTH}) is not None:
        problems.append(Problem(CA_UI_FILE, "is missing: ui.crt does not chain to ca.crt, and CockroachDB's own HTTPS "
                                "client for the DB Console trusts ca-ui.crt, else ca.crt (GetUIClientTLSConfig); write "
                                "the UI CA there (vaultpki issue-node does)", "error" if expect and expect.ui else "warning"))
    if node is not None and client_ca is not None and client_node is None:
        problems.append(Problem(
            "client.node.crt",
            "is missing: with ca-client.crt present, peers verify this node's client certificate against "
            "ca-client.crt (cockroachdb/cockroach#47603)",
        ))
    if expect is not None:
        problems += _expected(loaded, expect)
    return problems


_LEAF_USAGES = {
    PemUsage.UI: {Eku.SERVER_AUTH},
    PemUsage.CLIENT: {Eku.CLIENT_AUTH},
    PemUsage.TENANT: {Eku.SERVER_AUTH, Eku.CLIENT_AUTH},
    PemUsage.TENANT_SIGNING: set(),
}


def _pools(loaded: dict[str, _Loaded]) -> dict[PemUsage, list[x509.Certificate] | None]:
    """Which CA pool verifies each leaf usage, with CockroachDB's fallbacks (None: no chain check)."""
    def certs(name: str) -> list[x509.Certificate] | None:
        return loaded[name].certs if name in loaded else None

    server = certs(CA_FILE) or []
    client = certs(CA_CLIENT_FILE) or server
    return {
        PemUsage.NODE: server,
        PemUsage.CLIENT: client,
        PemUsage.TENANT: certs("ca-client-tenant.crt") or client,
        PemUsage.UI: certs("ca-ui.crt"),             # browsers judge ui.crt; check it only against ca-ui.crt
        PemUsage.TENANT_SIGNING: None,               # self-signed by design (GenerateTenantSigningCert)
    }


def _ca_file_problems(item: _Loaded, now: dt.datetime) -> list[Problem]:
    """Every certificate must be a CA; an expired one is only a warning while another is still valid
    (during a rotation the bundle holds the new CA first and the old ones after it)."""
    problems = []
    expired = []
    for cert in item.certs:
        subject = cert.subject.rfc4514_string()
        if not crypto.is_ca(cert):
            problems.append(Problem(item.name.filename, f"{subject} is not a CA certificate"))
        elif (p := date_problem(cert, now, f"CA {subject}")) is not None:
            expired.append(p)
    severity = "warning" if len(expired) < len(item.certs) else "error"
    problems += [Problem(item.name.filename, p, severity) for p in expired]
    return problems


def _principals(cert: x509.Certificate) -> set[str]:
    info = crypto.describe(cert)
    names = set(info.dns_sans)
    if info.common_name:
        names.add(info.common_name)
    return names


def _client_principals(item: _Loaded) -> list[Problem]:
    """CockroachDB logs a client certificate in as its CN and as each of its DNS SANs (pkg/security/auth.go,
    GetCertificateUserScope; pkg/rpc/auth.go for 'node'), unless a crdb:// URI SAN names the user instead.
    So every one of them must be the file's user; a user named in a DNS SAN alone (no CN) works, and is
    only a warning: CockroachDB's docs, and tools that map the CN, expect CN=<user>."""
    user = item.name.name or ""
    info = crypto.describe(item.certs[0])
    problems = []
    if not info.common_name and user in info.dns_sans:
        problems.append(Problem(item.name.filename, f"has no CN: CockroachDB takes the user {user!r} from its DNS SAN, "
                                f"but its docs and CN-mapping tools expect CN={user}", "warning"))
    elif info.common_name != user:
        problems.append(Problem(item.name.filename, f"CN is {info.common_name!r}, expected {user!r}"))
    others = sorted(set(info.dns_sans) - {user})
    if others:
        problems.append(Problem(item.name.filename, f"DNS SANs {', '.join(others)} authenticate as other SQL users"))
    if any(u.startswith("crdb://") for u in info.uri_sans):
        problems.append(Problem(item.name.filename, "has crdb:// URI SANs, which replace the CN as identity"))
    return problems


def _expected(loaded: dict[str, _Loaded], expect: Expectation) -> list[Problem]:
    problems = []
    required = ["ca.crt", "node.crt"]
    if expect.mode is not Mode.STANDARD:
        required.append("client.node.crt")
    if expect.mode is Mode.SPLIT_CA:
        required.append(CA_CLIENT_FILE)
    if expect.ui:
        required.append("ui.crt")
    required += [f"client.{u}.crt" for u in expect.users]
    for name in required:
        if name not in loaded:
            problems.append(Problem(name, f"is missing (required in {expect.mode.value} mode)"))
    node = loaded.get("node.crt")
    if node is not None:
        info = crypto.describe(node.certs[0])
        dns, ips = split_hosts(expect.node_hosts)
        missing = sorted(set(dns) - {d.lower() for d in info.dns_sans}) + sorted(set(ips) - set(info.ip_sans))
        if missing:
            problems.append(Problem("node.crt", f"SANs lack configured hosts {', '.join(missing)}"))
        if expect.mode is Mode.STANDARD and info.common_name != "node":
            problems.append(Problem("node.crt", f"CN is {info.common_name!r}; standard mode needs CN=node"))
    return problems
