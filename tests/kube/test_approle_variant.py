"""docs/kubernetes.md's AppRole variant: one Secret per node, mounted with ``defaultMode: 0400`` in a pod with an
``fsGroup``, which the kubelet turns into root-owned 0440 files in that group (kubernetes/kubernetes#57923).

The variant is made from the page's own blocks (the volume and the ConfigMap), and its init container runs
alone (``podman run``) with the volumes the tests' kubelet makes, against the real OpenBao: the AppRole role
of node cockroachdb-0, as the Terraform module makes it, logs in and signs with ``node-cockroachdb-0``.
"""

from __future__ import annotations

import copy
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.doc_blocks import doc_block

from .conftest import Vault
from .pod_run import PodRun
from .podman import Podman

pytestmark = [pytest.mark.integration, pytest.mark.slow]       # slow: builds the image (once per session)

NODE = "cockroachdb-0"


def variant(default_mode: int | None = None) -> Callable[[dict[str, Any]], None]:
    """The page's changes to the pod: its Secret volume in place of the projected one, and POD_NAME alone in the env."""
    def change(pod: dict[str, Any]) -> None:
        (volume,) = yaml.safe_load(doc_block("kubernetes.md", "approle-volume"))
        volume = copy.deepcopy(volume)
        if default_mode is not None:
            volume["secret"]["defaultMode"] = default_mode
        spec = pod["spec"]
        spec["volumes"] = [volume if v["name"] == volume["name"] else v for v in spec["volumes"]]
        for container in spec["initContainers"] + spec["containers"]:
            if container["name"].startswith("vaultpki"):
                container["env"] = [v for v in container["env"] if v["name"] == "POD_NAME"]
    return change


def approle_pod(podman: Podman, vault: Vault, root: Path, default_mode: int | None = None) -> PodRun:
    (volume,) = yaml.safe_load(doc_block("kubernetes.md", "approle-volume"))
    admin = vault.admin
    secret = {"role-id": admin.auth.approle.read_role_id(NODE)["data"]["role_id"],
              "secret-id": admin.auth.approle.generate_secret_id(NODE)["data"]["secret_id"],
              "vault-ca.pem": Path(str(vault.server.ca_cert)).read_text()}
    objects = {("ConfigMap", "vaultpki-config"): {"vaultpki.toml": doc_block("kubernetes.md", "approle-config")},
               ("Secret", volume["secret"]["secretName"]): secret}
    run = PodRun(podman, vault, root, 0, variant=variant(default_mode), objects=objects)
    run.prepare()
    return run


def test_the_kubelets_0440_secret_files_log_the_node_in(images: Podman, vault: Vault, scratch: Path) -> None:
    run = approle_pod(images, vault, scratch / "approle")
    secret_dir = run.volumes.paths["vaultpki-identity"]
    for name in ("role-id", "secret-id"):
        st = (secret_dir / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 1000, 0o440), name
    code, out, certs = run.run_alone("vaultpki-init", {})
    assert code == 0, out
    assert "reload pending: nobody to tell yet" in out, out
    cert = x509.load_pem_x509_certificate((certs / "certs" / "node.crt").read_bytes())
    # Only the PKI role node-cockroachdb-0 sets this OU: the AppRole login reached the node's own role.
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)] == [f"crdb-node-{NODE}"]


def test_the_same_secret_readable_by_others_is_refused(images: Podman, vault: Vault, scratch: Path) -> None:
    run = approle_pod(images, vault, scratch / "approle-0444", default_mode=0o444)
    code, out, certs = run.run_alone("vaultpki-init", {})
    assert code == 2, out
    assert "vault.secret_id_file /var/run/secrets/vaultpki/secret-id is accessible by group or others (mode 0444)" in out, out
    assert list(certs.iterdir()) == []
