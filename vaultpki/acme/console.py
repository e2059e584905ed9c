"""The DB Console's ``ui.crt`` from an ACME CA: the responder the configuration names, one order, the result
judged as CockroachDB and browsers will use it, and where it came from, kept in the certs-dir's state dir.

The caller writes the files in the same set as everything else (``ui.crt`` with the chain the CA sent,
``ui.key``, and ``ca-ui.crt``: the root the chain was verified to, which CockroachDB's own HTTPS client for the
console trusts instead of ``ca.crt``). The roots are read before the order, so a wrong ``ui.acme_trust`` costs
no order at a rate-limited CA. The account key lives in ``<certs-dir>/.vaultpki/acme/`` (0700), one per
directory URL, mode 0600; the record of where the current ``ui.crt`` came from beside it.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography import x509

from vaultpki.acme.account import AccountSettings, ExternalBinding, account_key_path, open_account
from vaultpki.acme.challenge import Responder
from vaultpki.acme.dns01 import Hook, Nameserver, Rfc2136, bind_key_file
from vaultpki.acme.http01 import Standalone, Webroot
from vaultpki.acme.order import AcmeIssued, order_certificate
from vaultpki.config.records import AcmeConfig
from vaultpki.core import crypto
from vaultpki.core.layout import CA_UI_FILE, Eku, FileContent, split_hosts
from vaultpki.core.validate import verify_chain
from vaultpki.errors import ConfigError, IssuanceRefused, StoreError
from vaultpki.files import NotReadable, read_regular
from vaultpki.store.certs_dir import CertsDir

__all__ = [
    "ORIGIN_RECORD", "AcmeUi", "UiOrigin", "acme_state_dir", "judge", "load_anchors", "obtain_ui", "read_origin",
    "responder", "write_origin",
]

ORIGIN_RECORD = "acme-ui-origin.json"     # a record of the state dir (vaultpki.store)
MAX_ROOTS_BYTES = 4 << 20            # a system bundle is a few hundred KiB
_SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


class UiOrigin(msgspec.Struct, frozen=True):
    """Where the current ``ui.crt`` came from: what ``status`` shows."""

    directory: str
    account_url: str
    order_url: str
    serial: str
    not_after: dt.datetime
    challenge: str                   # which challenge was answered where
    root: str                        # the subject of the root the chain was verified to (ca-ui.crt)


class AcmeUi(msgspec.Struct, frozen=True):
    files: tuple[FileContent, ...]   # ui.crt, ui.key, ca-ui.crt
    origin: UiOrigin


def acme_state_dir(state_dir: Path) -> Path:
    """Where the account keys and the origin record live: under the certs-dir's ``.vaultpki``."""
    return state_dir / "acme"


def responder(acme: AcmeConfig) -> Responder:
    """The challenge responder ``[ui]`` names."""
    if acme.challenge == "http-01":
        return Webroot(acme.webroot) if acme.webroot is not None else Standalone(acme.http_port)
    check = [Nameserver(address, port) for address, port in acme.dns_resolvers] or None
    if acme.dns_server is not None and acme.tsig_key_file is not None:
        return Rfc2136(Nameserver(*acme.dns_server), bind_key_file(acme.tsig_key_file), check=check)
    return Hook(acme.dns_hook, acme.dns_cleanup_hook or None, check=check)


def load_anchors(acme: AcmeConfig) -> list[x509.Certificate]:
    """The roots the issued chain must reach: ``ui.acme_trust``, else the system's bundle."""
    path = acme.trust or _system_bundle()
    what = "ui.acme_trust" if acme.trust else "the system's CA bundle"
    try:
        data, _st = read_regular(path, MAX_ROOTS_BYTES)
        roots = crypto.load_certs(data)
    except NotReadable as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{what} {path} holds no readable certificate: {exc}") from None
    if not roots:
        raise ConfigError(f"{what} {path} holds no certificate")
    return roots


