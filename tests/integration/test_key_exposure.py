"""Secrets never leak: key files are never group/world readable, keys never reach output, tokens never reach argv.

- Key modes are watched from outside while writes run: an inotify watcher on the
  certs-dir, ``.vaultpki`` and every generation dir lstat()s each key file on every event
  (creation included) and re-sweeps all generations with scandir between events. Writers
  run with umask 0, so no umask hides a wide creation mode. The store's own calls are
  recorded too (the mode given to ``os.open`` with O_CREAT, and every ``fchmod``): with
  umask 0 that mode is the file's mode from its first instant, which no watcher can sample.
- The CLI's stdout/stderr (``issue-node`` by both issue methods, ``status``, ``verify``,
  ``sync``, a failure with ``--debug``) and the daemon's log never contain a private key.
- The Vault token never appears in any process's argv (``/proc/<pid>/cmdline`` is world
  readable): not for ``vaultpki sync`` given ``VAULT_TOKEN``, not for a run with
  ``token_file``, not for the bundled OpenBao dev server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vaultpki.core import crypto
from vaultpki.core.layout import Mode
from vaultpki.dev.devserver import DevServer
from vaultpki.store.certs_dir import CertsDir

from .conftest import Deployment, run_cli
from .daemon_proc import SyncDaemon, msg
from .test_crash_safety import NAMES, file_contents, issue_sets, read_set

ROUNDS = 200
TIMEOUT = 120.0

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000
WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE
EVENT = struct.Struct("iIII")


class Inotify:
    """The few inotify calls we need, through libc (no third-party package)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def add(self, path: Path, mask: int) -> int | None:
        """Watch descriptor, or None when ``path`` is already gone (a pruned generation)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            if err == 2:
                return None
            raise OSError(err, f"inotify_add_watch {path}")
        return int(wd)

    def events(self, timeout: float) -> list[tuple[int, int, str]]:
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, offset = [], 0
        while offset < len(data):
            wd, mask, _, length = EVENT.unpack_from(data, offset)
            name = data[offset + EVENT.size: offset + EVENT.size + length].rstrip(b"\0").decode()
            out.append((wd, mask, name))
            offset += EVENT.size + length
        return out

    def close(self) -> None:
        os.close(self.fd)


class KeyWatcher(threading.Thread):
    """Observes every key file under a certs-dir while writes happen; records any mode wider than 0600."""

    def __init__(self, certs_dir: Path) -> None:
        super().__init__(daemon=True)
        self.certs_dir = certs_dir
        self.state = certs_dir / ".vaultpki"
        self.inotify = Inotify()
        self.dirs: dict[int, Path] = {}
        self.halt = threading.Event()
        self.ready = threading.Event()
        self.violations: list[str] = []
        self.observations = 0
        self.keys_seen: set[str] = set()
        self.keys_seen_on_create: set[str] = set()
        self.generations: set[str] = set()
        self.sweeps = 0
        self.overflowed = False
        self.error: BaseException | None = None

    def _watch(self, path: Path) -> bool:
        wd = self.inotify.add(path, WATCH_MASK)
        if wd is None:
            return False
        self.dirs[wd] = path
        return True

    def _check(self, path: Path, created: bool = False, follow: bool = False) -> None:
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        self.observations += 1
        label = str(path.relative_to(self.certs_dir))
        if not follow:
            self.keys_seen.add(label)
        if created:
            self.keys_seen_on_create.add(label)
        if st.st_mode & 0o077:
            self.violations.append(f"{label}: mode {stat.S_IMODE(st.st_mode):o}")

    def _generation(self, gen: Path) -> None:
        """A generation dir: watch it, then look at what is already in it (created before the watch)."""
        try:
            mode = os.lstat(gen).st_mode
        except FileNotFoundError:
            return
        self.generations.add(gen.name)
        if mode & 0o077:
            self.violations.append(f"{gen.name}/: mode {stat.S_IMODE(mode):o}")
        if self._watch(gen):
            self._scan(gen)

    def _scan(self, gen: Path) -> None:
        try:
            with os.scandir(gen) as entries:
                for entry in entries:
                    if entry.name.endswith(".key"):
                        self._check(Path(entry.path))
        except FileNotFoundError:
            pass

    def _sweep(self) -> None:
        self.sweeps += 1
        try:
            with os.scandir(self.state) as entries:
                gens = [Path(e.path) for e in entries if e.name.startswith("gen-")]
        except FileNotFoundError:
            gens = []
        for gen in gens:
            self._scan(gen)
        for name in NAMES:
            if name.endswith(".key"):
                self._check(self.certs_dir / name, follow=True)

    def _handle(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.overflowed = True
            return
        where = self.dirs.get(wd)
        if where is None or not name:
            return
        path = where / name
        if where == self.certs_dir and name == ".vaultpki" and mask & IN_ISDIR:
            self._watch(path)
            self._sweep()
        elif where == self.state and name.startswith("gen-") and mask & IN_ISDIR:
            self._generation(path)
        elif where.parent == self.state and name.endswith(".key"):
            self._check(path, created=bool(mask & IN_CREATE))
        elif where == self.certs_dir and name.endswith(".key"):
            self._check(path, follow=True)

    def run(self) -> None:
        try:
            self._watch(self.certs_dir)
            if self.state.is_dir():
                self._watch(self.state)
                for entry in os.listdir(self.state):
                    if entry.startswith("gen-"):
                        self._generation(self.state / entry)
            self.ready.set()
            while not self.halt.is_set():
                for event in self.inotify.events(0.0005):
                    self._handle(*event)
                self._sweep()
            for event in self.inotify.events(0):
                self._handle(*event)
            self._sweep()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by stop()
            self.error = exc
        finally:
            self.ready.set()
            self.inotify.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=TIMEOUT)
        assert not self.is_alive(), "watcher did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def watcher() -> Iterator[Callable[[Path], KeyWatcher]]:
    started: list[KeyWatcher] = []

    def start(certs_dir: Path) -> KeyWatcher:
        watch = KeyWatcher(certs_dir)
        watch.start()
        assert watch.ready.wait(TIMEOUT) and watch.error is None, watch.error
        started.append(watch)
        return watch
    yield start
    for watch in started:
        if watch.is_alive():
            watch.halt.set()
            watch.join(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def sources(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return issue_sets(deploy(Mode.STANDARD, ui=False), tmp_path_factory.mktemp("sets"), 3)


# Writes ROUNDS sets under umask 0 and records, for every key file, the mode given to os.open
# and to fchmod (with umask 0 the open mode is the file's mode from the instant it exists).
WRITER = r"""
import json, os, sys
from pathlib import Path
from vaultpki.core.layout import FileContent
from vaultpki.store.certs_dir import CertsDir

