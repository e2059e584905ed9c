"""The Vault adapter: one client for the node and admin sides, PKI endpoints, CA rotation, OCSP over HTTP."""
