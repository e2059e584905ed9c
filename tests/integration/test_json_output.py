"""``--json`` (issue 18): every command that reports prints one document with the envelope of docs/json.md
(``command``, ``ok``, then exactly the fields the page lists for it), run for real against the session's
OpenBao; single and bulk ``issue-user`` have one shape; an error prints no document."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import hvac
import pytest

from vaultpki.cli.main import main
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import role_body

from .conftest import NODE_HOSTS, run_cli, toml_dump
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[2] / "docs" / "json.md"
ENVELOPE = ["command", "ok"]
_HEADING = re.compile(r"^### `vaultpki (?P<words>[^`]*?) --json`\s*$")
_FIELD = re.compile(r"^\| `(?P<name>[a-z_]+)` \|")


def documented() -> dict[str, list[str]]:
    """docs/json.md's sections: '``vaultpki sync --once --json``' -> the top-level fields its table lists."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in PAGE.read_text().splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = sections.setdefault(heading["words"], [])
        elif line.startswith("#"):
            current = None
        elif current is not None and (field := _FIELD.match(line)):
            current.append(field["name"])
    return sections


def json_commands(group: click.Group = main, prefix: str = "") -> set[str]:
    """Every subcommand path with a ``--json`` option, from click itself."""
    found = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found |= json_commands(command, f"{path} ")
        elif any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params):
            found.add(path)
    return found


def command_of(section: str) -> str:
    """'sync --once' -> 'sync': the section's command path without its flags."""
    return " ".join(w for w in section.split() if not w.startswith("-"))


def test_the_page_documents_every_command_with_json_and_no_other() -> None:
    sections = documented()
    assert sections, f"{PAGE} has no '### `vaultpki … --json`' section"
    assert {command_of(s) for s in sections} == json_commands()
    for section, fields in sections.items():
        assert fields, f"docs/json.md: the section for {section} lists no field"
        assert len(fields) == len(set(fields)), f"docs/json.md: {section} lists a field twice"
        assert not set(fields) & set(ENVELOPE), f"docs/json.md: {section} lists an envelope field again"


class Runs:
    """The commands run by the test, each with the section of docs/json.md its output must follow."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.results: list[tuple[str, list[str], subprocess.CompletedProcess[str]]] = []

    def __call__(self, section: str, *args: str, code: int = 0) -> dict[str, Any]:
        result = run_cli(list(args), self.env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        self.results.append((section, list(args), result))
        doc = json.loads(result.stdout)
        assert isinstance(doc, dict), (args, doc)
        return doc


@pytest.fixture(scope="module")
def runs(bao: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runs, Path]]:
    """Fresh mounts of this module's own (``ca rotate`` and ``retire`` change them), provisioned by the CLI."""
    work = tmp_path_factory.mktemp("json")
    config = work / "vaultpki.toml"
    config.write_text(toml_dump({
        "certs_dir": str(work / "certs"), "mode": "standard", "ttl": "1h",
        "vault": {"addr": bao.addr, "retry_for": "2s"}, "pki": {"mount": "json-crdb"},
        "node": {"hosts": list(NODE_HOSTS)},
    }))
    env = {"VAULT_TOKEN": bao.root_token, "VAULTPKI_CONFIG": str(config)}
    provisioned = run_cli(["provision", "--root-mount", "json-root"], env)
    assert provisioned.returncode == 0, provisioned.stderr
    yield Runs(env), work


