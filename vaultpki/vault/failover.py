"""hvac's adapter with failover: the one place every request to Vault goes through.

Each request is tried at the configured addresses in turn, the last one that answered first, each try one
``transport.send`` (the whole of it within ``vault.timeout``, the body capped, redirects kept to the
configured addresses). Retries over time, tokens and the PKI endpoints are the layers above
(``session.VaultSession``, ``client.HttpVault``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import hvac.adapters
import hvac.exceptions as hvac_errors
import msgspec
import msgspec.json
import requests

from vaultpki.vault.transport import MAX_VAULT_BODY, Answer, origin, send

__all__ = ["VaultAdapter"]

# Vault's answers that mean "not now, here": sealed/standby/unavailable, overloaded, uninitialised, server errors.
_TRANSIENT_STATUS = frozenset({429, 500, 501, 502, 503, 504})


class VaultAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac is untyped
    """hvac's adapter, the one place every request to Vault goes through.

    Each request is tried at the configured addresses in turn, the last one that answered first; a
    connection failure or a transient status (sealed, standby, overloaded) moves on to the next. Each try
    is one ``transport.send``: the whole of it within ``timeout``, the body capped, redirects followed
    only to a configured address. Answers: the decoded JSON (None for an empty body); a refusal is
    raised as hvac's exception for its status (hvac's own methods rely on them), a transport failure
    as ``requests``'.
    """

    def __init__(self, addrs: Sequence[str], session: requests.Session, timeout: float, env: Mapping[str, str],
                 token: str | None = None, namespace: str | None = None) -> None:
        super().__init__(base_uri=addrs[0], token=token, session=session, timeout=timeout, namespace=namespace)
        self.addrs = tuple(a.rstrip("/") for a in addrs)
        self.active = 0
        self._timeout = timeout
        self._env = env
        self._allowed = frozenset(origin(a) for a in self.addrs)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, raise_exception: bool = True,
                **kwargs: Any) -> Any:
        body = kwargs.get("json")
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (kwargs.get("params") or {}).items()}
        target = "/" + url.lstrip("/") + (f"?{urlencode(params)}" if params else "")
        sent = {"Content-Type": "application/json", "X-Vault-Request": "true", **(headers or {})}
        if self.token:
            sent["X-Vault-Token"] = self.token
        if self.namespace:
            sent["X-Vault-Namespace"] = self.namespace
        data = None if body is None else msgspec.json.encode(body)
        failure: Exception | None = None
        first = self.active
        for offset in range(len(self.addrs)):
            index = (first + offset) % len(self.addrs)
            try:
                answer = send(self.session, method.upper(), self.addrs[index] + target, timeout=self._timeout,
                                        limit=MAX_VAULT_BODY, env=self._env, allowed=self._allowed,
                                        headers=sent, body=data)
            except requests.exceptions.RequestException as exc:
                failure = exc
                continue
            decoded = _decode(answer)
            if answer.status in _TRANSIENT_STATUS:
                failure = _status_error(method, answer, decoded)
                continue
            self.active = index
            if answer.status >= 400 and raise_exception:
                raise _status_error(method, answer, decoded)
            return decoded
        assert failure is not None
        raise failure


def _decode(answer: Answer) -> Any:
    """The JSON of an answer; a body that is not JSON becomes an ``errors`` list saying so."""
    if not answer.body.strip():
        return None
    try:
        return msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        return {"errors": [f"HTTP {answer.status} with a body that is not JSON: {answer.body[:120]!r}"]}


def _status_error(method: str, answer: Answer, decoded: Any) -> hvac_errors.VaultError:
    errors = decoded.get("errors") if isinstance(decoded, dict) else None
    errors = [str(e) for e in errors] if isinstance(errors, list) and errors else [f"HTTP {answer.status}"]
    status = 502 if answer.status == 504 else answer.status       # hvac has no class for a gateway timeout
    error: hvac_errors.VaultError = hvac_errors.VaultError.from_status(status, errors=errors, method=method,
                                                                        url=answer.url)
    return error
