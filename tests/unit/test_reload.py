"""The reload targets (vaultpki.daemon.reload*) against real processes: real signals, real pidfiles, real commands.

Children are small Python scripts that record every SIGHUP in a file, or ``sleep``
started under a chosen name. Each test picks a unique process name so parallel runs
and the machine's own processes can never match.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from vaultpki.daemon.reload import NoReload, ReloadOutcome, parse_signal
from vaultpki.daemon.reload_command import RunCommand
from vaultpki.daemon.reload_signal import SignalByName, SignalByPidfile
from vaultpki.errors import ConfigError, ReloadError

SLEEP = shutil.which("sleep") or "/bin/sleep"
NOBODY = 65534

# Records each signal it gets in OUT; sets its own comm (the name pkill and psutil see) first.
HUP_CHILD = """
import signal, sys
out, ready, comm = sys.argv[1:4]
def record(signum, frame):
    with open(out, "a") as f:
        f.write(f"{signum}\\n")
signal.signal(signal.SIGHUP, record)
if comm:
    with open("/proc/self/comm", "w") as f:
        f.write(comm)
open(ready, "w").close()
while True:
    signal.pause()
"""


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def unique_name(prefix: str = "vpk-") -> str:
    return prefix + secrets.token_hex(4)


@dataclass
class HupChild:
    proc: subprocess.Popen[bytes]
    out: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signals(self) -> list[int]:
        return [int(line) for line in self.out.read_text().split()] if self.out.exists() else []

    def wait_for_signal(self, sig: int = signal.SIGHUP) -> None:
        wait_until(lambda: sig in self.signals(), what=f"pid {self.pid} to record signal {sig}")


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every child a test starts; killed and reaped afterwards whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def spawn_hup(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> Callable[[str], HupChild]:
    def spawn(comm: str) -> HupChild:
        tag = secrets.token_hex(4)
        out, ready = tmp_path / f"{tag}.signals", tmp_path / f"{tag}.ready"
        proc = subprocess.Popen([sys.executable, "-c", HUP_CHILD, str(out), str(ready), comm], stdin=subprocess.DEVNULL)
        children.append(proc)
        wait_until(ready.exists, what="child to install its handler")
        return HupChild(proc, out)
    return spawn


def as_nobody(action: Callable[[], object]) -> str:
    """Run *action* in a forked child that dropped root; return its ReloadError message (or 'no error')."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            try:
                action()
                message = "no error"
            except ReloadError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return message


# ----------------------------------------------------------------- SignalByName


def test_signal_by_name_signals_every_process_with_that_name_and_no_other(spawn_hup: Callable[[str], HupChild]) -> None:
    name = unique_name()
    first, second, bystander = spawn_hup(name), spawn_hup(name), spawn_hup(unique_name())

    outcome = SignalByName(name).reload()

    assert sorted(outcome.signalled) == sorted([first.pid, second.pid])
    first.wait_for_signal()
    second.wait_for_signal()
    assert bystander.signals() == []
    assert name in outcome.detail and str(first.pid) in outcome.detail


def test_signal_by_name_sends_the_configured_signal(spawn_hup: Callable[[str], HupChild]) -> None:
    name = unique_name()
    child = spawn_hup(name)

    SignalByName(name, signal.SIGTERM).reload()

    assert child.proc.wait(timeout=10) == -signal.SIGTERM  # the handler is for SIGHUP only


def test_signal_by_name_without_a_match_fails() -> None:
    name = unique_name()
    with pytest.raises(ReloadError, match=f"^no process named '{name}' is running$"):
        SignalByName(name).reload()


