"""The ``ui.acme_*`` keys: what they parse to, what they refuse together (exit 2, one line), their env overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vaultpki.config import parse
from vaultpki.config.records import AcmeConfig
from vaultpki.errors import ConfigError

ENV = {"VAULT_ADDR": "https://vault.example.com:8200"}
LE = "https://acme-v02.api.letsencrypt.org/directory"


def _doc(**ui: Any) -> dict[str, Any]:
    return {"node": {"hosts": ["n1"]}, "ui": {"hosts": ["console.example.com"], **ui}}


def _acme(**ui: Any) -> AcmeConfig | None:
    return parse(_doc(**ui), ENV).ui_acme


def test_no_directory_no_acme() -> None:
    assert _acme() is None


def test_http01_standalone_defaults() -> None:
    acme = _acme(acme_directory=LE, acme_email="ops@example.com")
    assert acme == AcmeConfig(directory=LE, email="ops@example.com", challenge="http-01", http_port=80)
    assert acme.responder_text() == "http-01 on a standalone listener on port 80"


def test_http01_webroot_and_port() -> None:
    assert _acme(acme_directory=LE, acme_http_port=8080).http_port == 8080      # type: ignore[union-attr]
    acme = _acme(acme_directory=LE, acme_webroot="/var/www/html")
    assert acme is not None and acme.webroot == Path("/var/www/html")
    assert acme.responder_text() == "http-01 through the webroot /var/www/html"


def test_dns01_rfc2136() -> None:
    acme = _acme(acme_directory=LE, acme_challenge="dns-01", acme_dns_server="192.0.2.53:5353",
                 acme_tsig_key_file="/etc/vaultpki/tsig.key", acme_dns_resolver=["192.0.2.54", "[2001:db8::53]:53"])
    assert acme is not None
    assert acme.dns_server == ("192.0.2.53", 5353)
    assert acme.tsig_key_file == Path("/etc/vaultpki/tsig.key")
    assert acme.dns_resolvers == (("192.0.2.54", 53), ("2001:db8::53", 53))
    assert acme.responder_text() == "dns-01 by RFC 2136 update to 192.0.2.53:5353 (TSIG key /etc/vaultpki/tsig.key)"


def test_dns01_hook_and_internal_ca_with_eab() -> None:
    acme = _acme(acme_directory="https://vault.internal:8200/v1/pki_ui/acme/directory", acme_challenge="dns-01",
                 acme_dns_hook=["/usr/local/bin/dns-add"], acme_dns_cleanup_hook=["/usr/local/bin/dns-remove"],
                 acme_eab_kid="kid-1", acme_eab_hmac_file="/etc/vaultpki/eab.key", acme_ca_cert="/etc/vaultpki/ca.pem",
                 acme_trust="/etc/vaultpki/ui-roots.pem")
    assert acme is not None
    assert (acme.dns_hook, acme.dns_cleanup_hook) == (("/usr/local/bin/dns-add",), ("/usr/local/bin/dns-remove",))
    assert (acme.eab_kid, acme.eab_hmac_file) == ("kid-1", Path("/etc/vaultpki/eab.key"))
    assert (acme.ca_cert, acme.trust) == (Path("/etc/vaultpki/ca.pem"), Path("/etc/vaultpki/ui-roots.pem"))
    assert acme.responder_text() == "dns-01 through the hook /usr/local/bin/dns-add"


def test_http_to_loopback_only() -> None:
    assert _acme(acme_directory="http://127.0.0.1:8210/v1/pki/acme/directory") is not None
    assert _acme(acme_directory="http://localhost:8210/v1/pki/acme/directory") is not None


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"pki": {"ui_mount": "pki-web"}, "ui": {"hosts": ["c"], "acme_directory": LE}},
     "ui.acme_directory and pki.ui_mount are both set"),
    ({"ui": {"acme_directory": LE}}, "ui.acme_directory is set but ui.hosts is empty"),
    (_doc(acme_email="ops@example.com"), "ui.acme_email is set but ui.acme_directory is not"),
    (_doc(acme_directory="ftp://ca.example.com/dir"), "is not an https:// URL"),
    (_doc(acme_directory="http://ca.example.com/dir"), "plain http:// only to a CA on this machine"),
    (_doc(acme_directory="https://ca.example.com:99999/dir"), "is not a valid URL"),
    (_doc(acme_directory=LE, acme_email="ops"), "ui.acme_email 'ops' is not one e-mail address"),
    (_doc(acme_directory=LE, acme_email="a@b.c, d@e.f"), "is not one e-mail address"),
    (_doc(acme_directory=LE, acme_eab_kid="k"), "ui.acme_eab_kid and ui.acme_eab_hmac_file go together"),
    (_doc(acme_directory=LE, acme_challenge="tls-alpn-01"), "ui.acme_challenge = 'tls-alpn-01' is not one of: http-01, dns-01"),
    (_doc(acme_directory=LE, acme_http_port=0), "ui.acme_http_port = 0 is not a TCP port"),
    (_doc(acme_directory=LE, acme_http_port=80, acme_webroot="/w"), "ui.acme_webroot and ui.acme_http_port are both set"),
    (_doc(acme_directory=LE, acme_dns_server="192.0.2.53"), "ui.acme_dns_server is set but ui.acme_challenge = 'http-01'"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_webroot="/w"),
     "ui.acme_webroot is set but ui.acme_challenge = 'dns-01'"),
    (_doc(acme_directory=LE, acme_challenge="dns-01"), "needs ui.acme_dns_server with ui.acme_tsig_key_file"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_dns_server="192.0.2.53"),
     "ui.acme_dns_server and ui.acme_tsig_key_file go together"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_dns_server="192.0.2.53", acme_tsig_key_file="/k",
          acme_dns_hook=["h"]), "ui.acme_dns_server and ui.acme_dns_hook are both set"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_dns_server="ns1.example.com", acme_tsig_key_file="/k"),
     "ui.acme_dns_server 'ns1.example.com' is not an IP address"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_dns_hook=["h"], acme_dns_resolver=["192.0.2.1:0"]),
     "ui.acme_dns_resolver '192.0.2.1:0' is not an IP address"),
    (_doc(acme_directory=LE, acme_challenge="dns-01", acme_dns_cleanup_hook=["c"], acme_dns_server="192.0.2.53",
          acme_tsig_key_file="/k"), "ui.acme_dns_cleanup_hook is set but ui.acme_dns_hook is not"),
    ({"ui": {"hosts": ["c.example.com", "192.0.2.7"], "acme_directory": LE, "acme_challenge": "dns-01",
             "acme_dns_hook": ["h"]}}, "dns-01' cannot prove an IP address (192.0.2.7 in ui.hosts)"),
    (_doc(acme_directory=LE, acme_dns_hook=[""]), "ui.acme_dns_hook must be a list of non-empty strings"),
])
def test_refused(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(doc, ENV)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_env_overrides_reach_every_acme_key() -> None:
    env = {**ENV, "VAULTPKI_UI_ACME_DIRECTORY": LE, "VAULTPKI_UI_ACME_CHALLENGE": "dns-01",
           "VAULTPKI_UI_ACME_DNS_HOOK": "/bin/add,--zone", "VAULTPKI_UI_ACME_DNS_RESOLVER": "192.0.2.1,192.0.2.2:5353"}
    acme = parse(_doc(), env).ui_acme
    assert acme is not None and acme.challenge == "dns-01" and acme.dns_hook == ("/bin/add", "--zone")
    assert acme.dns_resolvers == (("192.0.2.1", 53), ("192.0.2.2", 5353))
    assert parse(_doc(acme_directory=LE), {**ENV, "VAULTPKI_UI_ACME_HTTP_PORT": "8080"}).ui_acme.http_port == 8080  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"ui.acme_http_port = 0 is not a TCP port .*\(set by \$VAULTPKI_UI_ACME_HTTP_PORT\)"):
        parse(_doc(acme_directory=LE), {**ENV, "VAULTPKI_UI_ACME_HTTP_PORT": "0"})
