"""dns-01 (RFC 8555 8.4): a TXT record at ``_acme-challenge.<name>``, visible before the challenge is answered.

Two ways to publish it: an RFC 2136 dynamic update signed with TSIG (``Rfc2136``: BIND, Knot, PowerDNS,
Windows DNS, many providers' gateways), or a command of the operator's (``Hook``, like certbot's manual
auth/cleanup hooks) for anything else. Either way the record is then looked for, until a deadline, on the
zone's authoritative servers (or on the servers configured), because a CA that asks before the record has
reached them fails the authorization for good.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update
import msgspec

from vaultpki.acme.challenge import Task
from vaultpki.acme.problems import AcmeError, one_line
from vaultpki.daemon.reload_command import scrubbed_environment
from vaultpki.errors import ConfigError
from vaultpki.files import NotReadable, read_regular

__all__ = ["Hook", "Nameserver", "Rfc2136", "TsigKey", "bind_key_file", "wait_visible"]

QUERY_TIMEOUT = 5.0
POLL_INTERVAL = 1.0


class Nameserver(msgspec.Struct, frozen=True):
    address: str          # an IP address
    port: int = 53

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" if self.port != 53 else self.address


class TsigKey(msgspec.Struct, frozen=True):
    """A TSIG key: its name, algorithm, and the file holding its base64 secret (as in BIND's ``key`` clause)."""

    name: str
    secret_file: Path
    algorithm: str = "hmac-sha256"

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        try:
            raw, _st = read_regular(self.secret_file, 4096)
        except NotReadable as exc:
            raise ConfigError(f"the TSIG secret file {self.secret_file}: {exc}") from None
        text = raw.decode("ascii", errors="replace")
        clause = _BIND_KEY.search(text)
        secret = _BIND_SECRET.search(clause["body"]) if clause else None
        try:
            key = dns.tsig.Key(self.name, secret[1] if secret else text.strip(), self.algorithm)
        except Exception as exc:       # dnspython raises binascii / its own errors for a bad secret or algorithm
            raise ConfigError(f"the TSIG key {self.name!r} is unusable: {one_line(exc)}") from None
        return {key.name: key}


_BIND_KEY = re.compile(r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}')
_BIND_ALGORITHM = re.compile(r'algorithm\s+"?(?P<algorithm>[\w.-]+)"?\s*;')
_BIND_SECRET = re.compile(r'secret\s+"([A-Za-z0-9+/=]+)"\s*;')


def bind_key_file(path: Path) -> TsigKey:
    """The TSIG key of a BIND key file (``key "name" { algorithm hmac-sha256; secret "…"; };``, what
    ``tsig-keygen`` writes and ``named.conf`` includes): its name and algorithm now, its secret when used."""
    try:
        raw, _st = read_regular(path, 4096)
    except NotReadable as exc:
        raise ConfigError(f"the TSIG key file {path}: {exc}") from None
    clause = _BIND_KEY.search(raw.decode("ascii", errors="replace"))
    algorithm = _BIND_ALGORITHM.search(clause["body"]) if clause else None
    if not clause or not algorithm or not _BIND_SECRET.search(clause["body"]):
        raise ConfigError(f"the TSIG key file {path} is not a BIND key clause "
                          '(key "name" { algorithm hmac-sha256; secret "base64"; };), as tsig-keygen writes')
    return TsigKey(name=clause["name"], secret_file=path, algorithm=algorithm["algorithm"])


def _query_txt(name: str, server: Nameserver) -> set[str] | None:
    """The TXT strings at *name* on *server* (empty when none), or None when it did not answer."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    query.flags &= ~dns.flags.RD
    try:
        response = dns.query.udp(query, server.address, port=server.port, timeout=QUERY_TIMEOUT)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, server.address, port=server.port, timeout=QUERY_TIMEOUT)
    except (dns.exception.DNSException, OSError):
        return None
    values: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                values.add(b"".join(rdata.strings).decode("ascii", errors="replace"))
    return values


def authoritative_servers(name: str) -> list[Nameserver]:
    """The servers of the zone holding *name*, found with the system's resolver."""
    try:
        zone = dns.resolver.zone_for_name(name)
        servers = []
        for ns in dns.resolver.resolve(zone, dns.rdatatype.NS):
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    servers += [Nameserver(a.address) for a in dns.resolver.resolve(ns.target, rdtype)]
                except dns.resolver.NoAnswer:
                    pass
    except dns.exception.DNSException as exc:
        raise AcmeError(f"dns-01: cannot find the authoritative servers of {name}: {one_line(exc)}") from None
    if not servers:
        raise AcmeError(f"dns-01: the zone of {name} has no reachable authoritative server")
    return servers


def wait_visible(tasks: Sequence[Task], servers: Sequence[Nameserver] | None, deadline: float) -> None:
    """Poll until every task's TXT value is served by every server (the zone's own when *servers* is None)."""
    for task in tasks:
        targets = list(servers) if servers else authoritative_servers(task.record_name)
        waiting = set(range(len(targets)))
        while waiting:
            for index in sorted(waiting):
                values = _query_txt(task.record_name, targets[index])
                if values is not None and task.txt_value in values:
                    waiting.discard(index)
            if not waiting:
                break
            if time.monotonic() >= deadline:
                late = ", ".join(str(targets[i]) for i in sorted(waiting))
                raise AcmeError(f"dns-01: the TXT record {task.record_name} is not visible on {late} before the "
                                "order's deadline")
            time.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0)))