def hup_by_default() -> None:
    """In a ``sleep`` child, before exec: SIGHUP kills it, even when the suite runs under ``nohup``,
    whose ignored SIGHUP every child would otherwise inherit across exec (and live through the reload)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_name_longer_than_comm_matches_by_argv0(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    name = unique_name("vaultpki-cockroach-")  # 27 characters; the kernel keeps 15
    (tmp_path / name).symlink_to(SLEEP)
    proc = subprocess.Popen([str(tmp_path / name), "300"], preexec_fn=hup_by_default)
    children.append(proc)
    wait_until(lambda: psutil.Process(proc.pid).cmdline()[:1] == [str(tmp_path / name)], what="exec")
    assert psutil.Process(proc.pid).exe() == os.path.realpath(SLEEP)  # only argv[0] carries the name

    outcome = SignalByName(name).reload()

    assert outcome.signalled == (proc.pid,)
    assert proc.wait(timeout=10) == -signal.SIGHUP


def test_name_longer_than_comm_matches_by_executable_when_argv0_differs(
    tmp_path: Path, children: list[subprocess.Popen[bytes]],
) -> None:
    name = unique_name("vaultpki-cockroach-")
    shutil.copy(SLEEP, tmp_path / name)
    proc = subprocess.Popen(["renamed-argv0", "300"], executable=tmp_path / name, preexec_fn=hup_by_default)
    children.append(proc)
    wait_until(lambda: psutil.Process(proc.pid).exe() == str(tmp_path / name), what="exec")

    outcome = SignalByName(name).reload()

    assert outcome.signalled == (proc.pid,)
    assert proc.wait(timeout=10) == -signal.SIGHUP


def test_a_program_sharing_only_the_15_char_prefix_is_not_signalled(
    tmp_path: Path, children: list[subprocess.Popen[bytes]],
) -> None:
    name = unique_name("vaultpki-cockroach-")
    other = name + "-other"                       # same comm, different program
    shutil.copy(SLEEP, tmp_path / other)
    proc = subprocess.Popen([str(tmp_path / other), "300"])
    children.append(proc)
    wait_until(lambda: psutil.Process(proc.pid).exe() == str(tmp_path / other), what="exec")
    assert psutil.Process(proc.pid).name()[:15] == name[:15]

    with pytest.raises(ReloadError, match="no process named"):
        SignalByName(name).reload()
    assert proc.poll() is None


def test_exec_a_does_not_rename_a_process_for_matching(children: list[subprocess.Popen[bytes]]) -> None:
    """``exec -a`` changes argv[0] only; the kernel's comm stays 'sleep', as pkill -x sees it."""
    name = unique_name()
    proc = subprocess.Popen(["bash", "-c", f"exec -a {name} {SLEEP} 300"])
    children.append(proc)
    wait_until(lambda: psutil.Process(proc.pid).cmdline()[:1] == [name], what="exec")

    with pytest.raises(ReloadError, match="no process named"):
        SignalByName(name).reload()
    assert proc.poll() is None


def test_never_signals_its_own_process(spawn_hup: Callable[[str], HupChild]) -> None:
    name = unique_name()
    received: list[int] = []
    previous_handler = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    comm = Path("/proc/self/comm")
    previous_comm = comm.read_text().strip()
    comm.write_text(name)
    try:
        assert psutil.Process().name() == name
        with pytest.raises(ReloadError, match="no process named"):
            SignalByName(name, signal.SIGUSR1).reload()
        child = spawn_hup(name)
        assert SignalByName(name).reload().signalled == (child.pid,)
    finally:
        comm.write_text(previous_comm)
        signal.signal(signal.SIGUSR1, previous_handler)
    assert received == []


def test_zombies_are_not_signalled(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    name = unique_name()
    script = f"open('/proc/self/comm', 'w').write({name!r})"
    proc = subprocess.Popen([sys.executable, "-c", script])
    children.append(proc)
    # Not reaped: it stays a zombie named *name* until the fixture waits for it.
    wait_until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, what="zombie")
    assert psutil.Process(proc.pid).name() == name

    with pytest.raises(ReloadError, match="no process named"):
        SignalByName(name).reload()


class VanishesFirst:
    """A real process handle whose process is killed and reaped just before it is signalled."""

    def __init__(self, proc: psutil.Process, popen: subprocess.Popen[bytes]) -> None:
        self._proc, self._popen = proc, popen
        self.pid = proc.pid

    def name(self) -> str:
        return str(self._proc.name())

    def cmdline(self) -> list[str]:
        return list(self._proc.cmdline())

    def exe(self) -> str:
        return str(self._proc.exe())

    def status(self) -> str:
        return str(self._proc.status())

    def send_signal(self, sig: int) -> None:
        self._popen.kill()
        self._popen.wait()
        self._proc.send_signal(sig)


