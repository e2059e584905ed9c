"""``status`` shows when each file is renewed next, and the daemon's log says the same time under a name that
means it (issue 18), with the real CLI against the session's OpenBao.

Before: ``status`` showed expiry only, and the daemon logged ``next_renewal=`` (and ``sync --once`` printed
"next renewal") with the time of its next wake-up, the hourly CA check, whatever the renewal time was.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode
from vaultpki.core.renewal import RenewPolicy, schedule

from .conftest import Deployment, run_cli
from .daemon_proc import SyncDaemon, msg

pytestmark = pytest.mark.integration

POLICY = RenewPolicy(before_fraction=0.33, jitter_fraction=0.05)          # renew.before = "33%", jitter "5%"


def expected(path: Path) -> dict[str, Any]:
    """The schedule of the certificate in ``path``, computed here from its dates and serial."""
    leaf = crypto.load_certs(path.read_bytes())[0]
    plan = schedule(leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number, POLICY)
    return {"renew_at": plan.renew_at.isoformat(), "window_opens": plan.window_opens.isoformat(),
            "jitter_seconds": round(plan.jitter_seconds), "jitter_offset_seconds": round(plan.jitter_offset_seconds),
            "floored": False, "due": False}


def test_status_shows_each_renewal_and_the_daemon_logs_it_as_the_next_renewal_not_the_next_wake(
        deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.SPLIT_NODE, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    certs = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs, ttl="1h",
                              renew={"before": "33%", "jitter": "5%", "ca_check": "10m"})
    once = run_cli(["--config", str(config), "sync", "--once"], token)
    assert once.returncode == 0, once.stderr
    leaves = sorted(p.name for p in certs.glob("*.crt") if not p.name.startswith("ca"))
    assert leaves == ["client.node.crt", "node.crt"]
    plans = {name: expected(certs / name) for name in leaves}
    earliest = min(dt.datetime.fromisoformat(p["renew_at"]) for p in plans.values())
    assert once.stdout.rstrip().endswith(f"next renewal {earliest:%Y-%m-%d %H:%M:%S}Z"), once.stdout

    doc = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)
    rows = {row["file"]: row for row in doc["files"]}
    for name, plan in plans.items():
        renewal = rows[name]["renewal"]
        assert {k: renewal[k] for k in plan} == plan, (name, renewal)
        assert 0 < renewal["seconds_until"] <= 3600
    assert "renewal" not in rows["ca.crt"]                       # a CA file is renewed when its CA changes

    text = run_cli(["--config", str(config), "status"]).stdout
    for plan in plans.values():
        assert f"  renews  {plan['renew_at']}  (in " in text, text
        assert (f"  window  opens {plan['window_opens']} (renew.before); jitter ±{plan['jitter_seconds']}s "
                f"(renew.jitter), {plan['jitter_offset_seconds']:+d}s for this serial") in text

    with SyncDaemon(config, token) as daemon:
        done = daemon.wait_for(msg("pass complete"), 30)
        slept = daemon.wait_for(msg("sleeping"), 10)
        assert daemon.stop() == 0
    assert done["renewed"] == [] and done["next_renewal"] == earliest.isoformat()
    wake = dt.datetime.fromisoformat(done["wake_at"])                # the CA check, ten minutes on: earlier
    assert wake < earliest and wake - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10)
    assert (slept["wake_for"], slept["wake_at"], slept["next_renewal"]) == ("ca_check", done["wake_at"],
                                                                         earliest.isoformat())


def test_no_schedule_for_a_dir_the_daemon_does_not_renew(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A user's certs-dir, or a dir looked at without a configuration: sync renews nothing there by date."""
    dep = deploy(Mode.STANDARD, ui=False)
    token = {"VAULT_TOKEN": dep.server.root_token}
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    assert run_cli(["--config", str(config), "issue-node"], token).returncode == 0
    marc = tmp_path / "marc"
    assert run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(marc)], token).returncode == 0
    for args in (["--config", str(config), "status", "--json", "--certs-dir", str(marc)],
                 ["status", "--json", "--certs-dir", str(tmp_path / "certs")]):
        result = run_cli(args)
        assert result.returncode == 0, result.stderr
        files = json.loads(result.stdout)["files"]
        assert files and not [row["file"] for row in files if "renewal" in row]
    own = json.loads(run_cli(["--config", str(config), "status", "--json"]).stdout)["files"]
    assert [row["file"] for row in own if "renewal" in row] == ["node.crt"]
