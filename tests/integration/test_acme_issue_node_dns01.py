"""``issue-node`` with ``ui.acme_challenge = "dns-01"``: the TXT record published by RFC 2136 with the TSIG key
of a BIND key file (``ui.acme_tsig_key_file``) on a real BIND 9, which OpenBao's ACME server asks; ui.crt in the
same set as Vault's files. A key file that is not BIND's syntax is a configuration error before any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Deployment, run_cli
from tests.integration.test_cli_errors import one_error_line
from tests.support.acme_ca import AcmeCA, acme_ca
from tests.support.bind import Bind, bind_server
from vaultpki.config import dumps
from vaultpki.core import crypto
from vaultpki.core.layout import Mode

pytestmark = pytest.mark.integration

NAME = "console.acme.test"


@pytest.fixture(scope="module")
def bind() -> Iterator[Bind]:
    with bind_server("acme.test") as server:
        yield server


@pytest.fixture(scope="module")
def ca(bind: Bind) -> Iterator[AcmeCA]:
    with acme_ca() as server:
        server.mount("acme", dns_resolver=bind.address)
        yield server


def config_for(deploy: Callable[..., Deployment], ca: AcmeCA, bind: Bind, tmp_path: Path, key_file: Path) -> Path:
    dep = deploy(Mode.STANDARD, ui=False)
    trust = tmp_path / "acme-roots.pem"
    trust.write_bytes(ca.client.adapter.get("/v1/acme/ca/pem").text.encode())
    doc = dep.config_doc(tmp_path / "certs")
    doc["ui"] = {"hosts": [NAME], "acme_directory": f"{ca.server.addr}/v1/acme/acme/directory",
                 "acme_challenge": "dns-01", "acme_dns_server": bind.address, "acme_tsig_key_file": str(key_file),
                 "acme_trust": str(trust)}
    path = tmp_path / "vaultpki.toml"
    path.write_text(dumps(doc))
    return path


def test_dns01_through_rfc2136_with_a_bind_key_file(deploy: Callable[..., Deployment], ca: AcmeCA, bind: Bind,
                                                    tmp_path: Path) -> None:
    config = config_for(deploy, ca, bind, tmp_path, bind.key_file)
    token = {"VAULT_TOKEN": deploy(Mode.STANDARD, ui=False).server.root_token}
    dry = run_cli(["--config", str(config), "issue-node", "--dry-run"], token)
    assert f"answering dns-01 by RFC 2136 update to {bind.address} (TSIG key {bind.key_file})" in dry.stdout
    result = run_cli(["--config", str(config), "issue-node"], token)
    assert result.returncode == 0, result.stderr
    leaf = crypto.load_certs((tmp_path / "certs" / "ui.crt").read_bytes())[0]
    assert crypto.describe(leaf).dns_sans == (NAME,)
    assert bind.txt(f"_acme-challenge.{NAME}.") == set()              # removed after the order
    assert run_cli(["--config", str(config), "verify"], token).returncode == 0


def test_a_key_file_not_in_bind_syntax_is_refused_before_any_order(deploy: Callable[..., Deployment], ca: AcmeCA,
                                                                   bind: Bind, tmp_path: Path) -> None:
    config = config_for(deploy, ca, bind, tmp_path, bind.secret_file)  # the bare secret: no name, no algorithm
    token = {"VAULT_TOKEN": deploy(Mode.STANDARD, ui=False).server.root_token}
    before = set(ca.acme_certificates("acme"))
    one_error_line(run_cli(["--config", str(config), "issue-node"], token), 2,
                   f"the TSIG key file {bind.secret_file} is not a BIND key clause")
    assert set(ca.acme_certificates("acme")) == before
    assert not (tmp_path / "certs" / "ui.crt").exists()
