"""``python -m vaultpki`` and the ``vaultpki`` console script."""

from __future__ import annotations

import gc


def run() -> None:
    """Start the CLI with the cyclic GC paused while modules load.

    Loading cryptography, hvac and click creates some hundred thousand objects and no
    garbage worth collecting; the collections that allocation would trigger cost ~10 %
    of a cold command's start-up. What was loaded is then frozen out of every later
    collection, which also keeps the long-running ``sync`` daemon's collections small.
    """
    gc.disable()
    try:
        from .cli import main
    finally:
        gc.freeze()
        gc.enable()
    main(prog_name="vaultpki")


if __name__ == "__main__":
    run()
