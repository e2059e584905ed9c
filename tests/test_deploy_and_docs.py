"""The deployment examples and the README's configuration examples are checked, not just written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from vaultpki import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "vaultpki-sync.service"
K8S = ROOT / "deploy" / "kubernetes" / "cockroachdb-with-vaultpki.yaml"
ENV = {"VAULT_ADDR": "https://vault.internal:8200"}


def toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", markdown, re.DOTALL)


@pytest.mark.parametrize("index", range(len(toml_blocks((ROOT / "README.md").read_text()))))
def test_every_readme_config_example_parses(index: int) -> None:
    block = toml_blocks((ROOT / "README.md").read_text())[index]
    parsed = config.parse(tomllib.loads(block), ENV, source=f"README block {index}")
    assert parsed.vault.addr.startswith("https://")


def test_readme_documents_every_config_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for table, keys in config._KEYS.items():
        for key in keys:
            if key in config._KEYS:           # a table name, documented by its keys
                continue
            name = f"{table}.{key}" if table else key
            assert re.search(rf"`{re.escape(name)}[`,]", readme), f"README does not document {name}"


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed to check the unit (Debian package systemd)"
    vaultpki = Path(sys.executable).parent / "vaultpki"
    text = UNIT.read_text().replace("/usr/local/bin/vaultpki", str(vaultpki))
    text = re.sub(r"^Documentation=.*$", "Documentation=https://example.invalid/vaultpki", text, flags=re.M)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, check=False)
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout).group(1))  # type: ignore[union-attr]
    assert score <= 2.0, security.stdout[-2000:]
    for setting in ("ProtectSystem=strict", "ReadWritePaths=/var/lib/cockroach/certs", "NoNewPrivileges=yes",
                    "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert setting in text


def test_kubernetes_sidecar_example() -> None:
    docs = list(yaml.safe_load_all(K8S.read_text()))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True                      # the sidecar can see cockroach...
    assert pod["securityContext"]["runAsUser"] == 1000                # ...and signal it as the same user
    containers = {c["name"]: c for c in pod["containers"] + pod["initContainers"]}
    assert not any("runAsUser" in c.get("securityContext", {}) for c in containers.values())
    assert containers["vaultpki-init"]["args"][-2:] == ["sync", "--once"]
    assert "sync" in containers["vaultpki"]["args"] and "--once" not in containers["vaultpki"]["args"]
    certs_dir = next(a.split("=", 1)[1] for a in containers["cockroachdb"]["command"] if a.startswith("--certs-dir="))
    for c in containers.values():
        assert any(m["name"] == "certs" and m["mountPath"] == certs_dir for m in c["volumeMounts"]), c["name"]
    cfg_map = next(d for d in docs if d["kind"] == "ConfigMap")
    parsed = config.parse(tomllib.loads(cfg_map["data"]["vaultpki.toml"]), {}, source="k8s example")
    assert str(parsed.certs_dir) == certs_dir
    assert parsed.reload.process == "cockroach" and len(parsed.vault.addrs) == 3


# A token in a process's environment is inherited by every child (a reload command) and readable by
# anything running as the same user in /proc/PID/environ: the shipped deployments deliver Vault
# credentials as files only.
CREDENTIAL_WORDS = re.compile(r"VAULT_|BAO_|TOKEN|SECRET|ROLE_ID", re.IGNORECASE)


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_puts_no_token_in_the_environment() -> None:
    settings = unit_settings()
    for key in ("Environment", "EnvironmentFile", "PassEnvironment"):
        assert not any(CREDENTIAL_WORDS.search(v) for v in settings.get(key, [])), (key, settings.get(key))
    # ...nor can one come from the manager's environment or a drop-in: unset last, whatever set it.
    assert {"VAULT_TOKEN", "BAO_TOKEN"} <= set(" ".join(settings.get("UnsetEnvironment", [])).split())
    credentials = dict(v.split(":", 1) for v in settings.get("LoadCredential", []))
    assert credentials.get("secret-id", "").startswith("/etc/vaultpki/credentials/"), credentials
    # The configuration the unit's comment shows reads them from the credentials directory, as files.
    block = "\n".join(re.findall(r"^#   (\S.*)$", UNIT.read_text(), re.MULTILINE))
    vault = config.parse(tomllib.loads(block.replace("[vault]", '[vault]\naddr = "https://vault.internal:8200"')),
                         {}, source="unit comment").vault
    assert vault.auth == "approle" and vault.token is None
    run = "/run/credentials/vaultpki-sync.service/"
    assert vault.secret_id_file == run + "secret-id" and vault.role_id_file == run + "role-id"


def test_kubernetes_example_puts_no_token_in_the_environment() -> None:
    docs = list(yaml.safe_load_all(K8S.read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        for var in container.get("env", []):
            assert not CREDENTIAL_WORDS.search(var["name"]), (container["name"], var)
            assert "secretKeyRef" not in var.get("valueFrom", {}), (container["name"], var)
        assert not any("secretRef" in source for source in container.get("envFrom", [])), container["name"]
    secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secret_volumes and all(v.get("defaultMode") == 0o400 for v in secret_volumes.values())
    cfg_map = next(d for d in docs if d["kind"] == "ConfigMap")
    vault = config.parse(tomllib.loads(cfg_map["data"]["vaultpki.toml"]), {}, source="k8s example").vault
    assert vault.auth == "approle" and vault.token is None and vault.token_file is None
    sidecar = next(c for c in pod["containers"] if c["name"] == "vaultpki")
    mounted = {m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] in secret_volumes}
    assert {str(Path(f).parent) for f in (vault.secret_id_file, vault.role_id_file)} <= mounted


def _docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_test_the_docs_cite_exists() -> None:
    """A test named as the proof of a claim (``file.py::test_name``) must exist, or the claim is unbacked."""
    defined = {m for path in (ROOT / "tests").rglob("*.py") for m in re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M)}
    cited = {(doc.name, name) for doc in _docs() if doc.exists() for name in re.findall(r"::(test_\w+)", doc.read_text())}
    assert cited, "the docs cite no test at all"
    missing = sorted(f"{doc}: {name}" for doc, name in cited if name not in defined)
    assert not missing, f"the docs cite tests that do not exist: {missing}"