def test_processes_that_exit_before_the_signal_are_skipped(spawn_hup: Callable[[str], HupChild]) -> None:
    name = unique_name()
    stays, goes = spawn_hup(name), spawn_hup(name)

    def listing() -> list[object]:
        return [VanishesFirst(p, goes.proc) if p.pid == goes.pid else p for p in psutil.process_iter()]

    outcome = SignalByName(name, proc_iter=listing).reload()

    assert outcome.signalled == (stays.pid,)
    stays.wait_for_signal()
    assert goes.proc.returncode == -signal.SIGKILL

    only_gone = spawn_hup(name)
    stays.proc.kill()
    stays.proc.wait()
    with pytest.raises(ReloadError, match="no process named"):
        SignalByName(name, proc_iter=lambda: [VanishesFirst(psutil.Process(only_gone.pid), only_gone.proc)]).reload()


def test_another_users_process_is_a_permission_error(spawn_hup: Callable[[str], HupChild]) -> None:
    name = unique_name()
    root_child = spawn_hup(name)

    message = as_nobody(lambda: SignalByName(name).reload())

    assert message == (f"not permitted to send SIGHUP to pid {root_child.pid}: "
                       "the signal must come from the same user as the process, or root")
    assert root_child.signals() == []


@pytest.mark.parametrize("name", [pytest.param("", id="empty"), pytest.param("/usr/bin/cockroach", id="path")])
def test_signal_by_name_refuses_what_cannot_be_a_process_name(name: str) -> None:
    with pytest.raises(ConfigError):
        SignalByName(name)


# ----------------------------------------------------------------- SignalByPidfile


def test_pidfile_first_line_is_the_pid(tmp_path: Path, spawn_hup: Callable[[str], HupChild]) -> None:
    child = spawn_hup("")
    pidfile = tmp_path / "postmaster.pid"
    pidfile.write_text(f"{child.pid}\n/var/lib/postgresql/15/main\n1700000000\n5432\n")

    outcome = SignalByPidfile(pidfile).reload()

    assert outcome == ReloadOutcome((child.pid,), f"sent SIGHUP to pid {child.pid} from {pidfile}")
    child.wait_for_signal()


def test_pidfile_with_another_signal(tmp_path: Path, spawn_hup: Callable[[str], HupChild]) -> None:
    child = spawn_hup("")
    pidfile = tmp_path / "db.pid"
    pidfile.write_text(f"  {child.pid}  \n")

    SignalByPidfile(pidfile, signal.SIGTERM).reload()

    assert child.proc.wait(timeout=10) == -signal.SIGTERM


def finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(None, "does not exist: is the database running", id="missing"),
        pytest.param("", "is empty", id="empty"),
        pytest.param("\n\n", "is empty", id="blank-first-line"),
        pytest.param("cockroach\n", "is not a pid: 'cockroach'", id="garbage"),
        pytest.param("12ab\n", "is not a pid", id="digits-and-letters"),
        pytest.param("0\n", "is not a pid: '0'", id="zero-would-signal-our-group"),
        pytest.param("-1\n", "is not a pid: '-1'", id="minus-one-would-signal-everyone"),
        pytest.param("STALE", "no process with pid \\d+: stale pidfile", id="stale"),
        pytest.param("SELF", "names this process", id="our-own-pid"),
    ],
)
def test_pidfile_errors(tmp_path: Path, content: str | None, error: str) -> None:
    pidfile = tmp_path / "db.pid"
    if content == "STALE":
        content = f"{finished_pid()}\n"
    elif content == "SELF":
        content = f"{os.getpid()}\n"
    if content is not None:
        pidfile.write_text(content)

    with pytest.raises(ReloadError, match=error):
        SignalByPidfile(pidfile).reload()


