"""Turn a Plan into validated bytes: keys, CSRs, Vault, checks. No file I/O.

Nothing this module returns has failed validation; the caller writes the whole
result as one set or nothing at all. Vault is reached only through its port
(``vaultpki.core.ports.VaultPort``), which also does whatever runs in parallel.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Iterator, Sequence

import msgspec
from cryptography import x509

from vaultpki.core import crypto, pkcs8
from vaultpki.core.layout import CertSpec, FileContent, FileKind, Plan, TrustSpec
from vaultpki.core.ports import Answers, CaMaterial, Clock, IssuedCert, IssueRequest, Progress, SignRequest, Sink, VaultPort
from vaultpki.core.validate import check_issued
from vaultpki.errors import CertificateError, IssuanceRefused, VaultpkiError

__all__ = [
    "MAX_TTL_SECONDS", "IssueOptions", "IssuedLeaf", "IssuedSet", "default_issuer", "fetch_anchors",
    "fetch_materials", "material_certs", "obtain", "obtain_partial", "trust_anchors",
]

# Requests one set (a node's few leaves) keeps in flight: all of them at once.
MAX_PARALLEL = 8
# The longest max_ttl of any role in data/roles.json (tests/unit/test_config_sync.py keeps the two equal).
# No role issues longer, so a longer ttl is refused as a configuration error, and when none is asked
# (the role's default applies) no honest certificate lives longer than this.
MAX_TTL_SECONDS = 2160 * 3600
# Requests a bulk run keeps in flight: while this thread judges and writes answers, the server should
# still have requests to sign.
BULK_IN_FLIGHT = 16


class IssueOptions(msgspec.Struct, frozen=True):
    key_type: crypto.KeyType
    key_bits: int
    ttl_seconds: int | None
    method: str = "sign"          # "sign": key made here, CSR to Vault; "issue": Vault makes the key
    ca_trust: str = "issuer"      # "issuer": the mount's CA is the anchor; "root": the self-signed root


class IssuedLeaf(msgspec.Struct, frozen=True):
    spec: CertSpec
    serial: str
    not_after: dt.datetime


class IssuedSet(msgspec.Struct, frozen=True):
    files: tuple[FileContent, ...]
    leaves: tuple[IssuedLeaf, ...]


def _parse(pem: str, what: str) -> list[x509.Certificate]:
    try:
        return crypto.load_certs(pem.encode())
    except CertificateError as exc:
        raise IssuanceRefused(f"{what}: Vault returned an unparseable certificate: {exc}") from exc


def trust_anchors(material: CaMaterial, mount: str, ca_trust: str) -> list[x509.Certificate]:
    """The certificates a CA file holds for a mount, newest first.

    ``issuer``: the mount's issuing CAs themselves. Go (CockroachDB) accepts an
    intermediate as a trust anchor, so a split-ca ``ca-client.crt`` then trusts
    only the client intermediate, not everything else a shared root signed.
    ``root``: the self-signed roots at the top of their chains, which OpenSSL-based
    clients (psql, libpq, PostgreSQL) need.

    During a CA rotation a mount has several issuers: the file then holds all of
    them, the newest first (CockroachDB's expiry metric reads the first one).
    """
    issuers = [(material.issuer, material.chain), *material.others]
    anchors: dict[str, x509.Certificate] = {}
    for pem, chain in issuers:
        issuer = _parse(pem, f"CA of mount {mount}")[0]
        if ca_trust == "issuer":
            anchors.setdefault(crypto.fingerprint(issuer), issuer)
            continue
        above = [c for extra in chain for c in _parse(extra, f"CA chain of mount {mount}")]
        roots = [c for c in [issuer, *above] if crypto.is_self_signed(c)]
        if not roots:
            raise IssuanceRefused(
                f"the CA chain of mount {mount} does not reach a self-signed root, so ca_trust = 'root' "
                "cannot be honoured (import the root into the mount, or use ca_trust = 'issuer')"
            )
        anchors.setdefault(crypto.fingerprint(roots[0]), roots[0])
    return sorted(anchors.values(), key=lambda c: c.not_valid_before_utc, reverse=True)


def material_certs(material: CaMaterial, mount: str) -> list[x509.Certificate]:
    """Every certificate a mount's issuers and their chains hold: the CAs the mount still knows."""
    pems = [material.issuer, *material.chain, *(p for pem, chain in material.others for p in (pem, *chain))]
    return [c for pem in pems for c in _parse(pem, f"CA material of mount {mount}")]


def default_issuer(material: CaMaterial, mount: str) -> x509.Certificate:
    """The CA that signs new leaves on ``mount``."""
    return _parse(material.issuer, f"CA of mount {mount}")[0]


def _ttl(options: IssueOptions) -> str | None:
    return f"{options.ttl_seconds}s" if options.ttl_seconds else None


def _sign_request(spec: CertSpec, options: IssueOptions) -> tuple[crypto.PrivateKey, SignRequest]:
    """A new key for one leaf, and the request that has Vault sign its CSR."""
    key = crypto.generate_key(options.key_type, options.key_bits)
    csr = crypto.build_csr(key, spec.common_name, spec.dns_sans, spec.ip_sans).decode()
    return key, SignRequest(spec.mount, spec.role, csr, spec.common_name if spec.send_common_name else None,
                            _ttl(options), _cn_only(spec))


def _issue_request(spec: CertSpec, options: IssueOptions) -> IssueRequest:
    """The request that has Vault make one leaf, key and all."""
    return IssueRequest(spec.mount, spec.role, spec.common_name, spec.dns_sans, spec.ip_sans, _ttl(options),
                        options.key_type.value, options.key_bits, _cn_only(spec))


def _cn_only(spec: CertSpec) -> bool:
    """A client certificate names its user in the CN alone: Vault is asked not to copy the CN into a DNS SAN.
    CockroachDB takes the identity from the CN (a DNS SAN would only repeat it), and Go checks a CA's name
    constraints against every DNS SAN, so an organisation CA permitting only host names refuses the copy."""
    return spec.kind in (FileKind.CLIENT, FileKind.CLIENT_NODE)


def _judge_one(
    spec: CertSpec, key: crypto.PrivateKey | None, issued: IssuedCert, anchors: list[x509.Certificate],
    options: IssueOptions, now: dt.datetime,
) -> tuple[IssuedLeaf, list[FileContent]]:
    """What Vault returned for one leaf, checked as CockroachDB will check it, as the bytes of its files (the
    certificate, the key, and the key's PKCS#8 copy when the spec asks for one)."""
    where = f"{spec.mount}/{options.method}/{spec.role}"
    if key is None:
        try:
            key = crypto.load_key((issued.private_key or "").encode())
        except CertificateError as exc:
            raise IssuanceRefused(f"refusing {spec.cert_file} from {where}: {exc}") from exc
    leaf = _parse(issued.certificate, f"{spec.cert_file} from {where}")[0]
    chain = [leaf, *(c for c in _intermediates(issued.ca_chain) if c != leaf)]
    problems = check_issued(spec, chain, key, anchors, now, dt.timedelta(seconds=options.ttl_seconds or MAX_TTL_SECONDS))
    if problems:
        details = "; ".join(p.message for p in problems)
        raise IssuanceRefused(f"refusing {spec.cert_file} from {where}: {details}")
    files = [
        FileContent(spec.cert_file, crypto.certs_to_pem(chain), secret=False),
        FileContent(spec.key_file, crypto.key_to_pem(key), secret=True),
    ]
    if spec.pk8:
        der = pkcs8.to_der(key)
        if (problem := pkcs8.content_problem(der, key, spec.key_file)) is not None:
            raise IssuanceRefused(f"refusing {spec.pk8_file}: it {problem}")
        files.append(FileContent(spec.pk8_file, der, secret=True))
    return IssuedLeaf(spec, crypto.format_serial(leaf.serial_number), leaf.not_valid_after_utc), files


@functools.lru_cache(maxsize=64)
def _intermediates(ca_chain: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    """The certificates above a leaf that its file carries: self-signed roots belong in the CA file only.
    Cached: every leaf of a mount comes with the same chain, and a bulk run has a thousand of them."""
    return tuple(c for pem in ca_chain for c in _parse(pem, "the CA chain of a certificate") if not crypto.is_self_signed(c))


def fetch_materials(mounts: Sequence[str], vault: VaultPort) -> dict[str, CaMaterial]:
    """Every mount's CA material (the adapter fetches them in parallel)."""
    return dict(vault.ca_materials(mounts))


def fetch_anchors(mounts: Sequence[str], vault: VaultPort, ca_trust: str) -> dict[str, list[x509.Certificate]]:
    """The trust anchors of every mount."""
    materials = fetch_materials(mounts, vault)
    return {m: trust_anchors(materials[m], m, ca_trust) for m in mounts}


def obtain(plan: Plan, vault: VaultPort, options: IssueOptions, clock: Clock) -> IssuedSet:
    """Fetch CA material, issue every leaf (in parallel), validate all; raise on the first refusal."""
    issued, failures = obtain_partial(plan, vault, options, clock, None)
    if failures:
        raise next(iter(failures.values()))
    return issued


def obtain_partial(
    plan: Plan, vault: VaultPort, options: IssueOptions, clock: Clock,
    anchors: dict[str, list[x509.Certificate]] | None,
    progress: Progress | None = None,
    sink: Sink | None = None,
    streamed: bool = False,
) -> tuple[IssuedSet, dict[str, VaultpkiError]]:
    """Issue every leaf independently: what succeeded (with all CA files), and what failed, by file.

    One failing role (say the UI mount) must not hold back a node certificate that is expiring.
    Each leaf is judged at ``clock()`` when its answer is in, not at the start: Vault dates a
    certificate 30 s back, so a run that outlasts that (an HA election, a big bulk run) would
    otherwise find its later certificates "not valid before" the time it started.
    The CA material is fetched first (``anchors`` when the caller has them): a failure to get it
    fails the whole call before anything is signed.

    The requests go out through the port (``sign_many``; ``issue_many`` for ``issue``), drawn in
    this thread: each key and CSR is made here just before its request, and each answer is
    judged here. Threads that each did their own crypto as well fought over the GIL: a bulk run
    spent more CPU per certificate, on cores the Vault server needs too.

    ``sink``, when given, is handed each validated leaf's files as soon as they are judged (the CA
    files with the first of them; nothing when no leaf succeeds), so that a bulk run writes while
    the rest are still being signed. An exception from it stops the run: what is still queued is
    cancelled, and it propagates.

    ``streamed`` (a bulk run, with ``sign``): ``BULK_IN_FLIGHT`` requests in flight, each answer
    judged as it arrives; otherwise the leaves are judged in the plan's order. The result keeps the
    plan's order either way.
    """
    if anchors is None:
        anchors = fetch_anchors(sorted({t.mount for t in plan.trusts}), vault, options.ca_trust)
    outcomes = _Outcomes(plan, anchors, options, clock, progress, sink)
    streamed = streamed and options.method == "sign"
    answers = _answers(plan, vault, options, BULK_IN_FLIGHT if streamed else MAX_PARALLEL)
    settle = outcomes.settle if streamed else _InPlanOrder(outcomes).settle
    with contextlib.closing(answers):        # on a failure, what is queued is cancelled, not left to run
        for (index, key), answer in answers:
            settle(index, key, answer)
    return outcomes.result()


_Tag = tuple[int, crypto.PrivateKey | None]


def _answers(plan: Plan, vault: VaultPort, options: IssueOptions, parallel: int) -> Answers[_Tag]:
    """Every leaf's request through the port, tagged with its index in the plan and its key (``issue``:
    Vault makes the key, so there is none yet)."""
    if options.method != "sign":
        return vault.issue_many((((index, None), _issue_request(spec, options)) for index, spec in enumerate(plan.certs)),
                                parallel)

    def requests() -> Iterator[tuple[_Tag, SignRequest]]:
        for index, spec in enumerate(plan.certs):
            key, request = _sign_request(spec, options)
            yield (index, key), request

    return vault.sign_many(requests(), parallel)


class _InPlanOrder:
    """Settles answers in the plan's order whatever order they arrive in: each one as soon as it and every
    answer before it are in."""

    def __init__(self, outcomes: _Outcomes) -> None:
        self._outcomes = outcomes
        self._next = 0
        self._waiting: dict[int, tuple[crypto.PrivateKey | None, IssuedCert | VaultpkiError]] = {}

    def settle(self, index: int, key: crypto.PrivateKey | None, answer: IssuedCert | VaultpkiError) -> None:
        self._waiting[index] = (key, answer)
        while self._next in self._waiting:
            self._outcomes.settle(self._next, *self._waiting.pop(self._next))
            self._next += 1


class _Outcomes:
    """What the leaves of one plan came to, gathered as their answers arrive, in any order: each answer
    judged at the time it is in, the sink fed (the CA files with the first good leaf), and the result
    in the plan's order."""

    def __init__(self, plan: Plan, anchors: dict[str, list[x509.Certificate]], options: IssueOptions,
                 clock: Clock, progress: Progress | None, sink: Sink | None) -> None:
        self._plan, self._anchors, self._options, self._clock = plan, anchors, options, clock
        self._progress, self._sink = progress, sink
        self._ca_files = [FileContent(name, crypto.certs_to_pem(anchors[mount]), secret=False)
                          for name, mount in _ca_files(plan.trusts)]
        self._unsunk = list(self._ca_files)
        self._judged: dict[int, tuple[IssuedLeaf, list[FileContent]]] = {}
        self._failed: dict[int, VaultpkiError] = {}

    def settle(self, index: int, key: crypto.PrivateKey | None, answer: IssuedCert | VaultpkiError) -> None:
        spec = self._plan.certs[index]
        try:
            if isinstance(answer, VaultpkiError):
                raise answer
            judged = _judge_one(spec, key, answer, self._anchors[spec.trust.mount], self._options, self._clock())
        except VaultpkiError as exc:
            self._failed[index] = exc
            return
        finally:
            if self._progress is not None:
                self._progress(spec.cert_file)
        self._judged[index] = judged
        if self._sink is not None:
            self._sink(self._unsunk + judged[1])
            self._unsunk = []

    def result(self) -> tuple[IssuedSet, dict[str, VaultpkiError]]:
        ordered = [self._judged[i] for i in sorted(self._judged)]
        files = self._ca_files + [f for _, leaf_files in ordered for f in leaf_files]
        failures = {self._plan.certs[i].cert_file: self._failed[i] for i in sorted(self._failed)}
        return IssuedSet(files=tuple(files), leaves=tuple(leaf for leaf, _ in ordered)), failures


def _ca_files(trusts: Sequence[TrustSpec]) -> list[tuple[str, str]]:
    """(CA file name, mount) for every CA file the plan writes, each once."""
    seen: dict[str, str] = {}
    for t in trusts:
        if t.file is not None:
            seen.setdefault(t.file, t.mount)
    return list(seen.items())
