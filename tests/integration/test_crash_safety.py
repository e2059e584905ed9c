"""Crash safety and failure handling of the certs-dir writer, with real certificates from OpenBao.

- SIGKILL during a renewal: a small writer process calls ``CertsDir.write_set`` with a
  new complete set and is killed either after a random delay calibrated to the measured
  write time, or by a fault hook at the k-th filesystem call, for every k, through both
  ways a generation is made durable (fsync per file, and one ``syncfs``). After every
  kill the visible set must be exactly the old or the new one, every certificate must
  match its key, ``vaultpki verify`` must pass, and the next write starts from whatever
  the crash left (so recovery from every crashed state is exercised too).
- Disk full, a read-only certs-dir, and the certs-dir swapped for a symlink in the
  middle of a write: one clear error and the previous set intact.

The sets are issued once per module (``issue-node`` + ``issue-user root``), so each of
the several hundred runs costs one process start and one ``verify``, not a Vault round
trip.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import FileContent, Mode
from vaultpki.errors import StoreError
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.generation import Stage

from .conftest import Deployment, run_cli, toml_dump, tree
from .test_cli_errors import one_error_line

NAMES = ("ca.crt", "node.crt", "node.key", "client.root.crt", "client.root.key")
SET_COUNT = 4
# How the store makes a generation durable: "fsync" per file (this set's size), or "syncfs" (a big
# set's path, forced for this small set by lowering the store's threshold).
DURABILITY = ("fsync", "syncfs")
RANDOM_KILLS = 200
CALIBRATION_RUNS = 5
STEP_TIMEOUT = 20.0

FileSet = tuple[bytes, ...]      # the bytes of NAMES, in order

# The writer process. kill_at < 0: no hooks (killed from outside, if at all); 0: hooks only
# count the filesystem calls of write_set; k > 0: SIGKILL itself just before the k-th call.
# Every call is labelled with the store method it happens in, so the kill points can be told
# apart in the report ("finish_generation/make_durable:fsync", "commit/switch/replace_link:replace", ...).
# The store's syncfs (through libc, not os) is hooked like the os calls.
WRITER = r"""
import os, signal, sys, time
from pathlib import Path
from vaultpki.store import generation
from vaultpki.core.layout import FileContent
from vaultpki.store.certs_dir import CertsDir

certs, src, kill_at, names = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
if sys.argv[5] == "syncfs":
    generation.SYNC_EACH_MAX = 0
files = [FileContent(n, (src / n).read_bytes(), n.endswith(".key")) for n in names]
store = CertsDir(certs)
emit = os.write
calls = []
phase = []
OPS = ("mkdir", "open", "write", "fchmod", "fchown", "chown", "fsync", "close", "link", "symlink",
       "replace", "rename", "unlink", "rmdir")
METHODS = ("_prepare_dir", "_check_targets", "_ensure_state_dir", "_begin_generation", "_write_into", "_write_file",
           "_finish_generation", "_make_durable",
           "_commit", "_switch", "_replace_link", "_link_all", "_unlink_stale", "_prune")

def fault(op, real):
    def step(*args, **kwargs):
        calls.append("/".join(phase or ["write_set"]) + ":" + op)
        if len(calls) == kill_at:
            emit(1, ("kill %d %s\n" % (len(calls), calls[-1])).encode())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step

def phased(name, real):
    def run(*args, **kwargs):
        phase.append(name)
        try:
            return real(*args, **kwargs)
        finally:
            phase.pop()
    return run

if kill_at >= 0:
    for name in METHODS:
        setattr(CertsDir, name, phased(name.lstrip("_"), getattr(CertsDir, name)))
    for op in OPS:
        setattr(os, op, fault(op, getattr(os, op)))
    generation._syncfs = fault("syncfs", generation._syncfs)
emit(1, b"ready\n")
sys.stdin.readline()
calls.clear()
emit(1, ("start %.9f\n" % time.monotonic()).encode())
store.write_set(files)
emit(1, ("done %.9f %d\n" % (time.monotonic(), len(calls))).encode())
if kill_at == 0:
    emit(1, ("calls %s\n" % " ".join(calls)).encode())
