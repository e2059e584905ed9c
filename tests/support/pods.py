"""A pod of a StatefulSet as the kubelet would run it, played by podman where podman is faithful.

Podman 4.3 (Debian 12), tried here, runs a ``kind: Pod`` with ``podman kube play``, and these parts of it
as the kubelet does: init containers first, each to its end, and none of the others when one fails; the
containers' ``command``/``args``; ``runAsUser``/``runAsGroup``/``runAsNonRoot``, ``supplementalGroups``,
``readOnlyRootFilesystem``, ``allowPrivilegeEscalation``, dropped capabilities; ``shareProcessNamespace``;
``hostNetwork``; ``env`` values and ``fieldRef: metadata.name``; ``hostPath`` volumes. The rest it does
differently, so this module does it the kubelet's way and hands podman the result:

* a StatefulSet is skipped ("YAML document does not contain any supported kube kind"): the pod is the
  template, named ``<set>-<ordinal>`` (``pod_from_statefulset``);
* ``$(VAR)`` in ``env`` values, ``command`` and ``args`` is left as it is: expanded here, from the
  variables defined earlier in the list, as the kubelet does (``kubelet_env``, ``expand``);
* ``fsGroup`` is ignored (no supplementary group, no group on the volumes' files): it becomes the
  ``supplementalGroups`` entry the kubelet adds, and the files below get its group;
* Secret, ConfigMap and projected volumes come out with the wrong content or modes (values left base64,
  ``defaultMode``/``fsGroup``/``subPath`` ignored, a Secret volume without ``optional:`` crashes it), and an
  ``emptyDir`` is a 0755 directory of ``runAsUser`` where the kubelet makes a 2777 one of root and the
  fsGroup: each volume is made here as the kubelet's volume plugins and ``SetVolumeOwnership`` make it
  (``KubeletVolumes``), in the kubelet's own atomic-writer layout (``..data`` -> a timestamped directory,
  each name a link through ``..data``), and given to podman as a ``hostPath``.

References (kubernetes/kubernetes): pkg/volume/volume_linux.go (SetVolumeOwnership: the fsGroup as group,
``mode | 0440`` for a read-only volume's files, ``| 0660`` for an emptyDir's, setgid and ``| 0110`` on
directories), pkg/volume/projected/projected.go (a service-account token is written 0600, owned by the pod's
one ``runAsUser`` when every container has the same, "when FsGroup is set, we depend on SetVolumeOwnership to
change from 0600 to 0640"), pkg/volume/util/atomic_writer.go, kubernetes/kubernetes#57923.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["ISSUER", "KubeletVolumes", "ServiceAccountSigner", "expand", "fs_user", "kubelet_env", "pod_from_statefulset",
           "podman_pod"]

# The --service-account-issuer the signer below claims to be (any URL: Vault's jwt role is bound to it).
ISSUER = "https://kubernetes.default.svc.cluster.local"
_RO_MASK = 0o440          # SetVolumeOwnership on a read-only volume (Secret, ConfigMap, projected)
_RW_MASK = 0o660          # ... on a writable one (emptyDir)
_EXEC_MASK = 0o110
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def pod_from_statefulset(sts: Mapping[str, Any], ordinal: int, namespace: str = "default") -> dict[str, Any]:
    """The Pod the StatefulSet controller makes for ``ordinal``: the template, named ``<set>-<ordinal>``."""
    template = copy.deepcopy(sts["spec"]["template"])
    name = f"{sts['metadata']['name']}-{ordinal}"
    labels = {**template["metadata"].get("labels", {}), "statefulset.kubernetes.io/pod-name": name}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": namespace, "labels": labels},
            "spec": template["spec"]}


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` replaced by a variable of ``env`` (an unknown one left as it is), ``$$`` by ``$``: the kubelet's rule."""
    def one(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))
    return _VAR.sub(one, text)


