"""Tests for the Go TLS consumer (tests/consumers/crdbtls via tests/support/gotls.py), on PKIs made here.

They prove the consumer is set up as CockroachDB is before the integration tests rely on its verdicts:
which pool verifies client certificates, which certificate a node dials with, the identity checks, the
console's files; and that it refuses what Go's crypto/x509 refuses where OpenSSL would not judge the
same (name constraints, path-length constraints, critical extensions, EKUs nested down the chain).
Nothing here needs Vault; a missing ``go`` is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import gotls
from .gotls_pki import CLIENT, HOST, SERVER, make_ca, standard_node, write_ca, write_leaf


def one(kind: str, server: Path, client: Path, **fields: str) -> gotls.Result:
    fields.setdefault("server_name", HOST)
    return gotls.check_one(gotls.Case(name=kind, kind=kind, server_dir=str(server), client_dir=str(client), **fields))


def test_missing_go_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    gotls.binary.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(RuntimeError, match="apt-get install golang-go"):
            gotls.binary()
    finally:
        gotls.binary.cache_clear()


def test_standard_set_rpc_sql_and_console(tmp_path: Path) -> None:
    ca = make_ca("ca")
    a, b = standard_node(tmp_path / "a", ca), standard_node(tmp_path / "b", ca)
    write_leaf(a, "client.root", ca, "root", [CLIENT])
    results = gotls.check([
        gotls.Case("rpc", "rpc", str(b), str(a), server_name=HOST),
        gotls.Case("rpc-ip", "rpc", str(b), str(a), server_name="127.0.0.1"),
        gotls.Case("sql-root", "sql", str(a), str(a), user="root", server_name=HOST),
        gotls.Case("sql-root-as-node", "sql", str(a), str(a), user="node", cert_user="root", server_name=HOST),
        gotls.Case("ui-falls-back-to-node-crt", "ui", str(a), str(b), server_name=HOST),
        gotls.Case("no-ca", "rpc", str(b), str(tmp_path / "empty"), server_name=HOST),
    ])
    by = {r.name: r for r in results}
    assert by["rpc"].ok and by["rpc"].peer_identity == "node" and by["rpc"].client_sent_certificate, by["rpc"]
    assert by["rpc-ip"].ok, by["rpc-ip"]
    assert by["sql-root"].ok and by["sql-root"].peer_identity == "root"
    assert by["sql-root-as-node"].error.startswith('certificate authentication failed for user "node"')
    assert by["ui-falls-back-to-node-crt"].ok and by["ui-falls-back-to-node-crt"].peer_identity == "node"
    assert (by["no-ca"].stage, by["no-ca"].error) == ("client-config", "problem with CA certificate: not found")


def test_ca_client_crt_alone_verifies_client_certificates(tmp_path: Path) -> None:
    """getClientCACertLocked: with ca-client.crt, ca.crt no longer vouches for any client, nodes included."""
    node_ca, client_ca = make_ca("node ca"), make_ca("client ca")
    server = standard_node(tmp_path / "server", node_ca)
    write_ca(server, "ca-client.crt", client_ca)
    split = standard_node(tmp_path / "split", node_ca)
    write_leaf(split, "client.node", client_ca, "node", [CLIENT], dns=["node"])
    tutorial = standard_node(tmp_path / "tutorial", node_ca)          # no client.node.crt: #47603
    write_leaf(tutorial, "client.root", node_ca, "root", [CLIENT])
    ok = one("rpc", server, split)
    assert ok.ok and ok.peer_identity == "node", ok
    for refused in (one("rpc", server, tutorial), one("sql", server, tutorial, user="root")):
        # Go's client sends no certificate that no CA the server names has issued.
        assert not refused.ok and refused.stage == "identity" and not refused.client_sent_certificate, refused


def test_user_certificates_identity_checks(tmp_path: Path) -> None:
    ca = make_ca("ca")
    node = standard_node(tmp_path / "node", ca)
    user = tmp_path / "user"
    write_ca(user, "ca.crt", ca)
    write_leaf(user, "client.marc", ca, "marc", [CLIENT], dns=["marc"])
    write_leaf(user, "client.sneaky", ca, "sneaky", [CLIENT], dns=["sneaky", "root"])
    assert one("sql", node, user, user="marc").peer_identity == "marc"
    rpc = one("rpc", node, user, user="marc")
    assert rpc.stage == "identity" and rpc.error.startswith("need root or node client cert"), rpc
    # Every DNS SAN of a client certificate is a principal (GetCertificateUserScope): a stray one grants it.
    assert one("sql", node, user, user="root", cert_user="sneaky").ok
    assert one("rpc", node, user, user="sneaky").peer_identity == "root"


def test_console_trusts_ca_ui_crt_when_present(tmp_path: Path) -> None:
    node_ca, ui_ca = make_ca("node ca"), make_ca("ui ca")
    server = standard_node(tmp_path / "server", node_ca)
    write_leaf(server, "ui", ui_ca, "console", [SERVER], dns=[HOST])
    client = standard_node(tmp_path / "client", node_ca)
    refused = one("ui", server, client)
    assert refused.refused_by == "client", refused
    assert refused.error.endswith("x509: certificate signed by unknown authority"), refused
    write_ca(client, "ca-ui.crt", ui_ca)
    accepted = one("ui", server, client)
    assert accepted.ok and accepted.peer_identity == "console", accepted


def test_an_intermediate_is_a_trust_anchor_and_path_length_counts_from_the_root(tmp_path: Path) -> None:
    root = make_ca("root", path_length=0)
    issuing = make_ca("issuing", parent=root)
    results = [one("rpc", standard_node(tmp_path / f"{t}-b", issuing, anchor), standard_node(tmp_path / f"{t}-a", issuing, anchor))
               for t, anchor in (("issuer", issuing), ("root", root))]
    assert results[0].ok, results[0]
    assert results[1].error.endswith("x509: too many intermediates for path length constraint"), results[1]


def test_name_constraints_refuse_the_node_san(tmp_path: Path) -> None:
    """An organisation intermediate that permits only its domains: `node` is outside them."""
    issuing = make_ca("org issuing", permitted_dns=["test.internal", "localhost"])
    standard = one("rpc", standard_node(tmp_path / "b", issuing), standard_node(tmp_path / "a", issuing))
    assert standard.error.endswith('x509: a root or intermediate certificate is not authorized to sign for this name: '
                                   'DNS name "node" is not permitted by any constraint'), standard
    # split-node: the server certificate names hosts only; client.node.crt carries `node` in its CN.
    split = {}
    for side in ("a", "b"):
        d = tmp_path / f"split-{side}"
        write_ca(d, "ca.crt", issuing)
        write_leaf(d, "node", issuing, HOST, [SERVER], dns=[HOST, "localhost"])
        write_leaf(d, "client.node", issuing, "node", [CLIENT], dns=["node"] if side == "a" else [])
        split[side] = d
    with_san, cn_only = one("rpc", split["b"], split["a"]), one("rpc", split["a"], split["b"])
    assert with_san.refused_by == "server" and 'DNS name "node" is not permitted' in with_san.error, with_san
    assert cn_only.ok and cn_only.peer_identity == "node", cn_only


def test_unhandled_critical_extension(tmp_path: Path) -> None:
    ca = make_ca("ca")
    a, b = standard_node(tmp_path / "a", ca), tmp_path / "b"
    write_ca(b, "ca.crt", ca)
    write_leaf(b, "node", ca, "node", [SERVER, CLIENT], dns=[HOST], critical_extension=True)
    result = one("rpc", b, a)
    assert result.refused_by == "client" and result.error.endswith("x509: unhandled critical extension"), result


def test_an_intermediates_eku_constrains_the_leaf(tmp_path: Path) -> None:
    """A client CA whose own EKU is serverAuth only cannot vouch for a client certificate."""
    root = make_ca("root")
    client_ca = make_ca("client ca", parent=root, ekus=[SERVER])
    server = standard_node(tmp_path / "server", root)
    user = tmp_path / "user"
    write_ca(user, "ca.crt", root)
    write_leaf(user, "client.marc", client_ca, "marc", [CLIENT])
    result = one("sql", server, user, user="marc")
    assert result.refused_by == "server", result
    assert result.error.endswith("x509: certificate specifies an incompatible key usage"), result
