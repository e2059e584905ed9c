"""Another local user against the certs-dir (issue 16, section 5), with real certificates from OpenBao.

The attacker is a second uid (``nobody``, through ``setpriv``) doing each attack for real, in one
of two positions:

- a *stranger*: it can reach the certs-dir only because a directory the set rests on is loose
  (mode 0777 or 1777) or was made by it. The writer must refuse such a dir before it writes
  anything (one line, exit 1) and ``verify``/``status`` must name it;
- the *service user*: the configured ``owner``, for whom vaultpki itself makes the certs-dir
  and generations. It may change its own dir, but must never make root follow a link out of it:
  root creating the file a ``.vaultpki/lock`` link names, hard-linking the files of an absolute
  ``current`` into a generation, or copying a secret a repointed ``node.key`` names.

The races are made deterministic by a hook: a writer process (root) runs ``CertsDir.write_set``
with the attacker's move injected just before one named step of the write (the attacker's own
process, as ``nobody``, at that exact instant), for every step; then once more without the hook
(so what the attacker left is met by the next write too). Stand-ins replace the real targets:
``<tmp>/etc/somefile`` for ``/etc/somefile`` and a root-only 0600 ``<tmp>/etc/shadow``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaultpki.core.layout import FileContent, Mode
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.ownership import Owner

from .conftest import Deployment, run_cli, tree
from .test_cli_errors import one_error_line

pytestmark = pytest.mark.integration

NOBODY = 65534
SETPRIV = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
NODE_SET = ("ca.crt", "node.crt", "node.key")
TIMEOUT = 30.0


def as_nobody(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETPRIV, *argv], capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=cwd)


def nobody_sh(script: str) -> None:
    """Run the attacker's shell commands as nobody; they must succeed (the attack is real)."""
    result = as_nobody("sh", "-ec", script)
    assert result.returncode == 0, f"the attacker's move failed: {script!r}: {result.stderr}"



@pytest.fixture
def shared() -> Iterator[Path]:
    """A scratch dir nobody can reach (root-owned 0755 under /tmp; pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vaultpki-attack-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Stand:
    """Stand-ins for what an attacker would aim at in /etc: a root-only secret and a file root must not create."""

    etc: Path
    secret: Path
    data: bytes
    victim: Path

    def assert_untouched(self, certs: Path) -> None:
        st = os.lstat(self.secret)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, f"root hard-linked the secret ({st.st_nlink} links)"
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600) and self.secret.read_bytes() == self.data
        assert sorted(os.listdir(self.etc)) == ["shadow"], f"root created {sorted(os.listdir(self.etc))} in etc"
        copies = [str(p) for p in regular_files(certs) if p.read_bytes() == self.data]
        assert not copies, f"the secret was copied into the certs-dir: {copies}"


def regular_files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                yield path


@pytest.fixture
def stand(shared: Path) -> Stand:
    etc = shared / "etc"
    etc.mkdir(mode=0o755)
    secret = etc / "shadow"
    data = b"root:STAND-IN-SECRET-" + secrets.token_hex(16).encode() + b":19000::::::\n"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    return Stand(etc, secret, data, etc / "somefile")


@pytest.fixture(scope="module")
def sets(deploy: Callable[..., Deployment], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Two node sets issued by the real CLI: "ours" from the deployment, "attacker" from another CA
    (a different mount the attacker got a node certificate from)."""
    base = tmp_path_factory.mktemp("sets")
    out = {}
    for label, dep in (("ours", deploy(Mode.STANDARD, ui=False)),
                       ("attacker", deploy(Mode.STANDARD, intermediate=False, ui=False))):
        certs = base / label
        config = dep.write_config(base / f"{label}.toml", certs)
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
        assert result.returncode == 0, result.stderr
        out[label] = {name: (certs / name).read_bytes() for name in NODE_SET}
    assert out["ours"]["ca.crt"] != out["attacker"]["ca.crt"]
    return out


@pytest.fixture
def node(deploy: Callable[..., Deployment], shared: Path) -> Callable[..., tuple[Deployment, Path, Path]]:
    """node(**top) -> (deployment, config, certs-dir): an issued standard node dir under ``shared``."""
    def make(**top: object) -> tuple[Deployment, Path, Path]:
        dep = deploy(Mode.STANDARD, ui=False)
        certs = shared / "certs"
        config = dep.write_config(shared / "vaultpki.toml", certs, **top)
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
        assert result.returncode == 0, result.stderr
        return dep, config, certs
    return make


def issue(dep: Deployment, config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})


