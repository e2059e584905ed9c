"""The deployment examples and the docs (README.md, CHANGELOG.md, docs/*.md) are checked, not just written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultpki import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "vaultpki-sync.service"
K8S = ROOT / "deploy" / "kubernetes" / "cockroachdb-with-vaultpki.yaml"
ENV = {"VAULT_ADDR": "https://vault.internal:8200"}
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"         # the configuration reference: every key


def toml_blocks(markdown: str) -> list[str]:
    """The ```toml blocks of a page, dedented (a block inside a list item is indented)."""
    return [textwrap.dedent(m.group(2)) for m in re.finditer(r"^([ \t]*)```toml\n(.*?)^\1```", markdown, re.DOTALL | re.MULTILINE)]


def example_blocks() -> list[tuple[str, str]]:
    """(page:index, block) for every TOML example of the README and of docs/*.md."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return [(f"{page.relative_to(ROOT)}:{i}", block) for page in pages for i, block in enumerate(toml_blocks(page.read_text()))]


EXAMPLES = example_blocks()


@pytest.mark.parametrize("block", [b for _, b in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_every_config_example_in_the_docs_parses(block: str) -> None:
    parsed = config.parse(tomllib.loads(block), ENV, source="docs example")
    assert parsed.vault.addr.startswith("https://")


def test_the_docs_hold_config_examples() -> None:
    pages = {name.split(":")[0] for name, _ in EXAMPLES}
    assert {"README.md", "docs/configuration.md"} <= pages, pages
    assert sum(name.startswith("docs/configuration.md:") for name, _ in EXAMPLES) >= 4   # one per layout, and cert auth


def test_the_reference_documents_every_config_key() -> None:
    reference = REFERENCE.read_text()
    for name in config.config_keys():         # every key of the schema, dotted; a table by its keys
        assert re.search(rf"`{re.escape(name)}[`,]", reference), f"docs/configuration.md does not document {name}"


def test_the_reference_documents_no_key_that_does_not_exist() -> None:
    """The first column of the reference's key table names only real keys: a removed key leaves the docs too."""
    rows = [line for line in REFERENCE.read_text().splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert len(rows) >= 40 and named, "the key table of docs/configuration.md is missing"
    assert named <= set(config.config_keys()), sorted(named - set(config.config_keys()))


def test_readme_stays_short() -> None:
    """Issue 17: a README a newcomer reads in one go; the details live under docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 10 * 1024


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


def kubelet_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """A container's ``env`` as the kubelet builds it: ``fieldRef: metadata.name`` is the pod's name, and
    ``$(VAR)`` is replaced only by a variable defined earlier in the same list (else left as it is;
    ``$$`` is a literal ``$``)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, var
            env[var["name"]] = pod_name
            continue

        def expand(m: re.Match[str]) -> str:
            return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))
        env[var["name"]] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, var["value"])
    return env


@pytest.mark.parametrize("pod_name", ["cockroachdb-0", "cockroachdb-2"])
def test_kubernetes_example_names_each_pods_own_role_through_the_environment(pod_name: str) -> None:
    docs = list(yaml.safe_load_all(K8S.read_text()))
    pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    cfg_map = next(d for d in docs if d["kind"] == "ConfigMap")
    raw = tomllib.loads(cfg_map["data"]["vaultpki.toml"])
    assert config.parse(raw, {}, source="k8s example").pki.node_role == "node"    # the file alone: no pod's role
    for container in (c for c in pod["initContainers"] + pod["containers"] if c["name"].startswith("vaultpki")):
        env = kubelet_env(container, pod_name)
        parsed = config.parse(raw, env, source="k8s example")
        assert parsed.pki.node_role == f"node-{pod_name}", container["name"]
        assert parsed.node_hosts[0] == f"{pod_name}.cockroachdb" and "localhost" in parsed.node_hosts


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


def _without_code(markdown: str) -> str:
    """The page without fenced blocks and code spans: neither holds links or headings."""
    text = re.sub(r"^([ \t]*)```.*?^\1```[^\n]*$", "", markdown, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "code", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^([ \t]*)```.*?^\1```[^\n]*$", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    seen: Counter[str] = Counter()
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", text, re.MULTILINE):
        slug = github_slug(heading)
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")     # GitHub numbers repeated headings
        seen[slug] += 1
    return found


def test_github_slug() -> None:
    assert github_slug("`ca_trust`: what a CA file trusts") == "ca_trust-what-a-ca-file-trusts"
    assert github_slug("A node is only ever itself: what binds a node's TLS-certificate login") == \
        "a-node-is-only-ever-itself-what-binds-a-nodes-tls-certificate-login"
    assert github_slug("Bad input, and what each gets") == "bad-input-and-what-each-gets"


def test_every_link_between_the_docs_resolves() -> None:
    """Every relative link of README.md, CHANGELOG.md and docs/*.md names a file that exists, and an #anchor a heading."""
    broken = []
    links = 0
    for page in _docs():
        for target in re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", _without_code(page.read_text())):
            if re.match(r"[a-z]+:", target):                  # https:, mailto:: not ours to check offline
                continue
            links += 1
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not dest.exists() or ROOT not in dest.parents:
                broken.append(f"{where}: no such file")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{where}: no heading #{anchor}")
    assert links >= 20, "the docs link to each other, or a page went missing"
    assert not broken, "\n".join(broken)


def test_the_module_map_names_every_module_and_no_other() -> None:
    """docs/development.md's module map is how a newcomer finds their way: it must follow the tree."""
    text = (ROOT / "docs" / "development.md").read_text()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "vaultpki").rglob("*.py") if "__pycache__" not in p.parts}
    mapped = set(re.findall(r"^\| `(vaultpki/[\w/]+\.py)` \|", text, re.M))
    assert mapped == modules, f"missing from the map: {sorted(modules - mapped)}; no longer there: {sorted(mapped - modules)}"
