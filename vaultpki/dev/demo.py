"""``make demo``: the whole job on an embedded default, end to end, in under a minute.

Starts a throw-away OpenBao dev server, provisions a root CA, intermediate CA
mounts and the roles for the chosen mode, then runs the real CLI: ``issue-node``,
``issue-user root``, ``issue-user marc``, ``verify`` and ``status`` into
``<out>/certs``. The server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from vaultpki.core.layout import Mode
from vaultpki.dev.devserver import DevServer

CONFIG = """\
# Written by `make demo`. Every key is documented in README.md.
certs_dir = "{certs}"
mode = "{mode}"
key_type = "ec"
ttl = "24h"
# ca_trust = "issuer" (the default): ca.crt holds the mount's own CA, which Go/CockroachDB
# accepts as an anchor; use "root" for OpenSSL-based clients such as psql.

[vault]
addr = "{addr}"
auth = "token"
token_file = "{token_file}"

[pki]
mount = "pki-crdb"
{client_mount}node_role = "{node_role}"
client_node_role = "client-node"
user_role = "user"
ui_mount = "pki-web"
ui_role = "ui"

[node]
hosts = ["node1.demo.internal", "localhost", "127.0.0.1"]

[ui]
hosts = ["console.demo.internal", "localhost"]
"""


def _run(argv: list[str], env: dict[str, str]) -> None:
    shown = " ".join(shlex.quote(a) for a in ["vaultpki", *argv])
    print(f"\n$ {shown}", flush=True)
    result = subprocess.run([sys.executable, "-m", "vaultpki", *argv], env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit code {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaultpki.dev.demo", description=__doc__)
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.STANDARD.value)
    parser.add_argument("--out", default="demo", help="directory for the config, token and certs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    certs = out / "certs"
    if certs.exists():
        shutil.rmtree(certs)          # a fresh dev server means a fresh CA: start clean
    out.mkdir(parents=True, exist_ok=True)
    with DevServer() as server:
        print(f"OpenBao dev server {server.addr} (in memory; stopped at the end)", flush=True)
        token_file = out / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(server.root_token)
        mode = Mode(args.mode)
        config = out / "vaultpki.toml"
        config.write_text(CONFIG.format(
            certs=certs, mode=mode.value, addr=server.addr, token_file=token_file,
            client_mount='client_mount = "pki-crdb-client"\n' if mode is Mode.SPLIT_CA else "",
            node_role="node" if mode is Mode.STANDARD else "node-server",
        ))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_"))}
        env["VAULTPKI_CONFIG"] = str(config)
        env_admin = dict(env, VAULT_TOKEN=server.root_token)
        _run(["provision"], env_admin)
        _run(["issue-node"], env)
        _run(["issue-user", "root", "--certs-dir", str(certs)], env)
        _run(["issue-user", "marc", "--certs-dir", str(certs)], env)
        _run(["verify"], env)
        _run(["status"], env)
    print(f"\ndemo ok: {mode.value} certs-dir in {certs}; config in {config}; the dev server is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
