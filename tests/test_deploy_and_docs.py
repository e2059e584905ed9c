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
