"""Bad input and failures: one clear line, the right exit code, the certs-dir unchanged."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest

from vaultpki.core import crypto
from vaultpki.core.layout import Mode, PkiNames
from vaultpki.dev.devserver import DevServer, free_port
from vaultpki.dev.provision import ProvisionSpec, provision, role_body

from .conftest import NODE_HOSTS, Deployment, run_cli, toml_dump, tree


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vaultpki: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def populated(deploy: Callable[..., Deployment], tmp_path: Path) -> tuple[Deployment, Path, Path]:
    """A standard deployment with an already issued certs-dir (so 'unchanged' means something)."""
    dep = deploy(Mode.STANDARD)
    certs_dir = tmp_path / "certs"
    config = dep.write_config(tmp_path / "vaultpki.toml", certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    assert result.returncode == 0, result.stderr
    return dep, certs_dir, config


@pytest.mark.parametrize("user", [
    pytest.param("../x", id="dotdot"),
    pytest.param("Marc", id="uppercase"),
    pytest.param("", id="empty"),
    pytest.param("/", id="slash"),
    pytest.param("/etc/passwd", id="abs-path"),
    pytest.param("-rf", id="leading-dash"),  # passed after "--"
    pytest.param("a" * 64, id="64-bytes"),
    pytest.param("node", id="node-identity"),
    pytest.param("m\u0430rc ", id="space"),
])
def test_bad_user_names_refused_before_any_request(tmp_path: Path, user: str) -> None:
    # The Vault address is a closed port: had a request been made, the error would say so.
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'mode = "standard"\n[vault]\naddr = "http://127.0.0.1:{free_port()}"\n')
    target = tmp_path / "certs"
    result = run_cli(["--config", str(config), "issue-user", "--certs-dir", str(target), "--", user],
                     {"VAULT_TOKEN": "unused"})
    one_error_line(result, 2, "user name")
    assert not target.exists()


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    one_error_line(run_cli(["issue-user", "-rf"]), 2, "No such option", "--help")
    one_error_line(run_cli(["no-such-command"]), 2, "No such command")
    one_error_line(run_cli(["issue-user"]), 2, "give exactly one of USER or --from-file")


def test_bad_user_name_needs_no_config_at_all(tmp_path: Path) -> None:
    result = run_cli(["issue-user", "../../etc", "--certs-dir", str(tmp_path / "x")])
    one_error_line(result, 2, "user name")


@pytest.mark.parametrize(("content", "needle"), [
    pytest.param(None, "does not exist", id="missing-file"),
    pytest.param("mode = [", "not valid TOML", id="bad-toml"),
    pytest.param('mode = "split"\n[vault]\naddr = "http://x:1"\n', "mode", id="bad-mode"),
    pytest.param('mode = "standard"\ncert_dir = "/x"\n[vault]\naddr = "http://x:1"\n', "unknown configuration key", id="typo-key"),
    pytest.param('mode = "split-ca"\n[vault]\naddr = "http://x:1"\n', "client_mount", id="split-ca-without-client-mount"),
    pytest.param('key_type = "ec"\nkey_bits = 2048\n[vault]\naddr = "http://x:1"\n', "key_bits", id="ec-2048"),
    pytest.param('ttl = "forever"\n[vault]\naddr = "http://x:1"\n', "ttl", id="bad-ttl"),
    pytest.param('mode = "standard"\n', "Vault address", id="no-vault-addr"),
])
def test_bad_config(tmp_path: Path, content: str | None, needle: str) -> None:
    config = tmp_path / "vaultpki.toml"
    if content is not None:
        config.write_text(content)
    result = run_cli(["--config", str(config), "issue-node", "--certs-dir", str(tmp_path / "certs")])
    one_error_line(result, 2, needle)
    assert not (tmp_path / "certs").exists()


def test_no_config_at_all(tmp_path: Path) -> None:
    one_error_line(run_cli(["issue-node"]), 2, "no configuration")


def test_node_hosts_empty_is_a_config_error(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deploy(Mode.STANDARD)
    doc_path = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    doc_path.write_text(doc_path.read_text().replace('hosts = ["node1.test.internal", "localhost", "127.0.0.1"]', "hosts = []"))
    one_error_line(run_cli(["--config", str(doc_path), "issue-node"], {"VAULT_TOKEN": dep.server.root_token}),
                   2, "node.hosts")


def test_unreachable_vault_leaves_dir_unchanged(populated: tuple[Deployment, Path, Path], tmp_path: Path) -> None:
    dep, certs_dir, config = populated
    before = tree(certs_dir)
    dead = config.read_text().replace(dep.server.addr, f"http://127.0.0.1:{free_port()}")
    config.write_text(dead.replace('auth = "token"', 'auth = "token"\nretry_for = "2s"'))
    started = time.monotonic()
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 1, "cannot reach Vault", "connection refused")
    assert 2 <= time.monotonic() - started < 30              # retried for vault.retry_for, then gave up
    assert tree(certs_dir) == before


def test_denied_token_leaves_dir_unchanged(populated: tuple[Deployment, Path, Path]) -> None:
    dep, certs_dir, config = populated
    before = tree(certs_dir)
    weak = dep.admin.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": weak})
    one_error_line(result, 1, "Vault denied", "permission denied")
    assert tree(certs_dir) == before
    bogus = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": "s.not-a-real-token"})
    one_error_line(bogus, 1, "Vault denied")
    assert tree(certs_dir) == before


def test_missing_token(populated: tuple[Deployment, Path, Path]) -> None:
    _, _, config = populated
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 2, "no Vault token")


def test_token_file_readable_by_others_is_refused(populated: tuple[Deployment, Path, Path], tmp_path: Path) -> None:
    dep, certs_dir, config = populated
    token_file = tmp_path / "token"
    token_file.write_text(dep.server.root_token)
    token_file.chmod(0o644)
    config.write_text(config.read_text().replace('auth = "token"', f'auth = "token"\ntoken_file = "{token_file}"'))
    before = tree(certs_dir)
    one_error_line(run_cli(["--config", str(config), "issue-node"]), 2, "token_file", "chmod 600")
    assert tree(certs_dir) == before
    token_file.chmod(0o600)
    assert run_cli(["--config", str(config), "issue-node"]).returncode == 0


@pytest.mark.parametrize("where", ["env", "file"])
@pytest.mark.parametrize("token", [
    pytest.param("{token}\nX-Vault-Namespace: evil", id="line-break"),
    pytest.param("{token}\u00e9", id="non-ascii"),
    pytest.param("{token}\x1b[2J", id="control"),
])
def test_a_token_no_header_can_carry_is_refused_before_any_request(
        populated: tuple[Deployment, Path, Path], tmp_path: Path, where: str, token: str) -> None:
    """Before, a line break in the token was retried as an unreachable Vault for a minute and the error
    echoed the token; a non-ASCII one was an internal error. Now: one line naming where it came from,
    never the token, and nothing written."""
    dep, certs_dir, config = populated
    secret = token.format(token=dep.server.root_token)
    env = {"VAULT_TOKEN": secret}
    if where == "file":
        token_file = tmp_path / "token"
        token_file.write_text(secret + "\n")
        token_file.chmod(0o600)
        config.write_text(config.read_text().replace('auth = "token"', f'auth = "token"\ntoken_file = "{token_file}"'))
        env = {}
    before = tree(certs_dir)
    start = time.monotonic()
    line = one_error_line(run_cli(["--config", str(config), "issue-node"], env), 2,
                          "$VAULT_TOKEN" if where == "env" else "vault.token_file", "an HTTP header cannot carry")
    assert dep.server.root_token not in line and time.monotonic() - start < 30
    assert tree(certs_dir) == before


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (immutable attribute); plain chmod for other users."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)


def test_certs_dir_not_writable(populated: tuple[Deployment, Path, Path]) -> None:
    dep, certs_dir, config = populated
    state = certs_dir / ".vaultpki"
    before = tree(certs_dir)
    with unwritable(state):
        result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
        one_error_line(result, 1, "cannot write to certs-dir")
    assert tree(certs_dir) == before


def test_certs_dir_symlink_refused(populated: tuple[Deployment, Path, Path], tmp_path: Path) -> None:
    dep, certs_dir, config = populated
    link = tmp_path / "certs-link"
    link.symlink_to(certs_dir)
    before = tree(certs_dir)
    result = run_cli(["--config", str(config), "issue-node", "--certs-dir", str(link)],
                     {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 1, "is a symlink")
    assert tree(certs_dir) == before


def test_target_symlink_outside_dir_refused(populated: tuple[Deployment, Path, Path], tmp_path: Path) -> None:
    dep, certs_dir, config = populated
    outside = tmp_path / "elsewhere.key"
    outside.write_text("precious\n")
    (certs_dir / "node.key").unlink()
    (certs_dir / "node.key").symlink_to(outside)
    before = tree(certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 1, "outside the certs-dir")
    assert tree(certs_dir) == before
    assert outside.read_text() == "precious\n"


def test_missing_role_is_reported(populated: tuple[Deployment, Path, Path]) -> None:
    dep, certs_dir, config = populated
    config.write_text(config.read_text().replace('node_role = "node"', 'node_role = "no-such-role"'))
    before = tree(certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 1, "no-such-role")
    assert tree(certs_dir) == before


def test_misconfigured_role_with_server_flag_is_refused(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """A user role that also grants serverAuth: Vault issues, vaultpki refuses to write."""
    dep = deploy(Mode.STANDARD)
    body = role_body("user", [], openbao=True)
    body["server_flag"] = True
    dep.admin.write_data(f"{dep.pki.mount}/roles/user-serverflag", data=body)
    config = dep.write_config(tmp_path / "vaultpki.toml", tmp_path / "certs")
    config.write_text(config.read_text().replace('user_role = "user"', 'user_role = "user-serverflag"'))
    target = tmp_path / "marc"
    before_serials = dep.serials()
    result = run_cli(["--config", str(config), "issue-user", "marc", "--certs-dir", str(target)],
                     {"VAULT_TOKEN": dep.server.root_token})
    one_error_line(result, 1, "refusing client.marc.crt", "extended key usage")
    assert len(dep.serials() - before_serials) == 1        # Vault did issue; we did not write
    assert not target.exists()


def test_role_pinned_to_a_second_issuer_of_the_mount(bao: DevServer, tmp_path: Path) -> None:
    """Every issuer of a mount that may still issue is trusted (a CA rotation relies on it): a role pinned to a
    second issuer yields a leaf that chains to ca.crt, which then holds both CAs. (A leaf from a
    CA outside the mount is refused: tests/unit/test_issue.py, wrong-ca.) On a mount of its own, so that no
    other test's ca.crt changes."""
    admin = hvac.Client(url=bao.addr, token=bao.root_token)
    pki = PkiNames(mount="pin-crdb", client_mount=None, node_role="node-server", client_node_role="client-node",
                   user_role="user", ui_mount=None, ui_role=None)
    provision(admin, bao.addr, ProvisionSpec(mode=Mode.SPLIT_NODE, pki=pki, node_hosts=NODE_HOSTS, root_mount="pin-root"))
    second = admin.write_data(f"{pki.mount}/issuers/generate/root/internal",
                              data={"common_name": "second CA", "issuer_name": "second", "ttl": "24h"})["data"]
    body = role_body("client-node", ["node"], openbao=True)
    body["issuer_ref"] = second["issuer_id"]
    admin.write_data(f"{pki.mount}/roles/client-node", data=body)
    doc = {"certs_dir": str(tmp_path / "certs"), "mode": "split-node", "ttl": "1h", "vault": {"addr": bao.addr},
           "pki": {"mount": pki.mount, "node_role": "node-server"}, "node": {"hosts": list(NODE_HOSTS)}}
    config = tmp_path / "vaultpki.toml"
    config.write_text(toml_dump(doc))
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": bao.root_token})
    assert result.returncode == 0, result.stderr
    bundle = crypto.load_certs((tmp_path / "certs" / "ca.crt").read_bytes())
    assert {crypto.describe(c).common_name for c in bundle} == {"second CA", "CockroachDB node CA (pin-crdb)"}
    client_node = crypto.load_certs((tmp_path / "certs" / "client.node.crt").read_bytes())[0]
    assert client_node.issuer.rfc4514_string() == "CN=second CA"
    assert run_cli(["--config", str(config), "verify"]).returncode == 0


