"""vaultpki-sync.service, as shipped, under a real systemd: first boot, reload, restart, owner and credentials.

One node for the module, set up as docs/deployment.md says, with the docs' configuration (``owner`` and
``group`` included); the test changes only the Vault address and what the database stand-in needs
(``node.STAND_IN``), and in a drop-in the metrics port and ``RestartSec=``. The certificates
live an hour here, so that nothing is due while the tests look: whatever Vault issues after the first
start was issued because of something a test did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from cryptography import x509

from .node import PENDING, Node, Vault, booted_node, node_config, start

pytestmark = pytest.mark.integration


# systemd restarts the killed daemon after RestartSec=; the shipped 10 s keeps a crash loop from hammering
# Vault, and here would only be waited out: the restart itself is the same whatever the delay.
RESTART_SEC = "RestartSec=1s\n"


@dataclass
class FirstBoot:
    node: Node
    enable: CompletedProcess[str]          # the docs' `systemctl enable --now vaultpki-sync`, database not running
    serials: set[str]                      # Vault's record right after it
    pending: dict[str, object] | None      # the pending-reload record right after it
    status: dict[str, object]              # `vaultpki status --json` right after it


@pytest.fixture(scope="module")
def first_boot(rootfs: Path, installed: Path, workdir: Path, vault: Vault) -> Iterator[FirstBoot]:
    config = node_config(vault)
    with booted_node(rootfs, installed, workdir, vault, "vpk-service", config,
                     drop_ins={"vaultpki-sync.service": RESTART_SEC}) as node:
        enable = start(node)
        if enable.returncode == 0:          # the daemon's own first pass, still without the database
            node.wait_for_event("pass complete", 0, 30)
        pending_file = node.certs / PENDING
        pending = json.loads(pending_file.read_text()) if pending_file.exists() else None
        status = node.status_json() if enable.returncode == 0 else {}
        yield FirstBoot(node, enable, vault.serials(), pending, status)


def enable_ok(boot: FirstBoot) -> None:
    assert boot.enable.returncode == 0, (boot.enable.stdout + boot.enable.stderr
                                         + "\n" + boot.node.container.diagnostics())


def test_first_boot_without_the_database_succeeds_and_leaves_the_reload_pending(first_boot: FirstBoot) -> None:
    enable_ok(first_boot)
    node = first_boot.node
    assert node.show()["ActiveState"] == "active"
    assert (node.certs / "node.crt").is_file() and (node.certs / "node.key").is_file()
    pre = node.messages("vaultpki-sync.service")
    assert any("reload pending" in m and "no process named 'postgres'" in m for m in pre), pre
    assert first_boot.pending is not None and "not running" in str(first_boot.pending["reason"])
    assert first_boot.status["reload_pending"] is not None
    # The daemon (a second process, after ExecStartPre's) knew of it from the state dir, and says so.
    assert [e for e in node.events() if e.get("msg") == "a reload is pending from before"], node.events()
    health = node.container.wait_for("/healthz", node.healthz, 15)
    assert health[1]["reload_pending"] is True, health


def test_the_database_started_later_gets_the_pending_reload(first_boot: FirstBoot) -> None:
    """cockroach.service starts after the first boot; the next pass (here the one `systemctl reload` runs)
    signals it and forgets the pending reload; a client on the host then connects with verify-full."""
    enable_ok(first_boot)
    node = first_boot.node
    node.container.check(["systemctl", "start", "cockroach.service"])
    before = len(node.events())
    node.container.check(["systemctl", "reload", "vaultpki-sync"])
    node.wait_for_event("pending reload done", before, 30)
    node.container.wait_for("PostgreSQL's own log of the SIGHUP", lambda: any(
        "received SIGHUP, reloading configuration files" in m for m in node.messages("cockroach.service")), 15)
    assert not (node.certs / PENDING).exists()
    assert node.status_json()["reload_pending"] is None
    code, health = node.healthz() or (0, {})
    assert code == 200 and health["reload_pending"] is False, (code, health)
    served = node.served_certificate()
    on_disk = x509.load_pem_x509_certificate((node.certs / "node.crt").read_bytes())
    assert served.serial_number == on_disk.serial_number
    login = node.psql()
    assert login.returncode == 0 and login.stdout.strip() == "node", login.stderr


def test_systemctl_reload_runs_a_pass(first_boot: FirstBoot) -> None:
    enable_ok(first_boot)
    node = first_boot.node
    before = len(node.events())
    pid = node.show()["MainPID"]
    node.container.check(["systemctl", "reload", "vaultpki-sync"])
    node.wait_for_event("configuration reloaded", before, 30)
    done = node.wait_for_event("pass complete", before, 30)
    assert done["renewed"] == [] and done["failures"] == 0
    assert node.show()["MainPID"] == pid            # the same process: a reload, not a restart


def test_owner_and_group_work_under_the_syscall_filter_with_the_credentials_systemd_hands_over(
        first_boot: FirstBoot) -> None:
    """The docs' configuration sets owner = group = the service's user. Under SystemCallFilter=~@privileged a
    chown of any kind is a SIGSYS (status 159 from a shell, 31/SYS in systemd's words): the service made
    none, so it started once and never died. Its Vault login read the role-id and secret-id systemd copied
    into the credentials directory, in the mode and owner systemd gives them."""
    enable_ok(first_boot)
    node = first_boot.node
    config = node.container.check(["cat", "/etc/vaultpki/vaultpki.toml"])
    assert 'owner = "cockroach"' in config and 'group = "cockroach"' in config
    messages = node.messages("vaultpki-sync.service")
    assert not [m for m in messages if "SYS" in m and ("status=31" in m or "159" in m)], messages
    uid = node.uid()
    for name in ("node.crt", "node.key", "ca.crt"):
        st = os.stat(node.certs / name)
        assert (st.st_uid, st.st_gid) == (uid, int(node.container.check(["id", "-g", "cockroach"]))), name
    listing = node.container.check(["stat", "-c", "%a %U %G %n", "/run/credentials/vaultpki-sync.service/role-id",
                                    "/run/credentials/vaultpki-sync.service/secret-id"]).splitlines()
    assert [line.split()[:2] for line in listing] == [["400", "cockroach"]] * 2, listing
    stored = node.container.check(["stat", "-c", "%a %U", "/etc/vaultpki/credentials",
                                   "/etc/vaultpki/credentials/role-id", "/etc/vaultpki/credentials/secret-id"])
    assert stored.split("\n")[:3] == ["700 root", "600 root", "600 root"], stored
    assert first_boot.serials, "nothing was issued with the AppRole credentials"


def test_a_killed_daemon_is_restarted_and_issues_nothing(first_boot: FirstBoot, vault: Vault) -> None:
    enable_ok(first_boot)
    node = first_boot.node
    state = node.show()
    assert state["NRestarts"] == "0", state
    serials = vault.serials()
    before = len(node.events())
    node.container.check(["systemctl", "kill", "--signal=SIGKILL", "--kill-who=main", "vaultpki-sync"])
    node.container.wait_for("the restart", lambda: node.show()["NRestarts"] == "1"
                            and node.show()["ActiveState"] == "active" and node.show()["MainPID"] != state["MainPID"], 30)
    assert any("status=9/KILL" in m for m in node.messages("vaultpki-sync.service"))
    node.wait_for_event("sync started", before, 30)
    done = node.wait_for_event("pass complete", before, 30)
    assert done["renewed"] == [] and done["failures"] == 0
    assert vault.serials() == serials, "the restart issued a certificate although nothing was due"
