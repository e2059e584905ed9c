"""PEM read as Go's ``encoding/pem`` reads it (``vaultpki.core.gopem``), with the Go TLS consumer as the judge.

Each case reshapes the PEM text of one file of a valid standard certs-dir (made in memory: a root, an
intermediate, node.crt holding the leaf and the intermediate) without changing a byte of DER. The Go
consumer (``tests/support/gotls.py``, CockroachDB's TLS set-up) says whether the node can still dial
itself; vaultpki's judgement must agree: no error where Go accepts, an error on that file where Go
refuses. Go quietly passes over a block that breaks its rules, so the files it refuses are the ones
whose certificates it never saw: two blocks run together on one line (issue 19), a BEGIN that does not
start a line, text after an END line, a header line among the data.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import gotls
from tests.support.gotls_pki import HOST, Ca, make_ca, standard_node, write_ca
from vaultpki.core import crypto, gopem
from vaultpki.core.snapshot import DirState, judge
from vaultpki.errors import CertificateError

from .conftest import make_dir_state

RUN_TOGETHER = b"-----END CERTIFICATE----------BEGIN CERTIFICATE-----"


def _lines(pem: bytes) -> list[bytes]:
    return pem.splitlines(keepends=True)


def _run_together(a: bytes, b: bytes) -> bytes:
    return a.rstrip(b"\n") + b


def _in_body(pem: bytes, extra: bytes) -> bytes:
    """``extra`` as a line of its own in the middle of the base64 data."""
    lines = _lines(pem)
    return b"".join([*lines[:3], extra, *lines[3:]])


# name -> (how node.crt's two blocks are written, whether Go accepts the set)
NODE_CRT: dict[str, tuple[Callable[[bytes, bytes], bytes], bool]] = {
    "canonical": (lambda leaf, inter: leaf + inter, True),
    "crlf": (lambda leaf, inter: (leaf + inter).replace(b"\n", b"\r\n"), True),
    "blanks-after-begin-and-end-lines": (lambda leaf, inter: (leaf + inter).replace(b"-----\n", b"-----  \t\n"), True),
    "no-final-newline": (lambda leaf, inter: (leaf + inter).rstrip(b"\n"), True),
    "text-around-blocks": (lambda leaf, inter: b"subject=CN=node\n" + leaf + b"\nissuer\n" + inter + b"done", True),
    "text-quoting-a-begin": (lambda leaf, inter: b"between -----BEGIN CERTIFICATE----- and END\n" + leaf + inter, True),
    "header-line-first": (lambda leaf, inter: leaf.replace(b"-----\n", b"-----\nComment: from vault\n", 1) + inter, True),
    "blank-line-in-data": (lambda leaf, inter: _in_body(leaf, b"\n") + inter, True),
    "indented-data": (lambda leaf, inter: b"".join(b"  " + ln if not ln.startswith(b"-----") else ln
                                                   for ln in _lines(leaf)) + inter, True),
    "run-together": (_run_together, False),
    "begin-not-at-line-start": (lambda leaf, inter: leaf + b" " + inter, False),
    "text-after-end": (lambda leaf, inter: leaf.replace(b"-----END CERTIFICATE-----", b"-----END CERTIFICATE----- x") + inter,
                       False),
    "header-line-among-data": (lambda leaf, inter: _in_body(leaf, b"Comment: not here\n") + inter, False),
    "end-names-another-type": (lambda leaf, inter: leaf.replace(b"END CERTIFICATE", b"END X509 CERTIFICATE") + inter,
                               False),
}


@pytest.fixture(scope="module")
def pki() -> tuple[Ca, Ca, Ca]:
    root = make_ca("pem root")
    return root, make_ca("pem intermediate", parent=root), make_ca("another root")


def _dir(base: Path, pki: tuple[Ca, Ca, Ca]) -> Path:
    root, inter, _ = pki
    return standard_node(base, inter, trust=root)


def _state(certs: Path) -> DirState:
    return make_dir_state({p.name: p.read_bytes() for p in certs.iterdir()}, path=str(certs))


def _errors(certs: Path) -> list[str]:
    return [str(p) for p in judge(_state(certs), dt.datetime.now(dt.UTC)) if p.severity == "error"]


def _rpc(name: str, certs: Path) -> gotls.Case:
    return gotls.Case(name=name, kind="rpc", server_dir=str(certs), client_dir=str(certs), server_name=HOST)


def test_vaultpki_judges_each_node_crt_shape_as_go_does(pki: tuple[Ca, Ca, Ca], tmp_path: Path) -> None:
    dirs: dict[str, Path] = {}
    for name, (shape, _) in NODE_CRT.items():
        certs = _dir(tmp_path / name, pki)
        node = (certs / "node.crt").read_bytes()
        split = node.index(b"-----END CERTIFICATE-----\n") + len(b"-----END CERTIFICATE-----\n")
        (certs / "node.crt").write_bytes(shape(node[:split], node[split:]))
        dirs[name] = certs
    assert RUN_TOGETHER in (dirs["run-together"] / "node.crt").read_bytes()
    results = {r.name: r for r in gotls.check([_rpc(name, certs) for name, certs in dirs.items()])}
    for name, (_, go_accepts) in NODE_CRT.items():
        go, errors = results[name], _errors(dirs[name])
        assert go.ok is go_accepts, (name, go)
        if go_accepts:
            assert errors == [], (name, errors)
        else:
            assert any(e.startswith("node.crt: ") for e in errors), (name, errors, go.error)
    # The case of the issue, in Go's words: no PEM data at all, because both blocks are passed over.
    assert "tls: failed to find any PEM data in certificate input" in results["run-together"].error


def test_a_ca_file_run_together_is_refused_as_go_refuses_it(pki: tuple[Ca, Ca, Ca], tmp_path: Path) -> None:
    root, _, other = pki
    bad = _dir(tmp_path / "bad", pki)
    (bad / "ca.crt").write_bytes(_run_together(other.pem(), root.pem()))
    good = _dir(tmp_path / "good", pki)
    write_ca(good, "ca.crt", other, root)
    results = gotls.check([_rpc("run-together", bad), _rpc("one-per-line", good)])
    assert results[1].ok, results[1]
    assert not results[0].ok, results[0]
    assert _errors(good) == []
    assert any(e.startswith("ca.crt: ") for e in _errors(bad)), _errors(bad)


def test_verify_names_the_file_and_why(pki: tuple[Ca, Ca, Ca], tmp_path: Path) -> None:
    """The real CLI: exit 1 and one line naming node.crt, the line of the block and the reason."""
    certs = _dir(tmp_path / "certs", pki)
    node = (certs / "node.crt").read_bytes()
    first = node.index(b"-----END CERTIFICATE-----\n") + len(b"-----END CERTIFICATE-----\n")
    (certs / "node.crt").write_bytes(_run_together(node[:first], node[first:]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "VAULTPKI_", "BAO_"))}
    result = subprocess.run([sys.executable, "-m", "vaultpki", "verify", "--certs-dir", str(certs)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("node.crt: ")]
    assert len(lines) == 1, result.stderr
    assert "the PEM block at line 1 (-----BEGIN CERTIFICATE-----) is not read by Go's encoding/pem" in lines[0]
    assert "its END line goes on after the closing -----" in lines[0] and "'-----BEGIN CERTIFICATE-----'" in lines[0]


# --- the decoder itself, case by case --------------------------------------------------------------

def test_decode_reads_what_go_reads_and_says_what_it_passes_over(pki: tuple[Ca, Ca, Ca]) -> None:
    root, inter, _ = pki
    blocks, skipped = gopem.decode(root.pem() + inter.pem())
    assert [(b.type, b.line) for b in blocks] == [("CERTIFICATE", 1), ("CERTIFICATE", len(_lines(root.pem())) + 1)]
    assert skipped == []
    blocks, skipped = gopem.decode(_run_together(root.pem(), inter.pem()))
    assert blocks == []
    assert [(s.line, s.reason.split(" (")[0]) for s in skipped] == [
        (1, "its END line goes on after the closing -----"), (len(_lines(root.pem())), "its -----BEGIN does not start a line")]


def test_a_begin_in_prose_is_no_block(pki: tuple[Ca, Ca, Ca]) -> None:
    """Text outside blocks is ignored, as Go ignores it, even when it quotes a BEGIN mid-line."""
    root = pki[0]
    data = b"paste it between -----BEGIN CERTIFICATE----- and the END line\n" + root.pem()
    blocks, skipped = gopem.decode(data)
    assert [b.line for b in blocks] == [2] and skipped == []
    assert crypto.load_certs(data) == [root.cert]


def test_load_certs_and_load_key_refuse_a_block_go_passes_over(pki: tuple[Ca, Ca, Ca]) -> None:
    root, inter, _ = pki
    with pytest.raises(CertificateError, match="is not read by Go's encoding/pem"):
        crypto.load_certs(_run_together(root.pem(), inter.pem()))
    key = crypto.key_to_pem(crypto.generate_key(crypto.KeyType.EC, 256))
    assert crypto.load_key(key) is not None
    with pytest.raises(CertificateError, match="its BEGIN line does not end with -----"):
        crypto.load_key(key.replace(b"KEY-----\n", b"KEY----- x\n", 1))
    # Go reads the headers of a legacy encrypted key: refused as encrypted, not as unparsable.
    headers = key.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n", 1)
    with pytest.raises(CertificateError, match="encrypted"):
        crypto.load_key(headers)