def verify_names(config: Path, *needles: str, fails: bool = True) -> None:
    """``verify`` names each needle, and fails unless all are warnings (an owner it cannot judge without
    knowing who the service user is); ``status`` (text and JSON) shows the same problems."""
    result = run_cli(["--config", str(config), "verify"])
    assert result.returncode == (1 if fails else 0), result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stdout + result.stderr, f"verify does not say {needle!r}: {result.stderr}"
    text = run_cli(["--config", str(config), "status"])
    assert text.returncode == 0, text.stderr
    as_json = run_cli(["--config", str(config), "status", "--json"])
    problems = json.loads(as_json.stdout)["problems"]
    for needle in needles:
        # An error is a PROBLEM line, a warning a WARNING line (without the "warning: " of verify's line).
        kind, shown = ("WARNING", needle.removeprefix("warning: ")) if needle.startswith("warning: ") else ("PROBLEM", needle)
        assert any(shown in line for line in text.stdout.splitlines() if line.startswith(kind)), text.stdout
        assert any(needle in p for p in problems), problems


# --- a stranger: loose directories are refused, and verify names them -------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["0777", "1777"])
def test_a_loose_certs_dir_is_refused_and_named_by_verify(node: Callable[..., tuple[Deployment, Path, Path]],
                                                          mode: int) -> None:
    """A certs-dir anybody can write into: nobody could plant ``ca-client.crt`` (a CA CockroachDB then
    trusts for every client) or, without the sticky bit, replace ``ca.crt``. Not one byte is written
    into it, and verify/status say why it is not to be trusted."""
    dep, config, certs = node()
    certs.chmod(mode)
    assert as_nobody("test", "-w", str(certs), "-a", "-x", str(certs)).returncode == 0, "nobody can write there"
    before = tree(certs)
    line = one_error_line(issue(dep, config), 1, f"certs-dir {certs}", f"writable by group or others (mode {mode:04o})")
    assert "refusing to write" in line
    assert tree(certs) == before
    verify_names(config, f"certs-dir {certs}: is writable by group or others (mode {mode:04o})")


@pytest.mark.parametrize("how", ["made-by-nobody", "mode-0777", "mode-1777"])
def test_a_state_dir_another_user_can_change_is_refused(node: Callable[..., tuple[Deployment, Path, Path]],
                                                        shared: Path, how: str) -> None:
    """``.vaultpki`` made by the attacker while the certs-dir was open to it (then closed), or left
    writable: refused before anything is written, and named by verify/status."""
    dep, config, certs = node()
    state = certs / ".vaultpki"
    if how == "made-by-nobody":
        # The operator's own plain set (what vaultpki would adopt), and a .vaultpki the attacker made
        # while the certs-dir was open to it.
        plain = {name: (certs / name).read_bytes() for name in NODE_SET}
        shutil.rmtree(certs)
        certs.mkdir(mode=0o700)
        for name, data in plain.items():
            (certs / name).write_bytes(data)
            (certs / name).chmod(0o600 if name.endswith(".key") else 0o644)
        certs.chmod(0o777)
        nobody_sh(f"mkdir -m 0755 {state}")
        certs.chmod(0o700)
        needle = f"warning: state dir {state}: is owned by nobody (uid {NOBODY})"
    else:
        mode = int(how.split("-")[1], 8)
        state.chmod(mode)
        needle = f"state dir {state}: is writable by group or others (mode {mode:04o})"
    before = tree(certs)
    one_error_line(issue(dep, config), 1, "refusing to write", needle.replace(": is", " is").replace("warning: ", ""))
    assert tree(certs) == before
    # verify cannot tell a stranger from the service user without an owner: a warning; the set itself is valid
    verify_names(config, needle, fails=how != "made-by-nobody")


def test_current_swapped_by_another_user_is_refused_and_named(node: Callable[..., tuple[Deployment, Path, Path]],
                                                              sets: dict[str, dict[str, bytes]],
                                                              shared: Path) -> None:
    """Through a loose ``.vaultpki`` the attacker builds a generation of its own (its CA, its node
    certificate and key) and renames a link over ``current``: CockroachDB would now load the
    attacker's CA. verify must not call that a valid certs-dir, and the writer must not carry the
    attacker's files into a new set."""
    dep, config, certs = node()
    certs.chmod(0o755)                 # readable by all, as certs-dirs often are; only the state dir is loose
    state = certs / ".vaultpki"
    state.chmod(0o777)
    drop = shared / "drop"
    drop.mkdir(mode=0o755)
    for name, data in sets["attacker"].items():
        (drop / name).write_bytes(data)
        (drop / name).chmod(0o644)
    nobody_sh(f"mkdir -m 0755 {state}/gen-attacker && cp {drop}/* {state}/gen-attacker/ "
              f"&& chmod 0600 {state}/gen-attacker/node.key "
              f"&& ln -s gen-attacker {state}/.swap && mv -T {state}/.swap {state}/current")
    assert (certs / "ca.crt").read_bytes() == sets["attacker"]["ca.crt"], "the swap took: the attacker's CA is visible"
    verify_names(config, f"state dir {state}: is writable by group or others (mode 0777)",
                 f"warning: current generation {state}/gen-attacker: is owned by nobody (uid {NOBODY})")
    before = tree(certs)
    one_error_line(issue(dep, config), 1, "refusing to write", f"state dir {state} is writable by group or others")
    assert tree(certs) == before


