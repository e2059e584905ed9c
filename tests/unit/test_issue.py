"""issue.obtain() against a fake Vault port: what is asked, what is refused (pure unit tests; no Vault mock in integration)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vaultpki.core import crypto
from vaultpki.core.issue import BULK_IN_FLIGHT, MAX_PARALLEL, IssueOptions, obtain, obtain_partial
from vaultpki.core.layout import Mode, PkiNames, Plan, plan_node, plan_user
from vaultpki.core.ports import CaMaterial, IssuedCert, IssueRequest, SignRequest
from vaultpki.errors import IssuanceRefused, StoreError, VaultpkiError, VaultRequestError

from .conftest import CLIENT, DAY, SERVER, CaSet, Issued, Pki

PKI = PkiNames(mount="pki-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
HOSTS = ("node1.internal", "127.0.0.1")
K = TypeVar("K")
OPTIONS = IssueOptions(key_type=crypto.KeyType.EC, key_bits=256, ttl_seconds=3600)
BACKDATE = dt.timedelta(seconds=30)


def pem(issued: Issued) -> str:
    return issued.cert_pem.decode()


@dataclass
class FakeVault:
    """The Vault port over an in-memory CA, one request at a time; knobs make it behave like a misconfigured
    role. ``ca_material`` and ``sign`` answer one mount or one CSR (subclasses override them)."""

    pki: Pki
    cas: CaSet
    extra_dns: tuple[str, ...] = ()
    signer: str = "inter"
    not_after: dt.datetime | None = None
    not_before: dt.datetime | None = None
    calls: list[dict[str, object]] = field(default_factory=list)
    closed: bool = False           # whether the last sign_many was closed before it had answered everything

    def ca_materials(self, mounts: Sequence[str]) -> dict[str, CaMaterial]:
        return {m: self.ca_material(m) for m in mounts}

    def ca_material(self, mount: str) -> CaMaterial:
        return CaMaterial(issuer=pem(self.cas.inter), chain=(pem(self.cas.inter), pem(self.cas.root)))

    def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert:
        self.calls.append({"mount": mount, "role": role, "csr": csr, "common_name": common_name, "ttl": ttl})
        request = x509.load_pem_x509_csr(csr.encode())
        cn = common_name or str(request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        try:
            sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        sans += [x509.DNSName(d) for d in self.extra_dns]
        issuer: Issued = getattr(self.cas, self.signer)
        # As Vault dates a leaf: NotAfter the ttl asked for (else the role's default) ahead, NotBefore 30 s back.
        lifetime = dt.timedelta(seconds=int(ttl.removesuffix("s"))) if ttl else 30 * DAY
        not_after = self.not_after or self.pki.now + lifetime
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(issuer.cert.subject).public_key(request.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(self.not_before or min(self.pki.now, not_after) - BACKDATE).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([SERVER, CLIENT] if role == "node" else [CLIENT]),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(),
                          (pem(self.cas.inter), pem(self.cas.root)), crypto.format_serial(cert.serial_number))

    def sign_many(
        self, requests: Iterable[tuple[K, SignRequest]], parallel: int,
    ) -> Generator[tuple[K, IssuedCert | VaultpkiError], None, None]:
        """Draws lazily, ``parallel`` at a time, and answers each batch in reverse: a real stream answers
        in the order the requests complete, not the order they were made."""
        self.closed = False
        batch: list[tuple[K, SignRequest]] = []
        try:
            for item in requests:
                batch.append(item)
                if len(batch) == parallel:
                    yield from self._answer(batch)
                    batch = []
            yield from self._answer(batch)
        except GeneratorExit:
            self.closed = True
            raise

    def _answer(self, batch: list[tuple[K, SignRequest]]) -> Iterator[tuple[K, IssuedCert | VaultpkiError]]:
        answers: list[tuple[K, IssuedCert | VaultpkiError]] = []
        for tag, r in batch:
            try:
                answers.append((tag, self.sign(r.mount, r.role, r.csr, r.common_name, r.ttl)))
            except VaultpkiError as exc:
                answers.append((tag, exc))
        return reversed(answers)

    def issue_many(self, requests: Iterable[tuple[K, IssueRequest]], parallel: int) -> Iterator[tuple[K, IssuedCert]]:
        raise AssertionError("sign is the default method")  # pragma: no cover - not used here

    def revoke_with_key(self, mount: str, certificate: str, private_key: str) -> int:
        raise AssertionError("nothing is revoked here")  # pragma: no cover - not used here


def test_node_set_is_leaf_plus_intermediate_and_anchor(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    vault = FakeVault(pki, cas)
    result = obtain(plan_node(Mode.STANDARD, PKI, HOSTS, ()), vault, OPTIONS, lambda: now)
    files = {f.name: f for f in result.files}
    assert set(files) == {"ca.crt", "node.crt", "node.key"}
    assert files["node.key"].secret and not files["node.crt"].secret
    chain = crypto.load_certs(files["node.crt"].data)
    assert chain[1] == cas.inter.cert and len(chain) == 2              # no self-signed root in the leaf file
    assert crypto.load_certs(files["ca.crt"].data) == [cas.inter.cert]   # ca_trust = issuer
    assert crypto.key_matches(chain[0], crypto.load_key(files["node.key"].data))
    call = vault.calls[0]
    assert call["common_name"] is None and call["ttl"] == "3600s"       # node roles: CSR only
    assert "PRIVATE KEY" not in str(call["csr"])                         # the key never leaves


def test_ca_trust_root_writes_the_root(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    options = IssueOptions(key_type=crypto.KeyType.EC, key_bits=256, ttl_seconds=None, ca_trust="root")
    result = obtain(plan_node(Mode.STANDARD, PKI, HOSTS, ()), FakeVault(pki, cas), options, lambda: now)
    ca = next(f for f in result.files if f.name == "ca.crt")
    assert crypto.load_certs(ca.data) == [cas.root.cert]


def test_user_request_carries_the_common_name(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    vault = FakeVault(pki, cas)
    result = obtain(plan_user(Mode.STANDARD, PKI, "marc"), vault, OPTIONS, lambda: now)
    assert {f.name for f in result.files} == {"ca.crt", "client.marc.crt", "client.marc.key"}
    assert vault.calls[0]["common_name"] == "marc"


@pytest.mark.parametrize(("knobs", "needle"), [
    pytest.param({"extra_dns": ("root",)}, "unexpected DNS SANs root", id="dns-san-naming-another-user"),
    pytest.param({"signer": "other"}, "does not chain", id="wrong-ca"),
    pytest.param({"not_after": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "expired", id="expired"),
])
def test_misbehaving_vault_is_refused(pki: Pki, cas: CaSet, now: dt.datetime, knobs: dict[str, object],
                                      needle: str) -> None:
    vault = FakeVault(pki, cas, **knobs)  # type: ignore[arg-type]
    with pytest.raises(IssuanceRefused, match=needle) as info:
        obtain(plan_user(Mode.STANDARD, PKI, "marc"), vault, OPTIONS, lambda: now)
    assert str(info.value).startswith("refusing client.marc.crt from pki-crdb/sign/user")


FOUR_YEARS = 4 * 365 * DAY


@pytest.mark.parametrize(("ttl", "allowed"), [
    pytest.param(3600, "1h", id="ttl-1h"),
    pytest.param(None, "90d", id="role-default-bounded-by-the-longest-max-ttl"),
])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_certificate_living_longer_than_asked_is_refused(
        pki: Pki, cas: CaSet, now: dt.datetime, ttl: int | None, allowed: str, streamed: bool) -> None:
    """A lying signer returns a four-year user certificate (issue 16): refused, whether a ttl was asked
    for or the role's default applied (no role of data/roles.json issues longer than 90 days)."""
    vault = FakeVault(pki, cas, not_before=now - BACKDATE, not_after=now - BACKDATE + FOUR_YEARS)
    options = IssueOptions(key_type=crypto.KeyType.EC, key_bits=256, ttl_seconds=ttl)
    handed: list[object] = []
    issued, failed = obtain_partial(bulk_plan(["marc"]), vault, options, lambda: now, None, sink=handed.append,
                                    streamed=streamed)
    message = str(failed["client.marc.crt"])
    assert f"is valid for 1460d, longer than a ttl of {allowed} allows" in message, message
    assert message.startswith("refusing client.marc.crt from pki-crdb/sign/user")
    assert issued.leaves == () and handed == []                      # nothing reaches the disk


