"""The Kubernetes example as written: valid for the API (strictly), and its pieces consistent with each other and
with vaultpki's configuration, for every pod the StatefulSet makes."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.support.pods import fs_user, kubelet_env, pod_from_statefulset
from vaultpki import config
from vaultpki.errors import ConfigError

from .conftest import manifest_doc, manifest_docs

VERSION = kubernetes_validate.latest_version()


def template() -> dict[str, Any]:
    spec: dict[str, Any] = manifest_doc("StatefulSet")["spec"]["template"]["spec"]
    return spec


def containers() -> dict[str, dict[str, Any]]:
    spec = template()
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def config_file() -> dict[str, Any]:
    return tomllib.loads(manifest_doc("ConfigMap")["data"]["vaultpki.toml"])


def parsed_for(pod_name: str, container: str = "vaultpki") -> config.Config:
    pod = pod_from_statefulset(manifest_doc("StatefulSet"), int(pod_name.rsplit("-", 1)[1]))
    env = {k: v for k, v in kubelet_env(containers()[container], pod).items() if k.startswith("VAULTPKI_")}
    return config.parse(config_file(), env, source="k8s example")


@pytest.mark.parametrize("doc", manifest_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_document_is_valid_for_kubernetes_strictly(doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, VERSION, strict=True) == ".".join(VERSION.split(".")[:2])


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The check above is strict: a misspelt field (here in a container's securityContext) is an error."""
    doc = copy.deepcopy(manifest_doc("StatefulSet"))
    doc["spec"]["template"]["spec"]["containers"][1]["securityContext"] = {"readOnlyRootFilesystm": True}
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFilesystm"):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_manifest_holds_what_the_example_needs() -> None:
    assert [d["kind"] for d in manifest_docs()] == ["ServiceAccount", "StatefulSet", "ConfigMap"]
    account = manifest_doc("ServiceAccount")
    assert account["automountServiceAccountToken"] is False          # no API token: only the one for Vault
    assert template()["serviceAccountName"] == account["metadata"]["name"]


def test_one_user_for_every_container_and_a_shared_process_namespace() -> None:
    spec = template()
    assert spec["shareProcessNamespace"] is True                     # the sidecar can see cockroach...
    assert fs_user(spec) == spec["securityContext"]["runAsUser"] == 1000  # ...and signal it as the same user
    assert spec["securityContext"]["fsGroup"] == 1000 and spec["securityContext"]["runAsNonRoot"] is True
    for name in ("vaultpki-init", "vaultpki"):
        context = containers()[name]["securityContext"]
        assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                           "capabilities": {"drop": ["ALL"]}}, name


def test_the_init_container_runs_once_and_the_sidecar_keeps_running() -> None:
    init, sidecar = containers()["vaultpki-init"], containers()["vaultpki"]
    assert init["args"][-2:] == ["sync", "--once"]
    assert "sync" in sidecar["args"] and "--once" not in sidecar["args"]
    port = int(sidecar["args"][sidecar["args"].index("--metrics-addr") + 1].rsplit(":", 1)[1])
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert [p["containerPort"] for p in sidecar["ports"]] == [port]
    assert manifest_doc("StatefulSet")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_the_certs_dir_is_inside_the_emptydir_in_every_container() -> None:
    """The kubelet makes an emptyDir 2777, which vaultpki refuses to write into: the certs-dir is a directory
    in it, the same one for CockroachDB and for vaultpki."""
    certs_dir = Path(str(parsed_for("cockroachdb-0").certs_dir))
    command = containers()["cockroachdb"]["command"]
    assert f"--certs-dir={certs_dir}" in command
    assert {v["name"]: v for v in template()["volumes"]}["certs"]["emptyDir"] == {"medium": "Memory"}
    for name, container in containers().items():
        (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "certs"]
        assert certs_dir.parent == Path(mount), name


def test_the_pods_token_and_vaults_ca_are_where_the_configuration_reads_them() -> None:
    vault = parsed_for("cockroachdb-0").vault
    volumes = {v["name"]: v for v in template()["volumes"]}
    sources = volumes["vaultpki-identity"]["projected"]["sources"]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    (ca,) = [s["configMap"] for s in sources if "configMap" in s]
    assert token["audience"] == "vault"
    for name in ("vaultpki-init", "vaultpki"):
        (mount,) = [m for m in containers()[name]["volumeMounts"] if m["name"] == "vaultpki-identity"]
        assert mount["readOnly"] is True
        assert vault.jwt_file == f"{mount['mountPath']}/{token['path']}"
        assert vault.ca_cert == f"{mount['mountPath']}/{ca['items'][0]['path']}"


@pytest.mark.parametrize("pod_name", ["cockroachdb-0", "cockroachdb-2"])
@pytest.mark.parametrize("container", ["vaultpki-init", "vaultpki"])
def test_each_pod_names_its_own_roles_and_hosts_through_the_environment(pod_name: str, container: str) -> None:
    parsed = parsed_for(pod_name, container)
    assert parsed.vault.auth == "jwt"
    assert parsed.vault.jwt_role == parsed.pki.node_role == f"node-{pod_name}"
    assert parsed.node_hosts[0] == f"{pod_name}.cockroachdb" and "localhost" in parsed.node_hosts
    assert parsed.reload.process == "cockroach" and len(parsed.vault.addrs) == 3


def test_the_configmap_alone_names_no_pods_role() -> None:
    with pytest.raises(ConfigError, match="needs vault.jwt_role"):
        config.parse(config_file(), {}, source="k8s example")


# A credential in a process's environment is inherited by every child (a reload command) and readable by anything
# running as the same user in /proc/PID/environ: the example delivers none that way.
CREDENTIAL = re.compile(r"TOKEN|SECRET|PASSWORD|^(VAULT|BAO)_", re.IGNORECASE)


def test_no_container_has_a_credential_in_its_environment() -> None:
    for name, container in containers().items():
        for var in container.get("env", []):
            assert not CREDENTIAL.search(var["name"]), (name, var)
            assert set(var.get("valueFrom", {})) <= {"fieldRef"}, (name, var)
        assert "envFrom" not in container, name
    vault = parsed_for("cockroachdb-1").vault
    assert vault.token is None and vault.token_file is None and vault.secret_id_file is None
