"""``issue-node`` with ``ui.acme_directory``: ui.crt from OpenBao's own ACME server (http-01, the standalone
listener on port 80 of 127.0.0.1), everything else from the session's Vault, in one set.

The ACME CA is a dedicated OpenBao dev server (``tests/support/acme_ca.py``); the node's mounts are the session's
(``deploy``, a layout without a UI mount: ui.crt comes from ACME). Every test here takes port 80 in turn and checks
it is free again afterwards.
"""

from __future__ import annotations

import json
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SHORT, Deployment, run_cli, tree
from tests.integration.daemon_proc import SyncDaemon
from tests.integration.test_acme_http01 import port_80_free
from tests.integration.test_cli_errors import one_error_line
from tests.support.acme_ca import AcmeCA, acme_ca
from tests.support.nginx import find_nginx
from vaultpki.config import dumps
from vaultpki.core import crypto
from vaultpki.core.layout import Mode
from vaultpki.dev.devserver import free_port

pytestmark = pytest.mark.integration

UI_HOSTS = ["localhost", "127.0.0.1"]


@pytest.fixture(scope="module")
def ca() -> Iterator[AcmeCA]:
    with acme_ca() as server:
        server.mount("acme", roles={
            "org-only": {"allowed_domains": ["example.org"], "allow_subdomains": True, "allow_localhost": False,
                         "key_type": "any"},
        })
        server.mount("eab", eab_policy="always-required")
        yield server