"""


def issue_sets(dep: Deployment, base: Path, count: int) -> list[Path]:
    """``count`` complete standard-mode sets (node + root client) issued by the real CLI into scratch dirs."""
    dirs = []
    for index in range(count):
        certs_dir = base / f"set{index}"
        config = dep.write_config(base / f"set{index}.toml", certs_dir)
        env = {"VAULT_TOKEN": dep.server.root_token}
        node = run_cli(["--config", str(config), "issue-node"], env)
        assert node.returncode == 0, node.stderr
        root = run_cli(["--config", str(config), "issue-user", "root", "--certs-dir", str(certs_dir)], env)
        assert root.returncode == 0, root.stderr
        dirs.append(certs_dir)
    return dirs


def read_set(path: Path) -> FileSet:
    """The five files as a reader sees them: through the top-level names."""
    return tuple((path / name).read_bytes() for name in NAMES)


def file_contents(data: FileSet) -> list[FileContent]:
    return [FileContent(name, blob, name.endswith(".key")) for name, blob in zip(NAMES, data, strict=True)]


@dataclass(frozen=True)
class IssuedSets:
    dirs: list[Path]
    data: list[FileSet]


@pytest.fixture(scope="module")
def issued(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> IssuedSets:
    dep = deploy(Mode.STANDARD, ui=False)
    dirs = issue_sets(dep, tmp_path_factory.mktemp("sets"), SET_COUNT)
    data = [read_set(d) for d in dirs]
    assert len(set(data)) == SET_COUNT, "the issued sets must be pairwise distinct"
    return IssuedSets(dirs, data)


def assert_pairs_match(certs_dir: Path) -> None:
    """Every visible leaf ``.crt`` has its key beside it, the key matches, and keys are 0600 through the link."""
    for name in sorted(os.listdir(certs_dir)):
        if not name.endswith(".crt") or name.startswith("ca"):
            continue
        key_path = certs_dir / f"{name[:-4]}.key"
        assert key_path.exists(), f"{name} is visible without its key"
        leaf = crypto.load_certs((certs_dir / name).read_bytes())[0]
        assert crypto.key_matches(leaf, crypto.load_key(key_path.read_bytes())), f"{name} does not match its key"
        assert key_path.stat().st_mode & 0o077 == 0, f"{key_path.name} is readable by group/others"


def which_set(certs_dir: Path, sets: Sequence[FileSet], allowed: Sequence[int]) -> int:
    """Index of the complete set that is visible; fails unless it is one of ``allowed``."""
    try:
        visible = read_set(certs_dir)
    except OSError as exc:
        raise AssertionError(f"a managed file is not readable after the crash: {exc}") from exc
    matches = [i for i in allowed if sets[i] == visible]
    if not matches:
        mixed = {name: [i for i, s in enumerate(sets) if s[n] == visible[n]] for n, name in enumerate(NAMES)}
        raise AssertionError(f"visible files are not one complete set of {list(allowed)}; per file, from sets: {mixed}")
    return matches[0]


def assert_verify_ok(certs_dir: Path) -> None:
    result = run_cli(["verify", "--certs-dir", str(certs_dir)], timeout=STEP_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def leftovers(certs_dir: Path) -> list[str]:
    """Entries a crash can leave behind; all must be hidden names CockroachDB never loads (no ``.crt``)."""
    extra = [n for n in os.listdir(certs_dir) if n not in NAMES]
    for name in extra:
        assert name.startswith(".") and not name.endswith(".crt"), f"crash left a visible entry {name!r}"
    return [n for n in extra if n != ".vaultpki"]


class Writer:
    """One writer process: started ahead (imports done, source read), told to go, maybe killed."""

    def __init__(self, certs_dir: Path, source: Path, kill_at: int, durability: str = "fsync") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(certs_dir), str(source), str(kill_at), ",".join(NAMES), durability],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
        self._buffer = b""
        self.went: float | None = None       # time.monotonic() of "go": CLOCK_MONOTONIC, shared with the writer
        self.killed_at: float | None = None

    def _line(self, timeout: float) -> str:
        """Next line of the writer's stdout, or AssertionError after ``timeout`` (a hung writer fails the test)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.proc.kill()
                raise AssertionError(f"writer said nothing within {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def wait_ready(self) -> None:
        line = self._line(STEP_TIMEOUT)
        if line != "ready":
            self.proc.wait(timeout=STEP_TIMEOUT)
            assert self.proc.stderr is not None
            raise AssertionError(f"writer failed to start: {line!r} {self.proc.stderr.read().decode()}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.went = time.monotonic()

    def kill_after(self, delay: float) -> None:
        """SIGKILL ``delay`` seconds after go. A spin, not a sleep: sleeps overshoot by more than a write takes."""
        assert self.went is not None
        while time.monotonic() - self.went < delay:
            pass
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)

    def spin_until_done(self) -> None:
        """Busy-poll until the writer reports "done": the same CPU load as the spin of kill_after,
        so the calibration sees the same wake-up latency the random kills will."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STEP_TIMEOUT
        while b"done" not in self._buffer and time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    return
                self._buffer += chunk

    def finish(self) -> tuple[int, list[str]]:
        """Exit code and the writer's remaining stdout lines."""
        self.proc.wait(timeout=STEP_TIMEOUT)
        lines = []
        while True:
            line = self._line(STEP_TIMEOUT)
            if not line:
                break
            lines.append(line)
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        stderr = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        self.proc.stdout.close()    # type: ignore[union-attr]
        if self.proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"writer exited {self.proc.returncode}: {stderr}")
        return self.proc.returncode, lines