class Rfc2136:
    """Dynamic updates (RFC 2136) signed with TSIG, sent over TCP to the zone's primary server."""

    challenge_type = "dns-01"

    def __init__(self, server: Nameserver, key: TsigKey, zone: str | None = None, ttl: int = 60,
                 check: Sequence[Nameserver] | None = None) -> None:
        self.server, self.key, self.zone, self.ttl = server, key, zone, ttl
        self.check = list(check) if check else [server]     # the primary is authoritative: it sees it first
        self._added: list[tuple[str, str]] = []

    def describe(self) -> str:
        return f"dns-01 RFC 2136 update to {self.server}"

    def _zone_of(self, name: str) -> dns.name.Name:
        if self.zone:
            return dns.name.from_text(self.zone)
        # The zone cut as the primary sees it: the nearest enclosing name it has an SOA for.
        candidate = dns.name.from_text(name).parent()
        while True:
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            try:
                response = dns.query.udp(query, self.server.address, port=self.server.port, timeout=QUERY_TIMEOUT)
            except (dns.exception.DNSException, OSError) as exc:
                raise AcmeError(f"{self.describe()}: no answer to an SOA query: {one_line(exc)}") from None
            if any(r.rdtype == dns.rdatatype.SOA and r.name == candidate for r in response.answer):
                return candidate
            if candidate == dns.name.root:
                raise ConfigError(f"{self.describe()}: the server is authoritative for no zone above {name}")
            candidate = candidate.parent()

    def _send(self, name: str, value: str, add: bool) -> None:
        zone = self._zone_of(name)
        update = dns.update.UpdateMessage(zone, keyring=self.key.keyring(), keyname=dns.name.from_text(self.key.name),
                                          keyalgorithm=self.key.algorithm)
        relative = dns.name.from_text(name).relativize(zone)
        if add:
            update.add(relative, self.ttl, dns.rdatatype.TXT, f'"{value}"')
        else:
            update.delete(relative, dns.rdatatype.TXT, f'"{value}"')
        try:
            response = dns.query.tcp(update, self.server.address, port=self.server.port, timeout=QUERY_TIMEOUT)
        except dns.tsig.PeerError as exc:
            raise ConfigError(f"{self.describe()}: the server refused our TSIG key {self.key.name!r}: "
                              f"{type(exc).__name__}") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise AcmeError(f"{self.describe()}: {one_line(exc) or type(exc).__name__}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            what = "adding" if add else "removing"
            line = f"{self.describe()}: {what} {name} TXT refused with {dns.rcode.to_text(rcode)}"
            if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTZONE):
                raise ConfigError(f"{line} (check the zone, the TSIG key and the server's update policy)")
            raise AcmeError(line)

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        for task in tasks:
            self._send(task.record_name, task.txt_value, add=True)
            self._added.append((task.record_name, task.txt_value))
        wait_visible(tasks, self.check, deadline)

    def cleanup(self) -> None:
        added, self._added = self._added, []
        for name, value in added:
            try:
                self._send(name, value, add=False)
            except (AcmeError, ConfigError):
                pass              # a leftover TXT record does no harm, and the order's own error matters more


