"""A real systemd as PID 1, in a container, for the tests of the shipped systemd units.

The host runs no systemd, so ``systemd-nspawn`` (Debian's ``systemd-container``) boots one from the
cached Debian tree of ``tests.support.rootfs``:

* ``--register=no --keep-unit``: there is no machined and no host systemd to register with or to ask
  for a scope; nspawn stays in the cgroup it was started in and makes its ``payload`` (the container)
  and ``supervisor`` groups below it. Started in the host's root cgroup, two containers would share
  ``/payload``, so each container gets a cgroup of its own first (in every hierarchy a hybrid host
  mounts: the unified one and the named ``systemd`` one), and nspawn is moved into it before it starts;
* the cached tree is never written: it is the lowest layer of an overlay mounted here, with the
  container's own upper layer (and any ``layers`` made before, such as an installed vaultpki) above it;
* the journal is bound to a host folder, so it can still be read after the container is gone, and
  every host path a test names is bound in at the same or a given path;
* state is read with ``nsenter`` into the container's namespaces (``systemctl``, ``journalctl``);
* whatever happens, ``close`` powers it off, kills what is left in its cgroup, removes the cgroups and
  unmounts the overlay; a failed boot raises with the end of the journal and of the console.

``execute`` runs a command in the same tree without booting it (nspawn's ``--pipe`` mode), for the
install steps that the docs run "as root on the node" before the first boot.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Container", "ContainerError", "PATH"]

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CGROUP = Path("/sys/fs/cgroup")
_BOOTED = {"running", "degraded"}


class ContainerError(RuntimeError):
    """The container could not be made, booted or reached; the message carries the diagnostics."""


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ContainerError(f"`{tool}` is missing: apt-get install {package} (.ci/run installs it)")
    return found


def _hierarchies() -> list[Path]:
    """The cgroup hierarchies nspawn places itself in: the unified one, and systemd's named v1 one on a hybrid host."""
    if (_CGROUP / "cgroup.controllers").exists():          # unified only
        return [_CGROUP]
    found = [path for path in (_CGROUP / "unified", _CGROUP / "systemd") if (path / "cgroup.procs").exists()]
    if not found:
        raise ContainerError("no cgroup hierarchy for systemd: neither /sys/fs/cgroup/unified nor /sys/fs/cgroup/systemd")
    return found


def _own_cgroup(hierarchy: Path) -> Path:
    """This process's cgroup in ``hierarchy``, from /proc/self/cgroup."""
    named = "name=systemd" if hierarchy.name == "systemd" else ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == named:
            return hierarchy / path.lstrip("/")
    raise ContainerError(f"this process has no cgroup in {hierarchy}")