def test_pidfile_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReloadError, match="cannot read pidfile .*: is a directory"):
        SignalByPidfile(tmp_path).reload()


def test_pidfile_of_another_users_process_is_a_permission_error(spawn_hup: Callable[[str], HupChild]) -> None:
    root_child = spawn_hup("")
    shared = Path(tempfile.mkdtemp(prefix="vaultpki-pidfile-"))  # tmp_path's parents are 0700: nobody could not read it
    try:
        shared.chmod(0o755)
        pidfile = shared / "db.pid"
        pidfile.write_text(f"{root_child.pid}\n")
        pidfile.chmod(0o644)

        # The database is root's (uid=0), so the checks pass: the kernel refuses the signal.
        message = as_nobody(lambda: SignalByPidfile(pidfile, uid=0).reload())
    finally:
        shutil.rmtree(shared)

    assert message == (f"not permitted to send SIGHUP to pid {root_child.pid}: "
                       "the signal must come from the same user as the process, or root")
    assert root_child.signals() == []


# ----------------------------------------------------------------- SignalByPidfile: is it the database?
# A pidfile names a pid; nothing proves that pid is the database. Whoever can write or swap the pidfile
# could aim our signal at init or another user's process: each is refused with one line, and the process
# named is shown to have received nothing.

PID1_SCRIPT = """
import json, signal, subprocess, sys, time
got = []
signal.signal(signal.SIGHUP, lambda *_: got.append(1))
pidfile, repo = sys.argv[1:3]
open(pidfile, "w").write("1\\n")
attempt = (
    "import sys\\nfrom pathlib import Path\\nfrom vaultpki.errors import ReloadError\\n"
    "from vaultpki.daemon.reload_signal import SignalByPidfile\\n"
    "try:\\n    SignalByPidfile(Path(sys.argv[1])).reload()\\n    print('signalled')\\n"
    "except ReloadError as exc:\\n    print(exc)\\n")
child = subprocess.run([sys.executable, "-c", attempt, pidfile], capture_output=True, text=True,
                       env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"})
time.sleep(0.3)
print(json.dumps({"said": child.stdout.strip(), "stderr": child.stderr, "got": len(got)}))
"""


def test_a_pidfile_naming_pid_1_is_refused_and_init_gets_nothing(tmp_path: Path) -> None:
    """In a PID namespace of its own, a recorder is pid 1 (init); the reload runs inside it."""
    import vaultpki

    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to give the test an init process of its own"
    repo = str(Path(vaultpki.__file__).resolve().parent.parent)
    result = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", PID1_SCRIPT,
                             str(tmp_path / "db.pid"), repo], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["said"] == f"pidfile {tmp_path / 'db.pid'} names pid 1, the init process, not the database: " \
                             "nothing signalled", report
    assert report["got"] == 0


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another uid can write to (tmp_path's parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vaultpki-reload-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def spawn_hup_as(shared_dir: Path, children: list[subprocess.Popen[bytes]]) -> Callable[..., HupChild]:
    """A HUP recorder running as ``uid``:``gid`` (with ``groups``), recording into the shared dir."""
    def spawn(comm: str, uid: int, gid: int, groups: tuple[int, ...] = ()) -> HupChild:
        tag = secrets.token_hex(4)
        out, ready = shared_dir / f"{tag}.signals", shared_dir / f"{tag}.ready"
        drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
                f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]
        proc = subprocess.Popen([*drop, sys.executable, "-c", HUP_CHILD, str(out), str(ready), comm],
                                stdin=subprocess.DEVNULL)        # setpriv execs: the pid is the recorder's
        children.append(proc)
        wait_until(ready.exists, what="child to install its handler")
        return HupChild(proc, out)
    return spawn


def pidfile_of(directory: Path, pid: int) -> Path:
    path = directory / f"{secrets.token_hex(4)}.pid"
    path.write_text(f"{pid}\n")
    return path


