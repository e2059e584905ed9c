"""Run ``vaultpki sync`` as a real background process and read its JSON log as it goes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from vaultpki.dev.devserver import free_port


class SyncDaemon:
    """``vaultpki --config C sync --log-format json --metrics-addr 127.0.0.1:P`` in the background."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None, *extra: str) -> None:
        self.metrics_port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
        base.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultpki", "--config", str(config), "sync", "--log-format", "json",
             "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *extra],
            env=base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"msg": "non-json", "line": line.rstrip()}
            self._lines.put(event)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first new log event that matches; AssertionError with the log so far on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self._lines.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
                continue
            self.events.append(event)
            if match(event):
                return event
        raise AssertionError(f"no matching log event within {timeout}s (exit={self.proc.poll()}): {self.events[-15:]}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float | None:
        """One sample value from /metrics (``name`` may include a label selector as printed)."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{") and name.endswith("}"):
                return float(line.rsplit(" ", 1)[1])
            if line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                tail = [e for e in self.events[-5:]] + [self._lines.get() for _ in range(self._lines.qsize())]
                raise AssertionError(f"sync did not stop within {timeout}s after signal {sig}: {tail}") from None
        return self.proc.returncode

    def __enter__(self) -> SyncDaemon:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def msg(prefix: str) -> Callable[[dict[str, Any]], bool]:
    """Match a log event whose message starts with ``prefix``."""
    return lambda event: str(event.get("msg", "")).startswith(prefix)
