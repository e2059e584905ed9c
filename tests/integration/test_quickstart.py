"""docs/quickstart.md, followed word for word: your own OpenBao from nothing to a node's verified certs-dir.

The blocks run in order in one bash, in an empty folder, with an empty HOME and no VAULT_*/BAO_*
variables, ``bao`` and ``vaultpki`` from the PATH as an operator's shell has them. The only change
is the ports (8200/8201 in the page), so the test never collides with a server of the machine's.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.doc_blocks import doc_block
from tests.support.raft import free_ports
from vaultpki.dev.devserver import find_bao

pytestmark = pytest.mark.integration

BLOCKS = ("start-server", "init-unseal", "configure", "node-token", "status")


def script(api: int, cluster: int) -> str:
    """The page's blocks, one after the other, on the test's ports (the server outlives the script: the
    fixture stops it, after the tests have used it)."""
    body = "\n".join(doc_block("quickstart.md", name) for name in BLOCKS)
    body = body.replace("127.0.0.1:8200", f"127.0.0.1:{api}").replace("127.0.0.1:8201", f"127.0.0.1:{cluster}")
    # `set -e` so that a failing step stops the walk-through where it fails, as it would stop a person
    return "set -e\n" + body


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str], str]]:
    folder = tmp_path_factory.mktemp("quickstart")
    home = folder / "home"
    home.mkdir()
    api, cluster = free_ports(2)
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(find_bao()).parent), "/usr/bin", "/bin"])
    env = {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8"}
    work = folder / "work"
    work.mkdir()
    proc = subprocess.Popen(["bash", "-c", script(api, cluster)], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
        yield work, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), f"http://127.0.0.1:{api}"
    finally:
        # the walk-through's session: its bash (if hung) and the `bao server` it left running
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_the_walk_through_succeeds(walked: tuple[Path, subprocess.CompletedProcess[str], str]) -> None:
    work, done, _ = walked
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nserver log:\n" + (
        (work / "openbao" / "server.log").read_text()[-3000:] if (work / "openbao" / "server.log").exists() else "")


def test_it_ends_with_a_node_certs_dir_that_verifies(walked: tuple[Path, subprocess.CompletedProcess[str], str]) -> None:
    work, done, _ = walked
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (work / "certs").iterdir() if not p.name.startswith(".")) == ["ca.crt", "node.crt", "node.key"]
    cert = x509.load_pem_x509_certificate((work / "certs" / "node.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {"node", "localhost"}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=29)    # ttl = "720h" held
    assert "ok" in done.stdout.lower()            # verify said so


def test_the_node_token_signs_nothing_but_its_own_role(walked: tuple[Path, subprocess.CompletedProcess[str], str]) -> None:
    """The page's least-privilege token: it signed node.crt, and it cannot sign client.root.crt, a user's
    certificate, or stretch its own lifetime with not_after."""
    work, done, addr = walked
    assert done.returncode == 0, done.stderr
    token = (work / "node-token").read_text().strip()
    assert (work / "node-token").stat().st_mode & 0o077 == 0          # the page's umask 077 held
    assert token and token not in done.stdout + done.stderr
    node = hvac.Client(url=addr, token=token)
    for role in ("root", "user"):
        with pytest.raises(hvac.exceptions.Forbidden):
            node.write(f"pki-crdb/sign/{role}", csr=csr("root"), common_name="root")
    with pytest.raises(hvac.exceptions.Forbidden):
        node.write("pki-crdb/sign/node", csr=csr("node"), not_after="2099-01-01T00:00:00Z")
    assert node.write("pki-crdb/sign/node", csr=csr("node"), ttl="1h")["data"]["certificate"]


def test_the_server_kept_its_data(walked: tuple[Path, subprocess.CompletedProcess[str], str]) -> None:
    """Not a dev server: the PKI lives in openbao/data (Raft), which the next start unseals again."""
    work, done, _ = walked
    assert done.returncode == 0, done.stderr
    assert (work / "openbao" / "data" / "raft" / "raft.db").is_file()


def csr(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