class Hook:
    """The operator's commands (no shell) publish and remove each record; told what through the environment.

    ``ACME_DOMAIN`` (the name being proved), ``ACME_RECORD`` (``_acme-challenge.<name>.``), ``ACME_VALIDATION``
    (the TXT value), ``ACME_TOKEN``, ``ACME_REMAINING_CHALLENGES`` and ``ACME_ALL_DOMAINS``, as certbot's
    manual hooks are told ``CERTBOT_DOMAIN``, ``CERTBOT_VALIDATION``…; not ``VAULTPKI_*``, which are
    configuration overrides. The environment is ours without the Vault credentials.
    """

    challenge_type = "dns-01"

    def __init__(self, auth_command: Sequence[str], cleanup_command: Sequence[str] | None = None,
                 check: Sequence[Nameserver] | None = None, timeout: float = 120.0) -> None:
        if not auth_command or not auth_command[0]:
            raise ConfigError("dns-01 hook: the auth command is empty")
        self.auth_command, self.cleanup_command = tuple(auth_command), tuple(cleanup_command or ())
        self.check, self.timeout = (list(check) if check else None), timeout
        self._presented: list[tuple[Task, Mapping[str, str]]] = []

    def describe(self) -> str:
        return f"dns-01 hook {self.auth_command[0]}"

    def _run(self, argv: Sequence[str], extra: Mapping[str, str], deadline: float) -> None:
        env = scrubbed_environment(os.environ)
        env.update(extra)
        budget = max(min(self.timeout, deadline - time.monotonic()), 1.0)
        try:
            done = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=budget,
                                  check=False)
        except FileNotFoundError:
            raise ConfigError(f"dns-01 hook command not found: {argv[0]!r}") from None
        except PermissionError:
            raise ConfigError(f"dns-01 hook command {argv[0]!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise AcmeError(f"dns-01 hook {argv[0]!r} did not finish within {budget:.0f}s") from None
        if done.returncode != 0:
            tail = [line for line in (done.stderr or done.stdout).decode(errors="replace").splitlines() if line.strip()]
            raise AcmeError(f"dns-01 hook {argv[0]!r} exited {done.returncode}"
                            + (f": {one_line(tail[-1])}" if tail else ""))

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        domains = ",".join(t.identifier for t in tasks)
        for index, task in enumerate(tasks):
            extra = {"ACME_DOMAIN": task.identifier, "ACME_RECORD": task.record_name,
                     "ACME_VALIDATION": task.txt_value, "ACME_TOKEN": task.token,
                     "ACME_REMAINING_CHALLENGES": str(len(tasks) - index - 1), "ACME_ALL_DOMAINS": domains}
            self._presented.append((task, extra))     # before running: a half-done auth hook is cleaned up too
            self._run(self.auth_command, extra, deadline)
        wait_visible(tasks, self.check, deadline)

    def cleanup(self) -> None:
        presented, self._presented = self._presented, []
        if not self.cleanup_command:
            return
        for _task, extra in presented:
            try:
                self._run(self.cleanup_command, extra, time.monotonic() + self.timeout)
            except (AcmeError, ConfigError):
                pass
