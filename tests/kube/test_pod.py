"""The example's pod as the kubelet would run it, against a real OpenBao, with PostgreSQL in the database's place.

cockroachdb-0 of the StatefulSet is played by podman (``pod_run``): the init container's ``sync --once`` first,
while no database runs yet, then the database and the sidecar; the sidecar renews the short-lived certificate
and signals the database through the shared process namespace. cockroachdb-1, from the same ConfigMap, is its
own Vault identity, and its token cannot be used as cockroachdb-0's.
"""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from vaultpki.daemon.probe import served_certificate

from .conftest import Vault
from .pod_run import PodRun
from .podman import Podman

# slow: the pods take seconds to start, and one test waits for a renewal
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Certificates that the sidecar renews within a test's patience: 60 s, renewed when 60 % of the lifetime is left.
SHORT = {"VAULTPKI_TTL": "60s", "VAULTPKI_RENEW_BEFORE": "60%", "VAULTPKI_RENEW_JITTER": "5%",
         "VAULTPKI_RENEW_RETRY_INITIAL": "1s", "VAULTPKI_RENEW_RETRY_MAX": "2s"}


@pytest.fixture(scope="module")
def pod0(images: Podman, vault: Vault, scratch: Path) -> Iterator[PodRun]:
    run = PodRun(images, vault, scratch, 0, SHORT)
    try:
        run.up()
        assert run.played is not None and run.played.returncode == 0, run.played and run.played.stderr
        yield run
    finally:
        run.down()


@pytest.fixture(scope="module")
def pod1(images: Podman, vault: Vault, scratch: Path) -> Iterator[PodRun]:
    run = PodRun(images, vault, scratch, 1)
    try:
        run.up()
        assert run.played is not None and run.played.returncode == 0, run.played and run.played.stderr
        yield run
    finally:
        run.down()


def started(run: PodRun, container: str, state: str) -> dt.datetime:
    text = run.podman("inspect", "--format", f"{{{{.State.{state}}}}}", run.container(container)).stdout.strip()
    return dt.datetime.fromisoformat(" ".join(text.split()[:2])[:26])


def node_cert(run: PodRun) -> x509.Certificate:
    return x509.load_pem_x509_certificate((run.host_certs / "node.crt").read_bytes())


def test_the_init_container_writes_the_set_first_and_leaves_the_reload_pending(pod0: PodRun) -> None:
    """First boot: ``sync --once`` runs before the database exists, writes the set, exits 0 with the reload pending."""
    assert pod0.state("vaultpki-init") == ("exited", 0), pod0.logs("vaultpki-init")
    log = pod0.logs("vaultpki-init")
    assert "reload pending: nobody to tell yet" in log and "no process named 'postgres' is running" in log, log
    assert started(pod0, "vaultpki-init", "FinishedAt") <= started(pod0, "cockroachdb", "StartedAt")
    # The certs-dir vaultpki made inside the world-writable emptyDir, and the key, are the pod user's alone.
    certs = pod0.host_certs
    assert (certs.parent.stat().st_mode & 0o7777, certs.parent.stat().st_gid) == (0o2777, 1000)
    assert certs.stat().st_uid == 1000 and certs.stat().st_mode & 0o077 == 0
    key = (certs / "node.key").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (1000, 0o600)


def test_each_pod_gets_a_certificate_for_its_own_names_only(pod0: PodRun, pod1: PodRun) -> None:
    for run, other in ((pod0, pod1), (pod1, pod0)):
        cert = node_cert(run)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert f"{run.name}.cockroachdb" in names and f"{other.name}.cockroachdb" not in names, names
        # Only the PKI role node-<pod> sets this OU (Vault takes it from the role, never from the CSR).
        assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)] == \
            [f"crdb-node-{run.name}"]


def test_the_sidecar_renews_and_the_database_serves_the_new_certificate(pod0: PodRun) -> None:
    """The sidecar finds the database by name in the shared process namespace, as the same user, and SIGHUPs it:
    PostgreSQL re-reads its files and serves the renewed certificate."""
    first = pod0.node_serial()
    renewed = pod0.wait_for("a renewal by the sidecar", lambda: pod0.node_serial() != first and pod0.node_serial())
    endpoint = pod0.env["VAULTPKI_RELOAD_VERIFY"]

    def serving() -> bool:
        try:
            return bool(served_certificate(endpoint).serial_number == renewed)
        except Exception:           # the database not accepting connections yet
            return False
    pod0.wait_for("the database serving the renewed certificate", serving)
    pod0.wait_for("PostgreSQL's reload", lambda: "received SIGHUP, reloading configuration files" in pod0.logs("cockroachdb"))
    sidecar = pod0.logs("vaultpki")
    assert '"msg": "reload verified"' in sidecar, sidecar[-3000:]


def test_the_sidecar_sees_the_database_and_runs_read_only_as_the_pods_user(pod0: PodRun) -> None:
    code, out = pod0.exec("vaultpki", "id -u; id -G; for p in /proc/[0-9]*; do cat $p/comm; done; touch /x")
    lines = out.splitlines()
    assert code != 0 and "Read-only file system" in out, out
    assert lines[0] == "1000" and "1000" in lines[1].split(), out
    assert "postgres" in lines and "vaultpki" in lines, out       # one process namespace: the database is in sight


def test_healthz_and_metrics_answer_on_the_sidecars_port(pod0: PodRun) -> None:
    base = f"http://127.0.0.1:{pod0.metrics_port}"
    pod0.wait_for("/healthz", lambda: urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200)
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert "vaultpki_" in metrics, metrics[:500]


@pytest.mark.parametrize(("jwt_role", "pki_role", "refusal"), [
    pytest.param("node-cockroachdb-0", "node-cockroachdb-0", "logging in with jwt auth as role node-cockroachdb-0",
                 id="its-token-for-pod-0s-login-role"),
    pytest.param("node-cockroachdb-1", "node-cockroachdb-0", "permission denied", id="its-login-for-pod-0s-pki-role"),
])
def test_pod_1_cannot_become_pod_0(pod1: PodRun, jwt_role: str, pki_role: str, refusal: str) -> None:
    """cockroachdb-1's init container, with the environment changed to name cockroachdb-0's roles (its own token,
    mounts and ConfigMap as they are): Vault refuses, and nothing is written."""
    env = {"VAULTPKI_VAULT_JWT_ROLE": jwt_role, "VAULTPKI_PKI_NODE_ROLE": pki_role,
           "VAULTPKI_NODE_HOSTS": "cockroachdb-0.cockroachdb,localhost"}
    code, out, certs = pod1.run_alone("vaultpki-init", env)
    assert code == 1, out
    assert refusal in out, out
    assert list(certs.iterdir()) == [], list(certs.iterdir())



def test_the_emptydir_itself_is_refused_as_the_certs_dir(pod1: PodRun) -> None:
    """Why the certs-dir is a directory inside the emptyDir: the emptyDir as the kubelet makes it (2777, root and
    the fsGroup) is one any user could change, and vaultpki writes nothing into it."""
    code, out, certs = pod1.run_alone("vaultpki-init", {"VAULTPKI_CERTS_DIR": "/cockroach/tls"})
    assert code == 1 and "is writable by group or others (mode 2777)" in out, out
    assert list(certs.iterdir()) == []
