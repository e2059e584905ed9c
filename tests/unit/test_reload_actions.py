"""Post-renewal actions (issue 18): a signal AND commands, in order, each command told what was renewed; a
failing one stops the list and stays owed with the rest; what is owed is retried in order, never what ran.

Also the configuration of the list (``reload.commands`` beside ``reload.command``, and each refusal), and the
health rule for passes that keep failing while nothing is due. The Syncer runs against test_daemon's fakes;
the real processes (PostgreSQL, shell commands, a killed daemon) are in tests/integration/test_reload_actions.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vaultpki.config import parse
from vaultpki.daemon.actions import RENEWED_DIR_VAR, RENEWED_FILES_VAR, Actions, Renewed, run_actions
from vaultpki.daemon.metrics import PASS_FAILURES_UNHEALTHY, RELOAD_FAILURES_UNHEALTHY, Health, Metrics
from vaultpki.daemon.pending import PendingReloads
from vaultpki.daemon.reload import Reloader, ReloadNotRunning, ReloadOutcome
from vaultpki.daemon.reload_command import RunCommand
from vaultpki.daemon.sync_pass import Syncer
from vaultpki.errors import ConfigError, ReloadError, StoreError

from .conftest import CaSet
from .test_daemon import (
    DOWN,
    METRICS_SKEW,
    SEC,
    VERIFY,
    ClockedPki,
    CountingCertsDir,
    FakeClock,
    FakeProber,
    FakeReloader,
    Monotonic,
    Rig,
    Vault,
    gauge,
    make_config,
    make_loop,
    ok_until,
    scripted,
)

LOG = logging.getLogger("test.actions")


def a_rig(tmp_path: Path, cas: CaSet, verify: bool = False, renew: dict[str, Any] | None = None) -> Rig:
    """test_daemon's Syncer rig: a fake Vault on the test's clock, a real certs-dir, fake reload and probe."""
    clock = FakeClock()
    path = tmp_path / "certs"
    return Rig(cfg=make_config(reload={"verify": VERIFY} if verify else None, renew=renew), path=path, clock=clock,
               vault=Vault(ClockedPki(clock), cas), store=CountingCertsDir(path), reloader=FakeReloader(),
               prober=FakeProber(path) if verify else None,
               metrics=Metrics(now=lambda: clock().timestamp() + METRICS_SKEW), mono=Monotonic())


@dataclass
class Step:
    """One action: records each run in the shared ``ran`` list, and fails (or finds nobody) when told to."""

    name: str
    ran: list[str]
    error: ReloadError | None = None

    def describe(self) -> str:
        return f"step {self.name}"

    def reload(self) -> ReloadOutcome:
        self.ran.append(self.name)
        if self.error is not None:
            raise self.error
        return ReloadOutcome((), f"{self.name} ok")


def steps(*names: str) -> tuple[list[str], dict[str, Step]]:
    ran: list[str] = []
    return ran, {n: Step(n, ran) for n in names}


def renewed(*files: str) -> Renewed:
    return Renewed("/certs", files or ("node.crt", "node.key"))


# --- run_actions ----------------------------------------------------------------------------------------------

def test_every_action_runs_once_in_the_order_given() -> None:
    ran, s = steps("signal", "one", "two")
    result = run_actions(list(s.values()), renewed(), (), LOG)
    assert ran == ["signal", "one", "two"]
    assert result.complete and result.done == ("step signal", "step one", "step two") and result.failed is None


def test_a_failing_action_stops_the_list_and_names_itself_and_what_was_not_run() -> None:
    ran, s = steps("signal", "one", "two", "three")
    s["one"].error = ReloadError("reload command 'one' exited 3: broken")
    result = run_actions(list(s.values()), renewed(), (), LOG)
    assert ran == ["signal", "one"]                                   # two and three never ran
    assert result.done == ("step signal",) and result.remaining == ("step one", "step two", "step three")
    assert result.failed == ("action 2 of 4 (step one) failed: reload command 'one' exited 3: broken; "
                             "not run: step two, step three")


def test_one_action_fails_in_the_words_it_always_had() -> None:
    ran, s = steps("only")
    s["only"].error = ReloadError("no process named 'cockroach' is running")
    assert run_actions([s["only"]], renewed(), (), LOG).failed == "no process named 'cockroach' is running"


def test_nobody_to_signal_is_owed_but_does_not_stop_the_commands() -> None:
    """First boot: the database is not running (it reads the new files when it starts); the other
    consumers (a load balancer, a notification) are told now."""
    ran, s = steps("signal", "one", "two")
    s["signal"].error = ReloadNotRunning("no process named 'cockroach' is running")
    result = run_actions(list(s.values()), renewed(), (), LOG)
    assert ran == ["signal", "one", "two"]
    assert not result.complete and result.failed is None
    assert result.remaining == ("step signal",) and result.done == ("step one", "step two")
    assert result.not_running == "action 1 of 3 (step signal): no process named 'cockroach' is running"


def test_what_already_ran_is_not_run_again_and_the_rest_runs_in_order() -> None:
    ran, s = steps("signal", "one", "two", "three")
    result = run_actions(list(s.values()), renewed(), ("step signal", "step one"), LOG)
    assert ran == ["two", "three"]
    assert result.complete and result.done == ("step signal", "step one", "step two", "step three")


def test_a_command_listed_twice_runs_twice_and_is_skipped_as_often_as_it_ran() -> None:
    ran: list[str] = []
    same = Step("same", ran)
    assert run_actions([same, same], renewed(), ("step same",), LOG).complete and ran == ["same"]


def test_a_command_is_told_the_certs_dir_and_the_files_after_the_scrub(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Its environment: vaultpki's own without any Vault credential, plus exactly the two variables."""
    out = tmp_path / "env.json"
    monkeypatch.setenv("VAULT_TOKEN", "s.secret-token-value")
    monkeypatch.setenv("COPY_OF_TOKEN", "s.secret-token-value")
    monkeypatch.setenv("VAULTPKI_RENEW_JITTER", "5%")
    monkeypatch.setenv("RENEWED_FILES", "forged by whoever started vaultpki")
    script = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    command = RunCommand([sys.executable, "-c", script], 10.0)
    result = run_actions([command], Renewed(str(tmp_path), ("ca.crt", "node.crt", "node.key")), (), LOG)
    assert result.complete
    env = json.loads(out.read_text())
    assert env[RENEWED_DIR_VAR] == str(tmp_path) and env[RENEWED_FILES_VAR] == "ca.crt node.crt node.key"
    assert not [k for k in env if k.upper().startswith(("VAULT_", "BAO_", "VAULTPKI_"))]
    assert "s.secret-token-value" not in json.dumps(env) and "COPY_OF_TOKEN" not in env
    assert env["PATH"] == os.environ["PATH"]                  # the rest of our environment is still there