@dataclass
class Tally:
    """What the runs did, for the assertions and the report."""

    runs: Counter[str] = field(default_factory=Counter)          # per kind of run
    killed: Counter[str] = field(default_factory=Counter)        # per kind: ended by SIGKILL
    landed: Counter[str] = field(default_factory=Counter)        # "random-old", "fault-new", ...
    when: Counter[str] = field(default_factory=Counter)          # where in the write a random kill fell
    kill_points: set[tuple[str, int, str]] = field(default_factory=set)   # (durability, k, label)
    ops_killed: Counter[str] = field(default_factory=Counter)


def stamp(lines: Sequence[str], word: str) -> list[str]:
    """The fields of the writer's line starting with ``word`` ([] when it never got there)."""
    return next((line.split()[1:] for line in lines if line.split()[0] == word), [])


def where(writer: Writer, lines: Sequence[str]) -> str:
    """Where a random kill fell, from the writer's CLOCK_MONOTONIC stamps around write_set."""
    start, done = stamp(lines, "start"), stamp(lines, "done")
    if not start:
        return "before the write"
    if done:
        return "after the write"
    assert writer.killed_at is not None
    into = writer.killed_at - float(start[0])
    return f"{max(0, int(into * 1000))} ms into it"


def when_order(item: tuple[str, int]) -> float:
    """Report order: before the write, n ms into it, after it."""
    label = item[0]
    return -1.0 if label.startswith("before") else float("inf") if label.startswith("after") else float(label.split()[0])


