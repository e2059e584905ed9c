"""The HTTP under certbot's ``acme`` library: its ``ClientNetwork``, remembering the CA's last answer.

The library raises an ACME problem without the response it came in, but a ``rateLimited`` problem's
``Retry-After`` header is what tells us when to come back; so the last response is kept for
``problems.translate``. Nothing else of the protocol is done here.
"""

from __future__ import annotations

from typing import Any

import requests
from acme.client import ClientNetwork
from josepy.jwa import JWASignature
from josepy.jwk import JWK

import vaultpki

__all__ = ["Network"]

USER_AGENT = f"vaultpki/{getattr(vaultpki, '__version__', '0')} acme-python"
REQUEST_TIMEOUT = 30          # seconds for each request; the order has its own deadline on top


class Network(ClientNetwork):
    """``ClientNetwork`` with the last response kept and a bounded timeout per request."""

    def __init__(self, key: JWK, alg: JWASignature, verify: bool | str = True) -> None:
        # requests takes a CA bundle path where the library says verify_ssl: an internal CA's ACME over https.
        super().__init__(key, alg=alg, verify_ssl=verify, user_agent=USER_AGENT,   # type: ignore[arg-type]
                         timeout=REQUEST_TIMEOUT)
        self.last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response
