"""The certs-dir adapter: the only code that writes the certs-dir."""
