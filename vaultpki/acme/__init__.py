"""ACME (RFC 8555): ``ui.crt`` from a public or internal ACME CA, over certbot's ``acme`` library.

One concept per module: the account (``account``), the order (``order``), the challenges (``challenge``,
``http01``, ``dns01``), how ACME problems become vaultpki errors (``problems``), and the HTTP under the
library (``network``); ``console`` puts them together for the DB Console's ``ui.crt``, as ``issue-node`` and
``sync`` use it.
"""
