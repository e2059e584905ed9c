"""vaultpki against OpenBao Agent, side by side in one run against the same OpenBao dev server.

    .venv/bin/python bench/agent_bench.py [--runs 21] [--rest 60] [--short-ttl 30s]

Prints only ``name: value`` lines. Three parts:

1. Cold one-shot issuance into a fresh, empty directory, N runs each, alternating:
   - ``node`` set: ``vaultpki issue-node`` (ca.crt, node.crt, node.key; standard mode) against
     ``bao agent -exit-after-auth`` with ONE template whose pkiCert call writes node.crt, node.key and
     ca.crt through writeToFile (one issuance: cert and key always match, key 0600);
   - ``node+root`` set (the issue's anchor: ca.crt, node.crt/key and client.root.crt/key): ONE
     process, ``vaultpki issue-node --user root``, against the agent with a second template of the
     same kind for client.root.
   Wall time: median; CPU time (user + system, every thread): median; peak RSS: max over runs of the
   one process's ru_maxrss (vaultpki: the Python process; agent: the bao process), all measured
   through bench.common.measure's bare ``python -S`` launcher, so the RSS is not inflated to this
   benchmark process's own peak (a ``self_check_*`` line shows the launcher's floor). Before the runs
   the vaultpki package is byte-compiled (``compileall``), as ``pip install`` does: with
   PYTHONDONTWRITEBYTECODE set, an editable install would otherwise be compiled from source on every
   run. One untimed warm-up of each (page cache), so "cold" means a fresh certs-dir.
2. The agent's common per-file layout (one template per file: node.crt and node.key each calling
   pkiCert, or each calling ``secret "<mount>/issue/<role>"``), judged by vaultpki's own checks:
   issuances counted in the audit log, cert/key match (vaultpki.core.crypto.key_matches), key mode, and
   ``vaultpki verify``.
3. At rest, all in the same window of ``--rest`` seconds, each with its own token so the audit log
   (accessors in clear) attributes every request: ``vaultpki sync`` (ttl 1h, renew.ca_check "0") and
   ``bao agent`` as a daemon with the part-1 template (ttl 1h): requests, CPU seconds, RSS. And
   when each renews: vaultpki's renew_at under the default policy for its real certificate, plus,
   empirically, the agent and vaultpki sync each holding a ``--short-ttl`` certificate, watched for
   serial changes (lead = old not_after - moment the new file appeared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import queue
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hvac  # noqa: E402
import psutil  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

import vaultpki  # noqa: E402
from bench.common import (  # noqa: E402
    BAO,
    NODE_HOSTS,
    PY,
    cli_env,
    count_audit_requests,
    enable_file_audit,
    interpreter,
    measure,
    median,
    peak_rss_of,
    report,
    start_provisioned_server,
    vaultpki_cmd,
    write_config,
)
from vaultpki.config import parse_duration  # noqa: E402
from vaultpki.core import crypto  # noqa: E402
from vaultpki.core.renewal import RenewPolicy, renew_at  # noqa: E402

TARGET_WALL = 1.5
TARGET_RSS = 0.6
MOUNT = "pki-crdb"
DNS = [h for h in NODE_HOSTS if not h[0].isdigit()]
IPS = [h for h in NODE_HOSTS if h[0].isdigit()]


# --- agent configuration -------------------------------------------------------------------------

def node_args(ttl: str) -> str:
    alt = ",".join(h for h in DNS if h != "node")
    return (f'"{MOUNT}/issue/node" "common_name=node" "alt_names={alt}" "ip_sans={",".join(IPS)}" '
            f'"key_type=ec" "key_bits=256" "ttl={ttl}"')


def root_args(ttl: str) -> str:
    return f'"{MOUNT}/issue/root" "common_name=root" "key_type=ec" "key_bits=256" "ttl={ttl}"'


def bundle_template(call_args: str, directory: Path, stem: str, with_ca: bool) -> str:
    """The correct agent layout: ONE pkiCert call renders a bundle and writes cert and key from it."""
    ca = f'{{{{ .CA | writeToFile "{directory}/ca.crt" "" "" "0644" }}}}' if with_ca else ""
    return (f'{{{{ with pkiCert {call_args} }}}}{{{{ .Cert }}}}{{{{ .CA }}}}{{{{ .Key }}}}'
            f'{{{{ .Key | writeToFile "{directory}/{stem}.key" "" "" "0600" }}}}'
            f'{{{{ .Cert | writeToFile "{directory}/{stem}.crt" "" "" "0644" }}}}{ca}{{{{ end }}}}')


def agent_hcl(addr: str, token_file: Path, templates: list[tuple[str, Path, str | None]]) -> str:
    """templates: (inline template text, destination, perms or None for the agent's default)."""
    blocks = []
    for text, dest, perms in templates:
        perm = f'\n  perms = "{perms}"' if perms else ""
        blocks.append(f"template {{\n  contents = {json.dumps(text)}\n  destination = \"{dest}\"{perm}\n}}")
    return (f'vault {{\n  address = "{addr}"\n}}\n'
            f'auto_auth {{\n  method "token_file" {{\n    config = {{\n      token_file_path = "{token_file}"\n    }}\n  }}\n}}\n'
            'template_config {\n  exit_on_retry_failure = true\n}\n' + "\n".join(blocks) + "\n")


def correct_agent_config(work: Path, name: str, addr: str, token_file: Path, directory: Path,
                         with_root: bool, ttl: str) -> Path:
    templates: list[tuple[str, Path, str | None]] = [
        (bundle_template(node_args(ttl), directory, "node", True), directory / ".node.bundle.pem", "0600")]
    if with_root:
        templates.append((bundle_template(root_args(ttl), directory, "client.root", False),
                          directory / ".client.root.bundle.pem", "0600"))
    path = work / f"{name}.hcl"
    path.write_text(agent_hcl(addr, token_file, templates))
    return path


def agent_env(work: Path) -> dict[str, str]:
    env = cli_env("")
    env.pop("VAULT_TOKEN")
    env["HOME"] = str(work)             # no ~/.vault-token of the user's
    return env


# --- helpers -------------------------------------------------------------------------------------

def make_token(admin: hvac.Client, name: str) -> tuple[str, str]:
    """A child of the root token (root policy), 24h: its own accessor for the audit log."""
    auth = admin.auth.token.create(ttl="24h", renewable=True, meta={"bench": name})["auth"]
    return auth["client_token"], auth["accessor"]


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def fmt_ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def judge_pair(directory: Path, stem: str) -> tuple[bool | None, str]:
    """(cert/key match or None when unreadable, key mode in octal) for DIR/stem.crt + stem.key."""
    cert = read_cert(directory / f"{stem}.crt")
    key_path = directory / f"{stem}.key"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        mode = oct(stat.S_IMODE(key_path.stat().st_mode))
    except (OSError, ValueError):
        return None, "missing"
    if cert is None:
        return None, mode
    return crypto.key_matches(cert, key), mode  # type: ignore[arg-type]


class Proc:
    """A background process whose stderr lines are collected; stopped by its pid."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ps = psutil.Process(self.proc.pid)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    return False
                continue
            self.log.append(line)
            if needle in line:
                return True
        return False

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mib(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_files(paths: list[Path], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(read_cert(p) is not None for p in paths):
            return True
        time.sleep(0.05)
    return False


class RenewalWatch(threading.Thread):
    """Polls a certificate file; on each serial change records (seconds before the old not_after, lifetime)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.events: list[tuple[float, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = read_cert(self.path)
        while not self.stop_event.wait(0.1):
            cert = read_cert(self.path)
            if cert is None or last is None:
                last = last or cert
                continue
            if cert.serial_number != last.serial_number:
                now = dt.datetime.now(dt.UTC)
                lead = (last.not_valid_after_utc - now).total_seconds()
                life = (last.not_valid_after_utc - last.not_valid_before_utc).total_seconds()
                self.events.append((lead, life))
                last = cert


# --- part 1 --------------------------------------------------------------------------------------

def compile_vaultpki() -> None:
    """``python -m compileall -q`` over the vaultpki package, as ``pip install`` does at install time."""
    package = Path(vaultpki.__file__).resolve().parent
    done = subprocess.run([PY, "-m", "compileall", "-q", str(package)], capture_output=True, text=True, check=False)
    cached = Path(importlib.util.cache_from_source(str(package / "cli.py")))
    if done.returncode == 0 and cached.is_file() and cached.stat().st_mtime >= (package / "cli.py").stat().st_mtime:
        report("pyc_compiled", "yes")
    else:
        report("pyc_compiled", f"no: compileall exit {done.returncode}: "
               + (done.stdout + done.stderr).strip().replace("\n", " | ")[:300])
    report("pyc_package_dir", package)


def self_check(env: dict[str, str]) -> None:
    """peak_rss_of's floor: bare interpreters measured through its launcher (expected ~8-11 MiB),
    next to this benchmark process's own peak, which the old in-process wait4 reported for every child."""
    for label, cmd in (("python_S_pass", [PY, "-S", "-c", "pass"]), ("python_pass", [PY, "-c", "pass"])):
        samples = [peak_rss_of(cmd, env=env) for _ in range(3)]
        report(f"self_check_{label}_peak_rss_mib_max", round(max(r for _, r in samples), 1))
    report("self_check_bench_process_peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    report("self_check_note", "peak_rss_of measures through a bare python -S launcher (~8 MiB): "
           "exact above that, ~8 MiB floor below it")


def part_cold(work: Path, server: Any, config: Path, runs: int) -> None:
    token_file = secret_file(work / "root.token", server.root_token)
    env_v = cli_env(server.root_token)
    env_a = agent_env(work)
    compile_vaultpki()
    self_check(env_v)

    def vaultpki_once(directory: Path, with_root: bool) -> tuple[float, float, float]:
        user = ["--user", "root"] if with_root else []      # node set + client.root in one process, one set
        return measure(vaultpki_cmd("--config", str(config), "issue-node", *user, "--certs-dir", str(directory)),
                       env=env_v)

    def agent_once(directory: Path, with_root: bool, tag: str) -> tuple[float, float, float]:
        directory.mkdir()
        hcl = correct_agent_config(work, f"oneshot-{tag}", server.addr, token_file, directory, with_root, "1h")
        return measure([BAO, "agent", f"-config={hcl}", "-exit-after-auth"], env=env_a)

    agent_node_ms = 0.0
    for with_root, label in ((False, "node"), (True, "node_root")):
        prefix = "issue_node" if label == "node" else "issue_node_plus_root"
        agent = f"agent_oneshot_{label}"
        v_walls: list[float] = []
        v_rss: list[float] = []
        v_cpu: list[float] = []
        a_walls: list[float] = []
        a_rss: list[float] = []
        a_cpu: list[float] = []
        try:
            vaultpki_once(work / f"warm-v-{label}", with_root)
            agent_once(work / f"warm-a-{label}", with_root, f"warm-{label}")
            for i in range(runs):
                for kind in ("v", "a") if i % 2 == 0 else ("a", "v"):
                    if kind == "v":
                        w, r, c = vaultpki_once(work / f"v-{label}-{i}", with_root)
                        v_walls.append(w)
                        v_rss.append(r)
                        v_cpu.append(c)
                    else:
                        w, r, c = agent_once(work / f"a-{label}-{i}", with_root, f"{label}-{i}")
                        a_walls.append(w)
                        a_rss.append(r)
                        a_cpu.append(c)
        except (RuntimeError, OSError) as exc:              # e.g. a vaultpki without issue-node --user
            report(f"{prefix}_error", str(exc).strip().replace("\n", " | ")[:500])
            continue
        # the agent's output must be a usable certs-dir too, or the comparison is void
        check = subprocess.run(vaultpki_cmd("--config", str(config), "verify", "--certs-dir", str(work / f"a-{label}-0")),
                               env=env_v, capture_output=True, text=True, check=False)
        vw, aw = median(v_walls) * 1000, median(a_walls) * 1000
        vr, ar = max(v_rss), max(a_rss)
        expected = ["ca.crt", "node.crt", "node.key"] + (["client.root.crt", "client.root.key"] if with_root else [])
        missing = [name for name in expected if not (work / f"v-{label}-0" / name).is_file()]
        report(f"{prefix}_files", " ".join(expected) + (f" (MISSING: {' '.join(missing)})" if missing else ""))
        report(f"{prefix}_processes", "vaultpki issue-node" + (" --user root" if with_root else ""))
        report(f"{prefix}_wall_ms_median", round(vw, 1))
        report(f"{prefix}_wall_ms_all", " ".join(f"{w * 1000:.0f}" for w in v_walls))
        report(f"{prefix}_peak_rss_mib_max", round(vr, 1))
        report(f"{prefix}_cpu_ms_median", round(median(v_cpu) * 1000, 1))
        report(f"{agent}_templates", "1 pkiCert bundle template" + (" + 1 for client.root" if with_root else ""))
        report(f"{agent}_wall_ms_median", round(aw, 1))
        report(f"{agent}_wall_ms_all", " ".join(f"{w * 1000:.0f}" for w in a_walls))
        report(f"{agent}_peak_rss_mib_max", round(ar, 1))
        report(f"{agent}_cpu_ms_median", round(median(a_cpu) * 1000, 1))
        report(f"{agent}_output_verify", "ok" if check.returncode == 0 else f"exit {check.returncode}: "
               + (check.stdout + check.stderr).strip().replace("\n", " | ")[:300])
        rw, rr = fmt_ratio(vw, aw), fmt_ratio(vr, ar)
        if label == "node":
            agent_node_ms = aw
        report(f"ratio_wall_vaultpki_over_agent_{label}", round(rw, 2))
        # context, not the target: the fastest run of each (what each costs when the machine leaves it alone)
        report(f"ratio_wall_fastest_vaultpki_over_agent_{label}", round(fmt_ratio(min(v_walls), min(a_walls)), 2))
        report(f"ratio_peak_rss_vaultpki_over_agent_{label}", round(rr, 2))
        report(f"ratio_cpu_vaultpki_over_agent_{label}", round(fmt_ratio(median(v_cpu), median(a_cpu)), 2))
        report(f"met_wall_target_{label}", "yes" if rw <= TARGET_WALL else "no")
        report(f"met_rss_target_{label}", "yes" if rr <= TARGET_RSS else "no")
    # context: what a Python process costs before vaultpki does any work (compare self_check_*: the launcher's floor),
    # and the floor its dependencies set: importing what a cold issue-node needs of them (click, tomllib,
    # hvac and requests for its HTTP, tenacity, msgspec for its records, cryptography's X.509 and EC keys, psutil,
    # prometheus_client), nothing of vaultpki
    floor = ("import click, tomllib, hvac, requests, tenacity, msgspec, psutil, prometheus_client; "
             "from cryptography import x509; from cryptography.hazmat.primitives.asymmetric import ec")
    walls: dict[str, float] = {}
    for label, cmd in (("python_startup", [PY, "-c", "pass"]),
                       ("python_import_dependencies_only", [PY, "-c", floor]),
                       ("python_import_vaultpki_cli", [PY, "-c", "import vaultpki.cli.main"])):
        samples = [peak_rss_of(cmd, env=env_v) for _ in range(5)]
        walls[label] = median([w for w, _ in samples]) * 1000
        report(f"{label}_wall_ms_median", round(walls[label], 1))
        report(f"{label}_peak_rss_mib_max", round(max(r for _, r in samples), 1))
    if agent_node_ms:
        report("ratio_dependency_imports_alone_over_agent_node", round(fmt_ratio(walls["python_import_dependencies_only"],
                                                                                  agent_node_ms), 2))
    report("target_wall_ratio_max", TARGET_WALL)
    report("target_peak_rss_ratio_max", TARGET_RSS)


# --- part 2 --------------------------------------------------------------------------------------

def part_per_file(work: Path, server: Any, config: Path, audit: Path) -> None:
    token_file = work / "root.token"
    env_a = agent_env(work)
    issue_path = f"{MOUNT}/issue/node"
    variants: dict[str, Callable[[str], str]] = {
        "pkicert": lambda field: f'{{{{ with pkiCert {node_args("1h")} }}}}{{{{ .{field} }}}}{{{{ end }}}}',
        "secret": lambda field: (f'{{{{ with secret {node_args("1h")} }}}}'
                                 f'{{{{ .Data.{ {"Cert": "certificate", "Key": "private_key", "CA": "issuing_ca"}[field]} }}}}'
                                 '{{ end }}'),
    }
    for name, make in variants.items():
        directory = work / f"perfile-{name}"
        directory.mkdir()
        templates: list[tuple[str, Path, str | None]] = [
            (make("CA"), directory / "ca.crt", None), (make("Cert"), directory / "node.crt", None),
            (make("Key"), directory / "node.key", None)]
        hcl = work / f"perfile-{name}.hcl"
        hcl.write_text(agent_hcl(server.addr, token_file, templates))
        before = audit.stat().st_size
        try:
            peak_rss_of([BAO, "agent", f"-config={hcl}", "-exit-after-auth"], env=env_a)
        except RuntimeError as exc:
            report(f"agent_perfile_{name}_error", str(exc)[:300].replace("\n", " | "))
            continue
        issued = _count_path(audit, before, issue_path)
        matches, mode = judge_pair(directory, "node")
        check = subprocess.run(vaultpki_cmd("--config", str(config), "verify", "--certs-dir", str(directory)),
                               env=cli_env(server.root_token), capture_output=True, text=True, check=False)
        report(f"agent_perfile_{name}_templates", "ca.crt, node.crt, node.key: one template each, default perms")
        report(f"agent_perfile_{name}_issuances", issued)
        report(f"agent_perfile_{name}_cert_key_match", {True: "yes", False: "NO", None: "unreadable"}[matches])
        report(f"agent_perfile_{name}_key_mode", mode)
        report(f"agent_perfile_{name}_vaultpki_verify", "ok" if check.returncode == 0 else f"exit {check.returncode}: "
               + (check.stdout + check.stderr).strip().replace("\n", " | ")[:400])


def _count_path(audit: Path, start: int, path: str) -> int:
    n = 0
    with open(audit, "rb") as f:
        f.seek(start)
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") == "request" and (entry.get("request") or {}).get("path") == path:
                n += 1
    return n


# --- part 3 --------------------------------------------------------------------------------------

def part_rest(work: Path, server: Any, audit: Path, rest: float, short_ttl: str) -> None:
    admin = hvac.Client(url=server.addr, token=server.root_token)
    procs: list[Proc] = []
    watches: list[RenewalWatch] = []
    try:
        # vaultpki sync, ttl 1h: nothing due during the window
        v_tok, v_acc = make_token(admin, "vaultpki-sync")
        v_dir = work / "sync-certs"
        v_cfg = write_config(server, work / "sync.toml", v_dir, ttl="1h", renew={"ca_check": "0"})
        v = Proc(vaultpki_cmd("--config", str(v_cfg), "sync", "--log-format", "json"), cli_env(v_tok))
        procs.append(v)
        # bao agent daemon, same correct templates, ttl 1h
        a_tok, a_acc = make_token(admin, "agent-daemon")
        a_dir = work / "agent-daemon"
        a_dir.mkdir()
        a_hcl = correct_agent_config(work, "daemon", server.addr, secret_file(work / "agent.token", a_tok),
                                     a_dir, False, "1h")
        a = Proc([BAO, "agent", f"-config={a_hcl}"], agent_env(work))
        procs.append(a)
        # short-TTL holders, watched for renewals
        s_tok, s_acc = make_token(admin, "agent-short")
        s_dir = work / "agent-short"
        s_dir.mkdir()
        s_hcl = correct_agent_config(work, "short", server.addr, secret_file(work / "short.token", s_tok),
                                     s_dir, False, short_ttl)
        s = Proc([BAO, "agent", f"-config={s_hcl}"], agent_env(work))
        procs.append(s)
        vs_tok, vs_acc = make_token(admin, "vaultpki-short")
        vs_dir = work / "sync-short"
        vs_cfg = write_config(server, work / "sync-short.toml", vs_dir, ttl=short_ttl, renew={"ca_check": "0"})
        vs = Proc(vaultpki_cmd("--config", str(vs_cfg), "sync", "--log-format", "json"), cli_env(vs_tok))
        procs.append(vs)

        if not v.wait_for('"pass complete"', 60):
            report("rest_error", "vaultpki sync did not complete its first pass: " + " | ".join(v.log[-5:])[:400])
            return
        if not vs.wait_for('"pass complete"', 60):
            report("rest_short_error", "vaultpki sync (short ttl) did not complete its first pass")
        for d in (a_dir, s_dir):
            if not wait_files([d / "node.crt", d / "ca.crt"], 30):
                report("rest_error", f"bao agent did not render {d}/node.crt: " + _drain(a if d == a_dir else s)[-400:])
                return
        for d in (s_dir, vs_dir):
            w = RenewalWatch(d / "node.crt")
            w.start()
            watches.append(w)
        time.sleep(1.0)                                    # let the first passes' tails (token lookups) settle

        offset = audit.stat().st_size
        cpu0 = {p: p.cpu() for p in (v, a)}
        rss_max = {p: p.rss_mib() for p in (v, a)}
        end = time.monotonic() + rest
        while time.monotonic() < end:
            time.sleep(0.5)
            for p in (v, a):
                rss_max[p] = max(rss_max[p], p.rss_mib())
        cpu = {p: p.cpu() - cpu0[p] for p in (v, a)}
        rss_end = {p: p.rss_mib() for p in (v, a)}
        end_offset = audit.stat().st_size
        alive = {p: p.proc.poll() is None for p in (v, a)}
        for w in watches:
            w.stop_event.set()

        report("rest_window_s", rest)
        for p, name, acc in ((v, "sync_rest", v_acc), (a, "agent_daemon_rest", a_acc)):
            report(f"{name}_vault_requests", count_audit_requests(audit, offset, acc, end_offset))
            report(f"{name}_cpu_s", round(cpu[p], 3))
            report(f"{name}_rss_mib_end", round(rss_end[p], 1))
            report(f"{name}_rss_mib_max", round(rss_max[p], 1))
            report(f"{name}_alive_after_window", "yes" if alive[p] else "no")
        report("rest_all_vault_requests_in_window", count_audit_requests(audit, offset, None, end_offset))
        report("ratio_rest_rss_sync_over_agent", round(fmt_ratio(rss_max[v], rss_max[a]), 2))
        report("ratio_rest_cpu_sync_over_agent", round(fmt_ratio(cpu[v], cpu[a]), 2) if cpu[a] else "n/a (agent 0)")

        # when vaultpki renews: its real 1h node.crt under the default policy
        cert = read_cert(v_dir / "node.crt")
        if cert is not None:
            nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
            life = (na - nb).total_seconds()
            at = renew_at(nb, na, cert.serial_number, RenewPolicy())
            report("sync_policy", "renew.before 33% left, jitter +-5% of lifetime (default)")
            report("sync_node_crt_lifetime_s", round(life))
            report("sync_renew_at_fraction_of_lifetime", round((at - nb).total_seconds() / life, 3))
            report("sync_renews_before_expiry_s", round((na - at).total_seconds()))
            report("sync_renew_at_fraction_range", "0.617..0.717 (serial-derived jitter)")
        ttl_s = parse_duration(short_ttl, "--short-ttl")
        report("short_ttl", short_ttl)
        report("short_note", "issued lifetime = not_after - not_before, which includes Vault's 30s not_before backdating")
        for w, name, acc in zip(watches, ("agent", "sync"), (s_acc, vs_acc), strict=False):
            report(f"{name}_short_vault_requests_in_window", count_audit_requests(audit, offset, acc, end_offset))
            if w.events:
                report(f"{name}_short_renewals_seen", len(w.events))
                report(f"{name}_short_renewed_before_expiry_s", " ".join(f"{lead:.1f}" for lead, _ in w.events))
                report(f"{name}_short_renewed_before_expiry_fraction_of_issued_lifetime",
                       " ".join(f"{lead / life:.3f}" for lead, life in w.events))
                report(f"{name}_short_renewed_before_expiry_fraction_of_requested_ttl",
                       " ".join(f"{lead / ttl_s:.3f}" for lead, _ in w.events))
            else:
                report(f"{name}_short_renewals_seen", 0)
    finally:
        for w in watches:
            w.stop_event.set()
        for p in procs:
            p.stop()


def _drain(p: Proc) -> str:
    while True:
        try:
            p.log.append(p.lines.get_nowait())
        except queue.Empty:
            return " | ".join(line.strip() for line in p.log[-6:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="timed runs of each one-shot (default 21: the machine is noisy)")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds of the at-rest window (default 60)")
    parser.add_argument("--short-ttl", default="30s", help="ttl of the certificates watched for renewal (default 30s)")
    parser.add_argument("--skip-rest", action="store_true", help="only parts 1 and 2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vaultpki-agent-bench-"))
    started = time.monotonic()
    server = None
    try:
        server, config = start_provisioned_server(workdir=work)
        audit = work / "audit.log"
        enable_file_audit(server, audit)
        report("openbao", subprocess.run([BAO, "version"], capture_output=True, text=True).stdout.strip())
        report("cpus", os.cpu_count())
        report("vaultpki_python", interpreter())
        report("runs", args.runs)
        part_cold(work, server, config, args.runs)
        part_per_file(work, server, config, audit)
        if not args.skip_rest:
            part_rest(work, server, audit, args.rest, args.short_ttl)
        report("bench_total_s", round(time.monotonic() - started, 1))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
