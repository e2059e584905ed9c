"""The timer variant under a real systemd: vaultpki-sync-once.service from vaultpki-sync.timer, as shipped.

Installed with the docs' ``enable-timer`` block instead of the daemon. The shipped timer fires hourly at a
random minute: a drop-in makes it fire two seconds after each run, with no random delay and a fine
accuracy (systemd's default coalesces timers to the minute), so the test sees runs follow each other.
What a run does is the shipped service's own: ``sync --once`` with the unit's credentials and sandbox.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .node import PENDING, UNITS, Vault, booted_node, node_config, start

FAST_TIMER = "[Timer]\nOnCalendar=\nOnUnitActiveSec=2s\nRandomizedDelaySec=0\nAccuracySec=100ms\n"
ONCE = "vaultpki-sync-once.service"


@pytest.mark.integration
@pytest.mark.slow           # waits for two runs of the timer
def test_the_timer_runs_a_pass_and_a_later_run_does_the_pending_reload(
        rootfs: Path, installed: Path, workdir: Path, vault: Vault) -> None:
    config = node_config(vault)
    with booted_node(rootfs, installed, workdir, vault, "vpk-timer", config,
                     drop_ins={"vaultpki-sync.timer": FAST_TIMER}) as node:
        enable = start(node, "enable-timer")
        assert enable.returncode == 0, enable.stdout + enable.stderr + node.container.diagnostics()
        # The first run (at `enable --now`, as at boot) wrote the set; the database is not running yet.
        first = node.messages(ONCE)
        assert any("reload pending" in m for m in first), first
        assert (node.certs / "node.crt").is_file() and (node.certs / PENDING).exists()
        assert node.container.show("vaultpki-sync.timer", "ActiveState")["ActiveState"] == "active"
        serials = vault.serials()

        def runs() -> int:
            return sum(m.startswith("Finished vaultpki-sync-once.service") for m in node.messages(ONCE))

        node.container.check(["systemctl", "start", "cockroach.service"])
        ran = runs()
        node.container.wait_for("two more runs from the timer", lambda: runs() >= ran + 2, 30)
        later = node.messages(ONCE)[len(first):]
        assert any("pending reload done" in m for m in later), later
        assert any(m.startswith("nothing due") for m in later), later
        assert not (node.certs / PENDING).exists()
        assert any("received SIGHUP, reloading configuration files" in m for m in node.messages("cockroach.service"))
        assert vault.serials() == serials, "a run issued a certificate although nothing was due"
        assert node.container.show(ONCE, "Result")["Result"] == "success"


SANDBOX_KEYS = ("User", "Group", "UMask", "LoadCredential", "UnsetEnvironment", "ProtectSystem", "ReadWritePaths",
                "ReadOnlyPaths", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges", "CapabilityBoundingSet",
                "AmbientCapabilities", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime", "RestrictNamespaces",
                "MemoryDenyWriteExecute", "RemoveIPC", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "SystemCallArchitectures", "SystemCallFilter",
                "RestrictAddressFamilies")


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_timers_service_has_the_daemons_hardening_and_verifies(tmp_path: Path) -> None:
    """The pair verifies with systemd-analyze and scores as the daemon does; every sandbox setting of the
    daemon's unit is in the timer's service with the same value, so the two cannot drift apart."""
    once, daemon = settings(UNITS / ONCE), settings(UNITS / "vaultpki-sync.service")
    assert {k: once.get(k) for k in SANDBOX_KEYS} == {k: daemon.get(k) for k in SANDBOX_KEYS}
    assert once["Type"] == ["oneshot"] and once["ExecStart"][0].endswith(" sync --once")
    # The credentials directory is named after the unit; vaultpki is told the two paths in it, nothing else.
    assert once["Environment"] == ["VAULTPKI_VAULT_ROLE_ID_FILE=%d/role-id VAULTPKI_VAULT_SECRET_ID_FILE=%d/secret-id"]
    assert settings(UNITS / "vaultpki-sync.timer")["Unit"] == [ONCE]
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the units (Debian package systemd)"
    for unit in (ONCE, "vaultpki-sync.timer"):        # as test_deploy_and_docs does for the daemon's unit
        text = (UNITS / unit).read_text().replace("/usr/local/bin/vaultpki", str(Path(sys.executable).parent / "vaultpki"))
        (tmp_path / unit).write_text(re.sub(r"^Documentation=.*$", "Documentation=https://example.invalid/vaultpki", text,
                                            flags=re.M))
    verify = subprocess.run([analyze, "verify", ONCE, "vaultpki-sync.timer"], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run([analyze, "security", "--offline=true", str(tmp_path / ONCE)], capture_output=True,
                              text=True, check=False)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert score and float(score.group(1)) <= 2.0, security.stdout[-2000:]
