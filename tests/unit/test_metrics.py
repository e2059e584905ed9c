"""metrics: the gauges (vaultpki_* and CockroachDB-named), Health, and /metrics + /healthz on a loopback socket."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vaultpki.daemon.metrics import PASS_FAILURES_UNHEALTHY, Health, Metrics, MetricsServer, crdb_type

NOW_TS = 1_900_000_000.0
NOT_AFTER = NOW_TS + 10 * 86400
RENEW_AT = NOW_TS + 5 * 86400


class Clock:
    def __init__(self, t: float = NOW_TS) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(now=clock)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


# --- observe_file -------------------------------------------------------------

@pytest.mark.parametrize(("file", "crdb"), [
    pytest.param("node.crt", "node", id="node"),
    pytest.param("client.node.crt", "node_client", id="client-node"),
    pytest.param("ca.crt", "ca", id="ca"),
    pytest.param("ca-client.crt", "client_ca", id="ca-client"),
    pytest.param("ui.crt", "ui", id="ui"),
    pytest.param("ca-ui.crt", "ui_ca", id="ca-ui"),
])
def test_observe_file_sets_both_families(metrics: Metrics, file: str, crdb: str) -> None:
    assert crdb_type(file) == crdb
    metrics.observe_file(file, NOT_AFTER, RENEW_AT)
    assert value(metrics, f"security_certificate_expiration_{crdb}") == NOT_AFTER
    assert value(metrics, f"security_certificate_ttl_{crdb}") == NOT_AFTER - NOW_TS
    assert value(metrics, "vaultpki_certificate_expiration_timestamp_seconds", file=file) == NOT_AFTER
    assert value(metrics, "vaultpki_certificate_seconds_left", file=file) == NOT_AFTER - NOW_TS
    assert value(metrics, "vaultpki_certificate_renewal_timestamp_seconds", file=file) == RENEW_AT
    others = {"node", "node_client", "ca", "client_ca", "ui", "ui_ca"} - {crdb}
    for other in others:   # one file moves only its own type's gauges
        assert value(metrics, f"security_certificate_expiration_{other}") == 0
        assert value(metrics, f"security_certificate_ttl_{other}") == 0


def test_missing_file_reports_zero(metrics: Metrics) -> None:
    metrics.observe_file("node.crt", NOT_AFTER, RENEW_AT)
    metrics.observe_file("node.crt", None, None)
    assert value(metrics, "security_certificate_expiration_node") == 0
    assert value(metrics, "security_certificate_ttl_node") == 0
    assert value(metrics, "vaultpki_certificate_expiration_timestamp_seconds", file="node.crt") == 0
    assert value(metrics, "vaultpki_certificate_seconds_left", file="node.crt") == 0


def test_never_seen_file_reports_zero(metrics: Metrics) -> None:
    metrics.observe_file("node.crt", None, None)
    assert value(metrics, "security_certificate_expiration_node") == 0
    assert value(metrics, "vaultpki_certificate_seconds_left", file="node.crt") == 0
    assert value(metrics, "vaultpki_certificate_renewal_timestamp_seconds", file="node.crt") is None


def test_ttl_and_seconds_left_follow_the_clock(metrics: Metrics, clock: Clock) -> None:
    metrics.observe_file("node.crt", NOT_AFTER, RENEW_AT)
    clock.t += 86400
    assert value(metrics, "security_certificate_ttl_node") == NOT_AFTER - NOW_TS - 86400
    assert value(metrics, "vaultpki_certificate_seconds_left", file="node.crt") == NOT_AFTER - NOW_TS - 86400
    clock.t = NOT_AFTER + 1          # expired: never negative
    assert value(metrics, "security_certificate_ttl_node") == 0
    assert value(metrics, "vaultpki_certificate_seconds_left", file="node.crt") == 0
    assert value(metrics, "security_certificate_expiration_node") == NOT_AFTER


def test_file_without_a_crdb_type_only_sets_vaultpki_gauges(metrics: Metrics) -> None:
    assert crdb_type("client.marc.crt") is None
    metrics.observe_file("client.marc.crt", NOT_AFTER, RENEW_AT)
    assert value(metrics, "vaultpki_certificate_expiration_timestamp_seconds", file="client.marc.crt") == NOT_AFTER
    assert all(value(metrics, f"security_certificate_expiration_{t}") == 0
               for t in ("node", "node_client", "ca", "client_ca", "ui", "ui_ca"))


def test_renewed_stamps_the_clock(metrics: Metrics, clock: Clock) -> None:
    metrics.renewed(["node.crt", "ca.crt"])
    assert value(metrics, "vaultpki_last_renewal_timestamp_seconds", file="node.crt") == NOW_TS
    assert value(metrics, "vaultpki_last_renewal_timestamp_seconds", file="ca.crt") == NOW_TS
    assert value(metrics, "vaultpki_last_renewal_timestamp_seconds", file="ui.crt") is None


def test_initial_values(metrics: Metrics) -> None:
    assert value(metrics, "vaultpki_reload_verified") == -1
    assert value(metrics, "vaultpki_healthy") == 1
    assert value(metrics, "vaultpki_passes_total", result="ok") is None


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(now=Clock()), Metrics(now=Clock())
    a.observe_file("node.crt", NOT_AFTER, None)
    assert value(b, "security_certificate_expiration_node") == 0


# --- Health -------------------------------------------------------------------

@pytest.mark.parametrize(("due", "failures", "healthy"), [
    pytest.param((), 0, True, id="nothing"),
    pytest.param(("node.crt",), 0, True, id="due-but-not-failing-yet"),
    pytest.param((), PASS_FAILURES_UNHEALTHY - 1, True, id="failing-but-nothing-due-yet"),
    pytest.param((), PASS_FAILURES_UNHEALTHY, False, id="failing-with-nothing-due-for-too-long"),
    pytest.param(("node.crt",), 1, False, id="due-and-failing"),
])
def test_health(metrics: Metrics, due: tuple[str, ...], failures: int, healthy: bool) -> None:
    metrics.health.due_files = due
    metrics.health.consecutive_failures = failures
    assert metrics.health.healthy is healthy
    assert value(metrics, "vaultpki_healthy") == (1.0 if healthy else 0.0)


def test_health_to_json() -> None:
    health = Health(due_files=("node.crt",), last_error="node.crt: vault down", consecutive_failures=2,
                    reload_verified=False, extra={"not": "exported"})
    assert health.to_json() == {"healthy": False, "due_files": ["node.crt"], "last_error": "node.crt: vault down",
                                "consecutive_failures": 2, "reload_verified": False,
                                "reload_pending": False, "reload_failures": 0, "ca_mismatch": []}
    assert json.loads(json.dumps(health.to_json())) == health.to_json()


# --- the HTTP server ----------------------------------------------------------

@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    srv = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        yield srv
    finally:
        srv.stop()


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def test_metrics_endpoint_serves_prometheus_text(server: MetricsServer, metrics: Metrics) -> None:
    assert server.port > 0
    metrics.observe_file("node.crt", NOT_AFTER, RENEW_AT)
    metrics.observe_file("client.node.crt", NOT_AFTER - 1, RENEW_AT)
    metrics.observe_file("ca-client.crt", None, None)
    metrics.passes.labels("ok").inc()
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("security_certificate_expiration_node", ())] == NOT_AFTER
    assert samples[("security_certificate_ttl_node", ())] == NOT_AFTER - NOW_TS
    assert samples[("security_certificate_expiration_node_client", ())] == NOT_AFTER - 1
    assert samples[("security_certificate_expiration_client_ca", ())] == 0
    assert samples[("vaultpki_certificate_seconds_left", (("file", "node.crt"),))] == NOT_AFTER - NOW_TS
    assert samples[("vaultpki_certificate_renewal_timestamp_seconds", (("file", "node.crt"),))] == RENEW_AT
    assert samples[("vaultpki_passes_total", (("result", "ok"),))] == 1
    assert samples[("vaultpki_reload_verified", ())] == -1
    assert samples[("vaultpki_healthy", ())] == 1


def test_healthz_200_when_healthy(server: MetricsServer, metrics: Metrics) -> None:
    metrics.health.due_files = ("node.crt",)        # due, but no pass has failed yet
    status, content_type, body = get(server.port, "/healthz")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body) == {"healthy": True, "due_files": ["node.crt"], "last_error": None,
                                "consecutive_failures": 0, "reload_verified": None,
                                "reload_pending": False, "reload_failures": 0, "ca_mismatch": []}


def test_healthz_503_when_a_due_file_keeps_failing(server: MetricsServer, metrics: Metrics) -> None:
    metrics.health.due_files = ("node.crt",)
    metrics.health.consecutive_failures = 3
    metrics.health.last_error = "node.crt: vault down"
    status, content_type, body = get(server.port, "/healthz")
    assert status == 503 and content_type == "application/json"
    doc = json.loads(body)
    assert doc["healthy"] is False and doc["due_files"] == ["node.crt"]
    assert doc["consecutive_failures"] == 3 and doc["last_error"] == "node.crt: vault down"
    metrics.health.consecutive_failures = 0        # the next pass succeeded
    assert get(server.port, "/healthz")[0] == 200


def test_stop_closes_the_port(metrics: Metrics) -> None:
    srv = MetricsServer(metrics, "127.0.0.1", 0).start()
    port = srv.port
    assert get(port, "/healthz")[0] == 200
    srv.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_health_turns_unhealthy_after_repeated_reload_failures() -> None:
    """A reload that keeps failing (the database cannot be signalled) is unhealthy after
    RELOAD_FAILURES_UNHEALTHY attempts in a row, even with every file fresh."""
    from vaultpki.daemon.metrics import RELOAD_FAILURES_UNHEALTHY

    health = Health(reload_pending=True, reload_failures=RELOAD_FAILURES_UNHEALTHY - 1)
    assert health.healthy
    health.reload_failures = RELOAD_FAILURES_UNHEALTHY
    assert not health.healthy and health.to_json()["reload_failures"] == RELOAD_FAILURES_UNHEALTHY