os.umask(0)
certs, rounds, sources = Path(sys.argv[1]), int(sys.argv[2]), [Path(p) for p in sys.argv[4:]]
names = sys.argv[3].split(",")
sets = [[FileContent(n, (s / n).read_bytes(), n.endswith(".key")) for n in names] for s in sources]
record, keys_open = [], {}
real_open, real_close, real_fchmod, real_chmod = os.open, os.close, os.fchmod, os.chmod

def open_(path, flags, mode=0o777, *, dir_fd=None):
    fd = real_open(path, flags, mode, dir_fd=dir_fd)
    if str(path).endswith(".key"):
        keys_open[fd] = str(path)
        record.append(["open", str(path), flags, mode])
    return fd

def close_(fd):
    keys_open.pop(fd, None)
    return real_close(fd)

def fchmod_(fd, mode):
    if fd in keys_open:
        record.append(["fchmod", keys_open[fd], mode])
    return real_fchmod(fd, mode)

def chmod_(path, mode, *args, **kwargs):
    record.append(["chmod", str(path), mode])
    return real_chmod(path, mode, *args, **kwargs)

os.open, os.close, os.fchmod, os.chmod = open_, close_, fchmod_, chmod_
store = CertsDir(certs)
for i in range(rounds):
    store.write_set(sets[(i + 1) % len(sets)])