def test_every_json_command_prints_the_documented_document(runs: tuple[Runs, Path]) -> None:
    run, work = runs
    users = str(work / "users")
    again = run("provision", "provision", "--root-mount", "json-root", "--json")
    assert again["changed"] is False and {i["action"] for i in again["items"]} == {"unchanged"}
    assert "json-crdb/roles/node" in [i["path"] for i in again["items"]]

    plan = run("issue-node", "issue-node", "--dry-run", "--json")
    node = run("issue-node", "issue-node", "--json")
    assert plan["dry_run"] and not node["dry_run"] and plan["files"] == node["files"] == ["ca.crt", "node.crt", "node.key"]
    run("issue-node", "issue-node", "--json")                      # a second set, so there is one to roll back to

    # issue-user: one user, a list of one, a list of three, a dry run: one shape.
    single = run("issue-user", "issue-user", "marc", "--certs-dir", users, "--json")
    listing = work / "users.txt"
    listing.write_text("marc\n")
    bulk_one = run("issue-user", "issue-user", "--from-file", str(listing), "--certs-dir", users, "--json")
    listing.write_text("anna\nbob\ncarl\n")
    bulk = run("issue-user", "issue-user", "--from-file", str(listing), "--certs-dir", users, "--json")
    dry = run("issue-user", "issue-user", "dora", "--dry-run", "--certs-dir", users, "--json")
    assert list(single) == list(bulk_one) == list(bulk) == list(dry)
    assert [list(i) for i in single["issued"]] == [list(i) for i in bulk_one["issued"]]
    assert single["files"] == bulk_one["files"] == ["ca.crt", "client.marc.crt", "client.marc.key"]
    assert [i["user"] for i in bulk["issued"]] == ["anna", "bob", "carl"] and bulk["failed"] == []
    assert [i["user"] for i in dry["issued"]] == ["dora"] and dry["dry_run"]

    run("status", "status", "--json")
    assert run("verify", "verify", "--json")["problems"] == []
    assert run("verify", "verify", "--certs-dir", str(work / "empty-dir"), "--json", code=1)["ok"] is False

    preview = run("sync --dry-run", "sync", "--dry-run", "--json")
    assert preview["due"] == [] and preview["error"] is None
    once = run("sync --once", "sync", "--once", "--json")
    assert once["renewed"] == [] and once["failures"] == []
    rolled = run("rollback", "rollback", "--json")
    assert rolled["generation"].startswith("gen-")

    serial = node["certificates"][0]["serial"]
    assert run("revoke", "revoke", "--serial", serial, "--json")["revoked"][0]["serial"] == serial
    revoked = run("revoke-user", "revoke-user", "anna", "--json")
    assert [r["common_name"] for r in revoked["revoked"]] == ["anna"]

    status = run("ca status", "ca", "status", "--json")
    assert [i["is_default"] for i in status["issuers"]] == [True]
    rotated = run("ca rotate", "ca", "rotate", "--root-mount", "json-root", "--json")
    activated = run("ca activate", "ca", "activate", "--min-age", "0", "--json")
    assert activated["issuer_id"] == rotated["issuer_id"]
    retired = run("ca retire", "ca", "retire", "--force", "--json")
    assert retired["retired"] and rotated["issuer_id"] not in retired["retired"]

    sections = documented()
    for section, args, result in run.results:
        doc = json.loads(result.stdout)
        assert list(doc)[:2] == ENVELOPE, (args, list(doc))
        assert doc["command"] == command_of(section), args
        assert doc["ok"] is (result.returncode == 0), (args, doc["ok"], result.returncode)
        assert list(doc)[2:] == sections[section], (args, "fields differ from docs/json.md", list(doc)[2:])
    assert {command_of(s) for s, _, _ in run.results} == json_commands()        # every --json command was run


def test_a_bulk_run_with_a_failure_is_one_document_with_ok_false(runs: tuple[Runs, Path], bao: DevServer) -> None:
    run, work = runs
    # A user role that signs only erin: finn fails, erin is issued and written (as test_fleet.py does it).
    body = role_body("user", [], openbao=True)
    body.update(allow_any_name=False, allowed_domains=["erin"])
    hvac.Client(url=bao.addr, token=bao.root_token).write_data("json-crdb/roles/user-some", data=body)
    config = Path(run.env["VAULTPKI_CONFIG"])
    some = work / "some.toml"
    some.write_text(config.read_text().replace('mount = "json-crdb"', 'mount = "json-crdb"\nuser_role = "user-some"'))
    listing = work / "some-bad.txt"
    listing.write_text("erin\nfinn\n")
    result = run_cli(["--config", str(some), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(work / "some"), "--json"], {"VAULT_TOKEN": bao.root_token})
    assert result.returncode == 1 and result.stderr == "", result.stderr      # the failure is in the document
    doc = json.loads(result.stdout)
    assert list(doc)[:2] == ENVELOPE and doc["ok"] is False and doc["command"] == "issue-user"
    assert list(doc)[2:] == documented()["issue-user"]
    assert [i["user"] for i in doc["issued"]] == ["erin"] and [f["user"] for f in doc["failed"]] == ["finn"]
    assert doc["files"] == ["ca.crt", "client.erin.crt", "client.erin.key"]


@pytest.mark.parametrize("args", [
    pytest.param(["revoke", "--serial", "zz", "--json"], id="revoke-bad-serial"),
    pytest.param(["status", "--certs-dir", "/nonexistent/certs", "--json"], id="status-missing-dir"),
    pytest.param(["sync", "--json"], id="sync-daemon-json"),
])
def test_an_error_with_json_is_the_one_stderr_line_and_no_document(runs: tuple[Runs, Path], args: list[str]) -> None:
    run, _ = runs
    result = run_cli(args, run.env)
    one_error_line(result, 2)
    assert result.stdout == ""
