"""CA rotation in the wrong order, and the way out of old leaves (issue 19, §5), against the session's OpenBao.

- ``ca retire`` before ``ca activate`` must not retire the new, pending issuer (``activate`` would then have
  nothing to activate): an issuer newer than the default is never retired, and ``retire`` says to activate first.
- ``--min-age`` takes a duration in every form the configuration takes, zero in any form included (``0s``), and
  the refusal names a command that works, run here verbatim.
- ``ca status`` says each issuer's state (active, pending, superseded, retired), in text and JSON.
- A re-issued leaf leaves the old one valid, so ``ca retire`` offers ``--revoke-leaves``, not "re-issue them":
  its ``--dry-run`` lists exactly what the real run then revokes (and only that), and the retired issuer still
  publishes them on its CRL.
- Newer and older are by notBefore: ``ca rotate`` makes the new CA start after every issuer of the mount, even
  right after the mount was made, and refuses when it cannot.

Each test has a root CA mount of its own (the rotation changes it), provisioned in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

from .conftest import NODE_HOSTS, run_cli, toml_dump
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration


class Rig:
    """A standard layout on a root CA mount of its own, and the real CLI pointed at it."""

    def __init__(self, bao: DevServer, work: Path, prefix: str) -> None:
        self.mount = f"{prefix}-crdb"
        self.admin = hvac.Client(url=bao.addr, token=bao.root_token)
        pki = PkiNames(mount=self.mount, client_mount=None, node_role="node", client_node_role="client-node",
                       user_role="user", ui_mount=None, ui_role=None)
        provision(self.admin, bao.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=NODE_HOSTS, intermediate=False))
        self.work = work
        config = work / "vaultpki.toml"
        config.write_text(toml_dump({"certs_dir": str(work / "certs"), "mode": "standard", "ttl": "1h",
                                     "vault": {"addr": bao.addr, "retry_for": "2s"}, "pki": {"mount": self.mount},
                                     "node": {"hosts": list(NODE_HOSTS)}}))
        self.env = {"VAULT_TOKEN": bao.root_token, "VAULTPKI_CONFIG": str(config)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(list(args), self.env)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def doc(self, *args: str) -> dict[str, Any]:
        found = json.loads(self.ok(*args, "--json"))
        assert isinstance(found, dict)
        return found

    def states(self, text: bool = False) -> list[tuple[str, str]]:
        """(state, issuer id) of every issuer, newest first, from ``ca status --json``; with ``text``, the text
        form must say the same, one issuer a line led by its state."""
        issuers = self.doc("ca", "status", "--mount", self.mount)["issuers"]
        rows = [(i["state"], i["issuer_id"]) for i in issuers]
        if text:
            lines = self.ok("ca", "status", "--mount", self.mount).splitlines()
            assert [tuple(line.split()[:2]) for line in lines] == rows, lines
        return rows

    def issuer(self, issuer_id: str) -> dict[str, Any]:
        return dict(self.admin.read(f"{self.mount}/issuer/{issuer_id}")["data"])

    def revocation_time(self, serial: str) -> int:
        return int(self.admin.read(f"{self.mount}/cert/{serial}")["data"].get("revocation_time") or 0)

    def user(self, name: str) -> str:
        """Issue ``client.<name>.crt`` into a certs-dir of its own; its serial as Vault lists it."""
        self.ok("issue-user", name, "--certs-dir", str(self.work / name))
        cert = crypto.load_certs((self.work / name / f"client.{name}.crt").read_bytes())[0]
        return crypto.format_serial(cert.serial_number)


@pytest.fixture
def rig(bao: DevServer, tmp_path: Path) -> Rig:
    return Rig(bao, tmp_path, f"ord-{uuid.uuid4().hex[:8]}")


def test_retire_before_activate_leaves_the_pending_issuer_and_says_to_activate(rig: Rig) -> None:
    old = rig.doc("ca", "status", "--mount", rig.mount)["issuers"][0]["issuer_id"]
    new = rig.doc("ca", "rotate", "--mount", rig.mount)["issuer_id"]
    for extra in ([], ["--force"], ["--revoke-leaves", "--dry-run"]):
        one_error_line(rig.run("ca", "retire", "--mount", rig.mount, *extra), 2, f"issuer {new}", "newer than the default",
                       f"vaultpki ca activate --mount {rig.mount}")
    assert "issuing-certificates" in str(rig.issuer(new)["usage"])                  # untouched in Vault
    # Rotated within Vault's 30 s notBefore backdate of the mount's first CA: the new one still starts later.
    starts = {i["issuer_id"]: i["not_before"] for i in rig.doc("ca", "status", "--mount", rig.mount)["issuers"]}
    assert starts[new] > starts[old], starts
    assert rig.states(text=True) == [("pending", new), ("active", old)]
    assert rig.doc("ca", "activate", "--mount", rig.mount, "--min-age", "0")["issuer_id"] == new
    assert rig.states(text=True) == [("active", new), ("superseded", old)]
    assert rig.doc("ca", "retire", "--mount", rig.mount)["retired"] == [old]
    assert rig.states() == [("active", new), ("retired", old)]
    assert set(str(rig.issuer(old)["usage"]).split(",")) == {"read-only", "crl-signing", "ocsp-signing"}
    # A second rotation while nothing is superseded: the new pending issuer is again refused, the retired one stays.
    newer = rig.doc("ca", "rotate", "--mount", rig.mount)["issuer_id"]
    one_error_line(rig.run("ca", "retire", "--mount", rig.mount), 2, f"issuer {newer}", "newer than the default")
    assert rig.states(text=True) == [("pending", newer), ("active", new), ("retired", old)]


def test_min_age_takes_every_duration_form_and_the_refusal_names_one_that_works(rig: Rig) -> None:
    first = rig.doc("ca", "rotate", "--mount", rig.mount)["issuer_id"]
    assert rig.doc("ca", "activate", "--mount", rig.mount, "--min-age", "0s")["issuer_id"] == first
    second = rig.doc("ca", "rotate", "--mount", rig.mount)["issuer_id"]
    line = one_error_line(rig.run("ca", "activate", "--mount", rig.mount, "--min-age", "1h"), 2, "wait until every node")
    suggested = re.search(r"vaultpki (ca activate \S.*)$", line)
    assert suggested, line
    assert rig.doc(*shlex.split(suggested[1]))["issuer_id"] == second          # the command it names, verbatim
    # Parsed, then refused for the one remaining reason: the newest issuer is the default already.
    for form in ("0", "0s", "0h0m", "90s", "1h30m", "2h"):
        one_error_line(rig.run("ca", "activate", "--mount", rig.mount, "--min-age", form), 2, "nothing to activate")
    one_error_line(rig.run("ca", "activate", "--mount", rig.mount, "--min-age", "2x"), 2, "--min-age", "not a duration", "0s")
    assert rig.states()[:2] == [("active", second), ("superseded", first)]


def test_retire_revokes_the_old_leaves_after_a_dry_run_that_lists_them(rig: Rig) -> None:
    alice_old, carol = rig.user("alice"), rig.user("carol")
    old = rig.doc("ca", "status", "--mount", rig.mount)["issuers"][0]["issuer_id"]
    new = rig.doc("ca", "rotate", "--mount", rig.mount)["issuer_id"]
    rig.ok("ca", "activate", "--mount", rig.mount, "--min-age", "0")
    alice_new, bob = rig.user("alice"), rig.user("bob")                    # re-issued from the new CA
    old_leaves = {alice_old, carol}

    line = one_error_line(rig.run("ca", "retire", "--mount", rig.mount), 2, f"issuer {old}", "2 valid certificate(s)",
                          alice_old, carol, f"vaultpki ca retire --mount {rig.mount} --revoke-leaves --dry-run")
    assert "re-issue them" not in line
    one_error_line(rig.run("ca", "retire", "--mount", rig.mount, "--revoke-leaves", "--force"), 2, "exclude each other")

    plan = rig.doc("ca", "retire", "--mount", rig.mount, "--revoke-leaves", "--dry-run")
    assert plan["dry_run"] is True and plan["retired"] == [old]
    assert {r["serial"] for r in plan["revoked"]} == old_leaves
    assert {r["common_name"] for r in plan["revoked"]} == {"alice", "carol"}
    assert all(r["revocation_time"] is None for r in plan["revoked"])
    text = rig.ok("ca", "retire", "--mount", rig.mount, "--revoke-leaves", "--dry-run").splitlines()
    wanted = (f"would revoke {alice_old} CN=alice ", f"would revoke {carol} CN=carol ", f"would retire {old} on {rig.mount}")
    assert len(text) == 3 and all(any(line.startswith(w) for line in text) for w in wanted), text
    assert [rig.revocation_time(s) for s in (alice_old, carol, alice_new, bob)] == [0, 0, 0, 0]   # nothing changed
    assert rig.states() == [("active", new), ("superseded", old)]

    done = rig.doc("ca", "retire", "--mount", rig.mount, "--revoke-leaves")
    assert done["dry_run"] is False and done["retired"] == [old]
    assert {r["serial"] for r in done["revoked"]} == old_leaves
    assert all(isinstance(r["revocation_time"], int) and r["revocation_time"] > 0 for r in done["revoked"])
    assert all(rig.revocation_time(s) > 0 for s in old_leaves)
    assert rig.revocation_time(alice_new) == rig.revocation_time(bob) == 0      # the new CA's leaves are kept
    status = rig.doc("ca", "status", "--mount", rig.mount)["issuers"]
    assert [(i["state"], i["valid_leaves"]) for i in status] == [("active", 2), ("retired", 0)]
    # The retired issuer still signs its CRL, and the CRL names what was revoked.
    crl = x509.load_pem_x509_crl(str(rig.admin.read(f"{rig.mount}/issuer/{old}/crl")["data"]["crl"]).encode())
    assert {crypto.format_serial(r.serial_number) for r in crl} >= old_leaves
    assert "nothing to retire" in rig.ok("ca", "retire", "--mount", rig.mount, "--revoke-leaves")


def test_rotate_refuses_when_no_new_ca_could_start_after_every_issuer(rig: Rig) -> None:
    """An issuer whose notBefore is ahead of Vault's clock (imported, or from a server with a clock ahead): a new CA
    could not be newer than it, and "newer than the default" would be wrong, so rotate refuses and makes nothing."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ahead of the clock")])
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    imported = rig.admin.write_data(f"{rig.mount}/issuers/import/bundle", data={"pem_bundle": bundle.decode()})
    ahead = imported["data"]["imported_issuers"][0]

    def issuers() -> list[str]:
        return [i["issuer_id"] for i in rig.doc("ca", "status", "--mount", rig.mount)["issuers"]]

    before = issuers()
    assert len(before) == 2 and before[0] == ahead                     # newest first: the imported one
    line = one_error_line(rig.run("ca", "rotate", "--mount", rig.mount), 1, f"issuer {ahead}", "not before Vault's clock")
    assert "run ca rotate again after" in line
    assert issuers() == before
