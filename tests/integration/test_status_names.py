"""``status`` names the CA file each leaf's verifier uses, and tells warnings from errors (issue 19, section 5).

split-ca with ``ca_trust = "root"`` and the session's shared root: ca.crt, ca-client.crt and ca-ui.crt
then hold the same root, so every leaf chains to all three. The verifier checks each against one of them
(peers verify node.crt against ca.crt; a node verifies every client certificate against ca-client.crt;
the DB Console's HTTPS client trusts ca-ui.crt), and ``status`` must name that one, where it used to name
the first file that worked (ca-client.crt for node.crt). Real OpenBao, the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode

from .conftest import Deployment, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_root(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> tuple[Deployment, Path]:
    """A split-ca node's certs-dir (with client.marc.crt and ui.crt) whose CA files all hold the one root."""
    dep = deploy(Mode.SPLIT_CA)
    base = tmp_path_factory.mktemp("status-names")
    config = dep.write_config(base / "vaultpki.toml", base / "certs", ca_trust="root")
    issued = run_cli(["--config", str(config), "issue-node", "--user", "marc"], {"VAULT_TOKEN": dep.server.root_token})
    assert issued.returncode == 0, issued.stderr
    return dep, config


def _status(*args: str) -> dict[str, dict[str, object]]:
    result = run_cli(["status", *args, "--json"])
    assert result.returncode == 0, result.stderr
    return {row["file"]: row for row in json.loads(result.stdout)["files"]}


def test_status_names_the_ca_file_the_verifier_uses(shared_root: tuple[Deployment, Path]) -> None:
    _, config = shared_root
    certs = config.parent / "certs"
    roots = {name: crypto.load_certs((certs / name).read_bytes()) for name in ("ca.crt", "ca-client.crt", "ca-ui.crt")}
    assert roots["ca.crt"] == roots["ca-client.crt"] == roots["ca-ui.crt"] and len(roots["ca.crt"]) == 1   # one root
    root = roots["ca.crt"][0].subject.rfc4514_string()
    rows = _status("--certs-dir", str(certs))
    assert {name: rows[name]["chains_to"] for name in ("node.crt", "client.node.crt", "client.marc.crt", "ui.crt")} == {
        "node.crt": f"{root} (ca.crt #1 of 1)",
        "client.node.crt": f"{root} (ca-client.crt #1 of 1)",
        "client.marc.crt": f"{root} (ca-client.crt #1 of 1)",
        "ui.crt": f"{root} (ca-ui.crt #1 of 1)",
    }
    text = run_cli(["--config", str(config), "status"]).stdout
    node_section = text.split("node.crt (node)")[1].split("ui.crt (ui)")[0]
    assert f"chains to {root} (ca.crt #1 of 1)" in node_section, text


def test_status_shows_warnings_apart_from_errors(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A copy of a standard node's dir, looked at without its configuration: ca-ui.crt left out (ui.crt, from
    the UI mount, then chains to no CA file of the dir: a warning of the missing file, which no row shows),
    client.marc.key made readable by others (an error of the key, shown on its certificate's row)."""
    dep = deploy(Mode.STANDARD)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    issued = run_cli(["--config", str(config), "issue-node", "--user", "marc"], {"VAULT_TOKEN": dep.server.root_token})
    assert issued.returncode == 0, issued.stderr
    certs = tmp_path / "copy"
    certs.mkdir(mode=0o700)
    for entry in (tmp_path / "certs").iterdir():
        if entry.name not in (".vaultpki", "ca-ui.crt"):
            shutil.copyfile(entry, certs / entry.name)
    for key in certs.glob("*.key"):
        os.chmod(key, 0o600)
    os.chmod(certs / "client.marc.key", 0o644)

    verified = run_cli(["verify", "--certs-dir", str(certs), "--json"])
    assert verified.returncode == 1
    judged = {(p["file"], p["severity"]): p["message"] for p in json.loads(verified.stdout)["problems"]}
    assert set(judged) == {("ca-ui.crt", "warning"), ("client.marc.key", "error")}, judged
    missing, loose = judged["ca-ui.crt", "warning"], judged["client.marc.key", "error"]

    result = run_cli(["status", "--certs-dir", str(certs), "--json"])
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {row["file"]: row for row in doc["files"]}
    assert doc["problems"] == [f"warning: ca-ui.crt: {missing}"]               # no row shows it: it is listed first
    assert rows["client.marc.crt"]["problems"] == [loose]
    assert rows["client.marc.crt"]["problem_details"] == [{"file": "client.marc.key", "severity": "error", "message": loose}]
    assert "problem_details" not in rows["node.crt"]                          # only a row with problems has it

    text = run_cli(["status", "--certs-dir", str(certs)]).stdout.splitlines()
    assert f"WARNING ca-ui.crt: {missing}" in text, text
    assert f"  PROBLEM client.marc.key: {loose}" in text, text