@pytest.mark.slow
def test_sigkill_at_random_points_and_every_filesystem_step(issued: IssuedSets, tmp_path: Path) -> None:
    """>= 200 SIGKILLed renewals: afterwards always exactly the old or the new set, pairs matching, verify ok.

    Random kills: the delay after "go" is uniform in [0, T], T being 1.5 times the median time
    from "go" to the end of write_set over a few unkilled writes (measured on CLOCK_MONOTONIC,
    which the writer shares, while spinning as the kills do), so kills land all through the
    write, the final rename and the pruning after it included. Fault-hook kills: the writer kills itself just before its
    k-th filesystem call, for every k of a counted write, so every step boundary is hit
    whatever the timing; one sweep per durability path, the syncfs call included. Each run
    starts from what the previous crash left.
    """
    sets, sources = issued.data, issued.dirs
    certs_dir = tmp_path / "certs"
    CertsDir(certs_dir).write_set(file_contents(sets[0]))
    visible = 0
    tally = Tally()
    rng = random.Random(20240601)
    go_to_done: list[float] = []
    write_times: list[float] = []
    counted: dict[str, list[str]] = {}       # durability -> the labelled calls of its count run

    def schedule() -> Iterator[tuple[str, int, str]]:
        """(kind, kill_at, durability) per run; a fault sweep's length is known once its count run is in."""
        for _ in range(CALIBRATION_RUNS):
            yield "calibrate", -1, "fsync"
        for _ in range(RANDOM_KILLS):
            yield "random", -1, "fsync"
        for durability in DURABILITY:
            # A clean write first prunes what earlier crashes orphaned, so the count run (and
            # every fault run after it) has at least the calls of a plain renewal.
            yield "settle", -1, durability
            yield "count", 0, durability
            for k in range(1, len(counted[durability]) + 1):
                yield "fault", k, durability
        yield "recover", -1, "fsync"

    plan = schedule()
    kind, kill_at, durability = next(plan)
    writer = Writer(certs_dir, sources[(visible + 1) % SET_COUNT], kill_at, durability)
    limit = 0.0
    began = time.monotonic()
    try:
        while True:
            new = (visible + 1) % SET_COUNT
            writer.wait_ready()
            writer.go()
            if kind == "random":
                writer.kill_after(rng.uniform(0, limit))
            elif kind == "calibrate":
                writer.spin_until_done()
            code, lines = writer.finish()
            tally.runs[kind] += 1
            if code == -signal.SIGKILL:
                tally.killed[kind] += 1
            if kind in ("calibrate", "settle", "count", "recover"):
                # Unkilled writes must succeed, from whatever the earlier crashes left behind.
                assert code == 0 and stamp(lines, "done"), (kind, code, lines)
                if kind == "calibrate":
                    assert writer.went is not None
                    go_to_done.append(float(stamp(lines, "done")[0]) - writer.went)
                    write_times.append(float(stamp(lines, "done")[0]) - float(stamp(lines, "start")[0]))
                if kind == "count":
                    counted[durability] = stamp(lines, "calls")
                    assert len(counted[durability]) == int(stamp(lines, "done")[1]), lines
            elif kind == "fault":
                killed = stamp(lines, "kill")
                assert code == -signal.SIGKILL and killed, f"fault run {kill_at} ({durability}) was not killed: {lines}"
                tally.kill_points.add((durability, int(killed[0]), killed[1]))
                tally.ops_killed[killed[1].rsplit(":", 1)[1]] += 1
            else:
                tally.when[where(writer, lines)] += 1
            landed = which_set(certs_dir, sets, [visible, new])
            assert_pairs_match(certs_dir)
            leftovers(certs_dir)
            if kind in ("random", "fault"):
                tally.landed[f"{kind}-{'new' if landed == new else 'old'}"] += 1
            else:
                assert landed == new, f"an unkilled {kind} write did not make its set visible"
            visible = landed
            if kind == "calibrate" and tally.runs["calibrate"] == CALIBRATION_RUNS:
                limit = 1.5 * sorted(go_to_done)[CALIBRATION_RUNS // 2]
            try:
                kind, kill_at, durability = next(plan)
            except StopIteration:
                assert_verify_ok(certs_dir)
                break
            # Start the next writer before verifying this state: until "go" it only reads its
            # sources, and its start-up overlaps the verify process.
            writer = Writer(certs_dir, sources[(visible + 1) % SET_COUNT], kill_at, durability)
            assert_verify_ok(certs_dir)
    finally:
        # A failed assertion must not leave a writer blocked on its stdin behind.
        if writer.proc.poll() is None:
            writer.proc.kill()
            writer.proc.wait(timeout=STEP_TIMEOUT)
    elapsed = time.monotonic() - began

    # The clean write that ends the schedule prunes every orphaned generation: only current and previous remain.
    state = certs_dir / ".vaultpki"
    gens = sorted(n for n in os.listdir(state) if n.startswith("gen-"))
    assert {os.readlink(state / "current"), os.readlink(state / "previous")} == set(gens)
    stray = leftovers(certs_dir) + [n for n in os.listdir(state) if n.startswith(".link-")]

    killed_runs = tally.killed["random"] + tally.killed["fault"]
    mid_write = sum(n for w, n in tally.when.items() if w.endswith("into it"))
    print(f"\ncrash safety: {sum(tally.runs.values())} runs {dict(tally.runs)} in {elapsed:.1f}s, "
          f"{killed_runs} SIGKILLed; write {sorted(write_times)[CALIBRATION_RUNS // 2] * 1000:.2f} ms, "
          f"T={limit * 1000:.2f} ms; random kills fell {dict(sorted(tally.when.items(), key=when_order))}; "
          f"landed {dict(tally.landed)}; "
          f"fault hook: calls per durability {({d: len(c) for d, c in counted.items()})}, "
          f"{len(tally.kill_points)} distinct kill points, "
          f"by op {dict(tally.ops_killed)}; stray temporary links left: {stray}")
    assert killed_runs >= 200
    assert tally.killed["fault"] == len(tally.kill_points) == sum(len(c) for c in counted.values())
    # Each sweep really took its path: files fsynced one by one, or the generation by one syncfs. Both
    # open the new generation's directory as they make it (every file is created relative to it).
    durability_steps = ("begin_generation:open", "write_into:", "finish_generation/make_durable:")
    synced = {d: sorted({c for c in calls if c.startswith(durability_steps)}) for d, calls in counted.items()}
    assert synced == {"fsync": ["begin_generation:open", "finish_generation/make_durable:close",
                                "finish_generation/make_durable:fsync"],
                      "syncfs": ["begin_generation:open", "finish_generation/make_durable:syncfs",
                                 "write_into:close"]}, synced
    assert mid_write >= RANDOM_KILLS // 4, f"too few random kills fell inside write_set: {dict(tally.when)}"
    # Kills landed on both sides of the switch, by timing as well as by hook.
    for key in ("random-old", "random-new", "fault-old", "fault-new"):
        assert tally.landed[key] > 0, (key, dict(tally.landed))
    assert {"mkdir", "open", "write", "fchmod", "fsync", "close", "symlink", "replace", "unlink", "syncfs"} <= set(tally.ops_killed)


# --- failures during a pass: a clear error and the previous set intact ------------------------------


@pytest.fixture
def node_dir(deploy: Callable[..., Deployment], tmp_path: Path) -> tuple[Deployment, Path, Path]:
    """An issued standard node dir and its config (so 'intact' means something)."""
    dep = deploy(Mode.STANDARD, ui=False)
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return dep, certs_dir, config



def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, timeout=STEP_TIMEOUT, check=False).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, timeout=STEP_TIMEOUT)


