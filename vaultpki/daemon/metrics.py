"""Prometheus metrics and ``/healthz`` for ``vaultpki sync``, on a registry of our own.

Per-type gauges mirror CockroachDB's own ``security.certificate.expiration.<type>``
and ``security.certificate.ttl.<type>`` (exported by CockroachDB as
``security_certificate_expiration_node`` and so on), so alerts written for the
database read the same on vaultpki's view of the files. The ``vaultpki_*`` families
add what only the renewer knows: renewal times, failures, reload verification.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from vaultpki.core.ca_change import CaReplaced

__all__ = ["PASS_FAILURES_UNHEALTHY", "RELOAD_FAILURES_UNHEALTHY", "Health", "Metrics", "MetricsServer", "crdb_type"]

# file name -> CockroachDB's certificate type label (certificate_metrics.go)
_CRDB_TYPES = {
    "ca.crt": "ca",
    "ca-client.crt": "client_ca",
    "ca-ui.crt": "ui_ca",
    "node.crt": "node",
    "client.node.crt": "node_client",
    "ui.crt": "ui",
}


def crdb_type(file: str) -> str | None:
    return _CRDB_TYPES.get(file)


#: A reload that failed this many times in a row makes ``/healthz`` unhealthy: one failure may be a database
#: restarting, three in a row (each pass retries) is a database that is not getting its new certificates.
RELOAD_FAILURES_UNHEALTHY = 3
#: Passes failing this many times in a row make ``/healthz`` unhealthy even while no file is due: a pass
#: that could not reach Vault has already retried each request for ``vault.retry_for``, so three in a row
#: (with the backoff between them) is an outage, not an election, and the files will come due into it.
PASS_FAILURES_UNHEALTHY = 3


class Health(msgspec.Struct):
    """Unhealthy when a file is due (inside its window, missing or invalid) and renewing it keeps failing,
    when passes keep failing even with nothing due (``PASS_FAILURES_UNHEALTHY``: Vault away, say), when a
    reload keeps failing, when the database was last seen serving something other than the files on disk, or
    while a mount's CA was replaced without an overlap (``ca_mismatch``: the set is held until an operator acts)."""

    due_files: tuple[str, ...] = ()
    last_error: str | None = None
    consecutive_failures: int = 0
    reload_verified: bool | None = None
    reload_pending: bool = False
    reload_failures: int = 0          # failed reload attempts in a row (see RELOAD_FAILURES_UNHEALTHY)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    ca_mismatch: tuple[CaReplaced, ...] = ()      # CA files held: their mount's CA was replaced with no overlap

    @property
    def healthy(self) -> bool:
        return (not (self.due_files and self.consecutive_failures > 0) and self.reload_verified is not False
                and self.consecutive_failures < PASS_FAILURES_UNHEALTHY and self.reload_failures < RELOAD_FAILURES_UNHEALTHY
                and not self.ca_mismatch)

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "due_files": list(self.due_files), "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures, "reload_verified": self.reload_verified,
                "reload_pending": self.reload_pending, "reload_failures": self.reload_failures,
                "ca_mismatch": [{"mount": h.mount, "file": h.file, "trusted": list(h.trusted), "offered": list(h.offered)}
                                for h in self.ca_mismatch]}


class Metrics:
    """Everything the daemon reports; ``now`` is injectable so tests need no patching."""

    def __init__(self, registry: CollectorRegistry | None = None, now: Callable[[], float] = time.time) -> None:
        self.registry = registry or CollectorRegistry()
        self._now = now
        self._not_after: dict[str, float] = {}
        self.health = Health()
        r = self.registry
        self._crdb_expiration = {
            t: Gauge(f"security_certificate_expiration_{t}", f"NotAfter of {t} (unix seconds; 0 if missing)", registry=r)
            for t in _CRDB_TYPES.values()
        }
        self._crdb_ttl = {
            t: Gauge(f"security_certificate_ttl_{t}", f"seconds until {t} expires (0 if expired or missing)", registry=r)
            for t in _CRDB_TYPES.values()
        }
        for t, gauge in self._crdb_ttl.items():
            gauge.set_function(functools.partial(self._ttl_of_type, t))
        self.not_after = Gauge("vaultpki_certificate_expiration_timestamp_seconds", "NotAfter of each file",
                               ["file"], registry=r)
        self.seconds_left = Gauge("vaultpki_certificate_seconds_left", "seconds until each file expires",
                                  ["file"], registry=r)
        self.renew_at = Gauge("vaultpki_certificate_renewal_timestamp_seconds", "when each file is due for renewal",
                              ["file"], registry=r)
        self.last_renewal = Gauge("vaultpki_last_renewal_timestamp_seconds", "when each file was last renewed",
                                  ["file"], registry=r)
        self.renewal_failures = Counter("vaultpki_renewal_failures", "failed renewals per file", ["file"], registry=r)
        self.passes = Counter("vaultpki_passes", "sync passes by result", ["result"], registry=r)
        self.reloads = Counter("vaultpki_reloads", "reloads by result", ["result"], registry=r)
        self.reload_verified = Gauge("vaultpki_reload_verified",
                                     "1: the served certificate is the one written; 0: it is not; -1: not checked",
                                     registry=r)
        self.reload_verified.set(-1)
        self.reload_pending = Gauge("vaultpki_reload_pending",
                                    "1 while a reload of the database has not happened yet (kept across restarts)",
                                    registry=r)
        self.vault_up = Gauge("vaultpki_vault_up", "1 when the last Vault request succeeded", registry=r)
        self.ca_mismatch = Gauge("vaultpki_ca_mismatch", "1 while the mount's CA was replaced without an overlap and "
                                 "its CA file is held as it is (see /healthz ca_mismatch)", ["mount"], registry=r)
        self.healthy = Gauge("vaultpki_healthy", "1 when /healthz answers 200 (see the Health record)",
                             registry=r)
        self.healthy.set_function(lambda: 1.0 if self.health.healthy else 0.0)

    def _ttl_of_type(self, crdb: str) -> float:
        files = [f for f, t in _CRDB_TYPES.items() if t == crdb and f in self._not_after]
        return max(0.0, self._not_after[files[0]] - self._now()) if files else 0.0

    def _seconds_left(self, file: str) -> float:
        return max(0.0, self._not_after.get(file, 0.0) - self._now()) if file in self._not_after else 0.0

    def observe_file(self, file: str, not_after: float | None, renew_at: float | None) -> None:
        """Record a file's expiry (None: missing or invalid, reported as 0 like CockroachDB does)."""
        crdb = crdb_type(file)
        if not_after is None:
            self._not_after.pop(file, None)
            self.not_after.labels(file).set(0)
            if crdb:
                self._crdb_expiration[crdb].set(0)
        else:
            self._not_after[file] = not_after
            self.not_after.labels(file).set(not_after)
            if crdb:
                self._crdb_expiration[crdb].set(not_after)
        self.seconds_left.labels(file).set_function(functools.partial(self._seconds_left, file))
        if renew_at is not None:
            self.renew_at.labels(file).set(renew_at)

    def renewed(self, files: Iterable[str]) -> None:
        for file in files:
            self.last_renewal.labels(file).set(self._now())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Scrapes are not news; the daemon logs what matters."""


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (JSON, 200 or 503) in a background thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        prometheus = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                body = json.dumps(metrics.health.to_json()).encode()
                status = "200 OK" if metrics.health.healthy else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            return prometheus(environ, start_response)  # type: ignore[no-any-return]

        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="vaultpki-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