def test_a_certificate_of_exactly_the_ttl_plus_backdating_is_accepted(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    vault = FakeVault(pki, cas, not_before=now - BACKDATE, not_after=now + dt.timedelta(seconds=3600))
    result = obtain(plan_user(Mode.STANDARD, PKI, "marc"), vault, OPTIONS, lambda: now)
    assert [leaf.spec.common_name for leaf in result.leaves] == ["marc"]


def test_root_trust_without_a_root_in_the_chain_is_refused(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    class NoRoot(FakeVault):
        def ca_material(self, mount: str) -> CaMaterial:
            return CaMaterial(issuer=pem(self.cas.inter), chain=(pem(self.cas.inter),))
    options = IssueOptions(key_type=crypto.KeyType.EC, key_bits=256, ttl_seconds=None, ca_trust="root")
    with pytest.raises(IssuanceRefused, match="does not reach a self-signed root"):
        obtain(plan_node(Mode.STANDARD, PKI, HOSTS, ()), NoRoot(pki, cas), options, lambda: now)


def bulk_plan(users: list[str]) -> Plan:
    plans = [plan_user(Mode.STANDARD, PKI, u) for u in users]
    return Plan(trusts=plans[0].trusts, certs=tuple(c for p in plans for c in p.certs))


@pytest.mark.parametrize("streamed", [False, True])
def test_sink_gets_each_validated_leaf_and_the_ca_files_with_the_first(
        pki: Pki, cas: CaSet, now: dt.datetime, streamed: bool) -> None:
    class RefusesBob(FakeVault):
        def sign(self, mount: str, role: str, csr: str, common_name: str | None, ttl: str | None) -> IssuedCert:
            if common_name == "bob":
                raise VaultRequestError("permission denied for bob")
            return super().sign(mount, role, csr, common_name, ttl)

    handed: list[list[str]] = []
    issued, failed = obtain_partial(bulk_plan(["bob", "amy", "cyd"]), RefusesBob(pki, cas), OPTIONS, lambda: now, None,
                                    sink=lambda files: handed.append([f.name for f in files]), streamed=streamed)
    amy, cyd = ["client.amy.crt", "client.amy.key"], ["client.cyd.crt", "client.cyd.key"]
    # In judging order: the plan's order unless streamed; the stream as answers arrive.
    assert handed == ([["ca.crt", *amy], cyd] if not streamed else [["ca.crt", *cyd], amy])
    assert list(failed) == ["client.bob.crt"] and "permission denied for bob" in str(failed["client.bob.crt"])
    assert [f.name for f in issued.files] == ["ca.crt", *amy, *cyd]          # the plan's order either way


@pytest.mark.parametrize("streamed", [False, True])
def test_sink_gets_nothing_when_every_leaf_fails(pki: Pki, cas: CaSet, now: dt.datetime, streamed: bool) -> None:
    handed: list[object] = []
    issued, failed = obtain_partial(bulk_plan(["amy", "bob"]), FakeVault(pki, cas, signer="other"), OPTIONS, lambda: now, None,
                                    sink=handed.append, streamed=streamed)
    assert handed == [] and issued.leaves == () and sorted(failed) == ["client.amy.crt", "client.bob.crt"]


def test_a_streamed_run_gives_the_set_a_plan_ordered_run_gives(pki: Pki, cas: CaSet, now: dt.datetime) -> None:
    """Same files and leaves, in the plan's order, with keys made on the node and sent only as CSRs."""
    users = [f"u{i:02d}" for i in range(2 * BULK_IN_FLIGHT + 3)]
    vault = FakeVault(pki, cas)
    progress: list[str] = []
    streamed, failed = obtain_partial(bulk_plan(users), vault, OPTIONS, lambda: now, None, progress=progress.append, streamed=True)
    ordered, _ = obtain_partial(bulk_plan(users), FakeVault(pki, cas), OPTIONS, lambda: now, None)
    assert failed == {} and sorted(progress) == sorted(f"client.{u}.crt" for u in users)
    assert [f.name for f in streamed.files] == [f.name for f in ordered.files]
    assert [leaf.spec.common_name for leaf in streamed.leaves] == users
    assert [c["common_name"] for c in vault.calls] == users            # drawn in the plan's order
    for f in streamed.files:
        if f.name.endswith(".key"):
            cert = next(c for c in streamed.files if c.name == f.name[:-4] + ".crt")
            assert crypto.key_matches(crypto.load_certs(cert.data)[0], crypto.load_key(f.data))


@pytest.mark.parametrize("streamed", [False, True])
def test_a_failing_sink_stops_the_run_and_cancels_what_is_queued(
        pki: Pki, cas: CaSet, now: dt.datetime, streamed: bool) -> None:
    """The first batch in flight is all that is asked for; the port is closed at once, so that it cancels
    what it still has queued instead of running it while the error propagates."""
    def disk_full(files: object) -> None:
        raise StoreError("cannot write to certs-dir /certs: no space left on device")

    vault = FakeVault(pki, cas)
    with pytest.raises(StoreError, match="no space left") as raised:
        obtain_partial(bulk_plan([f"u{i:03d}" for i in range(300)]), vault, OPTIONS, lambda: now, None, sink=disk_full,
                       streamed=streamed)
    assert len(vault.calls) == (BULK_IN_FLIGHT if streamed else MAX_PARALLEL)   # nothing drawn after the failure
    # Closed by the time the error arrives, not whenever its traceback (held here) lets the answers go.
    assert vault.closed and raised.tb is not None


@pytest.mark.parametrize("streamed", [False, True])
def test_each_leaf_is_judged_when_its_answer_arrives(pki: Pki, cas: CaSet, now: dt.datetime, streamed: bool) -> None:
    """A run that outlasts Vault's 30 s backdating (an HA election, a big bulk run) gets certificates dated
    after it started: they are judged against the time they arrived, and one truly from the future is not."""
    calls: list[int] = []

    def clock() -> dt.datetime:
        """The run started at ``now``; by the time any answer is judged, two minutes have passed."""
        calls.append(len(vault.calls))
        return now + dt.timedelta(minutes=2)

    vault = FakeVault(pki, cas, not_before=now + dt.timedelta(minutes=1))
    issued, failed = obtain_partial(bulk_plan(["amy", "bob"]), vault, OPTIONS, clock, None, streamed=streamed)
    assert failed == {} and [leaf.spec.common_name for leaf in issued.leaves] == ["amy", "bob"]
    assert len(calls) == 2 and all(c > 0 for c in calls)         # asked once per leaf, after it was signed
    _, failed = obtain_partial(bulk_plan(["amy"]), vault, OPTIONS, lambda: now, None, streamed=streamed)
    assert "is not valid before" in str(failed["client.amy.crt"])