# --- the service user (configured owner): never followed out of its dir -------------------------------


def test_a_lock_link_is_never_followed(node: Callable[..., tuple[Deployment, Path, Path]], stand: Stand) -> None:
    """``.vaultpki/lock -> <etc>/somefile``, planted by the owner of the dir: root's issue-node must not
    create the file (the lock was opened with O_CREAT and no O_NOFOLLOW)."""
    dep, config, certs = node(owner="nobody")
    assert os.stat(certs / ".vaultpki").st_uid == NOBODY, "vaultpki gave the state dir to the configured owner"
    nobody_sh(f"rm -f {certs}/.vaultpki/lock && ln -s {stand.victim} {certs}/.vaultpki/lock")
    before = tree(certs)
    one_error_line(issue(dep, config), 1, "refusing to write", "lock is a symlink")
    assert not stand.victim.exists(), "root created the file the lock link names"
    assert tree(certs) == before
    stand.assert_untouched(certs)


def test_an_absolute_current_is_named_by_verify(node: Callable[..., tuple[Deployment, Path, Path]],
                                                stand: Stand) -> None:
    dep, config, certs = node(owner="nobody")
    state = certs / ".vaultpki"
    nobody_sh(f"ln -s {stand.etc} {state}/.swap && mv -T {state}/.swap {state}/current")
    verify_names(config, f".vaultpki/current: points at {stand.etc}, not at a generation inside .vaultpki")
    before = tree(certs)
    one_error_line(issue(dep, config), 1, "refusing to write", f"current points at {stand.etc}")
    assert tree(certs) == before
    stand.assert_untouched(certs)


# --- every step of a write, raced ----------------------------------------------------------------------

# A writer (root) that lets the attacker (nobody) make its move just before the first call of one
# step of write_set ("-": no move). Prints one JSON line: what the write did, and the move's exit code.
WRITER = r"""
import json, subprocess, sys
from pathlib import Path
from vaultpki.errors import StoreError
from vaultpki.core.layout import FileContent
from vaultpki.store.certs_dir import CertsDir
from vaultpki.store.ownership import Owner

certs, src, step, move = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
uid, gid = (None if v == "-" else int(v) for v in sys.argv[5:7])
setpriv = sys.argv[7].split()
files = [FileContent(n, (src / n).read_bytes(), n.endswith(".key")) for n in ("ca.crt", "node.crt", "node.key")]
moves = []

def hooked(real):
    def run(*args, **kwargs):
        if not moves:
            moves.append(subprocess.run([*setpriv, "sh", "-ec", move], capture_output=True, text=True).returncode)
        return real(*args, **kwargs)
    return run

if step != "-":
    setattr(CertsDir, step, hooked(getattr(CertsDir, step)))
try:
    CertsDir(certs, Owner(uid, gid)).write_set(files)
    outcome = "written"
except StoreError as exc:
    outcome = "refused: " + str(exc)
print(json.dumps({"outcome": outcome, "moves": moves}))
"""

# The steps of a write, in order, as methods of CertsDir (the same names before and after the fix).
STEPS = ("before", "_check_targets", "_locked", "_adopt", "_begin_generation", "_finish_generation", "_commit",
         "_link_all")


@dataclass(frozen=True)
class Position:
    """Who the attacker is to the certs-dir: the Owner the writer is configured with, and how the dir is set up."""

    owner: Owner
    dir_uid: int
    dir_mode: int


POSITIONS = {
    # a stranger reaching a loose dir; keys root:nogroup 0640, so a copied secret is readable by nobody's group
    "stranger": Position(Owner(0, NOBODY), 0, 0o777),
    # the configured owner: vaultpki makes the dir and generations nobody's own
    "service-user": Position(Owner(NOBODY, None), NOBODY, 0o750),
}


