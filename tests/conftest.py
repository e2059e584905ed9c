"""Shared test setup: a clean environment for every test (no VAULT_*/VAULTPKI_* leaking in)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "VAULTPKI_", "BAO_")):
            monkeypatch.delenv(name)
