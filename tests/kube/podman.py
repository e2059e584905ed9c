"""podman as the Kubernetes tests run it, and the images of the example, built with no registry.

* The runtime is runc: crun fails on this host's hybrid cgroups. podman asks for 1048576 open files and
  4194304 processes in every container, more than an unprivileged CI runner's hard limits allow (runc then
  fails "error setting rlimits"), so a containers.conf of the tests' own sets limits under the host's.
* No registry is reachable: the Containerfile's Debian base is a cached debootstrap tree
  (``tests.support.rootfs``) imported under the name its ``FROM`` line gives, and every build is
  ``--pull=never``. The import is labelled with the tree's name, so a later session reuses it (and the
  build's cached layers above it) while the tree is the same.
* The image is built exactly as docs/kubernetes.md says, from a folder holding vaultpki's fresh wheel; pip
  reaches no index, through build arguments and a build volume of wheels (``Wheels.pip_env``).
* PostgreSQL stands in for CockroachDB (which cannot be installed here): a tree with postgresql-15 and a
  user 1000 for it, since initdb and postgres refuse a uid without a passwd entry.

Missing tooling is a failure naming the Debian package, never a skip (``.ci/run`` installs them).
"""

from __future__ import annotations

import fcntl
import json
import re
import resource
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.support.doc_blocks import doc_block
from tests.support.rootfs import CACHE, debian_rootfs
from tests.support.wheel import REPO, Wheels

__all__ = ["CONTAINERFILE", "IMAGE", "POSTGRES_IMAGE", "Podman", "base_image_name", "documented_build"]

CONTAINERFILE = REPO / "deploy" / "container" / "Containerfile"
IMAGE = "registry.example.com/vaultpki:0.1.0"                 # the name the example's manifest gives
POSTGRES_IMAGE = "localhost/vaultpki-test-postgres:15"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
_TOOLS = {"podman": "podman", "runc": "runc", "catatonit": "catatonit"}     # catatonit: the pods' infra (pause) process
# What a debootstrap tree carries that an image does not need: the .debs it installed, apt's package lists.
_EXCLUDE = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*", "./.complete")
_LABEL = "vaultpki.rootfs"
_POSTGRES_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN groupadd --gid 1000 cockroach && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent cockroach
USER 1000:1000
"""


def base_image_name() -> str:
    """The image the Containerfile builds on, from its ``FROM`` line."""
    found = re.search(r"^FROM\s+(\S+)", CONTAINERFILE.read_text(), re.MULTILINE)
    assert found, f"{CONTAINERFILE} has no FROM line"
    return found.group(1)


def documented_build(wheels: Wheels, ulimits: list[str]) -> list[str]:
    """docs/kubernetes.md's ``podman build`` line, from its folder of wheels, with only what this host needs added:
    no pull (no registry), the host's network for apt (no bridge network here), limits under the host's, and pip
    pointed at the folder of wheels instead of an index (build arguments and a build volume)."""
    (line,) = [line for line in doc_block("kubernetes.md", "build-image").splitlines() if line.startswith("podman build")]
    argv = shlex.split(line)
    assert argv[-1] == "dist/" and argv[:2] == ["podman", "build"], argv
    pip = [f"--build-arg={k}={v}" for k, v in wheels.pip_env().items() if k in ("PIP_NO_INDEX", "PIP_FIND_LINKS")]
    return ["build", "--pull=never", "--network=host", *ulimits, f"--volume={wheels.folder}:{wheels.folder}:ro", *pip,
            *argv[2:-1], str(wheels.folder)]


class Podman:
    """``podman`` with the tests' containers.conf (runc, limits under the host's), failing with its stderr."""

    def __init__(self, scratch: Path) -> None:
        for tool, package in _TOOLS.items():
            if shutil.which(tool) is None:
                raise RuntimeError(f"`{tool}` is missing: apt-get install {package} (.ci/run installs it)")
        self.conf = scratch / "containers.conf"
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 8192)
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
        self.conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                             '[engine]\nruntime = "runc"\n')
        self.ulimits = [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]   # builds ignore the conf

    def __call__(self, *args: str, check: bool = True, timeout: float = 300,
                 stdin: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["podman", *args], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(self.conf)},
                              capture_output=True, text=True, timeout=timeout, check=False, stdin=stdin)
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} … failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def label(self, image: str) -> str | None:
        proc = self("image", "inspect", image, check=False)
        if proc.returncode != 0:
            return None
        return (json.loads(proc.stdout)[0].get("Labels") or {}).get(_LABEL)

    def import_tree(self, tree: Path, name: str) -> None:
        """``tree`` as the image ``name`` (labelled with the tree's name), unless it already is."""
        if self.label(name) == tree.name:
            return
        excludes = [f"--exclude={pattern}" for pattern in _EXCLUDE]
        tar = subprocess.Popen(["tar", "-C", str(tree), *excludes, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            self("import", f"--change=LABEL {_LABEL}={tree.name}", "-", name, stdin=tar.stdout.fileno())
        finally:
            tar.stdout.close()
            assert tar.wait() == 0, f"tar of {tree} failed"

    def build_images(self, wheels: Wheels) -> None:
        """The example's image from ``wheels`` (as docs/kubernetes.md builds it, offline), and the PostgreSQL stand-in."""
        with open(CACHE / ".kube-images.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.import_tree(debian_rootfs(BASE_PACKAGES, "kube-base"), base_image_name())
            self(*documented_build(wheels, self.ulimits))
            postgres_tree = debian_rootfs(("postgresql-15",), "kube-postgres")
            self.import_tree(postgres_tree, f"localhost/vaultpki-test-postgres-tree:{postgres_tree.name}")
            context = wheels.folder.parent / "postgres-image"
            context.mkdir(exist_ok=True)
            containerfile = context / "Containerfile"
            containerfile.write_text(_POSTGRES_CONTAINERFILE)
            self("build", "--pull=never", "--network=none", *self.ulimits,
                 f"--build-arg=BASE=localhost/vaultpki-test-postgres-tree:{postgres_tree.name}",
                 "-f", str(containerfile), "-t", POSTGRES_IMAGE, str(context))
