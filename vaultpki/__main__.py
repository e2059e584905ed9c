"""``python -m vaultpki`` and the ``vaultpki`` console script."""

from __future__ import annotations

from vaultpki.cli.main import main


def run() -> None:
    """Run the CLI (click exits with the command's status)."""
    main(prog_name="vaultpki")


if __name__ == "__main__":
    run()