def fill(directory: Path) -> None:
    """Write into ``directory`` until the filesystem says ENOSPC."""
    with open(directory / "filler", "wb", buffering=0) as fh:
        chunk = b"\0" * 4096
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def issue_with_fsize_limit(config: Path, token: str, limit: int) -> subprocess.CompletedProcess[str]:
    """``issue-node`` with RLIMIT_FSIZE: writes past ``limit`` bytes fail with EFBIG (Python ignores SIGXFSZ)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    env.update(VAULT_TOKEN=token, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "vaultpki", "--config", str(config), "issue-node"], env=env,
                          capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_is_one_error_and_the_old_set_stays(deploy: Callable[..., Deployment], tmp_path: Path,
                                                      how: str) -> None:
    """A renewal that cannot get disk space: exit 1, one line naming the certs-dir, nothing changed.

    "tmpfs": the certs-dir lives on a 256 KiB tmpfs filled to ENOSPC (mounting needs root;
    without it this case falls back to the RLIMIT_FSIZE one). "rlimit": the CLI runs with
    RLIMIT_FSIZE so small that every file write fails with EFBIG, which works anywhere.
    After the space comes back, the next renewal succeeds.
    """
    dep = deploy(Mode.STANDARD, ui=False)
    token = dep.server.root_token
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = how == "tmpfs" and _mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point))
    try:
        certs_dir = mount_point / "certs"
        config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir)
        first = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": token})
        assert first.returncode == 0, first.stderr
        before = tree(certs_dir)
        if mounted:
            fill(mount_point)
            result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": token})
            one_error_line(result, 1, f"cannot write to certs-dir {certs_dir}", "no space left on device")
            assert tree(certs_dir) == before
            (mount_point / "filler").unlink()
        else:
            result = issue_with_fsize_limit(config, token, 64)
            one_error_line(result, 1, f"cannot write to certs-dir {certs_dir}", "file too large")
            assert tree(certs_dir) == before
        again = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": token})
        assert again.returncode == 0, again.stderr
        assert read_node(certs_dir) != read_node_from(before)
        assert_pairs_match(certs_dir)
        assert_verify_ok(certs_dir)
    finally:
        if mounted:
            _umount(mount_point)


def read_node(certs_dir: Path) -> bytes:
    return (certs_dir / "node.crt").read_bytes()


def read_node_from(fingerprint: dict[str, tuple[str, int, bytes]]) -> bytes:
    current = fingerprint[".vaultpki/current"][2].decode()
    return fingerprint[f".vaultpki/{current}/node.crt"][2]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` and everything under it read-only (EROFS) via a read-only bind mount; chmod without root."""
    if os.geteuid() == 0 and _mount("--bind", str(path), str(path)):
        try:
            assert _mount("-o", "remount,ro,bind", str(path)), "cannot remount the bind mount read-only"
            yield
        finally:
            _umount(path)
        return
    dirs = [Path(root) for root, _, _ in os.walk(path)]
    for d in dirs:
        d.chmod(0o500)
    try:
        yield
    finally:
        for d in dirs:
            d.chmod(0o700)


