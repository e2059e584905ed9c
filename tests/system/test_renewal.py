"""A renewal under a real systemd: the database (cockroach.service, PostgreSQL standing in) gets its SIGHUP
and serves the new certificate, as a client on the host sees it with full verification.

This node boots with both units enabled, the way a node boots every day: vaultpki-sync.service is ordered
``Before=cockroach.service``, so its ``sync --once`` has written the files before the database starts
(PostgreSQL does not start without its certificate). Certificates live a minute here, so the daemon renews
within the test; ``reload.verify`` has it check what the database serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from vaultpki.core import crypto
from vaultpki.dev.devserver import free_port

from .node import Node, Vault, booted_node, node_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A minute's certificates, renewed when 60 % of the lifetime is left; quick retries.
SHORT = {"ttl": "60s", "renew": {"before": "60%", "jitter": "5%", "retry_initial": "1s", "retry_max": "2s"}}
ENABLED_AT_BOOT = "install -m 0644 vaultpki-sync.service /etc/systemd/system/\nsystemctl enable vaultpki-sync cockroach\n"


def on_disk(node: Node) -> x509.Certificate:
    return x509.load_pem_x509_certificate((node.certs / "node.crt").read_bytes())


def test_the_database_gets_its_sighup_and_serves_the_renewed_certificate(
        rootfs: Path, installed: Path, workdir: Path, vault: Vault) -> None:
    pg_port = free_port()
    config = node_config(vault, reload__verify=f"postgres://127.0.0.1:{pg_port}", **SHORT)
    with booted_node(rootfs, installed, workdir, vault, "vpk-renewal", config, pre_boot=ENABLED_AT_BOOT,
                     pg_port=pg_port) as node:
        sync = node.container.show("vaultpki-sync.service", "ActiveState", "ActiveEnterTimestampMonotonic")
        db = node.container.show("cockroach.service", "ActiveState", "InactiveExitTimestampMonotonic")
        assert sync["ActiveState"] == db["ActiveState"] == "active", (sync, db, node.container.diagnostics())
        # Before=cockroach.service: the database started only once the first pass had written its files.
        assert int(sync["ActiveEnterTimestampMonotonic"]) <= int(db["InactiveExitTimestampMonotonic"]), (sync, db)
        first = on_disk(node)
        renewed = node.container.wait_for("a renewal of node.crt", lambda: next(
            (e for e in node.events() if e.get("msg") == "renewed" and e.get("file") == "node.crt"
             and e.get("serial") != crypto.format_serial(first.serial_number)), None), 60)
        verified = node.wait_for_event("reload verified", 0, 30, serial=renewed["serial"])
        assert on_disk(node).serial_number != first.serial_number
        assert crypto.format_serial(node.served_certificate().serial_number) == renewed["serial"] == verified["serial"]
        assert any("received SIGHUP, reloading configuration files" in m for m in node.messages("cockroach.service"))
        login = node.psql()
        assert login.returncode == 0 and login.stdout.strip() == "node", login.stderr
        assert node.show()["NRestarts"] == "0"
