"""``/healthz`` while Vault is away and nothing is due yet (issue 18), against a real OpenBao that is stopped and
started again (tests/support/openbao.py keeps its PKI on disk).

Before: with every certificate fresh, a pass that could not reach Vault counted as a good one, the daemon slept
until its next hourly check, and ``/healthz`` answered 200 for as long as Vault stayed away, until the first
certificate came due into the outage. Now such a pass fails and is retried with backoff, and ``/healthz`` turns
503 after ``PASS_FAILURES_UNHEALTHY`` of them in a row, and 200 again at the first pass that reaches Vault.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultpki.daemon.metrics import PASS_FAILURES_UNHEALTHY

from ..support.openbao import PersistentOpenBao
from .conftest import standard_sync_config, toml_dump, tree
from .daemon_proc import SyncDaemon, msg

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[PersistentOpenBao]:
    (tmp_path / "bao").mkdir()
    with PersistentOpenBao(tmp_path / "bao") as server:
        yield server


def poll_health(daemon: SyncDaemon, status: int, timeout: float) -> dict[str, object]:
    """The first /healthz answer with ``status``, polled until ``timeout``; the last answer on failure."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = daemon.get("/healthz")
        if code == status:
            return dict(json.loads(body))
        assert time.monotonic() < deadline, f"/healthz still {code} after {timeout}s: {body}"
        time.sleep(0.1)


def test_healthz_turns_unhealthy_while_vault_stays_away_with_nothing_due_and_healthy_when_it_returns(
        bao: PersistentOpenBao, tmp_path: Path) -> None:
    config, certs = standard_sync_config(bao.addr, bao.root_token, "health", tmp_path)
    doc = tomllib.loads(config.read_text())
    # Hour-long certificates (nothing comes due during the test), a CA check every second (a pass asks Vault
    # every second), and requests retried for one second only.
    doc["ttl"] = "1h"
    doc["renew"].update({"ca_check": "1s", "ocsp_check": False, "retry_initial": "1s", "retry_max": "1s"})
    doc["vault"]["retry_for"] = "1s"
    config.write_text(toml_dump(doc))
    with SyncDaemon(config, {"VAULT_TOKEN": bao.root_token}) as daemon:
        first = daemon.wait_for(msg("pass complete"), 30)
        assert first["renewed"] == ["node.crt"]
        poll_health(daemon, 200, 10)
        before = tree(certs)

        bao.stop()
        failed = daemon.wait_for(lambda e: e.get("msg") == "pass failed; retrying" and e.get("attempt") == 1, 30)
        assert "nothing is due yet, but Vault could not be asked" in failed["error"]
        # One failing pass may be an election or a restart: still healthy until the threshold.
        assert PASS_FAILURES_UNHEALTHY > 1 and daemon.get("/healthz")[0] == 200
        health = poll_health(daemon, 503, 60)
        assert health["due_files"] == [] and health["consecutive_failures"] >= PASS_FAILURES_UNHEALTHY
        assert "Vault could not be asked" in str(health["last_error"])
        assert daemon.metric("vaultpki_healthy") == 0 and daemon.metric("vaultpki_vault_up") == 0
        assert daemon.proc.poll() is None and tree(certs) == before       # up, and the files untouched

        bao.start()
        health = poll_health(daemon, 200, 30)
        assert health["consecutive_failures"] == 0 and health["last_error"] is None
        assert daemon.metric("vaultpki_vault_up") == 1
        assert tree(certs) == before                                      # nothing was due: nothing renewed
        assert daemon.stop() == 0
