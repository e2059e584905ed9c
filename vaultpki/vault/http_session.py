"""The ``requests`` session every HTTP request of vaultpki goes over, set up so that the safety ``transport.send``
promises holds: every connection watched by its request's deadline (``deadline.watch``), TLS from one
``ssl.SSLContext`` (the configured CA, else the system's trust store; host names and IP addresses checked;
the client certificate for cert auth), no retries of its own, and nothing taken from the environment.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

from vaultpki.vault.deadline import watch

__all__ = ["new_session", "tls_context"]


class _WatchedMixin:
    """A connection whose socket its request's deadline can shut down: a new one when it is made (before
    any TLS handshake), a reused keep-alive one when a request starts on it."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HttpConnection(_WatchedMixin, urllib3.connection.HTTPConnection):
    pass


class _HttpsConnection(_WatchedMixin, urllib3.connection.HTTPSConnection):
    pass


class _HttpPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HttpConnection


class _HttpsPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HttpsConnection


def _watched(manager: urllib3.poolmanager.PoolManager) -> urllib3.poolmanager.PoolManager:
    manager.pool_classes_by_scheme = {"http": _HttpPool, "https": _HttpsPool}
    return manager


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter with the watched connections, one TLS context, and no retries of its own."""

    def __init__(self, tls: ssl.SSLContext, pool: int, addresses: int) -> None:
        self._tls = tls
        super().__init__(pool_connections=max(1, addresses), pool_maxsize=max(1, pool), max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._tls, **kwargs)
        _watched(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.poolmanager.PoolManager:
        return _watched(super().proxy_manager_for(proxy, ssl_context=self._tls, **kwargs))

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust comes from the one TLS context alone: requests would add certifi's bundle to it."""


def tls_context(ca_cert: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """Verification against ``ca_cert`` (else the system's trust store), host names checked; a client
    certificate when given."""
    context = ssl.create_default_context(cafile=ca_cert)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def new_session(tls: ssl.SSLContext, pool: int = 1, addresses: int = 1) -> requests.Session:
    """A keep-alive session: up to ``pool`` connections to each of ``addresses`` origins."""
    session = requests.Session()
    session.trust_env = False                      # proxies are chosen by proxy_for; no netrc, no CA bundle variables
    session.headers["Accept-Encoding"] = "identity"   # the body cap counts what is read, not what it inflates to
    adapter = _Adapter(tls, pool, addresses)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
