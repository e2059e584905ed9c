"""Bulk issuance: `vaultpki issue-user --from-file` vs `bao write` per cert vs raw sign requests.

All of them run side by side in ONE run against the SAME throw-away OpenBao dev server
(provisioned with vaultpki.dev.provision.provision, mode standard):

1. vaultpki: ``vaultpki issue-user --from-file users.txt --certs-dir DIR --json`` for N users
   (user0001...); the wall time of the whole CLI process (Python start-up included); the
   rate is certificates *on disk* afterwards (client.*.crt files counted) / wall time.
2. bao-write: ``bao write -format=json <mount>/issue/<role> common_name=<user> key_type=ec key_bits=256``
   (the roles have key_type "any", so /issue needs the key type spelt out), one process
   per certificate, for a SAMPLE of users; the rate is extrapolated to N (said so in the output).
3. raw sign: ``requests.Session`` POSTs to ``<mount>/sign/<role>`` over keep-alive HTTP, with an
   EC P-256 CSR per user generated beforehand (not timed) and ``common_name`` (the user role has
   use_csr_common_name=false); sequential, then with a pool of 8 threads and one of 16 (vaultpki keeps
   16 requests in flight, so the raw loop gets as many). Nothing is parsed or written: this is the
   issue's limit, and the target is set against the best of the three.

vaultpki and the three raw loops run ``--rounds`` times each (default 3), the order rotating from round
to round, since the dev server's store grows with every certificate and would otherwise favour
whichever runs first; rates are medians. For each, the CPU time per certificate of the client (the
vaultpki process, or this process for the raw loops) and of the server is printed: on a
2-core machine both sides share the cores. So is the cost of creating a file in the benchmark's
directory, before and after (see create_cost_us: ext4 is slow to create files for a few minutes
after many were deleted); the rounds start only once that cost is normal (settle_filesystem waits
up to 5 minutes, and says how long it waited).

Prints ``name: value`` lines. Usage: python bench/bulk_bench.py [--users 1000] [--bao-sample 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import psutil
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PY, interpreter, median  # noqa: E402
from vaultpki.core.layout import Mode, PkiNames  # noqa: E402
from vaultpki.dev.devserver import DevServer, find_bao  # noqa: E402
from vaultpki.dev.provision import ProvisionSpec, provision  # noqa: E402

MOUNT = "pki-crdb"
ROLE = "user"
TARGET_BAO_RATIO = 50.0
TARGET_RAW_FRACTION = 0.80

CONFIG = """\
certs_dir = "{certs}"
mode = "standard"
key_type = "ec"

[vault]
addr = "{addr}"
auth = "token"
token_file = "{token_file}"

[pki]
mount = "{mount}"
user_role = "{role}"

[node]
hosts = ["localhost", "127.0.0.1"]
"""


def out(name: str, value: object) -> None:
    if isinstance(value, float):
        value = f"{value:.3g}" if value < 100 else f"{value:.0f}"
    print(f"{name}: {value}", flush=True)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "VAULTPKI_"))}


def make_csr(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def session_for(server: DevServer, pool: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.headers["X-Vault-Token"] = server.root_token
    return session


def raw_sign(session: requests.Session, url: str, csr: str, cn: str) -> None:
    response = session.post(url, json={"csr": csr, "common_name": cn}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"sign {cn}: HTTP {response.status_code}: {response.text[:200]}")
    if "certificate" not in response.json().get("data", {}):
        raise RuntimeError(f"sign {cn}: no certificate")


def bench_vaultpki(server: DevServer, work: Path, users: list[str]) -> tuple[float, int, dict[str, object]]:
    token_file = work / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(server.root_token)
    certs = work / "certs"
    config = work / "vaultpki.toml"
    config.write_text(CONFIG.format(certs=work / "node", addr=server.addr, token_file=token_file,
                                    mount=MOUNT, role=ROLE))
    listing = work / "users.txt"
    listing.write_text("\n".join(users) + "\n")
    argv = [PY, "-m", "vaultpki", "--config", str(config), "issue-user", "--from-file", str(listing),
            "--certs-dir", str(certs), "--json"]
    start = time.perf_counter()
    result = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"# vaultpki exited {result.returncode}: {result.stderr.strip()[-500:]}", flush=True)
    on_disk = len(list(certs.glob("client.*.crt"))) if certs.exists() else 0
    keys = len(list(certs.glob("client.*.key"))) if certs.exists() else 0
    summary: dict[str, object] = {}
    try:
        parsed = json.loads(result.stdout)
        summary = {"issued": len(parsed.get("issued", [])), "failed": len(parsed.get("failed", []))}
    except json.JSONDecodeError:
        summary = {"issued": "?", "failed": "?"}
    summary["keys"] = keys
    summary["exit"] = result.returncode
    return wall, on_disk, summary


def startup_seconds(work: Path) -> float:
    """Wall time of ``vaultpki --help``: interpreter start-up and CLI imports, the fixed cost of any run."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([PY, "-m", "vaultpki", "--help"], env=clean_env(), capture_output=True,
                       timeout=60, check=False, cwd=work)
        best = min(best, time.perf_counter() - start)
    return best


