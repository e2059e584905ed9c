"""What ``status``, ``verify`` and ``sync --dry-run`` report (vaultpki.core.report): rows, problems, chains,
OCSP verdicts, the next renewal and the JSON shape, decided without a terminal, a disk or a network."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import msgspec
from cryptography import x509

from tests.unit.conftest import DAY, CaSet, Pki
from vaultpki.core.ocsp import OcspResult, OcspStatus
from vaultpki.core.renewal import Decision
from vaultpki.core.report import (
    ocsp_problems,
    ocsp_questions,
    renewal_outlook,
    status_report,
    verify_report,
)
from vaultpki.core.snapshot import DirState
from vaultpki.core.validate import Problem


def as_json(report: msgspec.Struct) -> Any:
    """The document ``--json`` prints, read back."""
    return json.loads(json.dumps(msgspec.to_builtins(report)))


def answer(status: OcspStatus, now: dt.datetime, revoked_at: dt.datetime | None = None) -> OcspResult:
    return OcspResult(status=status, revocation_time=revoked_at, revocation_reason=None, this_update=now,
                      next_update=None, responder="http://ocsp.test/", serial=1)


def a_node_dir(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState]) -> DirState:
    """ca.crt (the root), node.crt (leaf + intermediate), node.key, a client of an unrelated CA, a stray file."""
    node = pki.leaf("node", cas.inter, dns=["db1.test"], ips=["10.0.0.1"])
    alice = pki.leaf("alice", cas.other)
    return dir_state({
        "ca.crt": cas.root.cert_pem,
        "node.crt": node.chain_pem(cas.inter),
        "node.key": node.key_pem,
        "client.alice.crt": alice.cert_pem,
        "client.alice.key": alice.key_pem,
        "notes.txt": b"not a certificate",
    })


def test_a_row_per_certificate_file_with_what_it_chains_to(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState],
                                                            now: dt.datetime) -> None:
    state = a_node_dir(pki, cas, dir_state)
    report = status_report(state, [Problem("node.key", "mode 0644"), Problem("other.crt", "elsewhere")], now, {})
    rows = {row.file: row for row in report.files}
    assert list(rows) == ["ca.crt", "client.alice.crt", "node.crt"]             # sorted; keys and strays are no rows
    assert (rows["ca.crt"].kind, rows["client.alice.crt"].kind, rows["node.crt"].kind) == ("ca", "client (alice)", "node")
    assert rows["ca.crt"].chains_to is None                                        # a CA file chains to nothing
    assert rows["node.crt"].chains_to == "CN=Test Root CA (ca.crt #1 of 1)"
    assert rows["client.alice.crt"].chains_to is None                              # its CA is not in the dir
    assert rows["node.crt"].problems == ("mode 0644",)                             # the key's problems are the cert's
    leaf, inter = rows["node.crt"].certificates
    assert (leaf.subject, leaf.dns_sans, leaf.ip_sans, leaf.ekus) == ("CN=node", ("db1.test",), ("10.0.0.1",),
                                                                      ("clientAuth", "serverAuth"))
    assert inter.is_ca and leaf.seconds_left == int((leaf_not_after(state) - now).total_seconds())


def leaf_not_after(state: DirState) -> dt.datetime:
    data = state.entries["node.crt"].data
    assert data is not None
    return x509.load_pem_x509_certificates(data)[0].not_valid_after_utc


def test_the_status_json_shape(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState], now: dt.datetime) -> None:
    """Keys in the order ``status --json`` has always printed them; ``ocsp`` only when it was asked."""
    state = a_node_dir(pki, cas, dir_state)
    state = msgspec.structs.replace(state, dir_problems=(Problem("certs-dir /certs", "writable by group 7"),))
    doc = as_json(status_report(state, [], now, {"node.crt": answer(OcspStatus.GOOD, now)}))
    assert list(doc) == ["certs_dir", "problems", "files", "reload_pending"]
    assert doc["reload_pending"] is None          # a reload the daemon still owes would be here
    assert doc["problems"] == ["certs-dir /certs: writable by group 7"]
    node = next(row for row in doc["files"] if row["file"] == "node.crt")
    ca = next(row for row in doc["files"] if row["file"] == "ca.crt")
    assert list(node) == ["file", "kind", "certificates", "chains_to", "problems", "ocsp"] and node["ocsp"] == "good"
    assert "ocsp" not in ca and ca["chains_to"] is None
    assert list(node["certificates"][0]) == ["subject", "issuer", "serial", "dns_sans", "ip_sans", "ekus", "is_ca",
                                             "not_before", "not_after", "seconds_left"]
    assert node["certificates"][0]["not_after"] == leaf_not_after(state).isoformat()


def test_expired_certificates_have_no_time_left(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState],
                                                now: dt.datetime) -> None:
    old = pki.leaf("node", cas.root, not_before=now - 10 * DAY, not_after=now - DAY)
    report = status_report(dir_state({"node.crt": old.cert_pem, "node.key": old.key_pem}), [], now, {})
    assert report.files[0].certificates[0].seconds_left == 0


def test_ocsp_questions_pair_each_leaf_with_its_issuer(pki: Pki, cas: CaSet, dir_state: Callable[..., DirState]) -> None:
    questions = ocsp_questions(a_node_dir(pki, cas, dir_state))
    assert sorted(questions) == ["client.alice.crt", "node.crt"]                   # CA files are not asked about
    node = questions["node.crt"]
    assert not isinstance(node, str) and node[1] == cas.inter.cert                # the next certificate of its file
    assert questions["client.alice.crt"] == "its issuer is not in the certs-dir"


def test_ocsp_verdicts_become_problems(now: dt.datetime) -> None:
    problems = ocsp_problems({
        "client.a.crt": answer(OcspStatus.REVOKED, now, dt.datetime(2030, 5, 1, 8, 0, tzinfo=dt.UTC)),
        "client.b.crt": answer(OcspStatus.UNKNOWN, now),
        "client.c.crt": "no responder answered",
        "node.crt": answer(OcspStatus.GOOD, now),
    })
    assert [str(p) for p in problems] == [
        "client.a.crt: is revoked at 2030-05-01T08:00:00Z (OCSP http://ocsp.test/)",
        "warning: client.b.crt: OCSP status unknown (http://ocsp.test/)",
        "warning: client.c.crt: OCSP check failed: no responder answered",
    ]


def test_verify_fails_on_errors_only() -> None:
    state = DirState("/certs", True)
    warned = verify_report(state, [Problem("x.crt", "ignored", "warning")])
    assert warned.ok
    failed = verify_report(state, [Problem("node.crt", "expired"), Problem("x.crt", "ignored", "warning")])
    assert not failed.ok
    doc = as_json(failed)
    assert doc == {"certs_dir": "/certs", "ok": False, "problems": [
        {"file": "node.crt", "severity": "error", "message": "expired"},
        {"file": "x.crt", "severity": "warning", "message": "ignored"}]}
    assert list(doc["problems"][0]) == ["file", "severity", "message"]


def test_the_next_renewal_is_the_earliest_of_all_files(now: dt.datetime) -> None:
    later, sooner = Decision("node.crt", False, "fresh", now + 9 * DAY), Decision("ui.crt", False, "fresh", now + DAY)
    assert renewal_outlook([later, sooner]) == renewal_outlook([sooner, later])
    assert renewal_outlook([later, sooner]).next_renewal == now + DAY and renewal_outlook([later]).due == ()
    due = Decision("client.root.crt", True, "expires in 1h", now)
    assert renewal_outlook([later, due]).due == (due,)
    assert renewal_outlook([]).next_renewal is None
