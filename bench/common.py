"""Shared helpers for the benchmarks in bench/ (run with the project's venv Python).

The API is deliberately small:

- ``start_provisioned_server(mode="standard", workdir=None, **top) -> (DevServer, config_path)``
  starts a throw-away OpenBao dev server (``BenchServer``: a DevServer that allows API audit
  devices), provisions the layout ``mode`` (root + intermediate mounts and roles, as the
  integration tests do) and writes a vaultpki TOML config at
  ``workdir/vaultpki.toml`` (``certs_dir = workdir/certs``, ``ttl = "1h"``, token auth; ``top``
  overrides or adds top-level keys/tables). The caller stops the server (``server.stop()``, in a
  ``finally``); ``workdir`` (a new temp dir when None) is the caller's to remove.
- ``write_config(server, path, certs_dir, mode="standard", **top) -> path``: another config.
- ``cli_env(token) -> dict``: the environment for ``vaultpki``/``bao`` child processes (no inherited
  VAULT_*/BAO_*/VAULTPKI_* variables; ``VAULT_TOKEN`` set).
- ``vaultpki_cmd(*args) -> list[str]``: ``[PY, -m, vaultpki, *args]`` (``PY``: $BENCH_PYTHON, else this Python).
- ``interpreter()``: which interpreter (and how many packages) the measured vaultpki runs with.
- ``measure(cmd, env=None, timeout=120) -> (seconds, MiB, CPU seconds)``: runs ``cmd`` to completion
  and returns its wall time, the peak RSS of that one process and its CPU time over all its threads
  (``ru_maxrss`` and ``ru_utime + ru_stime`` from ``wait4``, taken in a bare ``python -S`` launcher,
  not in this process: see its docstring for why and for the ~8 MiB floor that implies); raises
  ``RuntimeError`` on a non-zero exit or a timeout. ``peak_rss_of`` returns the first two.
- ``enable_file_audit(server, path)``: a file audit device, accessors in clear text, so requests can
  be attributed to tokens; ``count_audit_requests(path, start_offset, accessor=None)``.
- ``report(name, value)``: prints one ``name: value`` line (the only output format of bench/).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hvac

from vaultpki.config import dumps
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer, find_bao
from vaultpki.dev.provision import ProvisionSpec, provision

__all__ = [
    "BAO", "LAUNCHER", "NODE_HOSTS", "BenchServer", "PY", "cli_env", "count_audit_requests", "enable_file_audit",
    "interpreter", "measure", "median", "peak_rss_of", "pki_names", "report", "start_provisioned_server", "vaultpki_cmd",
    "write_config",
]

# The interpreter every measured vaultpki runs on: ``make bench`` points BENCH_PYTHON at .venv-bench, which holds
# vaultpki's own dependencies only, as a user's install does (see the Makefile). Unset (a script run by hand):
# this interpreter, the dev venv.
# (made absolute, not resolved: the venv's python is a symlink out of the venv; some children run in another cwd)
PY = os.path.abspath(os.environ.get("BENCH_PYTHON") or sys.executable)
BAO = find_bao()
NODE_HOSTS = ("node1.bench.internal", "localhost", "127.0.0.1")


def report(name: str, value: object) -> None:
    """One ``name: value`` line, flushed at once (a long benchmark shows progress)."""
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    print(f"{name}: {value}", flush=True)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def pki_names(mode: str = "standard") -> PkiNames:
    m = Mode(mode)
    return PkiNames(mount="pki-crdb", client_mount="pki-crdb-client" if m is Mode.SPLIT_CA else None,
                    node_role="node" if m is Mode.STANDARD else "node-server",
                    client_node_role="client-node", user_role="user", ui_mount=None, ui_role=None)


def write_config(server: DevServer, path: Path, certs_dir: Path, mode: str = "standard", **top: Any) -> Path:
    """A vaultpki config for ``server`` (token auth through $VAULT_TOKEN; ``top`` wins)."""
    names = pki_names(mode)
    pki: dict[str, Any] = {"mount": names.mount, "node_role": names.node_role,
                           "client_node_role": names.client_node_role, "user_role": names.user_role}
    if names.client_mount:
        pki["client_mount"] = names.client_mount
    doc: dict[str, Any] = {"certs_dir": str(certs_dir), "mode": mode, "ttl": "1h",
                           "vault": {"addr": server.addr, "auth": "token"}, "pki": pki,
                           "node": {"hosts": list(NODE_HOSTS)}}
    doc.update(top)
    path.write_text(dumps(doc))
    return path


AUDIT_HCL = "unsafe_allow_api_audit_creation = true\n"   # OpenBao 2.x refuses API-created audit devices otherwise


def BenchServer() -> DevServer:  # noqa: N802 - kept as the name the benchmarks use
    """A dev server that allows enabling a file audit device over the API (to count requests)."""
    return DevServer(extra_hcl=AUDIT_HCL)


def start_provisioned_server(mode: str = "standard", workdir: Path | None = None, **top: Any) -> tuple[DevServer, Path]:
    """A started, provisioned dev server and a config file for it (see the module docstring)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="vaultpki-bench-"))
    server = BenchServer()
    server.start()
    try:
        names = pki_names(mode)
        provision(hvac.Client(url=server.addr, token=server.root_token), server.addr,
                  ProvisionSpec(mode=Mode(mode), pki=names, node_hosts=NODE_HOSTS, root_mount="pki-root"))
        config = write_config(server, workdir / "vaultpki.toml", workdir / "certs", mode, **top)
    except BaseException:
        server.stop()
        raise
    return server, config