def bench_bao_write(server: DevServer, work: Path, users: list[str]) -> tuple[float, int]:
    home = work / "bao-home"
    home.mkdir()
    env = clean_env()
    env.update(VAULT_ADDR=server.addr, VAULT_TOKEN=server.root_token, HOME=str(home))
    bao = find_bao()
    ok = 0
    start = time.perf_counter()
    for user in users:
        result = subprocess.run([bao, "write", "-format=json", f"{MOUNT}/issue/{ROLE}", f"common_name={user}",
                                 "key_type=ec", "key_bits=256"],
                                env=env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode == 0 and "certificate" in json.loads(result.stdout).get("data", {}):
            ok += 1
        else:
            print(f"# bao write {user} failed: {result.stderr.strip()[:200]}", flush=True)
    return time.perf_counter() - start, ok


def bench_raw_sequential(server: DevServer, csrs: list[tuple[str, str]]) -> float:
    url = f"{server.addr}/v1/{MOUNT}/sign/{ROLE}"
    session = session_for(server, 1)
    start = time.perf_counter()
    for cn, csr in csrs:
        raw_sign(session, url, csr, cn)
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


def bench_raw_threaded(server: DevServer, csrs: list[tuple[str, str]], threads: int) -> float:
    url = f"{server.addr}/v1/{MOUNT}/sign/{ROLE}"
    session = session_for(server, threads)
    lock = threading.Lock()
    queue = list(reversed(csrs))

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                cn, csr = queue.pop()
            raw_sign(session, url, csr, cn)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


def create_cost_us(directory: Path, count: int = 500) -> float:
    """Microseconds per small file created (and closed) in ``directory``: the filesystem's state.

    ext4 will not reuse an inode for a few minutes after it was freed, and its allocator checks
    each candidate (``recently_deleted``): after a mass deletion (a test run, an earlier benchmark)
    a create costs ~600 us instead of ~30 us. The raw loops write nothing, so this weighs on
    vaultpki's figure alone; it is printed so that a run in that state can be recognised."""
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=directory))
    start = time.perf_counter()
    for i in range(count):
        os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.perf_counter() - start) * 1e6 / count


def settle_filesystem(directory: Path, normal_us: float = 60.0, patience_s: float = 300.0) -> float:
    """Wait (up to ``patience_s``) until creating a file in ``directory`` costs less than ``normal_us``;
    the seconds waited. An earlier benchmark's clean-up (thousands of files deleted) leaves ext4 slow to
    create files for minutes, which would weigh on vaultpki's figure alone (see create_cost_us)."""
    start = time.perf_counter()
    while create_cost_us(directory) >= normal_us and time.perf_counter() - start < patience_s:
        time.sleep(10)
    return time.perf_counter() - start