def test_actions_describe_themselves_in_order() -> None:
    _, s = steps("signal", "one")
    assert Actions(tuple(s.values())).describe() == "step signal, then step one"
    assert Actions(()).describe() == "no reload"


# --- the Syncer: owed actions across passes -------------------------------------------------------------------

def with_actions(rig: Rig, actions: list[Step]) -> Syncer:
    chain: tuple[Reloader, ...] = tuple(actions)
    return Syncer(cfg=rig.cfg, vault=rig.vault, store=rig.store, reloader=Actions(chain), prober=rig.prober,
                  metrics=rig.metrics, now=rig.clock, log=LOG, sleep=rig.mono.sleep, monotonic=rig.mono.monotonic)


def record(rig: Rig) -> dict[str, Any] | None:
    path = rig.path / ".vaultpki" / "pending-reload.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_failed_command_is_owed_with_the_rest_and_a_later_pass_runs_only_those(tmp_path: Path, cas: CaSet) -> None:
    rig = a_rig(tmp_path, cas)
    ran, s = steps("signal", "one", "two", "three")
    s["two"].error = ReloadError("exited 1")
    report = with_actions(rig, list(s.values())).run_pass()
    assert not report.ok and not report.reloaded and report.renewed
    assert report.failures == ("reload: action 3 of 4 (step two) failed: exited 1; not run: step three",)
    pending = record(rig)
    assert pending is not None and pending["failures"] == 1
    assert pending["done"] == ["step signal", "step one"] and pending["remaining"] == ["step two", "step three"]
    assert pending["files"] == ["ca.crt", "node.crt", "node.key"]

    s["two"].error = None
    again = with_actions(rig, list(s.values())).run_pass()        # a new Syncer reads the record: a restart
    assert again.ok and again.reloaded and not again.renewed
    assert ran == ["signal", "one", "two", "two", "three"]
    assert record(rig) is None
    assert gauge(rig.metrics, "vaultpki_reload_pending") == 0