def kubelet_env(container: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, str]:
    """A container's ``env`` as the kubelet builds it: the Downward API's ``metadata.name``/``metadata.namespace``
    from the pod, and each value expanded with the variables defined before it in the same list."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]          # only the Downward API is used here
            env[var["name"]] = {"metadata.name": pod["metadata"]["name"],
                                "metadata.namespace": pod["metadata"].get("namespace", "default")}[field]
        else:
            env[var["name"]] = expand(var.get("value", ""), env)
    return env


def fs_user(spec: Mapping[str, Any]) -> int | None:
    """The kubelet's FsUser: the one ``runAsUser`` every container of the pod has, else None."""
    pod_user = spec.get("securityContext", {}).get("runAsUser")
    users = {c.get("securityContext", {}).get("runAsUser", pod_user)
             for c in spec.get("initContainers", []) + spec["containers"]}
    (user,) = users if len(users) == 1 else (None,)
    return user if isinstance(user, int) else None


class ServiceAccountSigner:
    """The API server's half of a projected service-account token: an RSA key, and tokens signed with it (RS256)
    carrying the claims a kube-apiserver puts in them, the pod's name among them."""

    def __init__(self, namespace: str = "default", service_account: str = "default") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.namespace = namespace
        self.service_account = service_account

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def token(self, pod: str, audience: str, lifetime: int) -> str:
        now = int(time.time())
        claims = {
            "aud": [audience], "iss": ISSUER, "sub": self.subject, "iat": now, "nbf": now, "exp": now + lifetime,
            "kubernetes.io": {"namespace": self.namespace, "pod": {"name": pod, "uid": f"uid-{pod}"},
                              "serviceaccount": {"name": self.service_account, "uid": "uid-sa"}},
        }
        def part(obj: object) -> bytes:
            return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=")
        signing_input = part({"alg": "RS256", "kid": "test"}) + b"." + part(claims)
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


class KubeletVolumes:
    """The volumes of one pod, made under ``root`` as the kubelet makes them, for podman to bind as ``hostPath``.

    ``objects`` holds the API objects the volumes name, as ``{("ConfigMap"|"Secret", name): {key: text}}``;
    ``token`` signs a service-account token for (pod, audience, expirationSeconds).
    """

    def __init__(self, root: Path, pod: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, str]],
                 token: Callable[[str, str, int], str] | None = None) -> None:
        self.root = root
        self.pod = pod
        self.objects = objects
        self.token = token
        self.fs_group: int | None = pod["spec"].get("securityContext", {}).get("fsGroup")
        self.fs_user = fs_user(pod["spec"])
        self.paths: dict[str, Path] = {}

    def make_all(self) -> dict[str, Path]:
        for volume in self.pod["spec"].get("volumes", []):
            self.paths[volume["name"]] = self.make(volume)
        return self.paths

    def make(self, volume: Mapping[str, Any]) -> Path:
        path: Path = self.root / str(volume["name"])
        if "emptyDir" in volume:
            # empty_dir.go: 0777, then SetVolumeOwnership (fsGroup, | 0660, setgid): drwxrwsrwx root:fsGroup
            path.mkdir(parents=True)
            self._own(path, 0, 0o777, _RW_MASK)
            return path
        path.mkdir(parents=True)
        self._own(path, 0, 0o1777, _RO_MASK)          # the root of the tmpfs the kubelet mounts for them
        self.write(volume["name"], self.payload(volume))
        return path

    def payload(self, volume: Mapping[str, Any]) -> dict[str, tuple[bytes, int, int]]:
        """{relative path: (content, mode, owner)} before SetVolumeOwnership, per volume plugin."""
        if "secret" in volume or "configMap" in volume:
            kind = "secret" if "secret" in volume else "configMap"
            source = volume[kind]
            name = source.get("secretName") or source.get("name")
            return self._items(("Secret" if kind == "secret" else "ConfigMap", name), source,
                               source.get("defaultMode", 0o644))
        payload: dict[str, tuple[bytes, int, int]] = {}
        projected = volume["projected"]
        default = projected.get("defaultMode", 0o644)
        for source in projected["sources"]:
            if "serviceAccountToken" in source:
                assert self.token is not None, "the pod projects a service-account token: pass a signer"
                spec = source["serviceAccountToken"]
                mode = 0o600 if self.fs_user is not None or self.fs_group is not None else default
                text = self.token(self.pod["metadata"]["name"], spec.get("audience", ""), spec.get("expirationSeconds", 3600))
                payload[spec["path"]] = (text.encode(), mode, self.fs_user or 0)
            else:
                kind = "secret" if "secret" in source else "configMap"
                inner = source[kind]
                payload.update(self._items(("Secret" if kind == "secret" else "ConfigMap", inner["name"]), inner, default))
        return payload

    def _items(self, ref: tuple[str, str], source: Mapping[str, Any], default: int) -> dict[str, tuple[bytes, int, int]]:
        data = self.objects[ref]
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        return {item["path"]: (data[item["key"]].encode(), item.get("mode", default), 0) for item in items}

    def write(self, name: str, payload: Mapping[str, tuple[bytes, int, int]]) -> None:
        """atomic_writer.go: the files in a new ``..<timestamp>`` directory, ``..data`` switched to it by one rename,
        each name a link ``name -> ..data/name``; the old directory removed. Also how the kubelet refreshes."""
        path = self.paths.get(name, self.root / name)
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9:09d}"
        generation = path / stamp
        generation.mkdir(mode=0o755)
        self._own(generation, 0, 0o755, _RO_MASK)
        for rel, (content, mode, owner) in payload.items():
            file = generation / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content)
            self._own(file, owner, mode, _RO_MASK)
        old = os.readlink(path / "..data") if (path / "..data").is_symlink() else None
        os.symlink(stamp, path / "..data_tmp")
        os.rename(path / "..data_tmp", path / "..data")
        for rel in {r.split("/")[0] for r in payload}:
            if not (path / rel).is_symlink():
                os.symlink(f"..data/{rel}", path / rel)
        if old:
            shutil.rmtree(path / old)

    def _own(self, path: Path, uid: int, mode: int, mask: int) -> None:
        """The mode and owner a plugin writes, then SetVolumeOwnership's group and bits when the pod has an fsGroup."""
        gid = 0
        if self.fs_group is not None:
            gid = self.fs_group
            mode |= mask | ((0o2000 | _EXEC_MASK) if path.is_dir() else 0)
        os.chown(path, uid, gid)
        os.chmod(path, mode)


