"""What ``status``, ``verify`` and ``sync --dry-run`` report about a certs-dir, apart from how it is printed.

The store takes the snapshot and the OCSP adapter asks the responders; this module decides what the
answer is made of: one row per certificate file, which problems count, which CA a leaf chains to, when
the next renewal is due, and the shape of the ``--json`` documents. The CLI only formats and prints the
records, so the same report reads the same as text and as JSON, and can be tested without a terminal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.core.certnames import BadFilename, PemUsage, classify
from vaultpki.core.ocsp import OcspResult, OcspStatus
from vaultpki.core.renewal import Decision, RenewPolicy, schedule
from vaultpki.core.snapshot import DirState, Expectation, judge
from vaultpki.core.validate import Problem, verify_chain
from vaultpki.errors import VaultpkiError

__all__ = [
    "CaBundle",
    "CertRecord",
    "FileRow",
    "OcspOutcome",
    "PendingReload",
    "ProblemRecord",
    "RenewalOutlook",
    "RenewalRecord",
    "StatusReport",
    "VerifyReport",
    "ca_bundles",
    "issuer_of",
    "ocsp_problems",
    "ocsp_questions",
    "problems_of",
    "renewal_outlook",
    "status_report",
    "verify_report",
]

# A CA file of the dir that parses: its name and its certificates, in file order.
CaBundle = tuple[str, list[x509.Certificate]]
# The CA files a leaf's issuer is looked for in (``issuer_of``), client CA first.
CA_FILES = ("ca-client.crt", "ca.crt", "ca-ui.crt")
# The CA file that whoever verifies a leaf checks it against: the first of these the dir has
# (CockroachDB's certificate_manager.go). Peers and clients verify node.crt, the node's server
# certificate, against ca.crt; a node verifies every client certificate, other nodes' included,
# against ca-client.crt when there is one (getClientCACertLocked); CockroachDB's own HTTPS client
# for the DB Console trusts ca-ui.crt, else ca.crt (GetUIClientTLSConfig). Only that file is named:
# a leaf that also chains to another CA file (a root shared by the node and client CAs) is not
# checked against it. Tenant certificates, which vaultpki does not issue, are checked against a
# union of CA files: no one file to name.
VERIFIED_BY = {
    PemUsage.NODE: ("ca.crt",),
    PemUsage.CLIENT: ("ca-client.crt", "ca.crt"),
    PemUsage.UI: ("ca-ui.crt", "ca.crt"),
}


# Per leaf file: the responder's verified answer, or why there is none.
OcspOutcome = OcspResult | str


class CertRecord(msgspec.Struct, frozen=True):
    """One certificate of a file, as ``status`` shows it (dates as ISO 8601 text, as the JSON carries them)."""

    subject: str
    issuer: str
    serial: str
    dns_sans: tuple[str, ...]
    ip_sans: tuple[str, ...]
    ekus: tuple[str, ...] | None         # None: no EKU extension (any use)
    is_ca: bool
    not_before: str
    not_after: str
    seconds_left: int


class RenewalRecord(msgspec.Struct, frozen=True):
    """When ``sync`` renews a leaf file, as ``status`` shows it (``vaultpki.core.renewal.schedule``): the
    moment its window opens (``renew.before``), the jitter (``renew.jitter``: how far any certificate of
    this lifetime may move, and how far this one's serial moves it), and the time they give."""

    window_opens: str                    # ISO 8601: not_after - renew.before
    jitter_seconds: int                  # ± renew.jitter of the issued lifetime
    jitter_offset_seconds: int           # this certificate's share of it, from its serial
    renew_at: str                        # ISO 8601: when the daemon renews it (the next pass after it)
    floored: bool                        # renew_at is half the lifetime: the window is wider than that
    due: bool                            # renew_at has come, or the file has an error: the next pass renews it
    seconds_until: int                   # until renew_at (0 when due)


class ProblemRecord(msgspec.Struct, frozen=True):
    """One problem as ``verify --json`` and ``status --json`` carry it: "error" fails ``verify``, "warning" does not."""

    file: str
    severity: str
    message: str


class FileRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One certificate file of the dir: what it is, what it holds, what it chains to, what is wrong with it."""

    file: str
    kind: str                            # "node", "client (alice)", "ca", ...
    certificates: tuple[CertRecord, ...]
    chains_to: str | None                # the CA it verifies to in its verifier's CA file; None if none (CA files too)
    problems: tuple[str, ...]            # of the file and of its key
    ocsp: str | None = None              # only with --ocsp: the status, or why there is none
    renewal: RenewalRecord | None = None  # only for the files ``sync`` renews by date, with a configuration
    problem_details: tuple[ProblemRecord, ...] = ()   # ``problems`` again, each with its file and severity


class PendingReload(msgspec.Struct, frozen=True):
    """A reload of the database that has not happened yet (kept by the daemon in ``.vaultpki/``).

    ``failures`` counts the attempts in a row that failed (a process that could not be signalled, a
    command that failed, a reload not verified); an attempt that found nobody to tell counts none."""

    since: str                           # ISO 8601, UTC: when it became pending
    reason: str                          # why the last attempt did not do it
    failures: int = 0
    files: tuple[str, ...] = ()          # what was written that the database has not been told of
    done: tuple[str, ...] = ()           # the actions that already ran for these files (not run again)
    remaining: tuple[str, ...] = ()      # the actions still owed, in the order they run


class StatusReport(msgspec.Struct, frozen=True):
    """``vaultpki status``: the problems no row shows (the directories', a missing file's), then every certificate file."""

    certs_dir: str
    problems: tuple[str, ...]            # what no row shows: the directories', a missing file's (str(Problem): "warning: …")
    files: tuple[FileRow, ...]
    reload_pending: PendingReload | None = None


class VerifyReport(msgspec.Struct, frozen=True):
    """``vaultpki verify``: ok unless a problem is an error (warnings do not fail it)."""

    certs_dir: str
    ok: bool
    problems: tuple[ProblemRecord, ...]


class RenewalOutlook(msgspec.Struct, frozen=True):
    """``sync --dry-run``: the files due now, and when the next one is due."""

    due: tuple[Decision, ...]
    next_renewal: dt.datetime | None     # the earliest renewal time of any file; None without files


def ca_bundles(state: DirState) -> list[CaBundle]:
    """The dir's CA files that parse, as (name, certificates), client CA first."""
    bundles = []
    for name in CA_FILES:
        entry = state.entries.get(name)
        if entry is not None and entry.data:
            try:
                bundles.append((name, crypto.load_certs(entry.data)))
            except VaultpkiError:
                continue
    return bundles


def issuer_of(leaf_chain: Sequence[x509.Certificate], bundles: Sequence[CaBundle]) -> x509.Certificate | None:
    """The certificate that signed a leaf: the next one in its file, else one in the dir's CA files."""
    candidates = [*leaf_chain[1:], *(c for _, certs in bundles for c in certs)]
    return next((c for c in candidates if crypto.is_issued_by(leaf_chain[0], c)), None)


def ocsp_questions(state: DirState) -> dict[str, tuple[x509.Certificate, x509.Certificate] | str]:
    """Per leaf file: the (leaf, issuer) pair to ask its OCSP responder about, or why it cannot be asked."""
    questions: dict[str, tuple[x509.Certificate, x509.Certificate] | str] = {}
    bundles = ca_bundles(state)
    for name, entry in sorted(state.entries.items()):
        try:
            kind = classify(name)
        except BadFilename:
            continue
        if kind is None or kind.usage.is_ca or not entry.data:
            continue
        try:
            chain = crypto.load_certs(entry.data)
        except VaultpkiError as exc:
            questions[name] = str(exc)
            continue
        issuer = issuer_of(chain, bundles)
        questions[name] = (chain[0], issuer) if issuer is not None else "its issuer is not in the certs-dir"
    return questions


def ocsp_problems(results: Mapping[str, OcspOutcome]) -> list[Problem]:
    """A revoked leaf is an error; an unanswered question or an unknown status only a warning."""
    problems = []
    for name, result in results.items():
        if isinstance(result, str):
            problems.append(Problem(name, f"OCSP check failed: {result}", "warning"))
        elif result.status is OcspStatus.REVOKED:
            when = f" at {result.revocation_time:%Y-%m-%dT%H:%M:%SZ}" if result.revocation_time else ""
            problems.append(Problem(name, f"is revoked{when} (OCSP {result.responder})"))
        elif result.status is not OcspStatus.GOOD:
            problems.append(Problem(name, f"OCSP status {result.status.value} ({result.responder})", "warning"))
    return problems


def problems_of(state: DirState, now: dt.datetime, expect: Expectation | None,
                ocsp: Mapping[str, OcspOutcome]) -> list[Problem]:
    """Everything wrong with the dir: CockroachDB's judgement, then what the OCSP responders said."""
    return judge(state, now, expect) + ocsp_problems(ocsp)


def _cert_record(info: crypto.CertInfo, now: dt.datetime) -> CertRecord:
    return CertRecord(
        subject=info.subject, issuer=info.issuer, serial=info.serial,
        dns_sans=info.dns_sans, ip_sans=info.ip_sans,
        ekus=tuple(sorted(e.value for e in info.ekus)) if info.ekus is not None else None,
        is_ca=info.is_ca, not_before=info.not_before.isoformat(), not_after=info.not_after.isoformat(),
        seconds_left=max(0, int((info.not_after - now).total_seconds())),
    )


def _verifier_ca_file(usage: PemUsage, present: Collection[str]) -> str | None:
    """The CA file a leaf of this usage is verified against, of the files ``present`` (None: none applies)."""
    return next((name for name in VERIFIED_BY.get(usage, ()) if name in present), None)


def _chains_to(state: DirState, data: bytes | None, usage: PemUsage, now: dt.datetime) -> str | None:
    """Which CA of the verifier's CA file a leaf verifies to ('subject (ca.crt #2 of 2)'): during a CA
    rotation, this shows which leaves still hang on the old CA. None when it verifies to none of them."""
    ca_file = _verifier_ca_file(usage, [n for n, e in state.entries.items() if e.data])
    if not data or ca_file is None:
        return None
    try:
        chain = crypto.load_certs(data)
        bundle = crypto.load_certs(state.entries[ca_file].data or b"")
    except VaultpkiError:
        return None
    for index, anchor in enumerate(bundle, start=1):
        if verify_chain(chain, [anchor], now, ()) is None:
            return f"{anchor.subject.rfc4514_string()} ({ca_file} #{index} of {len(bundle)})"
    return None


def _renewal(data: bytes | None, policy: RenewPolicy, now: dt.datetime, has_error: bool) -> RenewalRecord | None:
    """The schedule of a leaf file's certificate; None when it holds none (``judge`` says why: it is due now)."""
    try:
        leaf = crypto.load_certs(data)[0] if data else None
    except VaultpkiError:
        return None
    if leaf is None:
        return None
    plan = schedule(leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number, policy)
    left = int((plan.renew_at - now).total_seconds())
    return RenewalRecord(
        window_opens=plan.window_opens.isoformat(), jitter_seconds=round(plan.jitter_seconds),
        jitter_offset_seconds=round(plan.jitter_offset_seconds), renew_at=plan.renew_at.isoformat(),
        floored=plan.floored, due=has_error or left <= 0, seconds_until=max(0, left),
    )


def _certificates(data: bytes | None, now: dt.datetime) -> tuple[CertRecord, ...]:
    """The certificates of a file; none when it holds no PEM certificate (judge() says why)."""
    if data is None:
        return ()
    try:
        return tuple(_cert_record(crypto.describe(c), now) for c in crypto.load_certs(data))
    except VaultpkiError:
        return ()


def _ocsp_column(result: OcspOutcome | None) -> str | None:
    return result if result is None or isinstance(result, str) else result.status.value


def status_report(state: DirState, problems: Sequence[Problem], now: dt.datetime,
                  ocsp: Mapping[str, OcspOutcome], pending: PendingReload | None = None,
                  policy: RenewPolicy | None = None, renewed: Collection[str] = ()) -> StatusReport:
    """One row per certificate file CockroachDB would load (other entries are only problems of ``verify``).
    With a ``policy``, each file of ``renewed`` (the leaves ``sync`` renews) also gets its renewal schedule."""
    rows = []
    shown: set[str] = set()
    for name in sorted(state.entries):
        try:
            cert_name = classify(name)
        except BadFilename:
            cert_name = None
        if cert_name is None:
            continue
        entry = state.entries[name]
        own = tuple(p for p in problems if p.file in (name, cert_name.key_file))
        shown.update(p.file for p in own)
        renewal = None
        if policy is not None and name in renewed and not cert_name.usage.is_ca:
            renewal = _renewal(entry.data, policy, now, any(p.severity == "error" for p in own))
        rows.append(FileRow(
            file=name,
            kind=cert_name.usage.value + (f" ({cert_name.name})" if cert_name.name else ""),
            certificates=_certificates(entry.data, now),
            chains_to=None if cert_name.usage.is_ca else _chains_to(state, entry.data, cert_name.usage, now),
            problems=tuple(p.message for p in own),
            problem_details=_records(own),
            ocsp=_ocsp_column(ocsp.get(name)),
            renewal=renewal,
        ))
    # Then what no row shows: a file the dir lacks ("ca-ui.crt: is missing"), an entry CockroachDB ignores.
    rowless = [p for p in problems if p.file not in shown and p not in state.dir_problems]
    dir_problems = tuple(map(str, [*state.dir_problems, *rowless]))
    return StatusReport(certs_dir=state.path, problems=dir_problems, files=tuple(rows), reload_pending=pending)


def _records(problems: Sequence[Problem]) -> tuple[ProblemRecord, ...]:
    return tuple(ProblemRecord(p.file, p.severity, p.message) for p in problems)


def verify_report(state: DirState, problems: Sequence[Problem]) -> VerifyReport:
    return VerifyReport(
        certs_dir=state.path,
        ok=not any(p.severity == "error" for p in problems),
        problems=_records(problems),
    )


def renewal_outlook(decisions: Sequence[Decision]) -> RenewalOutlook:
    return RenewalOutlook(due=tuple(d for d in decisions if d.due), next_renewal=min((d.at for d in decisions), default=None))
