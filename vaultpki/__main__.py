"""``python -m vaultpki``."""

from .cli import main

main(prog_name="vaultpki")
