"""What a challenge responder is given, and what it must do: publish every answer, then take them all away.

The order hands a responder one ``Task`` per authorization. ``present`` publishes all of them (and, for
dns-01, waits until they are visible) before any challenge is answered; ``cleanup`` runs after the order
whatever happened, and removes exactly what ``present`` put in place, even when ``present`` failed half-way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import msgspec

from vaultpki.acme.problems import AcmeError

__all__ = ["Responder", "Task", "check_token"]

# RFC 8555 8.1: a token is base64url without padding. It becomes a file name and a URL path, so a CA that
# sends anything else (a "../") is refused before it is used.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")


class Task(msgspec.Struct, frozen=True):
    """One authorization to prove: the identifier, the challenge's token, and what to publish."""

    identifier: str            # a DNS name (or an IP address, for http-01)
    token: str
    key_authorization: str     # the http-01 body: token "." account key thumbprint
    txt_value: str             # the dns-01 TXT value: base64url(SHA-256(key authorization))

    @property
    def record_name(self) -> str:
        """The dns-01 record, ``_acme-challenge.<name>.`` (a wildcard's ``*.`` dropped, RFC 8555 8.4)."""
        name = self.identifier.removeprefix("*.").rstrip(".")
        return f"_acme-challenge.{name}."


def check_token(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise AcmeError(f"ACME challenge: the CA sent a token that is not base64url: {token[:40]!r}")
    return token


class Responder(Protocol):
    """Publishes the answers to one kind of challenge (``challenge_type``: "http-01" or "dns-01")."""

    @property
    def challenge_type(self) -> str: ...

    def describe(self) -> str:
        """Where the answers go, for a dry run and for errors: "standalone on :80", "webroot /srv/www"…"""
        ...

    def present(self, tasks: Sequence[Task], deadline: float) -> None:
        """Publish every task's answer (and wait until it is visible) before ``deadline`` (time.monotonic)."""
        ...

    def cleanup(self) -> None:
        """Remove whatever ``present`` published; never raises for what is already gone."""
        ...
