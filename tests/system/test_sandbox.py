"""The shipped unit's sandbox, as a process of the service meets it: its reload command.

``reload.command`` runs as a child of the daemon, so it lives in the unit's sandbox: the same mount
namespace, the same user, no capabilities, and the same seccomp filter. The command here is a probe that
tries what the sandbox must refuse and writes, for each attempt, the exit status and the message into the
certs-dir (the one place it may write). The same probe, run by the same user outside the service, is the
control: what fails inside fails because of the unit, not because of file permissions.

The syscall filter (``SystemCallFilter=~@privileged``) kills a process that calls ``chown`` with SIGSYS,
even for a chown that would change nothing (the service's user giving its own file to itself): a shell
reports that as status 159 (128 + 31). That is the kill vaultpki itself must never provoke with
``owner``/``group`` (``test_service.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .node import CERTS, Vault, booted_node, node_config, start

pytestmark = pytest.mark.integration

PROBE = "/usr/local/bin/sandbox-probe"
PROBE_SCRIPT = f"""#!/bin/sh
# One line per attempt: NAME STATUS MESSAGE. Written aside, then renamed: the test never reads half a file.
out=$1
try() {{ name=$1; shift; msg=$("$@" 2>&1); echo "$name $? $msg"; }}
{{
try certs touch {CERTS}/probe-file
try etc touch /etc/probe-file
try etc-vaultpki touch /etc/vaultpki/probe-file
try service-home touch /var/lib/cockroach/probe-file
try usr-local touch /usr/local/probe-file
try root-home ls /root
try chown chown cockroach:cockroach {CERTS}/probe-file
try mknod mknod {CERTS}/probe-fifo p
}} > "$out.tmp"
mv "$out.tmp" "$out"
"""
# No other files are written to the certs-dir: a name vaultpki does not manage is left alone.
INSIDE, OUTSIDE = f"{CERTS}/probe-inside.txt", f"{CERTS}/probe-outside.txt"


def results(path: Path) -> dict[str, tuple[int, str]]:
    rows = (line.split(" ", 2) for line in path.read_text().splitlines())
    return {name: (int(status), rest[0] if rest else "") for name, status, *rest in rows}


def test_the_sandbox_holds_for_what_the_service_runs(rootfs: Path, installed: Path, workdir: Path, vault: Vault) -> None:
    config = node_config(vault, reload={"command": [PROBE, INSIDE]})
    with booted_node(rootfs, installed, workdir, vault, "vpk-sandbox", config, files={PROBE: PROBE_SCRIPT}) as node:
        # The control: the same user, no sandbox.
        node.container.check(["runuser", "-u", "cockroach", "--", PROBE, OUTSIDE])
        node.container.check(["rm", "-f", f"{CERTS}/probe-file", f"{CERTS}/probe-fifo"])
        enable = start(node)
        assert enable.returncode == 0, enable.stdout + enable.stderr + node.container.diagnostics()
        inside = node.container.wait_for("the probe's results", lambda: (node.certs / "probe-inside.txt").exists(), 30)
        assert inside
        inside_rows = results(node.certs / "probe-inside.txt")
        outside_rows = results(node.certs / "probe-outside.txt")
    # A write to the certs-dir, the one ReadWritePaths=, works; the service's own home does not, though its
    # user owns it (the control wrote there): ProtectSystem=strict makes the rest read-only.
    assert inside_rows["certs"][0] == 0 == outside_rows["certs"][0]
    assert outside_rows["service-home"][0] == 0
    for name in ("service-home", "etc", "etc-vaultpki", "usr-local"):
        status, message = inside_rows[name]
        assert status != 0 and "Read-only file system" in message, (name, inside_rows[name])
    # ProtectHome=yes: /root is not there to be read (the control, not root either, is refused by permissions).
    assert inside_rows["root-home"][0] != 0
    # The syscall filter: chown is killed with SIGSYS inside, and works outside (a chown to oneself).
    assert outside_rows["chown"][0] == 0
    assert inside_rows["chown"][0] == 128 + 31, inside_rows["chown"]
    # mknod of a FIFO is no privileged call: allowed by the filter, so the filter is not simply "deny all".
    assert inside_rows["mknod"][0] == 0, inside_rows["mknod"]
