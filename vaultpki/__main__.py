"""``python -m vaultpki`` and the ``vaultpki`` console script."""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn


def run() -> NoReturn:
    """Start the CLI with the cyclic GC paused while modules load, and leave without a teardown.

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
    try:
        main(prog_name="vaultpki")
    except SystemExit as done:
        leave(done.code)
    leave(0)


def leave(code: str | int | None) -> NoReturn:
    """Exit as ``sys.exit(code)`` would, without tearing the interpreter down.

    The teardown frees every object of every loaded module one by one: ~25 ms of a ~130 ms cold
    command, spent after its work is done (Instagram skips it the same way). Every command has
    finished its work and closed its files, pools and connections by the time it returns; what is
    left to do is what the teardown would have done that matters: flush the log handlers and the
    standard streams. A stream that cannot be flushed (a closed pipe) gives exit status 120, as
    Python's own teardown does. Under a profiler or a tracer (cProfile, coverage), which write their
    results at exit, the ordinary exit is kept.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    if code is None or isinstance(code, int):
        status = code or 0
    else:
        print(code, file=sys.stderr)
        status = 1
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 120
    os._exit(status)


if __name__ == "__main__":
    run()