def test_verify_reports_problems_one_per_line(populated: tuple[Deployment, Path, Path]) -> None:
    _, certs_dir, config = populated
    key = certs_dir / ".vaultpki" / "current" / "node.key"
    key.chmod(0o644)
    result = run_cli(["--config", str(config), "verify"])
    assert result.returncode == 1
    assert "node.key: key file mode 0644 is too open" in result.stderr
    ok_lines = [line for line in result.stdout.splitlines() if line.startswith("ok:")]
    assert ok_lines == []


# --- issue 16, section 7: bounded, one clear line, nothing written -----------------------------------------

ADDRESS_SPACE = 1 << 30      # what a command reading its input may map: plenty for vaultpki, nowhere near a whole /dev/zero


def run_capped(args: list[str], stdin: int | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``run_cli`` with the address space capped: an input read whole fails within a second as a MemoryError,
    instead of taking the shared machine's memory, and a command that bounds its reads is not affected."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    return subprocess.run([sys.executable, "-m", "vaultpki", *args], env=env, stdin=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False, preexec_fn=cap)


@pytest.mark.parametrize(("top", "table", "needles"), [
    pytest.param({"certs_dir": "/var/lib/new\x00certs"}, {}, ["certs_dir", "NUL"], id="certs-dir-nul"),
    pytest.param({"certs_dir": "~nosuchuser-vaultpki/certs"}, {}, ["certs_dir", "'~nosuchuser-vaultpki' names no user"],
                 id="certs-dir-unknown-user"),
    pytest.param({}, {"vault": {"addr": "http://127.0.0.1:99999"}}, ["vault.addr", "Port out of range"], id="addr-port-99999"),
    pytest.param({}, {"vault": {"addr": "http://[::1"}}, ["vault.addr", "Invalid IPv6 URL"], id="addr-open-bracket"),
    pytest.param({}, {"pki": {"mount": "standard-crdb\r\nX-Evil: 1"}}, ["pki.mount", "not a Vault mount path"], id="mount-crlf"),
    pytest.param({}, {"pki": {"mount": "standard crdb"}}, ["pki.mount", "not a Vault mount path"], id="mount-space"),
    pytest.param({}, {"pki": {"mount": "standard-crdb\x00"}}, ["pki.mount", "NUL"], id="mount-nul"),
    pytest.param({"ttl": "\uff11h"}, {}, ["ttl", "is not a duration"], id="ttl-full-width-digit"),
    pytest.param({"ttl": "2161h"}, {}, ["ttl", "longer than any vaultpki role issues", "2160h"], id="ttl-above-max-ttl"),
    pytest.param({"ttl": "3000000h"}, {}, ["ttl", "longer than"], id="ttl-beyond-vault"),
])
def test_a_bad_config_value_is_one_line_before_any_request(
        populated: tuple[Deployment, Path, Path], tmp_path: Path, top: dict[str, str], table: dict[str, dict[str, str]],
        needles: list[str]) -> None:
    """Each was an "internal error", a request Vault refused (exit 1), or a certificate silently other than
    asked for (issue 16). Now: exit 2, one line, before anything is minted or written."""
    dep, certs_dir, _ = populated
    doc = {**dep.config_doc(certs_dir), **top}
    doc["vault"]["retry_for"] = "2s"
    for name, values in table.items():
        doc[name].update(values)
    config = tmp_path / "bad.toml"
    config.write_text(toml_dump(doc))
    before, minted = tree(certs_dir), dep.serials()
    result = run_cli(["--config", str(config), "issue-node"], {"VAULT_TOKEN": dep.server.root_token}, timeout=60)
    one_error_line(result, 2, *needles)
    assert tree(certs_dir) == before and dep.serials() == minted


@pytest.mark.parametrize("command", [
    pytest.param(["issue-user", "marc"], id="issue-user"),
    pytest.param(["verify"], id="verify"),
    pytest.param(["status"], id="status"),
    pytest.param(["issue-node"], id="issue-node"),
])
def test_certs_dir_option_naming_no_user_is_one_line(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "http://127.0.0.1:{free_port()}"\n[node]\nhosts = ["db1"]\n')
    result = run_cli(["--config", str(config), *command, "--certs-dir", "~nosuchuser-vaultpki/certs"],
                     {"VAULT_TOKEN": "unused"})
    one_error_line(result, 2, "--certs-dir", "'~nosuchuser-vaultpki' names no user")


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO no one writes to; whatever is stuck opening it is let go at the end."""
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    yield path
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_config_that_is_not_a_regular_file_is_one_line(tmp_path: Path, fifo: Path, special: str) -> None:
    """--config /dev/zero was read whole (a MemoryError); a FIFO hung in open() for ever."""
    path = str(fifo) if special == "fifo" else special
    started = time.monotonic()
    result = run_capped(["--config", path, "issue-node", "--certs-dir", str(tmp_path / "certs")])
    one_error_line(result, 2, f"config file {path} cannot be read", "not a regular file")
    assert time.monotonic() - started < 20 and not (tmp_path / "certs").exists()


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "stdin-dev-zero"])
def test_from_file_that_is_not_a_regular_file_is_one_line(tmp_path: Path, fifo: Path, special: str) -> None:
    """--from-file /dev/zero (or stdin from it) was read whole; a FIFO hung. A list is a regular file or
    stdin, read up to 32 MiB."""
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "http://127.0.0.1:{free_port()}"\n')
    source = {"fifo": str(fifo), "stdin-dev-zero": "-"}.get(special, special)
    target = tmp_path / "certs"
    args = ["--config", str(config), "issue-user", "--from-file", source, "--certs-dir", str(target)]
    with open("/dev/zero", "rb") as zero:
        result = run_capped(args, stdin=zero.fileno() if special == "stdin-dev-zero" else None)
    needle = "larger than 33,554,432 bytes" if special == "stdin-dev-zero" else "not a regular file"
    one_error_line(result, 2, f"cannot read --from-file {source}", needle)
    assert not target.exists()


def test_token_file_that_is_a_fifo_is_one_line(populated: tuple[Deployment, Path, Path], fifo: Path) -> None:
    """A token file that is a FIFO: before, the command waited in open() for a writer, for ever."""
    dep, certs_dir, config = populated
    config.write_text(config.read_text().replace('auth = "token"', f'auth = "token"\ntoken_file = "{fifo}"'))
    before = tree(certs_dir)
    result = run_cli(["--config", str(config), "issue-node"], timeout=30)
    one_error_line(result, 2, f"vault.token_file {fifo} cannot be read", "it is a FIFO, not a regular file")
    assert tree(certs_dir) == before


def test_from_file_of_200000_names_is_read_in_linear_time(tmp_path: Path) -> None:
    """Duplicates were found by a scan of the list so far, O(n²): 200,000 names took minutes. The bad name
    at the end stops the command before any request; the point is how long reaching it takes."""
    listing = tmp_path / "users.txt"
    listing.write_text("".join(f"user{i}\n" for i in range(200_000)) + "user7\nBad\n")
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "http://127.0.0.1:{free_port()}"\n')
    started = time.monotonic()
    result = run_cli(["--config", str(config), "issue-user", "--from-file", str(listing), "--certs-dir",
                      str(tmp_path / "certs")], timeout=60)
    elapsed = time.monotonic() - started
    one_error_line(result, 2, "line 200002", "'Bad'")
    assert elapsed < 10, elapsed
    assert not (tmp_path / "certs").exists()


@pytest.mark.parametrize("addr", [
    pytest.param(":\u00b2", id="superscript-two"),            # isdigit() said yes, int() then raised: an internal error
    pytest.param(":\uff19\uff11\uff10\uff11", id="full-width-digits"),
])
def test_metrics_addr_port_of_other_digits_is_one_line(tmp_path: Path, addr: str) -> None:
    config = tmp_path / "vaultpki.toml"
    config.write_text(f'[vault]\naddr = "http://127.0.0.1:{free_port()}"\n[node]\nhosts = ["db1"]\n')
    result = run_cli(["--config", str(config), "sync", "--metrics-addr", addr, "--certs-dir", str(tmp_path / "certs")])
    one_error_line(result, 2, "--metrics-addr", "is not HOST:PORT")
    assert not (tmp_path / "certs").exists()
