"""Fleet simulation: N nodes renewing on vaultpki's schedule, with REAL issuance against one OpenBao.

- One throw-away OpenBao dev server, provisioned with vaultpki.dev.provision.provision (mode standard).
- Each simulated node is an in-process schedule. Its certificate comes from a real sign request:
  ``requests.Session`` POST ``pki-crdb/sign/node`` (keep-alive, shared by a small thread pool) with
  a fresh EC P-256 key and CSR (CN=node) per request, as vaultpki's ``issue_method = "sign"`` does,
  and ``ttl`` = --ttl (default 120s; OpenBao backdates notBefore by 30 s, so the issued lifetime is
  150 s). The returned certificate is parsed, and the node's next renewal time is the REAL
  ``vaultpki.core.renewal.renew_at(not_before, not_after, serial, RenewPolicy())``: window 33% of the
  issued lifetime, jitter +-5% of it from the serial, never before half-life.
- A priority queue (heapq) of renewal times feeds the pool when each is due.
- Round 1 is a fleet rollout: every node at t=0. Round 2 is the renewal that the jitter spreads.
  The run stops when every node has renewed once.

Reports, as ``name: value`` lines: the rollout (round 1) and the renewal round (round 2): requests
per second in 1-second buckets (peak and mean over the round's span), peak/mean, and whether each
renewal landed inside its window (sent no earlier than renew_at - tolerance and completed before the
old certificate's not_after). Also what the same certificates' renewals would look like with no jitter.

Usage: python bench/fleet_bench.py [--nodes 1000] [--threads 8] [--ttl 120s]
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import math
import os
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import hvac
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpki.core.layout import Mode, PkiNames
from vaultpki.core.renewal import RenewPolicy, renew_at
from vaultpki.dev.devserver import DevServer
from vaultpki.dev.provision import ProvisionSpec, provision

MOUNT = "pki-crdb"
ROLE = "node"
TOLERANCE_S = 0.5           # a renewal sent earlier than renew_at - this is a violation
TARGET_PEAK_OVER_MEAN = 3.0
TARGET_VIOLATIONS = 0


def out(name: str, value: object) -> None:
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    print(f"{name}: {value}", flush=True)


def make_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(slots=True)
class Held:
    """A node's current certificate."""
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    renew_at: float            # epoch seconds
    issued_at: float           # epoch seconds the sign request completed


@dataclass(slots=True)
class Event:
    node: int
    round: int
    due: float                 # epoch seconds the schedule said (0 for the rollout)
    sent: float
    done: float
    ok: bool
    early: bool = False
    late: bool = False         # completed after the replaced certificate's not_after


def buckets(times: list[float], origin: float) -> Counter[int]:
    return Counter(int(math.floor(t - origin)) for t in times)


