"""One pod of the example's StatefulSet, run as the kubelet would run it (``tests.support.pods``), with podman.

What the tests change in the pod, and why (docs/kubernetes.md lists the same):

* the ``cockroachdb`` container runs PostgreSQL 15 from the stand-in image, on the same certs-dir (the one
  its ``--certs-dir`` names), with a data directory in one more emptyDir: CockroachDB cannot be installed
  here, and PostgreSQL re-reads its certificate and key on SIGHUP as CockroachDB does;
* the vaultpki containers get a few ``VAULTPKI_*`` variables after the manifest's own: the test OpenBao's
  address (for the ConfigMap's ``vault-N.vault``), ``reload.process = postgres`` (the stand-in's process
  name, for ``cockroach``) and ``reload.verify`` on its port, and, where a test waits for a renewal,
  short lifetimes;
* the pod uses the host's network, to reach OpenBao on 127.0.0.1, so the ports the pod listens on become
  free ports of the host (the sidecar's ``--metrics-addr`` and probe, PostgreSQL's port).
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.pods import KubeletVolumes, pod_from_statefulset, podman_pod
from tests.support.postgres import free_port
from vaultpki.core import crypto

from .conftest import Vault, manifest_doc
from .podman import POSTGRES_IMAGE, Podman

PG_BIN = "/usr/lib/postgresql/15/bin"
VAULTPKI_CONTAINERS = ("vaultpki-init", "vaultpki")


class PodRun:
    """``<set>-<ordinal>`` played by podman, its volumes under ``root``; ``down()`` removes it."""

    def __init__(self, podman: Podman, vault: Vault, root: Path, ordinal: int, env: Mapping[str, str] = {}, *,
                 variant: Callable[[dict[str, Any]], None] | None = None,
                 objects: Mapping[tuple[str, str], Mapping[str, str]] = {}) -> None:
        """``variant`` changes the pod as the docs' variants say; ``objects`` adds to (or replaces) the API objects
        its volumes read: the manifest's ConfigMap and the ``vault-ca`` ConfigMap holding the test OpenBao's CA."""
        self.podman = podman
        sts = manifest_doc("StatefulSet")
        self.pod = pod_from_statefulset(sts, ordinal)
        if variant is not None:
            variant(self.pod)
        self.name: str = self.pod["metadata"]["name"]
        self.root: Path = root / self.name
        self.pg_port = free_port()
        self.metrics_port = free_port()
        spec = self.pod["spec"]
        database = next(c for c in spec["containers"] if c["name"] == "cockroachdb")
        self.certs_dir = next(a.split("=", 1)[1] for a in database["command"] if a.startswith("--certs-dir="))
        spec["containers"] = [self._stand_in(c) if c is database else self._free_ports(c) for c in spec["containers"]]
        spec["volumes"].append({"name": "pgdata", "emptyDir": {}})
        self.env = {"VAULTPKI_VAULT_ADDR": vault.server.addr, "VAULTPKI_RELOAD_PROCESS": "postgres",
                    "VAULTPKI_RELOAD_VERIFY": f"postgres://127.0.0.1:{self.pg_port}", **env}
        assert vault.server.ca_cert
        made = {("ConfigMap", "vaultpki-config"): manifest_doc("ConfigMap")["data"],
                ("ConfigMap", "vault-ca"): {"ca.crt": Path(vault.server.ca_cert).read_text()}, **objects}
        self.volumes = KubeletVolumes(self.root, self.pod, made, vault.signer.token)
        self.spec: dict[str, Any] = {}
        self.played: subprocess.CompletedProcess[str] | None = None
        self._alone = 0

    def _stand_in(self, database: dict[str, Any]) -> dict[str, Any]:
        """PostgreSQL in the database container's place: same name, env, mounts and user, on its certs-dir."""
        c = self.certs_dir
        script = (f"{PG_BIN}/initdb -D /pgdata/db -U postgres --auth=trust >/dev/null && exec {PG_BIN}/postgres -D /pgdata/db"
                  f" -c listen_addresses=127.0.0.1 -c port={self.pg_port} -c unix_socket_directories= -c ssl=on"
                  f" -c ssl_cert_file={c}/node.crt -c ssl_key_file={c}/node.key -c ssl_ca_file={c}/ca.crt")
        return {**copy.deepcopy(database), "image": POSTGRES_IMAGE, "command": ["sh", "-c", script],
                "volumeMounts": [*database["volumeMounts"], {"name": "pgdata", "mountPath": "/pgdata"}]}

    def _free_ports(self, container: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(container)
        if "--metrics-addr" in out.get("args", []):
            at = out["args"].index("--metrics-addr") + 1
            out["args"][at] = f"127.0.0.1:{self.metrics_port}"
            out["ports"] = [{**p, "containerPort": self.metrics_port} for p in out.get("ports", [])]
            out["livenessProbe"]["httpGet"]["port"] = self.metrics_port
        return out

    def prepare(self) -> Path:
        """Make the volumes, and the Pod for podman (``tests.support.pods.podman_pod``); its file."""
        volumes = self.volumes.make_all()
        self.spec = podman_pod(self.pod, volumes, extra_env={name: self.env for name in VAULTPKI_CONTAINERS})
        path: Path = self.root / "pod.yaml"
        path.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        return path

    def up(self) -> None:
        """``podman kube play`` the pod: the init container runs to its end first."""
        self.played = self.podman("kube", "play", "--replace", str(self.prepare()), check=False)

    def down(self) -> None:
        self.podman("pod", "rm", "--force", "--ignore", self.name, check=False)

    def run_alone(self, name: str, env: Mapping[str, str]) -> tuple[int, str, Path]:
        """Container ``name`` of the pod once more, by plain ``podman run``, with ``env`` after its own and a new
        empty certs emptyDir: its user, groups, read-only root, capabilities and mounts as in the pod.
        Returns the exit code, the output, and the new certs-dir's parent on the host."""
        spec = self.spec["spec"]
        container = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)
        self._alone += 1
        fresh = self.volumes.make({"name": f"certs-alone-{self._alone}", "emptyDir": {}})
        hosts = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]} | {"certs": str(fresh)}
        context = {**spec["securityContext"], **container.get("securityContext", {})}
        argv = ["run", "--rm", "--network=host", f"--user={context['runAsUser']}:{context['runAsGroup']}",
                *(f"--group-add={g}" for g in context.get("supplementalGroups", [])),
                *(["--read-only"] if context.get("readOnlyRootFilesystem") else []),
                *(f"--cap-drop={c}" for c in context.get("capabilities", {}).get("drop", [])),
                *([] if context.get("allowPrivilegeEscalation", True) else ["--security-opt=no-new-privileges"]),
                *(f"--volume={hosts[m['name']]}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"
                  for m in container["volumeMounts"]),
                *(f"--env={v['name']}={v['value']}" for v in container["env"]), *(f"--env={k}={v}" for k, v in env.items()),
                container["image"], *container.get("args", [])]
        proc = self.podman(*argv, check=False)
        return proc.returncode, proc.stdout + proc.stderr, fresh

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def logs(self, name: str) -> str:
        proc = self.podman("logs", self.container(name), check=False)
        return proc.stdout + proc.stderr

    def state(self, name: str) -> tuple[str, int]:
        proc = self.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.container(name))
        status, code = proc.stdout.split()
        return status, int(code)

    def exec(self, name: str, command: str) -> tuple[int, str]:
        proc = self.podman("exec", self.container(name), "sh", "-c", command, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    @property
    def host_certs(self) -> Path:
        """The certs-dir as the host sees it: inside the ``certs`` emptyDir."""
        mount = next(m for m in self.pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "certs")["mountPath"]
        return self.volumes.paths["certs"] / Path(self.certs_dir).relative_to(mount)

    def node_serial(self) -> int:
        return crypto.load_certs((self.host_certs / "node.crt").read_bytes())[0].serial_number

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        """Poll ``check()`` until it returns something true; fail with the pod's logs when it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        logs = "\n".join(f"--- {c}:\n{self.logs(c)[-3000:]}" for c in ("vaultpki-init", "cockroachdb", "vaultpki"))
        raise AssertionError(f"{self.name}: {what} did not happen within {timeout:.0f} s\n{logs}")