def test_a_new_set_written_while_actions_are_owed_runs_every_action(tmp_path: Path, cas: CaSet) -> None:
    """The files written since nobody was told of are news to every action, even those that ran before."""
    rig = a_rig(tmp_path, cas)
    ran, s = steps("signal", "one")
    s["one"].error = ReloadError("exited 1")
    syncer = with_actions(rig, list(s.values()))
    first = syncer.run_pass()
    assert first.next_renewal is not None
    s["one"].error = None
    rig.clock.t = first.next_renewal + SEC                       # node.crt comes due again
    report = syncer.run_pass()
    assert report.ok and report.renewed and ran == ["signal", "one", "signal", "one"]


def test_verify_comes_after_the_last_action(tmp_path: Path, cas: CaSet) -> None:
    rig = a_rig(tmp_path, cas, verify=True)
    assert rig.prober is not None
    ran, s = steps("signal", "one", "two")
    probe = rig.prober.served_serial

    def served() -> int:
        ran.append("verify")
        return probe()
    rig.prober.served_serial = served        # type: ignore[method-assign]
    report = with_actions(rig, list(s.values())).run_pass()
    assert report.ok and report.verified is True
    assert ran == ["signal", "one", "two", "verify"]


def test_a_reload_the_database_does_not_take_owes_every_action_again(tmp_path: Path, cas: CaSet) -> None:
    rig = a_rig(tmp_path, cas, verify=True)
    assert rig.prober is not None
    rig.prober.serial = 0x1234                                   # something else is served
    ran, s = steps("signal", "one")
    report = with_actions(rig, list(s.values())).run_pass()
    assert report.verified is False
    pending = record(rig)
    assert pending is not None and pending["done"] == [] and pending["remaining"] == ["step signal", "step one"]
    rig.prober.serial = None
    assert with_actions(rig, list(s.values())).run_pass().verified is True
    assert ran == ["signal", "one", "signal", "one"]


def test_nobody_to_signal_is_pending_not_failed_and_only_the_signal_is_retried(tmp_path: Path, cas: CaSet) -> None:
    rig = a_rig(tmp_path, cas)
    ran, s = steps("signal", "one")
    s["signal"].error = ReloadNotRunning("no process named 'cockroach' is running")
    report = with_actions(rig, list(s.values())).run_pass()
    assert report.ok and not report.reloaded
    pending = record(rig)
    assert pending is not None and pending["failures"] == 0 and pending["reason"].startswith("not running:")
    assert pending["remaining"] == ["step signal"] and pending["done"] == ["step one"]
    s["signal"].error = None
    assert with_actions(rig, list(s.values())).run_pass().reloaded
    assert ran == ["signal", "one", "signal"] and record(rig) is None


# --- health: passes that keep failing with nothing due ----------------------------------------------------------

def test_passes_failing_with_nothing_due_turn_health_unhealthy_at_the_threshold() -> None:
    health = Health(consecutive_failures=PASS_FAILURES_UNHEALTHY - 1)
    assert health.healthy
    health.consecutive_failures = PASS_FAILURES_UNHEALTHY
    assert not health.healthy
    assert not Health(due_files=("node.crt",), consecutive_failures=1).healthy      # the rule for due files stays
    assert not Health(reload_failures=RELOAD_FAILURES_UNHEALTHY).healthy           # and the one for reloads


def test_a_pass_that_cannot_reach_vault_is_retried_and_reported_though_nothing_is_due(tmp_path: Path, cas: CaSet) -> None:
    """issue 18: Vault unreachable at every pass, nothing due yet: the daemon slept until the next hourly
    check and /healthz stayed 200 throughout."""
    rig = a_rig(tmp_path, cas, renew={"retry_initial": "1s", "retry_max": "1s"})
    rig.syncer.run_pass()
    rig.vault.down = True
    report = rig.syncer.run_pass()
    assert report.ok and report.vault_error is not None and DOWN in report.vault_error   # sync --once: exit 0
    syncer, script = scripted(rig, [report] * (PASS_FAILURES_UNHEALTHY + 1), ok_until(rig.clock() + dt.timedelta(hours=1)))
    loop = make_loop(rig)
    loop.sleeper.hooks[PASS_FAILURES_UNHEALTHY + 2] = lambda d: setattr(d, "stop", True)
    assert loop.daemon.run(syncer) == 0
    seen = loop.sleeper.seen
    assert [s[0] for s in seen[:PASS_FAILURES_UNHEALTHY + 1]] == list(range(1, PASS_FAILURES_UNHEALTHY + 2))
    assert [s[1] for s in seen[:PASS_FAILURES_UNHEALTHY + 1]] == (
        [True] * (PASS_FAILURES_UNHEALTHY - 1) + [False, False])
    assert all(s[2] == () and "Vault could not be asked" in str(s[3]) for s in seen[:PASS_FAILURES_UNHEALTHY + 1])
    assert loop.sleeper.calls[:PASS_FAILURES_UNHEALTHY + 1] == [1.0] * (PASS_FAILURES_UNHEALTHY + 1)   # backoff
    assert seen[-1][1] and seen[-1][0] == 0                        # Vault back: healthy at once
    assert script.calls == PASS_FAILURES_UNHEALTHY + 2