def test_read_only_certs_dir_is_one_error_and_the_old_set_stays(node_dir: tuple[Deployment, Path, Path]) -> None:
    dep, certs_dir, config = node_dir
    before = tree(certs_dir)
    with read_only(certs_dir):
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
        reason = "read-only file system" if os.geteuid() == 0 else "permission denied"
        one_error_line(result, 1, f"cannot write to certs-dir {certs_dir}", reason)
    assert tree(certs_dir) == before
    assert_verify_ok(certs_dir)


def visible_entries(fingerprint: dict[str, tuple[str, int, bytes]]) -> dict[str, tuple[str, int, bytes]]:
    return {k: v for k, v in fingerprint.items() if "/" not in k and k != ".vaultpki"}


def test_failure_after_the_switch_switches_back(deploy: Callable[..., Deployment],
                                                node_dir: tuple[Deployment, Path, Path], tmp_path: Path) -> None:
    """An immutable top level (``chattr +i``) only fails a write that needs a new name there (ui.crt/.key):
    that happens after ``current`` was switched, so the store must switch back.

    Pinned: the visible files are unchanged and so are ``current`` and ``previous``, so a later
    ``vaultpki rollback`` goes where it would have gone before the failed write.
    """
    _, certs_dir, _ = node_dir
    with_ui = deploy(Mode.STANDARD)
    config = tmp_path / "with-ui.toml"
    config.write_text(toml_dump(with_ui.config_doc(certs_dir)))
    before = tree(certs_dir)
    state = certs_dir / ".vaultpki"
    links_before = {n: os.readlink(state / n) if (state / n).is_symlink() else None for n in ("current", "previous")}
    if os.geteuid() != 0:
        pytest.fail("chattr +i needs root; this suite runs as root")
    subprocess.run(["chattr", "+i", str(certs_dir)], check=True, timeout=STEP_TIMEOUT)
    try:
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": with_ui.server.root_token})
    finally:
        subprocess.run(["chattr", "-i", str(certs_dir)], check=True, timeout=STEP_TIMEOUT)
    one_error_line(result, 1, f"cannot write to certs-dir {certs_dir}", "operation not permitted")
    after = tree(certs_dir)
    assert visible_entries(after) == visible_entries(before)
    assert read_node(certs_dir) == read_node_from(before)
    assert_pairs_match(certs_dir)
    assert_verify_ok(certs_dir)
    links_after = {n: os.readlink(state / n) if (state / n).is_symlink() else None for n in ("current", "previous")}
    # Before the failed write there was nothing to roll back to; there still must not be: a "rollback"
    # to the very set that is current would report success and change nothing.
    rollback = run_cli(["rollback", "--certs-dir", str(certs_dir)])
    assert links_after == links_before, (f"a failed write changed current/previous: {links_before} -> {links_after}; "
                                         f"rollback now says: {rollback.stdout.strip() or rollback.stderr.strip()}")
    one_error_line(rollback, 1, "no previous generation")


