"""certnames.classify(): CockroachDB's CertInfoFromFilename, name by name."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultpki.core.certnames import BadFilename, CertName, PemUsage, classify, key_for_cert


@pytest.mark.parametrize(
    ("filename", "usage", "name"),
    [
        pytest.param("ca.crt", PemUsage.CA, None, id="ca"),
        pytest.param("ca-client.crt", PemUsage.CLIENT_CA, None, id="ca-client"),
        pytest.param("ca-client-tenant.crt", PemUsage.TENANT_CA, None, id="ca-client-tenant"),
        pytest.param("ca-ui.crt", PemUsage.UI_CA, None, id="ca-ui"),
        pytest.param("node.crt", PemUsage.NODE, None, id="node"),
        pytest.param("ui.crt", PemUsage.UI, None, id="ui"),
        pytest.param("client.marc.crt", PemUsage.CLIENT, "marc", id="client-marc"),
        pytest.param("client.node.crt", PemUsage.CLIENT, "node", id="client-node"),
        pytest.param("client.foo.bar.crt", PemUsage.CLIENT, "foo.bar", id="client-dotted-user"),
        pytest.param("client...x.crt", PemUsage.CLIENT, "..x", id="client-leading-dots-user"),
        pytest.param("client-tenant.12.crt", PemUsage.TENANT, "12", id="client-tenant-numeric"),
        pytest.param("client-tenant.0.crt", PemUsage.TENANT, "0", id="client-tenant-zero"),
        pytest.param("client-tenant.18446744073709551615.crt", PemUsage.TENANT, "18446744073709551615",
                     id="client-tenant-max-uint64"),
        pytest.param("tenant-signing.7.crt", PemUsage.TENANT_SIGNING, "7", id="tenant-signing-numeric"),
    ],
)
def test_recognised_names(filename: str, usage: PemUsage, name: str | None) -> None:
    result = classify(filename)
    assert result == CertName(filename, usage, name, None)
    assert result.error is None


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("node.key", id="node-key"),
        pytest.param("ca.key", id="ca-key"),
        pytest.param("client.marc.key", id="client-key"),
        pytest.param("x.pem", id="pem"),
        pytest.param("node.crt.tmp", id="crt-tmp"),
        pytest.param("..data", id="k8s-data-link"),
        pytest.param("..2025_01_01_00_00_00.123", id="k8s-timestamp-dir"),
        pytest.param("client.marc.key.pk8", id="pk8"),
        pytest.param("node.CRT", id="uppercase-suffix"),
        pytest.param("node.crt~", id="editor-backup"),
        pytest.param("", id="empty"),
        pytest.param(".vaultpki", id="state-dir"),
    ],
)
def test_non_crt_names_are_ignored_silently(filename: str) -> None:
    assert classify(filename) is None


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("CA.crt", id="uppercase-ca"),
        pytest.param("Node.crt", id="uppercase-node"),
        pytest.param(".node.crt", id="hidden"),
        pytest.param("ca.old.crt", id="ca-extra-part"),
        pytest.param("node.new.crt", id="node-extra-part"),
        pytest.param("ui.bak.crt", id="ui-extra-part"),
        pytest.param("client.crt", id="client-no-user"),
        pytest.param("client..crt", id="client-empty-user"),
        pytest.param("client-tenant.crt", id="client-tenant-no-id"),
        pytest.param("tenant-signing..crt", id="tenant-signing-empty-id"),
        pytest.param("foo.crt", id="unknown-prefix"),
        pytest.param("ca-sql.crt", id="ca-sql-not-loaded"),
        pytest.param("sql-server.crt", id="sql-server-not-loaded"),
        pytest.param("server-tenant.crt", id="old-server-tenant"),
        pytest.param(".crt", id="only-suffix"),
    ],
)
def test_bad_crt_names_raise(filename: str) -> None:
    with pytest.raises(BadFilename) as info:
        classify(filename)
    assert filename in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("filename", "usage", "name"),
    [
        pytest.param("client-tenant.abc.crt", PemUsage.TENANT, "abc", id="tenant-alpha"),
        pytest.param("tenant-signing.-1.crt", PemUsage.TENANT_SIGNING, "-1", id="signing-negative"),
        pytest.param("client-tenant.18446744073709551616.crt", PemUsage.TENANT, "18446744073709551616",
                     id="tenant-uint64-overflow"),
        pytest.param("client-tenant.+5.crt", PemUsage.TENANT, "+5", id="tenant-plus-sign"),
        pytest.param("client-tenant.1.2.crt", PemUsage.TENANT, "1.2", id="tenant-dotted"),
        pytest.param("client-tenant.\u0661\u0662.crt", PemUsage.TENANT, "\u0661\u0662", id="tenant-arabic-digits"),
        pytest.param("tenant-signing.\u00b2.crt", PemUsage.TENANT_SIGNING, "\u00b2", id="signing-superscript"),
    ],
)
def test_bad_tenant_ids_carry_error(filename: str, usage: PemUsage, name: str) -> None:
    result = classify(filename)
    assert result is not None
    assert result.usage is usage
    assert result.name == name
    assert result.error is not None
    assert "invalid tenant id" in result.error


def test_client_name_is_never_checked_as_a_number() -> None:
    assert classify("client.abc.crt").error is None
    assert classify("client.123.crt").error is None


@pytest.mark.parametrize(
    ("filename", "key_file"),
    [
        pytest.param("node.crt", "node.key", id="node"),
        pytest.param("ui.crt", "ui.key", id="ui"),
        pytest.param("client.marc.crt", "client.marc.key", id="client"),
        pytest.param("client.foo.bar.crt", "client.foo.bar.key", id="client-dotted"),
        pytest.param("client-tenant.12.crt", "client-tenant.12.key", id="tenant"),
        pytest.param("tenant-signing.3.crt", "tenant-signing.3.key", id="tenant-signing"),
        pytest.param("ca.crt", None, id="ca-no-key"),
        pytest.param("ca-client.crt", None, id="ca-client-no-key"),
        pytest.param("ca-client-tenant.crt", None, id="ca-client-tenant-no-key"),
        pytest.param("ca-ui.crt", None, id="ca-ui-no-key"),
    ],
)
def test_key_file_mapping(filename: str, key_file: str | None) -> None:
    result = classify(filename)
    assert result is not None
    assert result.key_file == key_file


def test_key_for_cert_only_swaps_the_suffix() -> None:
    assert key_for_cert("client.a.crt.crt") == "client.a.crt.key"


@pytest.mark.parametrize(
    ("usage", "is_ca"),
    [pytest.param(u, u.value.startswith("ca"), id=u.value) for u in PemUsage],
)
def test_is_ca_property(usage: PemUsage, is_ca: bool) -> None:
    assert usage.is_ca is is_ca


_name_chars = st.sampled_from(list("abcnodeuit-._.0123456789CAN/ \u00e9\u0301"))
_names = st.one_of(
    st.text(),
    st.text(_name_chars, max_size=25),
    st.text(_name_chars, max_size=20).map(lambda s: s + ".crt"),
    st.builds(
        lambda p, m: f"{p}.{m}.crt",
        st.sampled_from(["client", "client-tenant", "tenant-signing", "ca", "node", "ui", "x"]),
        st.text(_name_chars, max_size=15),
    ),
)


@settings(max_examples=400, deadline=None, database=None)
@given(_names)
def test_property_classify_outcomes(filename: str) -> None:
    try:
        result = classify(filename)
    except BadFilename:
        assert filename.endswith(".crt")
        return
    if not filename.endswith(".crt"):
        assert result is None
        return
    assert isinstance(result, CertName)
    assert result.filename == filename
    if result.usage in (PemUsage.CLIENT, PemUsage.TENANT, PemUsage.TENANT_SIGNING):
        assert result.name
        assert filename == f"{result.usage.value}.{result.name}.crt"
    else:
        assert filename == f"{result.usage.value}.crt"
        assert result.name is None
    if result.error is not None:
        assert result.usage in (PemUsage.TENANT, PemUsage.TENANT_SIGNING)
