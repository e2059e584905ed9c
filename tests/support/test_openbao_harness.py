"""Tests for tests/support/openbao.py against the real ``bao`` binary.

They prove what outage tests will rely on: the PKI outlives a stop, a stopped
server refuses connections, a second harness on the same directory takes over the
keys, and a server that cannot come up fails loudly without leaving a process.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import psutil
import pytest
import requests

from .openbao import PersistentOpenBao, refuses_connections

pytestmark = pytest.mark.integration  # real OpenBao server


def gone(pid: int) -> bool:
    """stop() reaps the server, so not even a zombie may be left."""
    return not psutil.pid_exists(pid)


def servers_using(bao: PersistentOpenBao) -> list[int]:
    """Pids of every process started with this harness's config file."""
    config = f"-config={bao.config_path}"
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if config in (proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


def ca_pem(bao: PersistentOpenBao, mount: str) -> str:
    response = requests.get(f"{bao.addr}/v1/{mount}/ca/pem", timeout=10)  # unauthenticated by design
    response.raise_for_status()
    return response.text


def test_pki_survives_a_restart(tmp_path: Path) -> None:
    bao = PersistentOpenBao(tmp_path)
    try:
        bao.start()
        first_pid = bao.pid
        assert servers_using(bao) == [first_pid]
        bao.api("POST", "/v1/sys/mounts/pki-outage", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
        generated = bao.api("POST", "/v1/pki-outage/root/generate/internal",
                            {"common_name": "outage test root", "ttl": "87600h", "key_type": "ec"})
        before = ca_pem(bao, "pki-outage")
        assert before.strip() == generated["data"]["certificate"].strip()

        bao.stop()
        assert gone(first_pid)
        assert refuses_connections(bao.port)
        assert not bao.running

        bao.start()
        assert bao.pid != first_pid
        assert requests.get(f"{bao.addr}/v1/sys/health", timeout=10).json()["sealed"] is False
        assert ca_pem(bao, "pki-outage") == before
        assert bao.api("GET", "/v1/auth/token/lookup-self")["data"]["policies"] == ["root"]  # same root token
        assert "starting on" in bao.log_text() and bao.log_text().count("--- tests/support/openbao.py") == 2
    finally:
        bao.stop()
    bao.stop()  # idempotent
    assert refuses_connections(bao.port)


def test_a_second_harness_on_the_same_dir_reuses_the_keys(tmp_path: Path) -> None:
    with PersistentOpenBao(tmp_path) as first:
        token = first.root_token
        first.api("POST", "/v1/sys/mounts/kept", {"type": "pki"})
    keys = tmp_path / "init.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert token in keys.read_text()

    second = PersistentOpenBao(tmp_path)  # another port, same storage
    assert second.root_token == token
    with second:
        assert second.api("GET", "/v1/auth/token/lookup-self")["data"]["policies"] == ["root"]
        assert "kept/" in second.api("GET", "/v1/sys/mounts")["data"]
    assert refuses_connections(second.port)


def test_a_server_that_cannot_listen_fails_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        bao = PersistentOpenBao(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="bao server exited with 1 before it could answer HTTP") as caught:
            bao.start()
    assert "address already in use" in str(caught.value)
    assert not bao.running
    assert servers_using(bao) == []
    with pytest.raises(RuntimeError, match="not running"):
        _ = bao.pid


def test_a_server_that_is_too_slow_is_stopped(tmp_path: Path) -> None:
    bao = PersistentOpenBao(tmp_path)
    with pytest.raises(RuntimeError, match="did not answer HTTP in time; log tail"):
        bao.start(timeout=0)
    assert servers_using(bao) == []
    assert not bao.running
    assert refuses_connections(bao.port)


def test_start_twice_is_an_error(tmp_path: Path) -> None:
    with PersistentOpenBao(tmp_path) as bao, pytest.raises(RuntimeError, match="already running"):
        bao.start()


def test_root_token_before_first_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="has not been initialised yet"):
        _ = PersistentOpenBao(tmp_path).root_token
