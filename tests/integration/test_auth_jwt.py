"""jwt auth (issue 18) against a real OpenBao: a pod logs in with its projected service-account token.

The tokens are signed here the way the kube-apiserver signs projected service-account tokens (RS256 and
ES256, ``iss``, ``aud``, ``sub = system:serviceaccount:<ns>:<sa>``, ``exp``, and the ``kubernetes.io``
claim naming the pod and the service account); OpenBao's jwt auth verifies them with
``jwt_validation_pubkeys``, as it would verify a cluster's. Nothing else stands in: the roles and static
policies are the embedded provisioner's (tests/terraform/test_jwt_auth.py shows Terraform makes the same),
and the real CLI and daemon run in subprocesses.

- ``issue-node`` and ``sync --once`` with ``auth = "jwt"`` issue the node's certificate;
- per-pod identity: a pod's token is refused by another node's role, and a pod logged in as itself cannot
  sign for another node;
- a refused login is one line naming the role and the mount (exit 1), a bad configuration one line before
  anything is sent (exit 2), and the JWT is in neither, nor in the daemon's log;
- the token file is read at every login: the daemon keeps working while the kubelet rotates it (the old
  token expiring) and its Vault tokens run out; the logins are counted in OpenBao's audit log;
- the token file's modes: what the kubelet makes of a projected token is accepted, a file another user can
  read is refused.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from vaultpki.config import parse
from vaultpki.config.records import KUBERNETES_TOKEN_FILE
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.jwt_auth import JwtAuthSpec, jwt_role, provision_jwt_auth
from vaultpki.dev.provision import ProvisionSpec, provision
from vaultpki.errors import ConfigError

from .conftest import SHORT, run_cli, toml_dump, tree
from .daemon_proc import SyncDaemon, msg
from .test_cli_errors import one_error_line
from .test_relogin import K8S, kubernetes_commands, vaultpki_argv, wait_until
from .test_secret_modes import FS_GROUP, NOBODY, OTHER_UID, POD_USER, mounted, pod_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

ISSUER = "https://kubernetes.default.svc.cluster.local"
NAMESPACE, SERVICE_ACCOUNT = "crdb", "cockroachdb"
SUBJECT = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
PKI = PkiNames(mount="jwt-crdb", client_mount=None, node_role="node", client_node_role="client-node",
               user_role="user", ui_mount=None, ui_role=None)
HOSTS = ("n.db.internal", "localhost", "127.0.0.1")
# One node (a pod of the StatefulSet) per test that counts logins, so that each counts only its own;
# cockroachdb-2 has the names the Kubernetes example gives its pod.
NODES = {"cockroachdb-0": HOSTS, "cockroachdb-1": HOSTS, "rotating": HOSTS, "modes": HOSTS,
         "cockroachdb-2": ("cockroachdb-2.cockroachdb", "cockroachdb-public", "localhost", "127.0.0.1")}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """The cluster's service-account signer: an RSA and an EC key, as a kube-apiserver may have both."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def public_pems(self) -> tuple[str, ...]:
        return tuple(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                     .decode() for k in (self.rsa, self.ec))

    def token(self, pod: str, *, alg: str = "RS256", expires_in: int = 3600, audience: str = "vault",
              namespace: str = NAMESPACE, key: rsa.RSAPrivateKey | None = None) -> str:
        """A projected service-account token for ``pod``, signed as the kube-apiserver signs one (a JWS in
        compact form: base64url(header).base64url(payload).base64url(signature))."""
        now = int(time.time())
        claims = {
            "aud": [audience], "exp": now + expires_in, "iat": now, "nbf": now, "iss": ISSUER, "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
            "kubernetes.io": {"namespace": namespace, "pod": {"name": pod, "uid": str(uuid.uuid4())},
                              "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": "5d6c2f1e-sa"}},
        }
        header = {"alg": alg, "kid": "cluster-key-1"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        if alg == "RS256":
            signature = (key or self.rsa).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:        # ES256: JWS wants r || s, 32 bytes each, where cryptography gives DER
            r, s = decode_dss_signature(self.ec.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input.decode()}.{b64url(signature)}"


class ProjectedVolume:
    """A projected service-account token volume as the kubelet's atomic writer lays it out: ``token`` is a
    link into ``..data``, itself a link to a timestamped directory, replaced by one rename on rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.token = path / "token"
        self._generation = 0

    def write(self, jwt: str, mode: int = 0o600) -> None:
        self._generation += 1
        data = self.path / f"..2026_01_01_00_00_{self._generation:02d}.{os.getpid()}"
        data.mkdir()
        mounted(data / "token", jwt, os.geteuid(), os.getegid(), mode)
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        (self.path / "..data_tmp").symlink_to(data.name)
        os.rename(self.path / "..data_tmp", self.path / "..data")
        if not self.token.is_symlink():
            self.token.symlink_to("..data/token")
        if old:
            shutil.rmtree(self.path / old)


@dataclass
class Lab:
    server: DevServer
    admin: hvac.Client
    audit_log: Path
    signer: Signer
    base: Path
    spec: JwtAuthSpec

    def config(self, node: str, jwt_file: Path, *, role: str | None = None, **top: Any) -> Path:
        """Node ``node``'s vaultpki.toml: jwt auth with the token file, its own PKI role."""
        home = self.base / node
        home.mkdir(exist_ok=True)
        vault = {"addr": self.server.addr, "auth": "jwt", "retry_for": "5s", "jwt_role": role or f"node-{node}",
                 "jwt_file": str(jwt_file)} | top.pop("vault", {})
        doc = {"certs_dir": str(home / "certs"), "mode": "standard", "ttl": "1h", "vault": vault,
               "pki": {"mount": PKI.mount, "node_role": f"{PKI.node_role}-{node}"}, "node": {"hosts": list(HOSTS)}} | top
        path = home / "vaultpki.toml"
        path.write_text(toml_dump(doc))
        return path

    def token_file(self, node: str, jwt: str, name: str = "token") -> Path:
        home = self.base / node
        home.mkdir(exist_ok=True)
        return mounted(home / name, jwt, os.geteuid(), os.getegid(), 0o600)

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def logins(self, role: str) -> list[dict[str, Any]]:
        """Every answered jwt login with ``role``, in order: {"ok": bool, "jwt": the JWT sent} (the audit
        device logs raw, so the JWT each login sent can be compared with the file's)."""
        out = []
        for entry in self.entries():
            request = entry.get("request") or {}
            data = request.get("data") or {}
            if entry.get("type") == "response" and request.get("path") == "auth/jwt/login" and data.get("role") == role:
                auth = (entry.get("response") or {}).get("auth") or {}
                out.append({"ok": bool(auth.get("client_token")), "jwt": data.get("jwt")})
        return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("jwt")
    audit_log = base / "audit.log"
    audit = (f'audit "file" "logins" {{\n  options {{\n    file_path = "{audit_log}"\n    log_raw = "true"\n'
             "  }\n}\n")
    signer = Signer()
    spec = JwtAuthSpec(validation_pubkeys=signer.public_pems(), bound_issuer=ISSUER, bound_subject=SUBJECT)
    with DevServer(extra_hcl=audit) as server:
        admin = hvac.Client(url=server.addr, token=server.root_token)
        prov = ProvisionSpec(mode=Mode.STANDARD, pki=PKI, node_hosts=(), root_mount="jwt-root",
                             nodes=NODES, access=True)
        provision(admin, server.addr, prov)
        provision_jwt_auth(admin, server.addr, prov, spec)
        yield Lab(server, admin, audit_log, signer, base, spec)


def assert_no_jwt(text: str, *jwts: str) -> None:
    """Not the JWT, nor its signature or payload alone (a log could cut a token at its dots)."""
    for jwt in jwts:
        for part in (jwt, *jwt.split(".")[1:]):
            assert part not in text, f"a JWT (or part of one) was printed: {text[:500]}"


def test_issue_node_and_sync_once_with_jwt_auth_issue_the_nodes_certificate(lab: Lab) -> None:
    node = "cockroachdb-0"
    rs256, es256 = lab.signer.token(node), lab.signer.token(node, alg="ES256")
    jwt_file = lab.token_file(node, rs256)
    config = lab.config(node, jwt_file)
    issued = run_cli(["--config", str(config), "issue-node"])
    assert issued.returncode == 0, issued.stderr
    verified = run_cli(["--config", str(config), "verify"])
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The role from the environment (the Kubernetes example's VAULTPKI_VAULT_JWT_ROLE=node-$(POD_NAME)), an
    # ES256 token, and an empty certs-dir: sync --once issues the set.
    lab.token_file(node, es256)
    config.write_text(config.read_text().replace(f'jwt_role = "node-{node}"\n', ""))
    synced_dir = lab.base / node / "synced"
    synced = run_cli(["--config", str(config), "sync", "--once"],
                     {"VAULTPKI_VAULT_JWT_ROLE": f"node-{node}", "VAULTPKI_CERTS_DIR": str(synced_dir)})
    assert synced.returncode == 0, synced.stderr
    assert (synced_dir / "node.crt").exists(), synced.stdout + synced.stderr
    assert [(login["ok"], login["jwt"]) for login in lab.logins(f"node-{node}")] == [(True, rs256), (True, es256)]
    assert_no_jwt(issued.stdout + issued.stderr + synced.stdout + synced.stderr, rs256, es256)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_another_pods_token_is_refused_by_this_nodes_role(lab: Lab, debug: bool) -> None:
    """cockroachdb-1's own, valid token against node-cockroachdb-0's role: the role's bound pod-name claim
    refuses it. One line naming the role and the mount (even with --debug: no JWT in a traceback)."""
    stolen = lab.signer.token("cockroachdb-1")
    config = lab.config("cockroachdb-0", lab.token_file("cockroachdb-1", stolen, "stolen"))
    certs = lab.base / "cockroachdb-0" / "certs"
    before = tree(certs)
    result = run_cli([*(["--debug"] if debug else []), "--config", str(config), "issue-node"])
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("vaultpki: error: Vault refused logging in with jwt auth as role node-cockroachdb-0 at auth/jwt"), line
    assert 'claim "/kubernetes.io/pod/name" does not match any associated bound claim values' in line, line
    if not debug:
        one_error_line(result, 1)
    assert_no_jwt(result.stdout + result.stderr, stolen)
    assert tree(certs) == before


def test_a_pod_logged_in_as_itself_cannot_sign_for_another_node(lab: Lab) -> None:
    """cockroachdb-1 logs in as itself, then asks node-cockroachdb-0's PKI role: its static policy denies it."""
    node = "cockroachdb-1"
    config = lab.config(node, lab.token_file(node, lab.signer.token(node)), pki={"mount": PKI.mount,
                                                                                   "node_role": "node-cockroachdb-0"})
    result = run_cli(["--config", str(config), "issue-node"])
    one_error_line(result, 1, "Vault denied signing with jwt-crdb/sign/node-cockroachdb-0", "permission denied")
    assert not (lab.base / node / "certs").exists()


@pytest.mark.parametrize(("case", "needle"), [
    pytest.param("expired", "error validating token: invalid expiration time (exp) claim: token is expired", id="expired"),
    pytest.param("unknown-role", 'role "node-nobody" could not be found', id="unknown-role"),
    pytest.param("other-signer", "error verifying token signature", id="other-signer"),
    pytest.param("wrong-audience", "invalid audience (aud) claim", id="wrong-audience"),
    pytest.param("other-namespace", "invalid subject (sub) claim", id="other-namespace"),
])
def test_a_login_vault_refuses_is_one_line_naming_the_role_and_the_mount(lab: Lab, case: str, needle: str) -> None:
    node = "cockroachdb-0"
    jwt = {
        "expired": lambda: lab.signer.token(node, expires_in=-3600),
        "unknown-role": lambda: lab.signer.token(node),
        "other-signer": lambda: lab.signer.token(node, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "wrong-audience": lambda: lab.signer.token(node, audience="https://kubernetes.default.svc"),
        "other-namespace": lambda: lab.signer.token(node, namespace="default"),
    }[case]()
    role = "node-nobody" if case == "unknown-role" else f"node-{node}"
    config = lab.config(node, lab.token_file(node, jwt, case), role=role, certs_dir=str(lab.base / case))
    result = run_cli(["--config", str(config), "issue-node"])
    one_error_line(result, 1, f"logging in with jwt auth as role {role} at auth/jwt", needle)
    assert_no_jwt(result.stderr, jwt)
    assert not (lab.base / case).exists()


@pytest.mark.parametrize(("vault", "needle"), [
    pytest.param({"jwt_role": None}, "vault.auth = 'jwt' needs vault.jwt_role and vault.jwt_file", id="no-role"),
    pytest.param({"jwt_file": "{home}/missing"}, "vault.jwt_file {home}/missing cannot be read: it does not exist",
                 id="missing-file"),
    pytest.param({"jwt_file": "{home}/ca.pem"}, "vault.jwt_file {home}/ca.pem does not hold a JWT", id="not-a-jwt"),
    pytest.param({"jwt_file": "{home}/loose"}, "vault.jwt_file {home}/loose is accessible by group or others (mode 0644)",
                 id="world-readable"),
    pytest.param({"jwt_file": "{home}/empty"}, "vault.jwt_file {home}/empty is empty", id="empty"),
    pytest.param({"auth": "token", "token_file": "{home}/token", "jwt_role": None},
                 "vault.jwt_file is set, but vault.auth = 'token' does not use it", id="jwt-file-with-token-auth"),
    pytest.param({"auth": "approle", "role_id": "r", "secret_id_file": "{home}/token", "jwt_file": None},
                 "vault.jwt_role is set, but vault.auth = 'approle' does not use it", id="jwt-role-with-approle"),
    pytest.param({"jwt_mount": "jwt/../x"}, "vault.jwt_mount = 'jwt/../x' is not a Vault mount path", id="bad-mount"),
])
def test_a_bad_jwt_configuration_is_one_line_before_anything_is_sent(lab: Lab, vault: dict[str, Any], needle: str) -> None:
    home = lab.base / "modes"
    good = lab.token_file("modes", lab.signer.token("modes"))
    lab.token_file("modes", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "ca.pem")
    lab.token_file("modes", "", "empty")
    mounted(home / "loose", lab.signer.token("modes"), os.geteuid(), os.getegid(), 0o644)
    settings = {"addr": lab.server.addr, "auth": "jwt", "jwt_role": "node-modes", "jwt_file": str(good)} | {
        k: v.format(home=home) if isinstance(v, str) else v for k, v in vault.items()}
    config = lab.config("modes", good)
    config.write_text(toml_dump(tomllib.loads(config.read_text()) | {
        "vault": {k: v for k, v in settings.items() if v is not None}}))
    sent = len(lab.entries())
    result = run_cli(["--config", str(config), "issue-node"])
    one_error_line(result, 2, needle.format(home=home))
    assert len(lab.entries()) == sent, "a request was sent to Vault"
    assert not (home / "certs").exists()


def test_kubernetes_auth_reads_the_pods_own_token_by_default() -> None:
    """auth = "kubernetes": the role is required, the token file is the one the kubelet mounts into every pod."""
    base = {"vault": {"addr": "https://vault.internal:8200", "auth": "kubernetes", "kubernetes_role": "crdb"}}
    vault = parse(base, {}).vault
    assert (vault.jwt_file, vault.kubernetes_mount, vault.kubernetes_role) == (KUBERNETES_TOKEN_FILE, "kubernetes", "crdb")
    with pytest.raises(ConfigError, match="vault.auth = 'kubernetes' needs vault.kubernetes_role"):
        parse({"vault": {"addr": "https://vault.internal:8200", "auth": "kubernetes"}}, {})


def run_as_pod(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env["HOME"] = str(config.parent)
    return subprocess.run([*POD_USER, sys.executable, "-m", "vaultpki", "--config", str(config), "issue-node"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("uid", "gid", "mode"), [
    pytest.param(NOBODY, FS_GROUP, 0o640, id="0640-fsgroup-and-runasuser"),
    pytest.param(0, FS_GROUP, 0o640, id="0640-fsgroup-root-owned"),
    pytest.param(NOBODY, NOBODY, 0o600, id="0600-runasuser"),
])
def test_the_kubelets_projected_token_modes_are_accepted(lab: Lab, pod_dir: Path, uid: int, gid: int,  # noqa: F811
                                                         mode: int) -> None:
    """The kubelet writes a projected token 0600 (owned by the pod's runAsUser when every container has the
    same one), and an fsGroup adds the group's read bit: 0640 in the fsGroup. The pod's user (nobody, with
    the fsGroup as a supplementary group) logs in with it and issues."""
    token = mounted(pod_dir / "token", lab.signer.token("modes"), uid, gid, mode)
    config = lab.config("modes", token, certs_dir=str(pod_dir / "certs"))
    shutil.copy(config, pod_dir / "vaultpki.toml")
    result = run_as_pod(pod_dir / "vaultpki.toml")
    assert result.returncode == 0, result.stderr
    assert (pod_dir / "certs" / "node.key").stat().st_uid == NOBODY


@pytest.mark.parametrize(("uid", "gid", "mode", "shown"), [
    pytest.param(0, 0, 0o644, "0644", id="0644-no-fsgroup-no-runasuser"),
    pytest.param(NOBODY, 0, 0o640, "0640", id="0640-a-group-not-the-pods"),
    pytest.param(OTHER_UID, FS_GROUP, 0o640, "0640", id="0640-owned-by-another-user"),
    pytest.param(NOBODY, FS_GROUP, 0o660, "0660", id="0660-group-writable"),
    pytest.param(NOBODY, FS_GROUP, 0o604, "0604", id="0604-others-read"),
])
def test_a_token_file_another_user_can_read_is_refused(lab: Lab, pod_dir: Path, uid: int, gid: int, mode: int,  # noqa: F811
                                                       shown: str) -> None:
    token = mounted(pod_dir / "token", lab.signer.token("modes"), uid, gid, mode)
    config = lab.config("modes", token, certs_dir=str(pod_dir / "certs"))
    shutil.copy(config, pod_dir / "vaultpki.toml")
    one_error_line(run_as_pod(pod_dir / "vaultpki.toml"), 2,
                   f"vault.jwt_file {token} is accessible by group or others (mode {shown})")
    assert tree(pod_dir / "certs") == {}


@pytest.mark.slow
def test_the_daemon_reads_the_rotated_token_at_every_login(lab: Lab) -> None:
    """The kubelet replaces the token (the old one expiring) while the daemon's Vault tokens run out: each
    new login sends the file's current JWT, the daemon keeps renewing, and neither JWT reaches its log.

    The role here is strict about ``exp`` (no leeway) and its tokens live 3 s, at most 6: a daemon that kept
    the first JWT would be refused at its next login, seconds later instead of minutes."""
    node = "rotating"
    lab.admin.write_data(f"auth/jwt/role/node-{node}", data=jwt_role(node, lab.spec, f"crdb-node-{node}") | {
        "token_ttl": 3, "token_max_ttl": 6, "expiration_leeway": -1, "clock_skew_leeway": -1})
    volume = ProjectedVolume(lab.base / node / "serviceaccount")
    old_expires = time.time() + 8
    old, new = lab.signer.token(node, expires_in=8), lab.signer.token(node, alg="ES256")
    volume.write(old)
    config = lab.config(node, volume.token, ttl=SHORT["ttl"], renew=SHORT["renew"])
    role = f"node-{node}"
    with SyncDaemon(config) as proc:
        proc.wait_for(msg("pass complete"), 60)
        volume.write(new)                                      # the kubelet's rotation: one rename of ..data
        wait_until(lambda: time.time() > old_expires and any(login["jwt"] == new for login in lab.logins(role)[1:]),
                   30, "a login with the new token after the old one expired")
        after = len(lab.logins(role))
        wait_until(lambda: len(lab.logins(role)) > after, 15, "one more login with the new token")
        proc.wait_for(msg("renewed"), 30)                      # signed with a token of a later login
        proc.wait_for(msg("pass complete"), 15)
        assert proc.stop() == 0
        assert proc.proc.stdout is not None
        output = proc.proc.stdout.read() + json.dumps(proc.events)
    assert not [e for e in proc.events if e.get("level") in ("error", "warning")], proc.events
    logins = lab.logins(role)
    assert all(login["ok"] for login in logins) and len(logins) >= 3, logins
    assert logins[0]["jwt"] == old and {login["jwt"] for login in logins[1:]} <= {old, new} and logins[-1]["jwt"] == new
    assert_no_jwt(output, old, new)


def test_the_kubernetes_examples_init_container_then_sidecar_log_in_as_their_pod(lab: Lab) -> None:
    """deploy/kubernetes: the init container's ``sync --once`` then the sidecar's ``sync``, with the example's
    arguments, its ConfigMap (pointed at this server and this token file) and its environment as the kubelet
    expands it for pod cockroachdb-2: two processes, two logins with the pod's token, both as its own node."""
    pod = "cockroachdb-2"
    docs = list(yaml.safe_load_all(K8S.read_text()))
    template = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    init = next(c for c in template["initContainers"] if c["name"] == "vaultpki-init")
    env = {e["name"]: e["value"].replace("$(POD_NAME)", pod) for e in init["env"] if "value" in e}
    shipped = tomllib.loads(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["vaultpki.toml"])
    assert shipped["vault"]["auth"] == "jwt" and "jwt_role" not in shipped["vault"]
    volume = ProjectedVolume(lab.base / pod / "vaultpki")
    jwt = lab.signer.token(pod)
    volume.write(jwt)
    shipped["certs_dir"] = str(lab.base / pod / "certs")
    shipped["vault"] |= {"addr": lab.server.addr, "jwt_file": str(volume.token), "retry_for": "5s"}
    shipped["pki"]["mount"] = PKI.mount
    del shipped["vault"]["ca_cert"], shipped["reload"]          # plain-HTTP OpenBao; no database to reload here
    config = lab.base / pod / "vaultpki.toml"
    config.write_text(toml_dump(shipped))
    commands = kubernetes_commands()
    first = run_cli(vaultpki_argv(commands["init"], config)[0], env)
    assert first.returncode == 0, first.stderr
    with SyncDaemon(config, env) as proc:
        proc.wait_for(msg("pass complete"), 60)
        assert proc.stop() == 0
    assert not [e for e in proc.events if e.get("level") in ("error", "warning")], proc.events
    assert [(login["ok"], login["jwt"]) for login in lab.logins(f"node-{pod}")] == [(True, jwt), (True, jwt)]