def cli_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "VAULTPKI_"))}
    env["VAULT_TOKEN"] = token
    env.update(extra or {})
    return env


def vaultpki_cmd(*args: str) -> list[str]:
    return [PY, "-m", "vaultpki", *args]


def interpreter() -> str:
    """Which Python runs the measured vaultpki, and how many distributions its environment holds."""
    code = "import importlib.metadata as m; print(len({d.metadata['Name'].lower() for d in m.distributions()}))"
    count = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return f"{PY} ({count} distributions installed" + (")" if os.environ.get("BENCH_PYTHON") else
                                                       "; BENCH_PYTHON unset: the dev venv)")


# Run as ``python -S -c LAUNCHER REPORT_FD CMD...``: spawns CMD (stdin/stdout/stderr inherited), waits for it
# and writes "<exit code> <wall seconds> <ru_maxrss KiB> <CPU seconds>" (or "E <errno> <message>" when CMD cannot be
# started) to REPORT_FD, which CMD does not inherit. Only os/sys/time: all built in, no site, no imports.
LAUNCHER = """\
import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
argv = sys.argv[2:]
t0 = time.perf_counter()
try:
    pid = os.posix_spawnp(argv[0], argv, os.environ)
except OSError as e:
    os.write(fd, ("E %d %s" % (e.errno or 0, e.strerror)).encode())
    sys.exit(0)
_, status, ru = os.wait4(pid, 0)
t1 = time.perf_counter()
os.write(fd, ("%d %.9f %d %.6f" % (os.waitstatus_to_exitcode(status), t1 - t0, ru.ru_maxrss,
                                   ru.ru_utime + ru.ru_stime)).encode())
"""


def peak_rss_of(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of ``cmd``: ``measure``'s first two figures."""
    wall, rss, _ = measure(cmd, env, timeout)
    return wall, rss


def measure(cmd: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 120) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MiB, CPU seconds) of one run of ``cmd``; the RSS is that process's own
    ``ru_maxrss``, the CPU its user + system time over all its threads (``wait4``'s rusage).

    ``cmd`` is not started from this process but from a tiny launcher (``python -S -c LAUNCHER``)
    that ``posix_spawn``s it, ``wait4``s for it and reports the wall time it measured around
    spawn..wait and ``ru_maxrss`` on a dedicated pipe (stdin and stdout of ``cmd`` are /dev/null,
    its stderr is captured for the error message, as before). Why: on Linux ``ru_maxrss`` survives
    ``execve``; at exec the kernel folds the high-water RSS of the OLD address space into the
    task's maxrss, and with fork, vfork or posix_spawn that is the spawning parent's. Spawned from a
    benchmark process that has imported hvac and cryptography (~40 MiB), every child would be
    reported at >= that. The launcher is a bare ``python -S`` of about 8 MiB, so the figure is the
    measured process's exact peak whenever that peak exceeds the launcher's (~8 MiB): true of any
    Python process that imports something and of ``bao``; below it, the figure is the ~8 MiB floor.

    The launcher and ``cmd`` run in their own process group; on a timeout (or an exception here,
    e.g. KeyboardInterrupt) that group is killed. ``RuntimeError`` on a non-zero exit (or a signal:
    negative code) of ``cmd`` and on a timeout; ``OSError`` (e.g. FileNotFoundError) when ``cmd``
    cannot be started.
    """
    argv = list(cmd)
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([PY, "-S", "-c", LAUNCHER, str(w), *argv], env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                pass_fds=(w,), process_group=0)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    with proc, open(r, "rb") as report_pipe:
        try:
            _, err_bytes = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{argv[0]} timed out after {timeout}s") from None
        finally:
            if proc.poll() is None:             # timed out or interrupted: end the launcher and cmd (its group)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        line = report_pipe.read().decode(errors="replace")
    err = err_bytes.decode(errors="replace")
    if line.startswith("E "):
        _, errno, message = line.split(" ", 2)
        raise OSError(int(errno), message, argv[0])
    fields = line.split()
    if proc.returncode != 0 or len(fields) != 4:
        raise RuntimeError(f"launcher for {' '.join(argv[:4])}... exited {proc.returncode} without a report: "
                           f"{err.strip()[-800:]}")
    code, elapsed, maxrss_kib, cpu = int(fields[0]), float(fields[1]), int(fields[2]), float(fields[3])
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {code}: {err.strip()[-800:]}")
    return elapsed, maxrss_kib / 1024.0, cpu      # Linux: KiB


def enable_file_audit(server: DevServer, path: Path) -> None:
    """``PUT /v1/sys/audit/file``: one JSON line per request and per response; accessors not HMAC'd."""
    client = hvac.Client(url=server.addr, token=server.root_token)
    client.adapter.put("/v1/sys/audit/file", json={"type": "file", "options": {
        "file_path": str(path), "hmac_accessor": "false", "mode": "0600"}})


def count_audit_requests(path: Path, start_offset: int = 0, accessor: str | None = None,
                         end_offset: int | None = None) -> int:
    """Requests (``"type": "request"`` lines) logged after byte ``start_offset``, optionally for one token accessor."""
    count = 0
    with open(path, "rb") as f:
        f.seek(start_offset)
        data = f.read() if end_offset is None else f.read(max(0, end_offset - start_offset))
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("type") != "request":
            continue
        if accessor is not None and (entry.get("auth") or {}).get("accessor") != accessor:
            continue
        count += 1
    return count
