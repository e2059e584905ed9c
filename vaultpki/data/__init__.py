"""Data files shipped with vaultpki (roles.json: the shared Vault role definitions)."""
