"""The image the Kubernetes example names: deploy/container/Containerfile, built as docs/kubernetes.md builds it.

The build runs once per session, from this working tree's wheel, on a Debian tree imported under the
Containerfile's base name (no registry here) and with pip pointed at a folder of wheels (no index).
"""

from __future__ import annotations

import re

import pytest

from tests.support.doc_blocks import doc_block

from .conftest import manifest_doc
from .podman import CONTAINERFILE, IMAGE, Podman, base_image_name


def run_instructions() -> list[str]:
    """The Containerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", re.sub(r"^#.*\n", "", CONTAINERFILE.read_text(), flags=re.MULTILINE))
    return [m.group(1).strip() for m in re.finditer(r"^RUN\s+(.*)$", text, re.MULTILINE)]


def test_the_containerfile_installs_vaultpki_as_the_install_page_does() -> None:
    block = [line.strip() for line in doc_block("install.md", "install-venv").splitlines() if line.strip()]
    (install,) = [run for run in run_instructions() if "python3 -m venv" in run]
    commands = [command.strip() for command in install.split("&&")]
    assert commands[:len(block)] == block, commands
    (apt,) = [run for run in run_instructions() if "apt-get install" in run]
    assert "python3-venv" in apt.split()


def test_the_image_is_the_one_the_manifest_and_the_docs_name() -> None:
    sts = manifest_doc("StatefulSet")["spec"]["template"]["spec"]
    images = {c["image"] for c in sts["initContainers"] + sts["containers"] if c["name"].startswith("vaultpki")}
    assert images == {IMAGE}
    assert f"-t {IMAGE} " in doc_block("kubernetes.md", "build-image")
    assert base_image_name() == "docker.io/library/debian:bookworm-slim"


@pytest.mark.integration
@pytest.mark.slow          # builds the image (once per session)
def test_vaultpki_runs_in_the_image_as_its_non_root_user_with_a_read_only_root(images: Podman) -> None:
    proc = images("run", "--rm", "--read-only", "--network=none", "--cap-drop=ALL", IMAGE, "--version")
    assert re.fullmatch(r"vaultpki, version \S+\n", proc.stdout), proc.stdout + proc.stderr
    config = images("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}}", IMAGE).stdout.split()
    assert config == ["1000:1000", '["vaultpki"]'], config
    whoami = images("run", "--rm", "--read-only", "--network=none", "--entrypoint=id", IMAGE, "-u").stdout.strip()
    assert whoami == "1000"