print(json.dumps(record))
"""


def test_key_files_never_wider_than_0600_while_writing(sources: list[Path], tmp_path: Path,
                                                       watcher: Callable[[Path], KeyWatcher]) -> None:
    """ROUNDS renewals under umask 0 while a watcher looks at every key file it can catch."""
    certs_dir = tmp_path / "certs"
    CertsDir(certs_dir).write_set(file_contents(read_set(sources[0])))
    watch = watcher(certs_dir)
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-c", WRITER, str(certs_dir), str(ROUNDS), ",".join(NAMES),
                             *map(str, sources)], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    watch.stop()
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    opens = [r for r in record if r[0] == "open"]
    print(f"\nkey modes: {ROUNDS} writes in {time.monotonic() - began:.1f}s; watcher: {len(watch.generations)} "
          f"generations, {len(watch.keys_seen)} key files seen ({len(watch.keys_seen_on_create)} on their creation "
          f"event), {watch.observations} lstat observations, {watch.sweeps} sweeps; store: {len(opens)} key opens")
    assert not watch.violations, watch.violations[:20]
    assert not watch.overflowed, "inotify queue overflowed: events were lost"
    # The writer's own record: every key created exclusively at 0600 and never chmod'ed wider.
    assert len(opens) == 2 * ROUNDS, "every key written must have been seen by the hook"
    for kind, path, *rest in record:
        if kind == "open":
            flags, mode = rest
            assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW, (path, flags)
            assert mode & 0o077 == 0, f"{path} created with mode {mode:o}"
        else:
            assert rest[0] & 0o077 == 0, f"{kind} {path} to {rest[0]:o}"
    # The watcher really watched: most generations and their keys were caught while they existed.
    assert len(watch.generations) >= ROUNDS // 2
    assert len(watch.keys_seen) >= ROUNDS
    assert watch.keys_seen_on_create, "no key creation event was ever caught"


def test_the_watcher_sees_a_key_that_is_too_wide(tmp_path: Path, watcher: Callable[[Path], KeyWatcher]) -> None:
    """The instrument itself: a 0644 key appearing in a new generation is reported (so silence above means something)."""
    certs_dir = tmp_path / "certs"
    (certs_dir / ".vaultpki").mkdir(parents=True)
    watch = watcher(certs_dir)
    gen = certs_dir / ".vaultpki" / "gen-test"
    gen.mkdir(mode=0o700)
    fd = os.open(gen / "node.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o644)
    os.close(fd)
    deadline = time.monotonic() + TIMEOUT
    while not watch.violations and time.monotonic() < deadline:
        watch.halt.wait(0.01)       # polling the watcher's findings
    watch.stop()
    assert "gen-test/node.key: mode 644" in " ".join(watch.violations), watch.violations


def key_needles(key_pem: bytes) -> list[str]:
    """Text that would betray ``key_pem``: its PEM body (whole and per line) and its secret number."""
    body = [line for line in key_pem.decode().splitlines() if line and not line.startswith("-----")]
    needles = ["".join(body)] + [line for line in body if len(line) >= 16]
    key = crypto.load_key(key_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secret = key.private_numbers().private_value
        needles += [f"{secret:x}", str(secret)]
    elif isinstance(key, rsa.RSAPrivateKey):
        secret = key.private_numbers().d
        needles += [f"{secret:x}", str(secret)]
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        from cryptography.hazmat.primitives import serialization
        needles.append(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption()).hex())
    return needles


def assert_no_key_in(text: str, keys: Sequence[bytes], where: str) -> None:
    assert "PRIVATE KEY" not in text, f"{where} printed a private key"
    flat = "".join(text.split())
    for key in keys:
        for needle in key_needles(key):
            assert needle not in text and needle not in flat, f"{where} printed private key material"


def run_umask0(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI with umask 0: a key mode that relied on the umask would show."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    base.update(env)
    return subprocess.run([sys.executable, "-m", "vaultpki", *args], env=base, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False, preexec_fn=lambda: os.umask(0))


@pytest.mark.parametrize("method", ["sign", "issue"])
def test_cli_output_never_holds_a_private_key(deploy: Callable[..., Deployment], tmp_path: Path,
                                              watcher: Callable[[Path], KeyWatcher], method: str) -> None:
    """``issue-node`` three times under umask 0 (key modes watched), then ``status``, ``verify``,
    ``sync --once`` and a failing ``issue-node --debug``: no output holds any of the keys.

    ``issue``: Vault generates the key and sends it back, so the key passes through
    vaultpki's memory as a response field, not only as something it made itself.
    """
    dep = deploy(Mode.STANDARD, ui=False)
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir, issue_method=method)
    env = {"VAULT_TOKEN": dep.server.root_token}
    certs_dir.mkdir()
    watch = watcher(certs_dir)
    outputs: list[tuple[str, str]] = []
    keys: list[bytes] = []
    for _ in range(3):
        result = run_umask0(["--config", str(config), "issue-node"], env)
        assert result.returncode == 0, result.stderr
        outputs.append(("issue-node", result.stdout + result.stderr))
        keys.append((certs_dir / "node.key").read_bytes())
    watch.stop()
    assert not watch.violations, watch.violations
    assert len(watch.keys_seen) >= 3
    assert len(set(keys)) == 3, "each issue-node must have written a new key"
    for args in (["status"], ["status", "--json"], ["verify"], ["verify", "--json"], ["sync", "--once"]):
        result = run_cli(["--config", str(config), *args], env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        outputs.append((" ".join(args), result.stdout + result.stderr))
    state = certs_dir / ".vaultpki"
    subprocess.run(["chattr", "+i", str(state)], check=True, timeout=TIMEOUT)
    try:
        failed = run_cli(["--config", str(config), "--debug", "issue-node"], env)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True, timeout=TIMEOUT)
    assert failed.returncode == 1 and "Traceback" in failed.stderr, failed.stderr
    outputs.append(("issue-node --debug (failing)", failed.stdout + failed.stderr))
    for where, text in outputs:
        assert_no_key_in(text, keys, where)
    assert_no_key_in(dep.server.log_path.read_text(errors="replace"), keys, "the OpenBao server log")


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read()


def environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return fh.read()


def argv_holding(secret: str) -> list[str]:
    """Every process on the machine whose argv contains ``secret`` (``pid: argv``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = cmdline(int(entry))
        except OSError:
            continue
        if secret.encode() in argv:
            found.append(f"{entry}: " + argv.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_sync_daemon_gets_its_token_by_environment_only(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD, ui=False)
    token = dep.admin.auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    with SyncDaemon(config, {"VAULT_TOKEN": token}) as daemon:
        daemon.wait_for(msg("pass complete"), 60)
        argv = cmdline(daemon.proc.pid)
        assert b"vaultpki" in argv and b"sync" in argv, argv      # the right process
        assert token.encode() not in argv
        assert f"VAULT_TOKEN={token}".encode() in environ(daemon.proc.pid).split(b"\0")
        assert argv_holding(token) == []
        assert daemon.stop() == 0
        daemon._reader.join(timeout=TIMEOUT)       # the rest of its log, up to its exit
        while not daemon._lines.empty():
            daemon.events.append(daemon._lines.get_nowait())
        log = json.dumps(daemon.events) + (daemon.proc.stdout.read() if daemon.proc.stdout else "")
    assert token not in log, "the daemon logged its token"
    assert_no_key_in(log, [(tmp_path / "certs" / "node.key").read_bytes()], "the sync daemon's log")


def test_token_file_keeps_the_token_out_of_argv_and_environment(deploy: Callable[..., Deployment],
                                                                tmp_path: Path) -> None:
    """Watched while it runs: ``issue-node`` with ``vault.token_file`` has the token in neither
    its argv nor its environment, and still authenticates."""
    dep = deploy(Mode.STANDARD, ui=False)
    token = dep.admin.auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    config.write_text(config.read_text().replace('auth = "token"', f'auth = "token"\ntoken_file = "{token_file}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    proc = subprocess.Popen([sys.executable, "-m", "vaultpki", "--config", str(config), "issue-node"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        # Until it exits: its argv (once exec'ed) and environment, and every argv on the machine.
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                argv, env_block = cmdline(proc.pid), environ(proc.pid)
            except OSError:
                break
            if b"issue-node" in argv:
                seen.append(argv)
                assert token.encode() not in argv and token.encode() not in env_block
                assert argv_holding(token) == []
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert seen, "the running process was never observed"
    assert token not in out + err


def test_dev_server_root_token_is_passed_by_environment(bao: DevServer) -> None:
    """The bundled dev server (used by ``make demo`` too) gets its root token through the environment."""
    marker = f"-dev-listen-address=127.0.0.1:{bao.port}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in cmdline(int(entry)).split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                continue
    assert len(pids) == 1, pids
    assert bao.root_token.encode() not in cmdline(pids[0])
    assert f"BAO_DEV_ROOT_TOKEN_ID={bao.root_token}".encode() in environ(pids[0]).split(b"\0")
    assert argv_holding(bao.root_token) == []