def attack_moves(certs: Path, stand: Stand) -> dict[str, tuple[str, str]]:
    """attack -> (how the dir starts: "managed" or "plain", the attacker's move as a shell script)."""
    state = certs / ".vaultpki"
    return {
        # lock -> /etc/somefile: root's O_CREAT would create it
        "lock-link": ("managed", f"rm -f {state}/lock; ln -s {stand.victim} {state}/lock"),
        # current -> /etc: root would hard-link /etc's files into the new generation
        "absolute-current": ("managed", f"ln -sfn {stand.etc} {state}/.swap; mv -T {state}/.swap {state}/current"),
        # node.key -> plain.key passed the check; now it names /etc/shadow, which adoption would copy
        "adoption-race": ("plain", f"ln -sfn {stand.secret} {certs}/.swap; mv -T {certs}/.swap {certs}/node.key"),
    }


def set_up(certs: Path, start: str, position: Position, data: dict[str, bytes]) -> None:
    """A certs-dir as the attack needs it: a set vaultpki wrote, or plain files with node.key an in-dir link."""
    certs.mkdir(mode=0o700)
    if start == "managed":
        CertsDir(certs, position.owner).write_set([FileContent(n, data[n], n.endswith(".key")) for n in NODE_SET])
    else:
        for name, blob in (("ca.crt", data["ca.crt"]), ("node.crt", data["node.crt"]), ("plain.key", data["node.key"])):
            (certs / name).write_bytes(blob)
            (certs / name).chmod(0o600 if name.endswith(".key") else 0o644)
        os.symlink("plain.key", certs / "node.key")
    for dirpath, dirs, names in os.walk(certs):
        for name in [*dirs, *names]:
            os.chown(Path(dirpath) / name, position.dir_uid, -1, follow_symlinks=False)
    os.chown(certs, position.dir_uid, -1)
    certs.chmod(position.dir_mode)
    if position.dir_mode & 0o002 and (certs / ".vaultpki").is_dir():
        (certs / ".vaultpki").chmod(position.dir_mode)      # a stranger needs the state dir open too


def run_writer(certs: Path, src: Path, step: str, move: str, owner: Owner) -> tuple[str, list[int]]:
    """One write by the WRITER process: ("written" or "refused: <the StoreError>", the move's exit codes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    uid, gid = (str(v) if v is not None else "-" for v in (owner.uid, owner.gid))
    result = subprocess.run([sys.executable, "-c", WRITER, str(certs), str(src), step, move, uid, gid, " ".join(SETPRIV)],
                            capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False)
    assert result.returncode == 0, f"{step}: the writer crashed: {result.stderr}"
    out = json.loads(result.stdout)
    return str(out["outcome"]), [int(code) for code in out["moves"]]


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attack", ["lock-link", "absolute-current", "adoption-race"])
def test_the_attacker_moves_at_every_step_of_a_write(sets: dict[str, dict[str, bytes]], shared: Path, stand: Stand,
                                                     attack: str, position: str) -> None:
    """For each step of a write, the attacker's move lands just before it; afterwards, and after the
    next write too: root created nothing outside, hard-linked nothing, copied no secret; every write
    either completed or was refused with a StoreError (one line), never anything else."""
    where = POSITIONS[position]
    src = shared / "src"
    src.mkdir(exist_ok=True)
    for name, blob in sets["ours"].items():
        (src / name).write_bytes(blob)
    report = []
    for index, step in enumerate(STEPS):
        certs = shared / f"certs-{index}"
        start, move = attack_moves(certs, stand)[attack]
        if step == "_adopt" and start != "plain":
            continue                     # only a dir of plain files is adopted
        set_up(certs, start, where, sets["ours"])
        if step == "before":
            nobody_sh(move)
        outcomes = []
        for hook in ("-" if step == "before" else step, "-"):        # the raced write, then the next one
            outcome, moves = run_writer(certs, src, hook, move, where.owner)
            outcomes.append(outcome)
            assert outcome == "written" or outcome.startswith("refused: "), (step, outcome)
            assert not stand.victim.exists(), f"{step}: root created {stand.victim} through the lock link"
            stand.assert_untouched(certs)
            if hook != "-" and position == "service-user":
                assert moves == [0], f"{step}: the attacker's move did not happen: {moves} {outcome}"
        report.append((step, *outcomes))
    print(f"\n{attack} / {position}:\n  " + "\n  ".join(str((r[0], *(o[:100] for o in r[1:]))) for r in report))
    if position == "stranger":
        # The loose dir is refused before anything: the attacker's move (inside the write) never even comes.
        late = [r for r in report if not all("writable by group or others (mode 0777)" in o for o in r[1:])]
        assert not late, late