def _system_bundle() -> Path:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *_SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    raise ConfigError("no system CA bundle found to verify the ACME chain: set ui.acme_trust")


def obtain_ui(acme: AcmeConfig, hosts: Sequence[str], state_dir: Path, key_type: crypto.KeyType, key_bits: int,
              now: dt.datetime) -> AcmeUi:
    """A new ``ui.crt`` for *hosts* from the CA of ``acme``, validated; nothing written but the account key (under
    *state_dir*, the certs-dir's ``.vaultpki``, which the store made)."""
    anchors = load_anchors(acme)
    state = acme_state_dir(state_dir)
    try:
        state.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot make the ACME state dir {state}: {exc.strerror or exc}") from None
    eab = ExternalBinding(acme.eab_kid, acme.eab_hmac_file) if acme.eab_kid and acme.eab_hmac_file else None
    settings = AccountSettings(directory_url=acme.directory, key_file=account_key_path(state, acme.directory),
                               contact_email=acme.email, eab=eab,
                               verify=str(acme.ca_cert) if acme.ca_cert is not None else True)
    account = open_account(settings)
    key = crypto.generate_key(key_type, key_bits)
    issued = order_certificate(account, hosts, responder(acme), key)
    return judge(issued, hosts, anchors, key, now, responder_text=acme.responder_text())


def judge(issued: AcmeIssued, hosts: Sequence[str], anchors: Sequence[x509.Certificate], key: crypto.PrivateKey,
          now: dt.datetime, responder_text: str) -> AcmeUi:
    """The files of an issued certificate, or IssuanceRefused naming everything wrong with it."""
    chain = crypto.load_certs(issued.chain_pem)
    leaf = crypto.describe(chain[0])
    dns, ips = split_hosts(hosts)
    problems = []
    if not crypto.key_matches(chain[0], key):
        problems.append("it is not for the key of our CSR")
    missing = sorted(set(dns) - {n.lower() for n in leaf.dns_sans}) + sorted(set(ips) - set(leaf.ip_sans))
    if missing:
        problems.append(f"its SANs lack {', '.join(missing)}")
    if leaf.is_ca:
        problems.append("it is a CA certificate, not a leaf")
    chain_problem = verify_chain(chain, anchors, now, {Eku.SERVER_AUTH})
    if chain_problem:
        problems.append(f"{chain_problem} [checked against the ACME trust roots]")
    if problems:
        raise IssuanceRefused(f"ACME: the certificate from {issued.directory_url} is refused: {'; '.join(problems)}; "
                              "keeping the current certificate")
    root = next(a for a in anchors if verify_chain(chain, [a], now, {Eku.SERVER_AUTH}) is None)
    served = [c for c in chain if c != root]        # the root is the client's to have, not the server's to send
    files = (FileContent("ui.crt", crypto.certs_to_pem(served), secret=False),
             FileContent("ui.key", issued.key_pem, secret=True),
             FileContent(CA_UI_FILE, crypto.certs_to_pem([root]), secret=False))
    origin = UiOrigin(directory=issued.directory_url, account_url=issued.account_url, order_url=issued.order_url,
                      serial=issued.serial, not_after=issued.not_after, challenge=responder_text,
                      root=root.subject.rfc4514_string())
    return AcmeUi(files=files, origin=origin)


def write_origin(store: CertsDir, origin: UiOrigin) -> None:
    """Kept as a record of the state dir once the set is written (the store's records: whole, 0600, never
    written through a link)."""
    store.write_record(ORIGIN_RECORD, msgspec.json.encode(origin))


def read_origin(store: CertsDir) -> UiOrigin | None:
    """Where the current ``ui.crt`` came from, when an ACME order of vaultpki's wrote it."""
    try:
        data = store.read_record(ORIGIN_RECORD)
        return None if data is None else msgspec.json.decode(data, type=UiOrigin)
    except (StoreError, msgspec.DecodeError, msgspec.ValidationError):
        return None
