"""The tests' kubelet (``tests.support.pods``) against the kubelet's own rules, with no container runtime: the
owners and modes of each volume's files, the ``$(VAR)`` expansion, the pod podman is given, the signed token."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.pods import ISSUER, KubeletVolumes, ServiceAccountSigner, expand, fs_user, kubelet_env, podman_pod

FS_GROUP = 2345


def pod(volumes: list[dict[str, Any]], *, fs_group: int | None = FS_GROUP,
        users: tuple[int | None, ...] = (None,)) -> dict[str, Any]:
    context: dict[str, Any] = {"runAsUser": 1000}
    if fs_group is not None:
        context["fsGroup"] = fs_group
    containers = [{"name": f"c{i}", "image": "x", **({"securityContext": {"runAsUser": u}} if u else {})}
                  for i, u in enumerate(users)]
    return {"metadata": {"name": "set-0"}, "spec": {"securityContext": context, "containers": containers, "volumes": volumes}}


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_dollar_variables_expand_from_earlier_ones_only() -> None:
    container = {"env": [{"name": "A", "value": "x-$(B)"},
                         {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "B", "value": "$(POD).svc,$$(POD),$(NOPE)"}]}
    env = kubelet_env(container, {"metadata": {"name": "set-0"}})
    assert env == {"A": "x-$(B)", "POD": "set-0", "B": "set-0.svc,$(POD),$(NOPE)"}
    assert expand("--host=$(POD)", {"POD": "set-1"}) == "--host=set-1"


@pytest.mark.parametrize(("fs_group", "expected"), [(FS_GROUP, (0, FS_GROUP, 0o440)), (None, (0, 0, 0o400))])
def test_a_secret_with_default_mode_0400(tmp_path: Path, fs_group: int | None, expected: tuple[int, int, int]) -> None:
    """kubernetes/kubernetes#57923: with an fsGroup the file is root's, in the group, and the group may read it."""
    volume = {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}}
    made = KubeletVolumes(tmp_path, pod([volume], fs_group=fs_group), {("Secret", "s"): {"secret-id": "x"}}).make_all()
    assert owner_mode(made["s"] / "secret-id") == expected
    assert os.readlink(made["s"] / "secret-id") == "..data/secret-id"


@pytest.mark.parametrize(("fs_group", "users", "expected"), [
    pytest.param(FS_GROUP, (None, None), (1000, FS_GROUP, 0o640), id="one-user-and-an-fsgroup"),
    pytest.param(None, (None,), (1000, 0, 0o600), id="one-user"),
    pytest.param(FS_GROUP, (None, 1001), (0, FS_GROUP, 0o640), id="two-users-and-an-fsgroup"),
    pytest.param(None, (None, 1001), (0, 0, 0o644), id="two-users"),
])
def test_a_projected_service_account_token(tmp_path: Path, fs_group: int | None, users: tuple[int | None, ...],
                                           expected: tuple[int, int, int]) -> None:
    """projected.go: 0600 owned by the pod's one runAsUser when it has one (or an fsGroup), the fsGroup adding 0040."""
    volume = {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}
    spec = pod([volume], fs_group=fs_group, users=users)
    assert fs_user(spec["spec"]) == (1000 if len(set(users)) == 1 else None)
    made = KubeletVolumes(tmp_path, spec, {}, lambda pod, aud, ttl: f"{pod}/{aud}/{ttl}").make_all()
    assert owner_mode(made["t"] / "token") == expected
    assert (made["t"] / "token").read_text() == "set-0/vault/3600"


def test_an_emptydir_is_anybodys_to_write(tmp_path: Path) -> None:
    made = KubeletVolumes(tmp_path, pod([{"name": "e", "emptyDir": {}}]), {}).make_all()
    assert owner_mode(made["e"]) == (0, FS_GROUP, 0o2777)


def test_a_refresh_switches_every_file_at_once(tmp_path: Path) -> None:
    volume = {"name": "c", "configMap": {"name": "c"}}
    kubelet = KubeletVolumes(tmp_path, pod([volume]), {("ConfigMap", "c"): {"a": "1", "b": "1"}})
    made = kubelet.make_all()["c"]
    before = os.readlink(made / "..data")
    kubelet.write("c", {"a": (b"2", 0o644, 0), "b": (b"2", 0o644, 0)})
    assert os.readlink(made / "..data") != before and not (made / before).exists()
    assert (made / "a").read_text() == (made / "b").read_text() == "2"
    assert owner_mode(made / "a") == (0, FS_GROUP, 0o644)


def test_the_pod_podman_is_given(tmp_path: Path) -> None:
    spec = pod([{"name": "e", "emptyDir": {}}])
    spec["spec"]["containers"][0].update(args=["--name=$(POD)"], ports=[{"containerPort": 1}],
                                         env=[{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    played = podman_pod(spec, {"e": tmp_path}, extra_env={"c0": {"X": "1"}})
    assert played["spec"]["securityContext"]["supplementalGroups"] == [FS_GROUP]
    assert played["spec"]["restartPolicy"] == "OnFailure" and played["spec"]["hostNetwork"] is True
    assert played["spec"]["volumes"] == [{"name": "e", "hostPath": {"path": str(tmp_path), "type": "Directory"}}]
    container = played["spec"]["containers"][0]
    assert container["args"] == ["--name=set-0"] and "ports" not in container
    assert container["env"] == [{"name": "POD", "value": "set-0"}, {"name": "X", "value": "1"}]


def test_the_signed_token_is_an_rs256_jwt_naming_the_pod() -> None:
    signer = ServiceAccountSigner(namespace="crdb", service_account="cockroachdb")
    header, claims, signature = signer.token("cockroachdb-1", "vault", 600).split(".")
    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    public = serialization.load_pem_public_key(signer.public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(decode(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    body = json.loads(decode(claims))
    assert body["kubernetes.io"]["pod"]["name"] == "cockroachdb-1" and body["aud"] == ["vault"]
    assert body["iss"] == ISSUER and body["sub"] == "system:serviceaccount:crdb:cockroachdb"
    assert body["exp"] - body["iat"] == 600