def test_a_pid_of_another_user_is_refused_and_gets_nothing(spawn_hup_as: Callable[..., HupChild], tmp_path: Path) -> None:
    """We run as root; the keys are root's (no owner configured): a process of nobody is not the database,
    although root could signal it."""
    other = spawn_hup_as("", NOBODY, NOBODY)
    pidfile = pidfile_of(tmp_path, other.pid)
    with pytest.raises(ReloadError) as caught:
        SignalByPidfile(pidfile).reload()
    assert str(caught.value) == (f"pid {other.pid} from pidfile {pidfile} runs as nobody (uid {NOBODY}), but the keys "
                                 "are written for root (uid 0): nothing signalled")
    time.sleep(0.2)
    assert other.signals() == []


def test_the_configured_owner_is_the_expected_user(spawn_hup_as: Callable[..., HupChild], tmp_path: Path) -> None:
    """owner = nobody: nobody's process is signalled, root's own is refused."""
    theirs = spawn_hup_as("", NOBODY, NOBODY)
    reloader = SignalByPidfile.for_files_of(pidfile_of(tmp_path, theirs.pid), signal.SIGHUP, None, NOBODY, None)
    assert reloader.reload().signalled == (theirs.pid,)
    theirs.wait_for_signal()
    mine = subprocess.Popen([SLEEP, "30"])
    try:
        with pytest.raises(ReloadError, match=r"runs as root \(uid 0\), but the keys are written for nobody"):
            SignalByPidfile.for_files_of(pidfile_of(tmp_path, mine.pid), signal.SIGHUP, None, NOBODY, None).reload()
        assert mine.poll() is None
    finally:
        mine.kill()
        mine.wait()


def test_a_root_owned_key_read_through_a_group_expects_a_process_in_that_group(
        spawn_hup_as: Callable[..., HupChild], tmp_path: Path) -> None:
    """owner = root, group = G: the key is 0640 and the database reads it through G."""
    group = 4242
    member = spawn_hup_as("", NOBODY, NOBODY, (group,))
    outsider = spawn_hup_as("", NOBODY, NOBODY)
    assert SignalByPidfile.for_files_of(pidfile_of(tmp_path, member.pid), signal.SIGHUP, None, 0, group).reload() \
        .signalled == (member.pid,)
    member.wait_for_signal()
    with pytest.raises(ReloadError, match=f"pid {outsider.pid} from pidfile .* is not in group gid {group}, through which"):
        SignalByPidfile.for_files_of(pidfile_of(tmp_path, outsider.pid), signal.SIGHUP, None, 0, group).reload()
    time.sleep(0.2)
    assert outsider.signals() == []


def test_with_reload_process_the_pid_must_be_that_process(spawn_hup: Callable[[str], HupChild], tmp_path: Path) -> None:
    name = unique_name()
    database, impostor = spawn_hup(name), spawn_hup(unique_name())
    assert SignalByPidfile(pidfile_of(tmp_path, database.pid), process=name).reload().signalled == (database.pid,)
    database.wait_for_signal()
    pidfile = pidfile_of(tmp_path, impostor.pid)
    with pytest.raises(ReloadError) as caught:
        SignalByPidfile(pidfile, process=name).reload()
    assert str(caught.value) == (f"pid {impostor.pid} from pidfile {pidfile} is not the configured process {name!r}: "
                                 "nothing signalled")
    time.sleep(0.2)
    assert impostor.signals() == []


def test_the_expected_user_follows_owner_and_group() -> None:
    me = os.geteuid()
    path = Path("/run/db.pid")
    assert SignalByPidfile.for_files_of(path, signal.SIGHUP, None, None, None) == SignalByPidfile(path, uid=me)
    assert SignalByPidfile.for_files_of(path, signal.SIGHUP, None, 999, 5) == SignalByPidfile(path, uid=999)
    assert SignalByPidfile.for_files_of(path, signal.SIGHUP, "cockroach", 0, 5) == \
        SignalByPidfile(path, process="cockroach", gid=5)


# ----------------------------------------------------------------- RunCommand