def _remove_cgroup(top: Path, deadline: float) -> None:
    """Kill every process left in ``top`` and below, then remove the groups, deepest first."""
    while top.exists():
        groups = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [top]
        for group in groups:
            try:
                pids = (group / "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                group.rmdir()
            except OSError:
                pass
        if top.exists():
            if time.monotonic() > deadline:
                raise ContainerError(f"cgroup {top} could not be removed: {sorted(str(p) for p in top.rglob('cgroup.procs'))}")
            time.sleep(0.05)


class Container:
    """One systemd container over the cached ``rootfs``, with a name and a cgroup of its own.

    ``with Container(...) as c:`` mounts the tree (``c.root``, writable: the container's own layer);
    the caller may write files there or ``execute`` commands, then ``boot()``. Leaving the block
    tears everything down.
    """

    def __init__(self, rootfs: Path, name: str, workdir: Path, *, layers: Sequence[Path] = (),
                 binds: Mapping[Path, str] = {}, ro_binds: Mapping[Path, str] = {}, keep_layer: bool = False) -> None:
        self.nspawn = _require("systemd-nspawn", "systemd-container")
        self.nsenter = _require("nsenter", "util-linux")
        self.machine = f"{name}-{secrets.token_hex(3)}"       # unique: two runs, or two containers, never collide
        self.rootfs = rootfs
        self.layers = tuple(layers)
        self.base = workdir / self.machine
        self.upper = self.base / "upper"       # the container's own writes: a layer for later containers with keep_layer
        self.root = self.base / "root"
        self.journal_dir = self.base / "journal"
        self.console_log = self.base / "console.log"
        self.binds = dict(binds)
        self.ro_binds = dict(ro_binds)
        self.keep_layer = keep_layer
        self.leader: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []
        self._mounted = False

    # --- the tree ---------------------------------------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.mount()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def mount(self) -> None:
        work = self.base / "work"
        for path in (self.upper, work, self.root, self.journal_dir):
            path.mkdir(parents=True)
        lower = ":".join(str(p) for p in (*reversed(self.layers), self.rootfs))     # leftmost is the top layer
        run = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                              f"lowerdir={lower},upperdir={self.upper},workdir={work}", str(self.root)],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise ContainerError(f"overlay mount of {self.rootfs} failed: {run.stderr.strip()}")
        self._mounted = True

    def _cgroup(self, role: str) -> list[Path]:
        """A fresh cgroup per hierarchy, for one nspawn process (``role`` tells a boot from an ``execute``)."""
        made = []
        for hierarchy in _hierarchies():
            group = _own_cgroup(hierarchy) / f"vaultpki-{self.machine}-{role}"
            group.mkdir()
            self._cgroups.append(group)
            made.append(group)
        return made

    def _nspawn_argv(self, role: str, *extra: str) -> list[str]:
        groups = self._cgroup(role)
        # The shell moves itself into the new groups, then becomes nspawn: nspawn starts in them.
        move = "; ".join(f"echo $$ > {g}/cgroup.procs" for g in groups)
        binds = [f"--bind={host}:{inside}" for host, inside in self.binds.items()]
        binds += [f"--bind-ro={host}:{inside}" for host, inside in self.ro_binds.items()]
        return ["/bin/sh", "-ec", f'{move}; exec "$@"', "nspawn", self.nspawn, "--quiet", "--register=no",
                "--keep-unit", f"--machine={self.machine}{'' if role == 'boot' else '-' + role}", f"--directory={self.root}",
                "--link-journal=no", f"--bind={self.journal_dir}:/var/log/journal", "--resolv-conf=off", "--timezone=off",
                *binds, *extra]

    def execute(self, script: str, *, cwd: str = "/root", env: Mapping[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``/bin/sh -e`` as root in the tree, not booted (an install step before the first boot)."""
        if self.leader is not None:
            raise ContainerError("execute() is for a tree that is not booted; use run()")
        setenv = [f"--setenv={k}={v}" for k, v in {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}.items()]
        argv = self._nspawn_argv(f"x{len(self._cgroups)}", "--pipe", f"--chdir={cwd}", *setenv, "--", "/bin/sh", "-ec", script)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)

    # --- booting ----------------------------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> None:
        """Boot systemd and wait until ``systemctl is-system-running`` says running (or degraded)."""
        argv = self._nspawn_argv("boot", "--boot", "--console=read-only", "--kill-signal=SIGRTMIN+4")
        with open(self.console_log, "wb") as console:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self._proc.returncode} while booting\n{self.diagnostics()}")
            if self.leader is None:
                self.leader = self._find_leader()
            if self.leader is not None:
                state = self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
                if state in _BOOTED:
                    return
            time.sleep(0.1)
        raise ContainerError(f"not booted within {timeout:g}s (state {state!r})\n{self.diagnostics()}")

    def _find_leader(self) -> int | None:
        """The container's PID 1 as the host sees it: the child of nspawn that runs systemd."""
        assert self._proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self._proc.pid and stat.split("(", 1)[1].startswith("systemd)"):
                return int(entry.name)
        return None

    # --- inside the running container ------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
            cwd: str = "/", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` as root in every namespace of the running container, with a clean environment."""
        if self.leader is None:
            raise ContainerError("the container is not booted")
        clean = [f"{k}={v}" for k, v in {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}.items()]
        # (nsenter's own --wd opens the folder before it enters the mount namespace: the host's, not this one)
        return subprocess.run([self.nsenter, "--target", str(self.leader), "--all", "--", "/usr/bin/env", "-i", *clean,
                               "/bin/sh", "-c", 'cd -- "$0" && exec "$@"', cwd, *argv],
                              input=input, capture_output=True, text=True, timeout=timeout, check=False)

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-ec", script], **kwargs)

    def check(self, argv: Sequence[str], **kwargs: Any) -> str:
        """``run``, failing with its output and the journal's end unless it exits 0; its stdout."""
        done = self.run(argv, **kwargs)
        if done.returncode != 0:
            raise ContainerError(f"{list(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n{self.diagnostics()}")
        return done.stdout

    def systemctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> list[dict[str, Any]]:
        """Journal entries (``journalctl -o json`` with ``args``, e.g. ``-u unit``) of the running container."""
        out = self.check(["journalctl", "--no-pager", "-o", "json", *args])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for(self, what: str, probe: Any, timeout: float, interval: float = 0.2) -> Any:
        """Poll ``probe()`` until it returns something true; ContainerError with the journal's end on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > deadline:
                raise ContainerError(f"{what}: not within {timeout:g}s\n{self.diagnostics()}")
            time.sleep(interval)

    # --- diagnostics and teardown ----------------------------------------------------------------------

    def diagnostics(self, lines: int = 60) -> str:
        """The end of the journal (read on the host, so also after a crash) and of the console."""
        parts = []
        if shutil.which("journalctl") and any(self.journal_dir.iterdir()):
            tail = subprocess.run(["journalctl", "--no-pager", f"--directory={self.journal_dir}", "-n", str(lines),
                                   "-o", "short-precise"], capture_output=True, text=True, check=False)
            parts.append(f"--- journal of {self.machine} (last {lines}) ---\n{tail.stdout}{tail.stderr}")
        if self.console_log.exists():
            console = self.console_log.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- console of {self.machine} ---\n" + "\n".join(console))
        return "\n".join(parts)

    def close(self) -> None:
        """Power off, kill what is left, remove the cgroups, unmount; each step tried whatever failed before."""
        errors: list[str] = []
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)       # nspawn asks the container's systemd to power off
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                errors.append("the container did not power off within 20 s; killed")
                self._proc.kill()
                self._proc.wait(10)
        self.leader = None
        deadline = time.monotonic() + 20
        for group in reversed(self._cgroups):
            try:
                _remove_cgroup(group, deadline)
            except ContainerError as exc:
                errors.append(str(exc))
        self._cgroups.clear()
        if self._mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(self.root)], capture_output=True, check=False)
                errors.append(f"{self.root} was busy: unmounted lazily")
            self._mounted = False
        for path in (self.base / "work", self.root, *(() if self.keep_layer else (self.upper,))):
            shutil.rmtree(path, ignore_errors=True)
        if errors:
            raise ContainerError("; ".join(errors))