def rate_line(name: str, rates: list[float]) -> float:
    """Print every round's rate and the median; returns the median."""
    mid = median(rates)
    out(f"{name}_rounds", " ".join(f"{r:.0f}" for r in rates))
    out(f"{name}", mid)
    return mid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--bao-sample", type=int, default=20)
    parser.add_argument("--threads", default="8,16", help="thread counts of the raw threaded loops (default 8,16)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of vaultpki / raw sequential / raw threaded, in rotating order (default 3)")
    args = parser.parse_args()
    n = args.users
    thread_counts = [int(t) for t in args.threads.split(",")]
    t_total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vaultpki-bulk-") as tmp, DevServer() as server:
        work = Path(tmp)
        client = hvac.Client(url=server.addr, token=server.root_token)
        pki = PkiNames(mount=MOUNT, client_mount=None, node_role="node", client_node_role="client-node",
                       user_role=ROLE, ui_mount=None, ui_role=None)
        provision(client, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=("localhost", "127.0.0.1")))
        out("bulk_server", f"{server.addr} (OpenBao dev, in memory, one server for every variant)")
        out("bulk_cpus", os.cpu_count() or 0)
        out("bulk_vaultpki_python", interpreter())
        out("bulk_users", n)
        out("bulk_rounds", f"{args.rounds} (each variant once per round, the order rotating; figures are medians)")
        out("bulk_fs_settle_wait_s", settle_filesystem(work))
        out("bulk_fs_create_us_per_file_before", create_cost_us(work))

        # Pre-generated CSRs for the raw variants (not timed): one per user, variant and round.
        gen_start = time.perf_counter()
        csrs = {(kind, r): [(f"{kind}{r}-{i:04d}", make_csr(f"{kind}{r}-{i:04d}")) for i in range(1, n + 1)]
                for kind in ("seq", *(f"thr{t}" for t in thread_counts)) for r in range(args.rounds)}
        out("bulk_csr_pregeneration_s", time.perf_counter() - gen_start)
        # Warm the server up (first requests after provisioning) so that no variant pays for it.
        bench_raw_sequential(server, [(f"warm{i}", make_csr(f"warm{i}")) for i in range(20)])

        # Every variant signs n certificates per round against the same server, whose store grows
        # as the run goes on: rotating the order gives none of them the emptier server.
        rates: dict[str, list[float]] = {"vaultpki": [], "seq": [], **{f"thr{t}": [] for t in thread_counts}}
        client_cpu: dict[str, list[float]] = {k: [] for k in rates}
        server_cpu: dict[str, list[float]] = {k: [] for k in rates}
        on_disk_all: list[int] = []
        server_ps = psutil.Process(server.pid)

        def cpu_now() -> tuple[float, float]:
            """(client, server) CPU seconds so far: the client is this process (the raw variants' threads)
            plus its finished children (the vaultpki CLI); the server is the bao process."""
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            srv = server_ps.cpu_times()
            return time.process_time() + children.ru_utime + children.ru_stime, srv.user + srv.system

        def measured(kind: str, variant: Callable[[int], None], r: int) -> None:
            c0, s0 = cpu_now()
            variant(r)
            c1, s1 = cpu_now()
            client_cpu[kind].append((c1 - c0) * 1000 / n)
            server_cpu[kind].append((s1 - s0) * 1000 / n)

        def run_vaultpki(r: int) -> None:
            round_dir = work / f"round{r}"
            round_dir.mkdir()
            wall, on_disk, summary = bench_vaultpki(server, round_dir, [f"user{r}-{i:04d}" for i in range(1, n + 1)])
            on_disk_all.append(on_disk)
            rates["vaultpki"].append(on_disk / wall)
            out(f"bulk_round{r}_vaultpki", f"{wall:.2f}s, {on_disk} certs and {summary['keys']} keys on disk, "
                f"json issued {summary['issued']} failed {summary['failed']}, exit {summary['exit']}")

        def run_seq(r: int) -> None:
            rates["seq"].append(n / bench_raw_sequential(server, csrs[("seq", r)]))

        def run_thr(threads: int) -> Callable[[int], None]:
            def run(r: int) -> None:
                rates[f"thr{threads}"].append(n / bench_raw_threaded(server, csrs[(f"thr{threads}", r)], threads))
            return run

        variants = [("vaultpki", run_vaultpki), ("seq", run_seq), *((f"thr{t}", run_thr(t)) for t in thread_counts)]
        for r in range(args.rounds):
            for kind, variant in variants[r % len(variants):] + variants[:r % len(variants)]:
                measured(kind, variant, r)

        out("bulk_fs_create_us_per_file_after", create_cost_us(work / "round0"))
        # 1. vaultpki, the whole CLI process (start-up included), certificates on disk afterwards.
        vaultpki_rate = rate_line("bulk_vaultpki_certs_per_s", rates["vaultpki"])
        out("bulk_vaultpki_certs_on_disk_min", min(on_disk_all))
        startup = startup_seconds(work)
        out("bulk_vaultpki_startup_s", startup)

        # 2. bao write, one process per certificate, on a sample; extrapolated.
        sample = [f"bao-{i:04d}" for i in range(1, args.bao_sample + 1)]
        bao_wall, bao_ok = bench_bao_write(server, work, sample)
        bao_rate = bao_ok / bao_wall if bao_ok else 0.0
        out("bulk_bao_write_sample", f"{bao_ok} of {len(sample)} certs in {bao_wall:.2f}s")
        out("bulk_bao_write_certs_per_s", bao_rate)
        out("bulk_bao_write_extrapolated_s_for_users", (n / bao_rate) if bao_rate else "n/a")
        out("bulk_bao_write_note", f"extrapolated from a sample of {len(sample)}; JSON printed, nothing written to disk")

        # 3. raw sign over keep-alive HTTP: the limit.
        raw_seq_rate = rate_line("bulk_raw_sign_sequential_certs_per_s", rates["seq"])
        raw_thr_rates = {t: rate_line(f"bulk_raw_sign_threads{t}_certs_per_s", rates[f"thr{t}"]) for t in thread_counts}
        best_raw = max(raw_seq_rate, *raw_thr_rates.values())
        out("bulk_raw_sign_best_certs_per_s", best_raw)
        out("bulk_raw_sign_note", "CSR pre-generated, response checked for a certificate, nothing parsed or written")

        # Where the CPU goes, per certificate: both sides share this machine's cores, so a client that
        # does more per certificate (key, CSR, validation, two durable files) leaves less for the server.
        for kind, label in (("vaultpki", "vaultpki"), ("seq", "raw_sign_sequential"),
                            *((f"thr{t}", f"raw_sign_threads{t}") for t in thread_counts)):
            c, srv = median(client_cpu[kind]), median(server_cpu[kind])
            out(f"bulk_{label}_cpu_ms_per_cert", f"client {c:.2f}, server {srv:.2f}, both {c + srv:.2f} (medians)")

        ratio_bao = vaultpki_rate / bao_rate if bao_rate else 0.0      # no bao rate: not met
        ratio_raw = vaultpki_rate / best_raw
        out("ratio_vaultpki_over_bao_write", ratio_bao)
        out("target_ratio_bao_write_min", TARGET_BAO_RATIO)
        out("met_bao_write", "yes" if ratio_bao >= TARGET_BAO_RATIO else "no")
        out("ratio_vaultpki_over_raw_sign_best", ratio_raw)
        out("ratio_vaultpki_over_raw_sign_sequential", vaultpki_rate / raw_seq_rate)
        out("target_ratio_raw_sign_min", TARGET_RAW_FRACTION)
        out("met_raw_sign", "yes" if ratio_raw >= TARGET_RAW_FRACTION else "no")
        out("met", "yes" if ratio_bao >= TARGET_BAO_RATIO and ratio_raw >= TARGET_RAW_FRACTION
            and min(on_disk_all) == n else "no")
    out("bulk_total_runtime_s", time.perf_counter() - t_total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
