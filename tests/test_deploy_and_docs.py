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

import pytest

from vaultpki import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "vaultpki-sync.service"
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