def test_command_runs_with_exactly_the_given_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.not-for-the-command")
    marker = tmp_path / "ran"
    # LC_ALL set: otherwise Python's locale coercion adds LC_CTYPE to the environment it sees.
    env_in = {"RELOAD_TARGET": "n1", "LC_ALL": "C.UTF-8"}
    script = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"

    outcome = RunCommand([sys.executable, "-c", script, str(marker)], timeout=30, env=env_in).reload()

    assert outcome.signalled == ()
    assert "exit 0" in outcome.detail
    env = json.loads(marker.read_text())
    assert env == env_in


def test_command_without_env_inherits_ours_minus_vault_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.secret")
    monkeypatch.setenv("BAO_TOKEN", "s.secret")
    monkeypatch.setenv("VAULTPKI_CONFIG", "/etc/vaultpki.toml")
    monkeypatch.setenv("RELOAD_HINT", "kept")
    script = ("import os, sys; leaked = [k for k in os.environ if k.startswith(('VAULT', 'BAO_'))]; "
              "sys.exit(3 if leaked or os.environ.get('RELOAD_HINT') != 'kept' else 0)")

    RunCommand([sys.executable, "-c", script], timeout=30).reload()


def test_command_environment_carries_no_vault_credential_in_any_case_or_under_another_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "s.0123456789abcdef"
    secrets_ = {"VAULT_TOKEN": token, "vault_token": "s.lower-case-token", "Bao_Token": "s.mixed-case-token",
                "VAULTPKI_SECRET": "a-vaultpki-secret", "VAULT_SKIP": "1"}
    for name, value in {**secrets_, "DB_RELOAD_AUTH": f"Bearer {token}", "RELOAD_HINT": "kept", "SHORT": "1"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.json"
    script = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    RunCommand([sys.executable, "-c", script, str(out)], timeout=30).reload()
    env = json.loads(out.read_text())
    assert env["RELOAD_HINT"] == "kept" and env["SHORT"] == "1"
    leaked = {k: v for k, v in env.items()
              if k.upper().startswith(("VAULT", "BAO_")) or any(len(s) > 1 and s in v for s in secrets_.values())}
    assert leaked == {}


READ_PARENT = """
import os, sys
from vaultpki.errors import ReloadError
from vaultpki.daemon.reload_command import RunCommand
out = sys.argv[1]
try:
    RunCommand(["sh", "-c", f"cat /proc/$PPID/environ > {out}"], timeout=30).reload()
    print("read")
except ReloadError as exc:
    print(exc)
"""


def test_a_reload_command_cannot_read_the_token_from_our_environ(shared_dir: Path) -> None:
    """vaultpki runs as an unprivileged user with $VAULT_TOKEN set (as a deployment that ignores the advice
    may); the reload command, running as the same user, tries /proc/$PPID/environ."""
    import vaultpki

    out = shared_dir / "environ"
    repo = str(Path(vaultpki.__file__).resolve().parent.parent)
    env = {"VAULT_TOKEN": "s.the-daemons-token", "PYTHONPATH": repo, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                             "-c", READ_PARENT, str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Permission denied" in result.stdout, result.stdout          # cat could not open it
    assert out.exists() and b"the-daemons-token" not in out.read_bytes()


def test_failing_command_reports_exit_code_and_last_stderr_line() -> None:
    script = "import sys; sys.stdout.write('out\\n'); sys.stderr.write('first line\\nlast line: boom  \\n\\n'); sys.exit(3)"
    with pytest.raises(ReloadError) as caught:
        RunCommand([sys.executable, "-c", script], timeout=30).reload()
    assert str(caught.value) == f"reload command {sys.executable!r} exited 3: last line: boom"


def test_long_stderr_line_is_trimmed_to_200_characters() -> None:
    script = "import sys; sys.stderr.write('x' * 5000); sys.exit(1)"
    with pytest.raises(ReloadError) as caught:
        RunCommand([sys.executable, "-c", script], timeout=30).reload()
    tail = str(caught.value).split("exited 1: ", 1)[1]
    assert len(tail) == 200 and tail.startswith("xxx") and tail.endswith("…")


def test_command_killed_by_a_signal_says_so() -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(ReloadError, match="was killed by SIGKILL$"):
        RunCommand([sys.executable, "-c", script], timeout=30).reload()


def test_command_that_hangs_is_killed_at_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ReloadError, match="^reload command 'sleep' did not finish within 0.5s$"):
        RunCommand(["sleep", "5"], timeout=0.5).reload()
    assert time.monotonic() - started < 3


def test_timeout_kills_what_the_command_started_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f'{SLEEP} 300 & echo $! > {pidfile}; wait'
    with pytest.raises(ReloadError, match="did not finish within"):
        RunCommand(["sh", "-c", script], timeout=1).reload()
    grandchild = int(pidfile.read_text())

    def gone() -> bool:
        try:
            return bool(psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True
    wait_until(gone, what="the backgrounded sleep to be killed")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        pytest.param(["/nonexistent/vaultpki-reload"], "^reload command not found: '/nonexistent/vaultpki-reload'$",
                     id="absolute-path"),
        pytest.param(["vaultpki-no-such-command-on-path"], "^reload command not found", id="bare-name"),
    ],
)
def test_command_not_found(argv: list[str], error: str) -> None:
    with pytest.raises(ReloadError, match=error):
        RunCommand(argv, timeout=5).reload()