@pytest.mark.parametrize("target", ["copy", "empty"])
def test_certs_dir_swapped_for_a_symlink_mid_write(issued: IssuedSets, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """The certs-dir is moved away and replaced by a symlink after the new generation is built,
    before the switch (an operator migrating the dir while a pass runs).

    "copy": the symlink points at a ``cp -a`` copy taken before the pass; "empty": at an empty
    dir. The store refuses to write through a symlinked certs-dir, so it must not write
    through one that appears mid-write either. Pinned: the directory behind the symlink is
    untouched (and still shows a complete, matching set), and the original directory shows
    the old set if the write raised (a StoreError naming the certs-dir) or the new set if it
    returned.
    """
    sets = issued.data
    certs_dir = tmp_path / "certs"
    moved = tmp_path / "moved"
    other = tmp_path / "other"
    store = CertsDir(certs_dir)
    store.write_set(file_contents(sets[0]))
    store.write_set(file_contents(sets[1]))
    if target == "copy":
        subprocess.run(["cp", "-a", str(certs_dir), str(other)], check=True, timeout=STEP_TIMEOUT)
    else:
        other.mkdir()
    other_before = tree(other)
    finish = CertsDir._finish_generation

    def finish_then_swap(self: CertsDir, state_fd: int, stage: Stage) -> None:
        finish(self, state_fd, stage)
        os.rename(certs_dir, moved)
        os.symlink(other, certs_dir)

    monkeypatch.setattr(CertsDir, "_finish_generation", finish_then_swap)
    outcome: str
    try:
        store.write_set(file_contents(sets[2]))
        outcome = "returned"
    except StoreError as exc:
        assert str(certs_dir) in str(exc), exc
        outcome = f"raised: {exc}"
    monkeypatch.undo()
    print(f"\nsymlink swap ({target}): write_set {outcome}; entries behind the link now: {sorted(os.listdir(other))}")
    assert tree(other) == other_before, (f"write_set ({outcome}) changed the directory behind the swapped-in "
                                         f"symlink; its entries now: {sorted(os.listdir(other))}")
    if target == "copy":
        assert which_set(certs_dir, sets, [1]) == 1
        assert_pairs_match(certs_dir)
    expected = 1 if outcome.startswith("raised") else 2
    assert which_set(moved, sets, [expected]) == expected
    assert_pairs_match(moved)


def test_temporary_link_left_by_a_crash_is_cleaned_up(issued: IssuedSets, tmp_path: Path) -> None:
    """A SIGKILL between creating a temporary link and renaming it over ``previous`` leaves
    ``.vaultpki/.link-*`` behind. CockroachDB never loads it, but nothing ever removes it either.

    Pinned: the next successful write removes such leftovers; otherwise every crash at that
    instant leaves one more entry in the certs-dir for good.
    """
    sets, sources = issued.data, issued.dirs
    certs_dir = tmp_path / "certs"
    CertsDir(certs_dir).write_set(file_contents(sets[0]))
    counter = Writer(certs_dir, sources[1], 0)
    counter.wait_ready()
    counter.go()
    code, lines = counter.finish()
    assert code == 0, lines
    calls = stamp(lines, "calls")
    first_rename = 1 + next(i for i, label in enumerate(calls) if label.endswith(":replace"))
    crash = Writer(certs_dir, sources[2], first_rename)
    crash.wait_ready()
    crash.go()
    code, lines = crash.finish()
    assert code == -signal.SIGKILL and stamp(lines, "kill")[1].endswith(":replace"), lines
    assert which_set(certs_dir, sets, [1]) == 1
    state = certs_dir / ".vaultpki"
    stray = [n for n in os.listdir(state) if n.startswith(".link-")]
    assert stray, "the crash before the rename must have left its temporary link"
    CertsDir(certs_dir).write_set(file_contents(sets[3]))
    assert which_set(certs_dir, sets, [3]) == 3
    left = [n for n in os.listdir(state) if n.startswith(".link-")]
    assert not left, f"temporary links left by a crash are never removed: {left}"