# --- configuration ------------------------------------------------------------------------------------------------

BASE: dict[str, Any] = {"vault": {"addr": "https://vault.example.com:8200"}, "node": {"hosts": ["db1"]}}


def reload_config(reload: dict[str, Any]) -> Any:
    return parse({**BASE, "reload": reload}, {}).reload


def test_commands_run_in_the_order_given_beside_a_signal() -> None:
    r = reload_config({"process": "cockroach", "commands": [["systemctl", "reload", "haproxy"], ["/bin/notify", "x"]]})
    assert r.process == "cockroach"
    assert r.commands == (("systemctl", "reload", "haproxy"), ("/bin/notify", "x"))


def test_command_is_a_list_of_one_command() -> None:
    r = reload_config({"pidfile": "/run/c.pid", "command": ["systemctl", "reload", "haproxy"]})
    assert r.commands == (("systemctl", "reload", "haproxy"),) and r.pidfile == "/run/c.pid"
    assert reload_config({}).commands == ()


@pytest.mark.parametrize(("reload", "message"), [
    pytest.param({"command": ["a"], "commands": [["b"]]},
                 "reload: set reload.command (one command) or reload.commands (a list of them), not both", id="both"),
    pytest.param({"commands": [["a"], []]},
                 'reload.commands: command 2 is empty (a command is a list such as ["systemctl", "reload", "haproxy"])',
                 id="empty-command"),
    pytest.param({"commands": [["a", " "]]}, "reload.commands must be a list of commands, each a list of non-empty "
                 'strings (e.g. [["systemctl", "reload", "haproxy"]])', id="blank-argument"),
    pytest.param({"commands": ["systemctl", "reload"]}, "reload.commands must be a list of commands, each a list of "
                 'non-empty strings (e.g. [["systemctl", "reload", "haproxy"]])', id="one-flat-list"),
    pytest.param({"commands": "systemctl reload haproxy"}, "reload.commands must be a list of commands, each a list "
                 'of non-empty strings (e.g. [["systemctl", "reload", "haproxy"]])', id="a-string"),
    pytest.param({"commands": [["a", "b\x00"]]}, "reload.commands has a NUL character", id="nul"),
])
def test_each_refusal_is_one_line(reload: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        reload_config(reload)
    assert str(info.value) == message


class _RefusedStore:
    """A store whose state dir cannot be opened (the certs-dir refused as unsafe, say)."""

    def read_record(self, name: str) -> bytes | None:
        raise StoreError("refusing to write: the certs-dir /c is writable by group or others (mode 2777)")


def test_an_unreadable_record_is_pending_but_not_claimed_as_from_before(caplog: pytest.LogCaptureFixture) -> None:
    """A refused state dir made the daemon log "a reload is pending from before" when none ever was."""
    with caplog.at_level(logging.WARNING):
        pending = PendingReloads(_RefusedStore(), Metrics(), logging.getLogger("t"),  # type: ignore[arg-type]
                                 lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert pending.current is not None                      # still tried: a reload may be owed
    messages = [r.getMessage() for r in caplog.records]
    assert "a reload is pending from before" not in messages
    assert "cannot tell whether a reload is pending; one will be tried" in messages


def test_a_pending_reload_wakes_the_daemon_within_retry_max(tmp_path: Path, cas: CaSet) -> None:
    """A database not running at boot: the next pass used to come at the next renewal or CA check (an
    hour), so the pending reload (and its metric) waited that long after the database had started."""
    rig = a_rig(tmp_path, cas)
    ran, s = steps("signal")
    s["signal"].error = ReloadNotRunning("no process named 'cockroach' is running")
    first = with_actions(rig, list(s.values())).run_pass()
    assert first.ok and first.next_wake is not None
    assert first.next_wake - rig.clock.t <= dt.timedelta(seconds=rig.cfg.retry_max)
    s["signal"].error = None
    rig.clock.t = first.next_wake
    again = with_actions(rig, list(s.values())).run_pass()
    assert again.reloaded and record(rig) is None
    assert rig.cfg.renew.ca_check == 0 and again.next_wake == again.next_renewal     # nothing owed: the renewal again