def rate_stats(times: list[float], origin: float) -> tuple[int, float, int, int, list[int]]:
    """(peak per 1-s bucket, mean per second over the round's span of buckets, first, last bucket, counts)."""
    if not times:
        return 0, 0.0, 0, 0, []
    counts = buckets(times, origin)
    first, last = min(counts), max(counts)
    series = [counts.get(b, 0) for b in range(first, last + 1)]
    return max(series), len(times) / len(series), first, last, series


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ttl", default="120s")
    parser.add_argument("--deadline", type=float, default=175.0, help="give up (and say so) after this many seconds")
    args = parser.parse_args()
    n = args.nodes
    policy = RenewPolicy()
    t_total = time.perf_counter()

    with DevServer() as server:
        client = hvac.Client(url=server.addr, token=server.root_token)
        pki = PkiNames(mount=MOUNT, client_mount=None, node_role=ROLE, client_node_role="client-node",
                       user_role="user", ui_mount=None, ui_role=None)
        provision(client, server.addr, ProvisionSpec(mode=Mode.STANDARD, pki=pki, node_hosts=("localhost", "127.0.0.1")))
        out("fleet_server", f"{server.addr} (OpenBao dev, in memory)")
        out("fleet_cpus", os.cpu_count() or 0)
        out("fleet_nodes", n)
        out("fleet_threads", args.threads)
        out("fleet_ttl_requested", args.ttl)
        out("fleet_policy", f"before={policy.before_fraction:.2%} of issued lifetime, jitter=+-{policy.jitter_fraction:.0%}")
        out("fleet_issuance", f"raw requests.Session POST {MOUNT}/sign/{ROLE}, fresh EC P-256 key+CSR per request; "
            "renew_at = vaultpki.core.renewal.renew_at (the real function)")

        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=args.threads))
        session.headers["X-Vault-Token"] = server.root_token
        url = f"{server.addr}/v1/{MOUNT}/sign/{ROLE}"
        # Warm-up (not counted): the first requests after provisioning.
        for _ in range(10):
            session.post(url, json={"csr": make_csr(), "ttl": args.ttl}, timeout=30).raise_for_status()

        lock = threading.Lock()
        wake = threading.Condition(lock)
        heap: list[tuple[float, int, int]] = []          # (due epoch, node, round)
        held: dict[int, Held] = {}
        history: dict[int, list[Held]] = {i: [] for i in range(n)}
        events: list[Event] = []
        errors: list[str] = []
        renewed: set[int] = set()
        finished = threading.Event()

        def sign(node: int, rnd: int, due: float) -> None:
            previous = held.get(node)
            csr = make_csr()
            sent = time.time()
            try:
                response = session.post(url, json={"csr": csr, "ttl": args.ttl}, timeout=60)
                response.raise_for_status()
                pem = response.json()["data"]["certificate"]
                ok = True
            except Exception as exc:              # noqa: BLE001 - a failed request is counted, not fatal
                ok, pem = False, ""
                with lock:
                    errors.append(f"node {node} round {rnd}: {exc}")
            done = time.time()
            event = Event(node, rnd, due, sent, done, ok)
            if previous is not None:
                event.early = sent < previous.renew_at - TOLERANCE_S
                event.late = done > previous.not_after.timestamp()
            if ok:
                cert = x509.load_pem_x509_certificate(pem.encode())
                nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
                at = renew_at(nb, na, cert.serial_number, policy).timestamp()
                current = Held(nb, na, cert.serial_number, at, done)
            with wake:
                events.append(event)
                if not ok:                        # retry shortly, as vaultpki sync's backoff would
                    heapq.heappush(heap, (time.time() + 1.0, node, rnd))
                else:
                    held[node] = current
                    history[node].append(current)
                    if rnd == 1:
                        heapq.heappush(heap, (at, node, 2))
                    else:
                        renewed.add(node)
                        if len(renewed) == n:
                            finished.set()
                wake.notify()

        pool = ThreadPoolExecutor(max_workers=args.threads)
        t0 = time.time()
        with wake:
            for node in range(n):                 # the rollout: every node at t=0
                heapq.heappush(heap, (t0, node, 1))
        deadline = t0 + args.deadline
        while not finished.is_set() and time.time() < deadline:
            with wake:
                now = time.time()
                due_now = []
                while heap and heap[0][0] <= now:
                    due_now.append(heapq.heappop(heap))
                if not due_now:
                    wait = (heap[0][0] - now) if heap else 0.2
                    wake.wait(timeout=max(0.0, min(wait, 0.2)))
                    continue
            for due, node, rnd in due_now:
                pool.submit(sign, node, rnd, due)
        pool.shutdown(wait=True)
        session.close()
        elapsed = time.time() - t0

    r1 = [e for e in events if e.round == 1 and e.ok]
    r2 = [e for e in events if e.round == 2 and e.ok]
    out("fleet_run_s", elapsed)
    out("fleet_complete", "yes" if finished.is_set() else f"no: stopped at the {args.deadline:.0f}s deadline")
    out("fleet_requests_failed", len(errors))
    for line in errors[:3]:
        print(f"# {line}", flush=True)

    # Round 1: the rollout.
    r1_span = max(e.done for e in r1) - t0 if r1 else 0.0
    out("fleet_round1_certs", len(r1))
    out("fleet_round1_duration_s", r1_span)
    out("fleet_round1_certs_per_s", len(r1) / r1_span if r1_span else 0.0)
    peak1, mean1, _, _, series1 = rate_stats([e.sent for e in r1], t0)
    out("fleet_round1_peak_rps", peak1)
    out("fleet_round1_buckets", series1)
    lifetimes = sorted({(h[0].not_after - h[0].not_before).total_seconds() for h in history.values() if h})
    out("fleet_issued_lifetime_s", ",".join(f"{x:.0f}" for x in lifetimes))
    offsets = [h[0].renew_at - h[0].issued_at for h in history.values() if h]
    if offsets:
        out("fleet_renew_at_after_issuance_min_s", min(offsets))
        out("fleet_renew_at_after_issuance_mean_s", statistics.fmean(offsets))
        out("fleet_renew_at_after_issuance_max_s", max(offsets))
        out("fleet_renew_at_after_issuance_stdev_s", statistics.pstdev(offsets))

    # Round 2: the renewal round.
    peak2, mean2, first2, last2, series2 = rate_stats([e.sent for e in r2], t0)
    out("fleet_round2_renewals", len(r2))
    out("fleet_round2_nodes_renewed", f"{len(renewed)} of {n}")
    out("fleet_round2_window_s", f"t0+{first2}s .. t0+{last2 + 1}s ({last2 - first2 + 1} one-second buckets)")
    out("fleet_round2_buckets", series2)
    out("fleet_round2_peak_rps", peak2)
    out("fleet_round2_mean_rps", mean2)
    ratio = peak2 / mean2 if mean2 else float("inf")
    out("fleet_round2_peak_over_mean", ratio)
    out("target_peak_over_mean_max", TARGET_PEAK_OVER_MEAN)
    lateness = sorted(e.sent - e.due for e in r2)
    if lateness:
        out("fleet_round2_dispatch_lateness_p50_ms", 1000 * lateness[len(lateness) // 2])
        out("fleet_round2_dispatch_lateness_p99_ms", 1000 * lateness[min(len(lateness) - 1, int(0.99 * len(lateness)))])
        out("fleet_round2_dispatch_lateness_max_ms", 1000 * lateness[-1])
    early = sum(e.early for e in r2)
    late = sum(e.late for e in r2)
    missing = n - len(renewed)
    violations = early + late + missing
    out("fleet_round2_violations_early", early)
    out("fleet_round2_violations_after_not_after", late)
    out("fleet_round2_violations_never_renewed", missing)
    out("fleet_round2_violations", violations)
    out("target_violations", TARGET_VIOLATIONS)

    # The same certificates' renewals with no jitter (computed, not issued): the rollout replayed.
    nojit = RenewPolicy(jitter_fraction=0.0)
    flat = [renew_at(h[0].not_before, h[0].not_after, h[0].serial, nojit).timestamp() for h in history.values() if h]
    peak0, _, _, _, series0 = rate_stats(flat, t0)
    out("fleet_no_jitter_counterfactual_buckets", series0)
    out("fleet_no_jitter_counterfactual_peak_rps", peak0)
    out("fleet_no_jitter_counterfactual_span_s", len(series0))
    out("fleet_jitter_peak_reduction", peak0 / peak2 if peak2 else 0.0)

    met = finished.is_set() and ratio <= TARGET_PEAK_OVER_MEAN and violations == TARGET_VIOLATIONS and not errors
    out("met", "yes" if met else "no")
    out("fleet_total_runtime_s", time.perf_counter() - t_total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