def test_command_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "reload.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(ReloadError, match="is not executable"):
        RunCommand([str(script)], timeout=5).reload()


@pytest.mark.parametrize(
    ("argv", "timeout"),
    [pytest.param([], 5.0, id="empty-argv"), pytest.param([""], 5.0, id="empty-program"),
     pytest.param(["true"], 0.0, id="zero-timeout")],
)
def test_command_configuration_errors(argv: list[str], timeout: float) -> None:
    with pytest.raises(ConfigError):
        RunCommand(argv, timeout=timeout)


# ----------------------------------------------------------------- NoReload, describe, parse_signal


def test_no_reload_does_nothing() -> None:
    assert NoReload().reload() == ReloadOutcome((), "reload disabled")


@pytest.mark.parametrize(
    ("reloader", "text"),
    [
        pytest.param(SignalByName("cockroach"), "SIGHUP to every process named 'cockroach'", id="name"),
        pytest.param(SignalByPidfile(Path("/run/db.pid"), signal.SIGUSR1), "SIGUSR1 to the pid in /run/db.pid", id="pidfile"),
        pytest.param(RunCommand(["systemctl", "reload", "my db"], 5), "run systemctl reload 'my db'", id="command"),
        pytest.param(NoReload(), "no reload", id="none"),
    ],
)
def test_describe(reloader: SignalByName | SignalByPidfile | RunCommand | NoReload, text: str) -> None:
    assert reloader.describe() == text


def test_command_env_stays_out_of_repr() -> None:
    assert "s.secret" not in repr(RunCommand(["true"], 5, env={"TOKEN": "s.secret"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("SIGHUP", signal.SIGHUP, id="full-name"),
        pytest.param("HUP", signal.SIGHUP, id="short-name"),
        pytest.param("sighup", signal.SIGHUP, id="lower-case"),
        pytest.param("hup", signal.SIGHUP, id="short-lower-case"),
        pytest.param(" SIGHUP ", signal.SIGHUP, id="surrounding-space"),
        pytest.param("1", signal.SIGHUP, id="number"),
        pytest.param("USR1", signal.SIGUSR1, id="usr1"),
        pytest.param("15", signal.SIGTERM, id="term-number"),
    ],
)
def test_parse_signal(text: str, expected: signal.Signals) -> None:
    assert parse_signal(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("BOGUS", id="unknown-name"),
        pytest.param("SIGBOGUS", id="unknown-sig-name"),
        pytest.param("0", id="zero"),
        pytest.param("-1", id="negative"),
        pytest.param("999", id="out-of-range"),
        pytest.param("1.0", id="not-an-integer"),
        pytest.param("SIG_DFL", id="handler-not-signal"),
    ],
)
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a signal name or number"):
        parse_signal(text)