@pytest.fixture(scope="module")
def dep(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(Mode.STANDARD, ui=False)


def acme_root(ca: AcmeCA, mount: str = "acme") -> bytes:
    return ca.client.adapter.get(f"/v1/{mount}/ca/pem").text.encode()


def write_config(dep: Deployment, ca: AcmeCA, tmp_path: Path, **ui: Any) -> Path:
    trust = tmp_path / "acme-roots.pem"
    trust.write_bytes(acme_root(ca))
    doc = dep.config_doc(tmp_path / "certs")
    doc["ui"] = {"hosts": UI_HOSTS, "acme_directory": f"{ca.server.addr}/v1/acme/acme/directory",
                 "acme_email": "ops@example.org", "acme_trust": str(trust), **ui}
    path = tmp_path / "vaultpki.toml"
    path.write_text(dumps(doc))
    return path


def cli(dep: Deployment, *args: str) -> Any:
    return run_cli(list(args), env={"VAULT_TOKEN": dep.server.root_token})


def test_issue_node_writes_the_whole_set_with_ui_crt_from_acme(dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    config = write_config(dep, ca, tmp_path)
    before = set(ca.acme_certificates("acme"))
    result = cli(dep, "--config", str(config), "issue-node")
    assert result.returncode == 0, result.stderr
    certs = tmp_path / "certs"
    assert {"ca.crt", "node.crt", "node.key", "ui.crt", "ui.key", "ca-ui.crt"} <= {p.name for p in certs.iterdir()}
    ui = crypto.load_certs((certs / "ui.crt").read_bytes())
    root = crypto.load_certs(acme_root(ca))[0]
    assert crypto.is_issued_by(ui[0], root)
    assert crypto.key_matches(ui[0], crypto.load_key((certs / "ui.key").read_bytes()))
    assert crypto.load_certs((certs / "ca-ui.crt").read_bytes()) == [root]       # the root the chain reached
    assert root not in ui                                                           # the server does not send it
    assert set(crypto.describe(ui[0]).dns_sans) == {"localhost"} and crypto.describe(ui[0]).ip_sans == ("127.0.0.1",)
    assert stat.S_IMODE((certs / "ui.key").stat().st_mode) == 0o600
    # the node's own files are Vault's, not the ACME CA's
    assert not crypto.is_issued_by(crypto.load_certs((certs / "node.crt").read_bytes())[0], root)
    # one order, one new certificate at the CA; the account key kept 0600 in the state dir
    assert len(set(ca.acme_certificates("acme")) - before) == 1
    keys = list((certs / ".vaultpki" / "acme").glob("acme-account-*.pem"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert f"ui.crt from the ACME CA at {ca.server.addr}/v1/acme/acme/directory: serial " in result.stdout
    assert port_80_free()

    # the set is whole: verify passes, status names where ui.crt came from
    verify = cli(dep, "--config", str(config), "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = cli(dep, "--config", str(config), "status")
    assert status.returncode == 0, status.stderr
    assert f"ui.crt: from ACME directory {ca.server.addr}/v1/acme/acme/directory" in status.stdout
    assert "/account/" in status.stdout and "/order/" in status.stdout
    document = json.loads(cli(dep, "--config", str(config), "status", "--json").stdout)
    assert document["ui_acme"]["directory"] == f"{ca.server.addr}/v1/acme/acme/directory"
    assert document["ui_acme"]["serial"] == crypto.format_serial(ui[0].serial_number)
    assert document["ui_acme"]["challenge"] == "http-01 on a standalone listener on port 80"
    renewal = {row["file"]: row.get("renewal") for row in document["files"]}
    assert renewal["ui.crt"] is not None                 # sync renews it by date: status shows when

    # a second issue-node reuses the account (no new key file) and replaces ui.crt in a new set
    again = cli(dep, "--config", str(config), "issue-node")
    assert again.returncode == 0, again.stderr
    assert list((certs / ".vaultpki" / "acme").glob("acme-account-*.pem")) == keys
    assert crypto.load_certs((certs / "ui.crt").read_bytes())[0].serial_number != ui[0].serial_number


@pytest.mark.parametrize(("ui", "code", "needles"), [
    # the role directory refuses the names: the CA's rejectedIdentifier is a configuration error
    ({"acme_directory": "@/v1/acme/roles/org-only/acme/directory"}, 2, ["ACME", "rejectedIdentifier"]),
    # nothing listens there: the CA is unreachable
    ({"acme_directory": "http://127.0.0.1:9/v1/acme/acme/directory"}, 1, ["ACME", "unreachable",
                                                                             "keeping the current certificate"]),
    # the chain does not reach the roots configured
    ({"acme_trust": "@other-root"}, 1, ["ACME: the certificate from", "does not chain to the trusted CA",
                                       "keeping the current certificate"]),
])
def test_a_failed_order_leaves_the_current_set_untouched(dep: Deployment, ca: AcmeCA, tmp_path: Path,
                                                          ui: dict[str, str], code: int, needles: list[str]) -> None:
    config = write_config(dep, ca, tmp_path)
    assert cli(dep, "--config", str(config), "issue-node").returncode == 0
    certs = tmp_path / "certs"
    fingerprint = {k: v for k, v in tree(certs).items() if not k.startswith(".vaultpki/acme")}
    if ui.get("acme_trust") == "@other-root":
        other = tmp_path / "other-root.pem"
        other.write_bytes((certs / "ca.crt").read_bytes())          # the node CA: not the ACME CA's root
        ui = {"acme_trust": str(other)}
    ui = {k: v.replace("@", ca.server.addr, 1) if v.startswith("@/") else v for k, v in ui.items()}
    config = write_config(dep, ca, tmp_path, **ui)
    if "acme_trust" in ui:
        config.write_text(config.read_text().replace(str(tmp_path / "acme-roots.pem"), ui["acme_trust"]))
    one_error_line(cli(dep, "--config", str(config), "issue-node"), code, *needles)
    assert {k: v for k, v in tree(certs).items() if not k.startswith(".vaultpki/acme")} == fingerprint
    assert port_80_free()


def test_config_refusals_exit_2_and_write_nothing(dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    config = write_config(dep, ca, tmp_path)
    text = config.read_text()
    for bad, needle in [
        (text.replace("[pki]", '[pki]\nui_mount = "pki-web"'), "ui.acme_directory and pki.ui_mount are both set"),
        (text.replace("[ui]", '[ui]\nacme_challenge = "dns-01"'), "cannot prove an IP address"),
        (text.replace("[ui]", '[ui]\nacme_http_port = 70000'), "ui.acme_http_port = 70000 is not a TCP port"),
    ]:
        config.write_text(bad)
        one_error_line(cli(dep, "--config", str(config), "issue-node"), 2, needle)
    assert not (tmp_path / "certs").exists()


def test_dry_run_says_what_would_be_ordered_and_orders_nothing(dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    config = write_config(dep, ca, tmp_path)
    before = set(ca.acme_certificates("acme"))
    result = cli(dep, "--config", str(config), "issue-node", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (f"would order ui.crt (localhost, 127.0.0.1) from the ACME CA at {ca.server.addr}/v1/acme/acme/directory, "
            "answering http-01 on a standalone listener on port 80; ca-ui.crt: the root it chains to in "
            f"{tmp_path / 'acme-roots.pem'}") in result.stdout
    assert set(ca.acme_certificates("acme")) == before
    assert not (tmp_path / "certs").exists()


@contextmanager
def nginx_tls(cert: Path, key: Path) -> Iterator[tuple[int, Path]]:
    """A real TLS server (Debian's nginx) serving *cert* on a loopback port; it loads the files again on SIGHUP."""
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="vaultpki-nginx-tls-"))
    temps = "\n".join(f"  {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        f"worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        f"events {{ worker_connections 16; }}\nhttp {{\n  access_log off;\n{temps}\n"
        f"  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; return 204; }}\n}}\n")
    proc = subprocess.Popen([find_nginx(), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not (prefix / "nginx.pid").exists() or served_serial(port) is None:
            assert proc.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text(errors="replace")
            time.sleep(0.05)
        yield port, prefix / "nginx.pid"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def served_serial(port: int) -> int | None:
    try:
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=2)
    except OSError:
        return None
    return crypto.load_certs(pem.encode())[0].serial_number


def test_the_daemon_renews_a_short_lived_acme_ui_crt_and_the_console_serves_it(
        dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    # A role directory whose certificates live 40 s (OpenBao back-dates by 30 s): renewed once half the lifetime is gone.
    ca.client.adapter.post("/v1/acme/roles/short", json={
        "allow_any_name": True, "allow_localhost": True, "allow_ip_sans": True, "key_type": "any", "ttl": "40s",
        "max_ttl": "40s"})
    config = write_config(dep, ca, tmp_path, acme_directory=ca.role_directory("acme", "short"))
    assert cli(dep, "--config", str(config), "issue-node").returncode == 0
    certs = tmp_path / "certs"
    first = crypto.load_certs((certs / "ui.crt").read_bytes())[0].serial_number
    node_serial = crypto.load_certs((certs / "node.crt").read_bytes())[0].serial_number
    with nginx_tls(certs / "ui.crt", certs / "ui.key") as (port, pidfile):
        assert served_serial(port) == first
        doc = tomllib.loads(config.read_text())
        doc["renew"] = SHORT["renew"]
        doc["reload"] = {"pidfile": str(pidfile), "verify": f"tls://127.0.0.1:{port}", "verify_timeout": "5s"}
        config.write_text(dumps(doc))
        with SyncDaemon(config, {"VAULT_TOKEN": dep.server.root_token}) as daemon:
            renewed = daemon.wait_for(lambda e: e.get("msg") == "renewed" and e.get("file") == "ui.crt", 90)
            assert "/order/" in str(renewed.get("acme_order"))
            event = daemon.wait_for(lambda e: str(e.get("msg")).startswith(("reload verified", "reload NOT")), 30)
            assert event["msg"] == "reload verified", daemon.events[-10:]
            on_disk_cert = crypto.load_certs((certs / "ui.crt").read_bytes())[0]
            on_disk = on_disk_cert.serial_number
            assert on_disk != first and served_serial(port) == on_disk
            # watched like every other file: its expiry and renewal time are exported (they were not)
            expiry = daemon.metric('vaultpki_certificate_expiration_timestamp_seconds{file="ui.crt"}')
            assert expiry == on_disk_cert.not_valid_after_utc.timestamp()
            assert daemon.metric('vaultpki_certificate_renewal_timestamp_seconds{file="ui.crt"}')
            assert daemon.metric("security_certificate_expiration_ui") == expiry
            assert daemon.stop() == 0
    # Vault's files were not due and are as they were; status names the new order
    assert crypto.load_certs((certs / "node.crt").read_bytes())[0].serial_number == node_serial
    status = cli(dep, "--config", str(config), "status")
    assert crypto.format_serial(on_disk) in status.stdout and "/roles/short/acme/directory" in status.stdout
    assert port_80_free()


def test_sync_dry_run_says_what_would_be_ordered(dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    config = write_config(dep, ca, tmp_path)
    assert cli(dep, "--config", str(config), "issue-node").returncode == 0
    (tmp_path / "certs" / "ui.crt").unlink()           # a missing ui.crt is due at once
    before = set(ca.acme_certificates("acme"))
    result = cli(dep, "--config", str(config), "sync", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would renew ui.crt: ui.crt missing" in result.stdout
    assert "answering http-01 on a standalone listener on port 80" in result.stdout
    assert set(ca.acme_certificates("acme")) == before
    assert not (tmp_path / "certs" / "ui.crt").exists()


def test_sync_once_orders_when_due_and_a_failed_order_leaves_everything_untouched(
        dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    config = write_config(dep, ca, tmp_path)
    assert cli(dep, "--config", str(config), "issue-node").returncode == 0
    certs = tmp_path / "certs"
    fingerprint = {k: v for k, v in tree(certs).items() if not k.startswith(".vaultpki/acme")}
    contents = {name: (certs / name).read_bytes() for name in ("ca.crt", "node.crt", "node.key", "ui.crt", "ca-ui.crt")}
    # a name added to ui.hosts makes ui.crt due; the CA is unreachable: one line, exit 1, nothing written
    doc = tomllib.loads(config.read_text())
    doc["ui"]["hosts"] = ["localhost", "127.0.0.1", "console.localhost"]
    doc["ui"]["acme_directory"] = "http://127.0.0.1:9/v1/acme/acme/directory"
    config.write_text(dumps(doc))
    failed = cli(dep, "--config", str(config), "sync", "--once")
    assert failed.returncode == 1, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("vaultpki: error: ")]
    assert errors == ["vaultpki: error: ui.crt: ACME directory: the CA at http://127.0.0.1:9/v1/acme/acme/directory is "
                      "unreachable (ConnectionError); keeping the current certificate"], failed.stderr
    assert [line for line in failed.stderr.splitlines() if "ACME order failed" in line and "next_order=" in line]
    assert "Traceback" not in failed.stderr
    assert {k: v for k, v in tree(certs).items() if not k.startswith(".vaultpki/acme")} == fingerprint
    # the back-off is kept for the next process: a second `sync --once` would not order before it ends
    backoff = certs / ".vaultpki" / "acme-order-backoff.json"
    assert backoff.is_file()
    backoff.unlink()                                    # as if it had run out
    # the CA back: the order is made, ui.crt alone replaced in a new set, Vault's files as they were
    doc["ui"]["acme_directory"] = f"{ca.server.addr}/v1/acme/acme/directory"
    doc["ui"]["hosts"] = ["localhost", "127.0.0.1"]
    (certs / "ca-ui.crt").unlink()                      # a file of the set gone: ui.crt is due at once
    config.write_text(dumps(doc))
    result = cli(dep, "--config", str(config), "sync", "--once")
    assert result.returncode == 0, result.stderr
    assert "renewed ui.crt from the ACME CA at" in result.stdout
    assert all((certs / name).read_bytes() == contents[name] for name in ("ca.crt", "node.crt", "node.key"))
    assert (certs / "ui.crt").read_bytes() != contents["ui.crt"]
    assert (certs / "ca-ui.crt").read_bytes() == contents["ca-ui.crt"]
    assert cli(dep, "--config", str(config), "verify").returncode == 0
    assert port_80_free()


def test_external_account_binding_from_the_configuration(dep: Deployment, ca: AcmeCA, tmp_path: Path) -> None:
    directory = f"{ca.server.addr}/v1/eab/acme/directory"
    trust = tmp_path / "eab-root.pem"
    trust.write_bytes(acme_root(ca, "eab"))
    config = write_config(dep, ca, tmp_path, acme_directory=directory, acme_trust=str(trust))
    one_error_line(cli(dep, "--config", str(config), "issue-node"), 2, "requires an external account binding")
    assert not (tmp_path / "certs" / "ui.crt").exists()
    kid, hmac_key = ca.new_eab("eab")
    hmac_file = tmp_path / "eab.key"
    hmac_file.write_text(hmac_key + "\n")
    hmac_file.chmod(0o600)
    config = write_config(dep, ca, tmp_path, acme_directory=directory, acme_trust=str(trust), acme_eab_kid=kid,
                          acme_eab_hmac_file=str(hmac_file))
    result = cli(dep, "--config", str(config), "issue-node", "--json")
    assert result.returncode == 0, result.stderr
    assert {"ui.crt", "ui.key", "ca-ui.crt", "node.crt"} <= set(json.loads(result.stdout)["files"])
    leaf = crypto.load_certs((tmp_path / "certs" / "ui.crt").read_bytes())[0]
    assert crypto.is_issued_by(leaf, crypto.load_certs(acme_root(ca, "eab"))[0])
    assert port_80_free()