def podman_pod(pod: Mapping[str, Any], volumes: Mapping[str, Path], *, extra_env: Mapping[str, Mapping[str, str]] = {},
               host_network: bool = True) -> dict[str, Any]:
    """The Pod handed to ``podman kube play``: ``$(VAR)`` expanded, the fsGroup as a supplementary group, every
    volume a ``hostPath`` made by ``KubeletVolumes``, init containers kept for their logs, and ``extra_env``
    (per container name) after the manifest's own variables, as a test's overrides."""
    out = copy.deepcopy(dict(pod))
    spec = out["spec"]
    context = spec.setdefault("securityContext", {})
    if "fsGroup" in context:
        context["supplementalGroups"] = sorted({*context.get("supplementalGroups", []), context["fsGroup"]})
    spec["hostNetwork"] = host_network
    # podman applies the pod's restartPolicy to init containers as it is: under a StatefulSet's "Always" it starts a
    # finished init container again and again. The kubelet runs an init container to success once, restarting it only
    # when it fails: "OnFailure", which is also all the app containers of the example need (none of them exits 0).
    spec["restartPolicy"] = "OnFailure"
    # podman removes an init container once it has run ("once"); "always" keeps it, with its logs and exit code
    out["metadata"].setdefault("annotations", {})["io.podman.annotations.init.container.type"] = "always"
    for container in spec.get("initContainers", []) + spec["containers"]:
        if host_network:
            container.pop("ports", None)      # podman refuses port mappings on the host's network; they are the host's ports
        env = {**kubelet_env(container, out), **extra_env.get(container["name"], {})}
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        for key in ("command", "args"):
            if key in container:
                container[key] = [expand(arg, env) for arg in container[key]]
    spec["volumes"] = [{"name": name, "hostPath": {"path": str(path), "type": "Directory"}} for name, path in volumes.items()]
    return out
