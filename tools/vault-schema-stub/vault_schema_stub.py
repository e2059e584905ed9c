"""Schema-only stand-in for the Terraform provider registry.terraform.io/hashicorp/vault (5.6.0 schema).

It exists so that `terraform validate` and `terraform test` (plan runs with `mock_provider "vault"`) can run
offline, where the real provider cannot be downloaded. It speaks the Terraform plugin protocol (v6) through
the PyPI package `tf`, serves the provider, resource and data-source schemas, and refuses every operation
that would need a Vault server.

The schemas are read from the jsii assembly (`package/.jsii`) and the generated JavaScript of the npm
package @cdktf/provider-vault 15.6.1, which was generated from hashicorp/vault 5.6.0. The tarball is
fetched and integrity-checked by tools/fetch-vault-schema.sh; its path comes from $VAULT_SCHEMA_STUB_TGZ.

What the package tells us, and therefore what this stand-in serves:
  * every resource and data-source type name;
  * every argument with its type, and whether it is required or optional;
  * every exported (computed-only) attribute with its type;
  * nested blocks with their nesting (list or set), max-1 blocks and required blocks;
  * list vs set vs map for collection attributes.
What it does not tell us (so is not served): provider-side defaults, ForceNew, Sensitive, ConflictsWith,
ExactlyOneOf, ValidateFunc, and whether an optional argument is also computed (only `id` is marked so).
A few enumerations that matter to vaultpki are checked by hand instead (see ENUM_CHECKS).

Usage:
  terraform-provider-vault                      (started by Terraform through dev_overrides)
  vault_schema_stub.py --describe TYPE [TGZ]    (print one resource/data-source schema as JSON, for humans)
  vault_schema_stub.py --summary [TGZ]          (print counts, for humans)
"""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tf import schema as tfschema
from tf.gen import tfplugin_pb2 as pb
from tf.iface import Config, CreateContext, DataSource, DeleteContext, ReadContext, ReadDataContext, Resource, State, UpdateContext
from tf.iface import Provider as TfProvider
from tf.runner import run_provider
from tf.types import TfType
from tf.utils import Diagnostics

PROVIDER_ADDRESS = "registry.terraform.io/hashicorp/vault"
SCHEMA_VERSION_NOTE = "hashicorp/vault 5.6.0 schema, from @cdktf/provider-vault 15.6.1"
TGZ_ENV = "VAULT_SCHEMA_STUB_TGZ"
REFUSAL_SUMMARY = "schema-only stand-in: cannot talk to Vault"
REFUSAL_DETAIL = (
    "This terraform-provider-vault is the offline schema stand-in from tools/vault-schema-stub "
    f"({SCHEMA_VERSION_NOTE}). It only serves schemas, for `terraform validate` and for `terraform test` "
    'runs that use mock_provider "vault". To talk to a real Vault or OpenBao, remove the dev_overrides entry '
    'for "hashicorp/vault" from the Terraform CLI configuration (TF_CLI_CONFIG_FILE) and use the real provider.'
)

# A cty type in its JSON wire form: "string", "number", "bool", "dynamic", ["list", T], ["set", T],
# ["map", T] or ["object", {name: T}].
CtyType = str | list[Any]
Nesting = Literal["list", "set"]


# --------------------------------------------------------------------------------------------------
# Schema model (plain data, no dependency on the plugin protocol)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    type: CtyType
    required: bool = False
    optional: bool = False
    computed: bool = False

    def as_json(self) -> dict[str, Any]:
        flags = [flag for flag in ("required", "optional", "computed") if getattr(self, flag)]
        return {"type": self.type, "flags": flags}


@dataclass(frozen=True)
class BlockSpec:
    name: str
    nesting: Nesting
    body: BodySpec
    min_items: int = 0
    max_items: int = 0  # 0 = unlimited

    def as_json(self) -> dict[str, Any]:
        return {"nesting": self.nesting, "min_items": self.min_items, "max_items": self.max_items, **self.body.as_json()}


@dataclass(frozen=True)
class BodySpec:
    attributes: tuple[AttributeSpec, ...] = ()
    blocks: tuple[BlockSpec, ...] = ()

    def attribute(self, name: str) -> AttributeSpec | None:
        return next((a for a in self.attributes if a.name == name), None)

    def block(self, name: str) -> BlockSpec | None:
        return next((b for b in self.blocks if b.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "attributes": {a.name: a.as_json() for a in self.attributes},
            "blocks": {b.name: b.as_json() for b in self.blocks},
        }


@dataclass(frozen=True)
class ProviderSpec:
    provider: BodySpec
    resources: Mapping[str, BodySpec]
    data_sources: Mapping[str, BodySpec]


# --------------------------------------------------------------------------------------------------
# Reading the schema out of the @cdktf/provider-vault tarball
# --------------------------------------------------------------------------------------------------

# Each property's doc text ends with a registry link whose anchor is the Terraform name:
#   {@link https://registry.terraform.io/providers/hashicorp/vault/5.6.0/docs/resources/pki_secret_backend_role#backend ...}
_DOC_ANCHOR = re.compile(r"/docs(?:/(?:resources|data-sources)/\w+)?#(\w+) ")
_TYPE_LINK = re.compile(r"\{@link \S+ (vault_\w+|vault)\}")
# One entry of a generated synthesizeHclAttributes() / <struct>ToHclTerraform() function.
_HCL_ENTRY = re.compile(r'^ +"?([A-Za-z0-9_]+)"?: \{\n\s+value: [^\n]*\n\s+isBlock: (true|false),\n\s+type: "(\w+)",', re.MULTILINE)
_HCL_END = "// remove undefined attributes"
_CDKTF_COLLECTIONS: dict[str, CtyType] = {
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
    "cdktf.AnyMap": ["map", "dynamic"],
    "cdktf.StringMapList": ["list", ["map", "string"]],
    "cdktf.NumberMapList": ["list", ["map", "number"]],
    "cdktf.BooleanMapList": ["list", ["map", "bool"]],
    "cdktf.AnyMapList": ["list", ["map", "dynamic"]],
    "cdktf.StringListList": ["list", ["list", "string"]],
    "cdktf.NumberListList": ["list", ["list", "number"]],
}
# The generated getters of exported attributes say what they read.
_GETTER_TYPES: dict[str, CtyType] = {
    "getStringAttribute": "string",
    "getNumberAttribute": "number",
    "getBooleanAttribute": "bool",
    "getListAttribute": ["list", "string"],
    "getNumberListAttribute": ["list", "number"],
    "getStringMapAttribute": ["map", "string"],
}
_PRIMITIVES: dict[str, CtyType] = {"string": "string", "number": "number", "boolean": "bool"}
_OWN_PREFIX = "@cdktf/provider-vault."


@dataclass(frozen=True)
class _HclEntry:
    is_block: bool
    kind: str  # "simple", "list", "set" or "map"


@dataclass
class _Assembly:
    types: dict[str, dict[str, Any]]
    js_by_module: dict[str, str]  # "pki-secret-backend-role" -> lib/pki-secret-backend-role/index.js
    _hcl_cache: dict[tuple[str, str], dict[str, _HclEntry]] = field(default_factory=dict)

    @classmethod
    def open(cls, tgz: Path) -> _Assembly:
        with tarfile.open(tgz) as tar:
            jsii = tar.extractfile("package/.jsii")
            if jsii is None:
                raise ValueError(f"{tgz}: package/.jsii is missing")
            types = json.load(jsii)["types"]
            js_by_module: dict[str, str] = {}
            for member in tar.getmembers():
                match = re.fullmatch(r"package/lib/([^/]+)/index\.js", member.name)
                stream = tar.extractfile(member) if match else None
                if match and stream is not None:
                    js_by_module[match.group(1)] = stream.read().decode()
        return cls(types, js_by_module)

    def module_js(self, fqn: str) -> str:
        """The generated JavaScript of the module that defines a jsii type."""
        return self.js_by_module[self.types[fqn]["locationInModule"]["filename"].split("/")[1]]

    def hcl_entries(self, fqn: str) -> dict[str, _HclEntry]:
        """Terraform names -> (is a block, list/set/map/simple), from the generated HCL synthesis code."""
        js = self.module_js(fqn)
        short = fqn.rsplit(".", 1)[1]
        if self.types[fqn].get("datatype"):
            start_marker = f"function {short[0].lower()}{short[1:]}ToHclTerraform(struct) {{"
        else:
            start_marker = "    synthesizeHclAttributes() {"
            start_marker_class = f"class {short} extends "
            js = js[js.index(start_marker_class) :]
        key = (fqn, start_marker)
        if key not in self._hcl_cache:
            start = js.index(start_marker)
            section = js[start : js.index(_HCL_END, start)]
            self._hcl_cache[key] = {m.group(1): _HclEntry(m.group(2) == "true", m.group(3)) for m in _HCL_ENTRY.finditer(section)}
        return self._hcl_cache[key]


def _tf_name(prop: Mapping[str, Any]) -> str | None:
    """Terraform name of a jsii property, read from its registry doc anchor (meta-arguments have none)."""
    docs = prop.get("docs", {})
    match = _DOC_ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
    return match.group(1) if match else None


def _union_members(jsii_type: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    members = jsii_type.get("union", {}).get("types", [jsii_type])
    return [m for m in members if m.get("fqn") != "cdktf.IResolvable"]


class _SchemaReader:
    def __init__(self, assembly: _Assembly) -> None:
        self.asm = assembly

    # -- types -------------------------------------------------------------------------------------

    def cty_type(self, jsii_type: Mapping[str, Any], collection_kind: str = "list") -> CtyType:
        members = _union_members(jsii_type)
        if len(members) != 1:
            return "dynamic"
        t = members[0]
        if "primitive" in t:
            return _PRIMITIVES.get(t["primitive"], "dynamic")
        if "collection" in t:
            element = self.cty_type(t["collection"]["elementtype"])
            if t["collection"]["kind"] == "map":
                return ["map", element]
            return ["set" if collection_kind == "set" else "list", element]
        fqn = t.get("fqn", "")
        if fqn in _CDKTF_COLLECTIONS:
            return _CDKTF_COLLECTIONS[fqn]
        return "dynamic"  # computed lists of objects: the shape is not modelled

    def struct_of(self, jsii_type: Mapping[str, Any]) -> tuple[str, bool] | None:
        """(struct fqn, is max-1) when a config property is a nested block of this provider."""
        for member in _union_members(jsii_type):
            if member.get("fqn", "").startswith(_OWN_PREFIX):
                return member["fqn"], True
            element = member.get("collection", {}).get("elementtype", {}).get("fqn", "")
            if element.startswith(_OWN_PREFIX):
                return element, False
        return None

    # -- bodies ------------------------------------------------------------------------------------

    def config_body(
        self, struct_fqn: str, hcl_owner_fqn: str, skip: frozenset[str] = frozenset()
    ) -> tuple[list[AttributeSpec], list[BlockSpec]]:
        """Arguments and blocks of a config struct. hcl_owner_fqn names the type whose HCL code describes it."""
        hcl = self.asm.hcl_entries(hcl_owner_fqn)
        attributes: list[AttributeSpec] = []
        blocks: list[BlockSpec] = []
        seen: set[str] = set(skip)
        for prop in self.asm.types[struct_fqn].get("properties", []):
            name = _tf_name(prop)
            if name is None or name in seen:
                continue
            seen.add(name)
            required = not prop.get("optional", False)
            entry = hcl.get(name, _HclEntry(False, "simple"))
            struct = self.struct_of(prop["type"])
            if struct is not None:
                nested_fqn, max_one = struct
                nested_attrs, nested_blocks = self.config_body(nested_fqn, nested_fqn)
                blocks.append(
                    BlockSpec(
                        name=name,
                        nesting="set" if entry.kind == "set" else "list",
                        body=BodySpec(tuple(nested_attrs), tuple(nested_blocks)),
                        min_items=1 if required else 0,
                        max_items=1 if max_one else 0,
                    )
                )
            else:
                # `id` is Optional+Computed in every SDKv2 resource; nothing else is known to be.
                attributes.append(
                    AttributeSpec(
                        name,
                        self.cty_type(prop["type"], entry.kind),
                        required=required,
                        optional=not required,
                        computed=name == "id",
                    )
                )
        return attributes, blocks

    def exported_attributes(self, class_fqn: str, already: set[str]) -> list[AttributeSpec]:
        """Computed-only attributes: read-only getters of the resource / data-source class."""
        cls = self.asm.types[class_fqn]
        js = self.asm.module_js(class_fqn)
        short = class_fqn.rsplit(".", 1)[1]
        body = js[js.index(f"class {short} extends ") :]
        out: list[AttributeSpec] = []
        for prop in cls.get("properties", []):
            camel = prop["name"]
            if prop.get("static") or not prop.get("immutable") or camel.endswith("Input"):
                continue
            getter = re.search(rf"get {re.escape(camel)}\(\) \{{\n\s+return ([^\n]+);", body)
            if getter is None:
                continue
            expr = getter.group(1)
            direct = re.search(r"this\.(get\w*Attribute|interpolationForAttribute)\('(\w+)'\)", expr)
            if direct:
                name = direct.group(2)
            else:  # `return this._x;` where the constructor did `this._x = new SomeList(this, "tf_name", ...)`
                field_match = re.fullmatch(r"this\.(_\w+)", expr)
                ctor = field_match and re.search(rf'this\.{re.escape(field_match.group(1))} = new [\w.]+\(this, "(\w+)"', body)
                if not ctor:
                    continue
                name = ctor.group(1)
            if name in already:
                continue
            already.add(name)
            kind = "set" if expr.startswith("cdktf.Fn.tolist(") else "list"
            cty = self.cty_type(prop["type"], kind)
            if cty == "dynamic" and direct:  # computed booleans are typed IResolvable in jsii
                cty = _GETTER_TYPES.get(direct.group(1), cty)
            out.append(AttributeSpec(name, cty, computed=True))
        return out

    def typed_class_body(self, class_fqn: str, skip: frozenset[str] = frozenset()) -> BodySpec:
        cls = self.asm.types[class_fqn]
        config_fqn = next(p["type"]["fqn"] for p in cls["initializer"]["parameters"] if p["name"] == "config")
        attributes, blocks = self.config_body(config_fqn, class_fqn, skip)
        attributes += self.exported_attributes(class_fqn, {a.name for a in attributes} | {b.name for b in blocks})
        return BodySpec(tuple(attributes), tuple(blocks))

    def classes(self, base: str) -> Iterator[tuple[str, str]]:
        """(Terraform type name, class fqn) of every generated class deriving from a cdktf base."""
        for fqn, t in self.asm.types.items():
            if t.get("kind") == "class" and t.get("base") == base:
                link = _TYPE_LINK.search(t.get("docs", {}).get("summary", ""))
                if link is None:
                    raise ValueError(f"{fqn}: no Terraform type name in its docs")
                yield link.group(1), fqn


def load_provider_spec(tgz: Path) -> ProviderSpec:
    reader = _SchemaReader(_Assembly.open(tgz))
    ((_, provider_fqn),) = reader.classes("cdktf.TerraformProvider")
    # `alias` is a Terraform meta-argument, not part of the provider's schema.
    provider = reader.typed_class_body(provider_fqn, skip=frozenset({"alias"}))
    provider = BodySpec(tuple(a for a in provider.attributes if not a.computed), provider.blocks)
    resources = {name: reader.typed_class_body(fqn) for name, fqn in reader.classes("cdktf.TerraformResource")}
    data_sources = {name: reader.typed_class_body(fqn) for name, fqn in reader.classes("cdktf.TerraformDataSource")}
    return ProviderSpec(provider, dict(sorted(resources.items())), dict(sorted(data_sources.items())))


# --------------------------------------------------------------------------------------------------
# Hand-written value checks (the package carries no ValidateFunc information)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnumCheck:
    allowed: frozenset[str]
    severity: Literal["error", "warning"]
    why: str


_KEY_GENERATION_TYPES = frozenset({"internal", "exported", "existing", "kms"})
_BUILTIN_SECRETS_ENGINES = frozenset(
    {
        "ad", "alicloud", "aws", "azure", "consul", "database", "gcp", "gcpkms", "kmip", "keymgmt", "kubernetes",
        "kv", "kv-v1", "kv-v2", "ldap", "mongodbatlas", "nomad", "openldap", "pki", "rabbitmq", "ssh", "terraform",
        "totp", "transform", "transit",
    }
)  # fmt: skip

ENUM_CHECKS: dict[tuple[str, str], EnumCheck] = {
    ("vault_pki_secret_backend_role", "key_type"): EnumCheck(
        frozenset({"rsa", "ec", "ed25519", "any"}), "error", "Vault accepts rsa, ec, ed25519 or any for a PKI role."
    ),
    ("vault_pki_secret_backend_root_cert", "type"): EnumCheck(
        _KEY_GENERATION_TYPES, "error", "This is the path segment of /root/generate/:type."
    ),
    ("vault_pki_secret_backend_intermediate_cert_request", "type"): EnumCheck(
        _KEY_GENERATION_TYPES, "error", "This is the path segment of /intermediate/generate/:type."
    ),
    ("vault_mount", "type"): EnumCheck(
        _BUILTIN_SECRETS_ENGINES,
        "warning",
        "It is not a built-in Vault/OpenBao secrets engine; ignore this if it is the name of a registered plugin.",
    ),
}


def check_enums(type_name: str, config: Config, diags: Diagnostics) -> None:
    for (checked_type, attribute), check in ENUM_CHECKS.items():
        value = config.get(attribute) if checked_type == type_name else None
        if not isinstance(value, str) or value in check.allowed:  # unset, unknown (a reference) or fine
            continue
        summary = f"Unexpected {type_name}.{attribute} value {value!r}"
        detail = f"Expected one of: {', '.join(sorted(check.allowed))}. {check.why} (Checked by the schema-only stand-in.)"
        if check.severity == "error":
            diags.add_error(summary, detail, path=[attribute])
        else:
            diags.add_warning(summary, detail, path=[attribute])


# --------------------------------------------------------------------------------------------------
# Plugin protocol adapter (package `tf`)
# --------------------------------------------------------------------------------------------------


class _WireType(TfType):
    """Any cty type, given as its JSON form; values pass through untouched (we never build state)."""

    def __init__(self, cty: CtyType) -> None:
        self.cty = cty

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any) -> Any:
        return value

    def tf_type(self) -> bytes:
        return json.dumps(self.cty, separators=(",", ":")).encode()


class _WireBlock(tfschema.NestedBlock):
    """`tf` only knows SET and SINGLE nesting; SDKv2 providers such as hashicorp/vault use LIST and SET."""

    _NESTING = {"list": pb.Schema.NestedBlock.NestingMode.LIST, "set": pb.Schema.NestedBlock.NestingMode.SET}

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__(spec.name, tfschema.NestMode.Set, _to_tf_block(spec.body), spec.min_items, spec.max_items)
        self.nesting = spec.nesting

    def to_pb(self) -> pb.Schema.NestedBlock:
        return pb.Schema.NestedBlock(
            type_name=self.type_name,
            block=self.block.to_pb(),
            nesting=self._NESTING[self.nesting],
            min_items=self.min_items or 0,
            max_items=self.max_items or 0,
        )

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any) -> Any:
        return value

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        return bool(a_decoded == b_decoded)


def _to_tf_attribute(spec: AttributeSpec) -> tfschema.Attribute:
    return tfschema.Attribute(
        spec.name, _WireType(spec.type), required=spec.required, optional=spec.optional, computed=spec.computed
    )


def _to_tf_block(body: BodySpec) -> tfschema.Block:
    return tfschema.Block(
        attributes=[_to_tf_attribute(a) for a in body.attributes],
        block_types=[_WireBlock(b) for b in body.blocks],
    )


def _to_tf_schema(body: BodySpec) -> tfschema.Schema:
    block = _to_tf_block(body)
    return tfschema.Schema(attributes=block.attributes, block_types=block.block_types, version=0)


def _refuse(diags: Diagnostics) -> None:
    diags.add_error(REFUSAL_SUMMARY, REFUSAL_DETAIL)


class _StubBase:
    """What every generated resource and data source shares: its name, its schema, validation."""

    type_name: str = ""
    tf_schema: tfschema.Schema = tfschema.Schema()

    def __init__(self, provider: VaultSchemaStub) -> None:
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return cls.type_name.removeprefix("vault_")

    @classmethod
    def get_schema(cls) -> tfschema.Schema:
        return cls.tf_schema

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)  # type: ignore[misc]
        check_enums(type_name, config, diags)


class StubResource(_StubBase, Resource):
    """Base of the generated resource classes: validates, then refuses every operation."""

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        _refuse(ctx.diagnostics)
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        _refuse(ctx.diagnostics)
        return None

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        _refuse(ctx.diagnostics)
        return None

    def delete(self, ctx: DeleteContext, current: State) -> None:
        _refuse(ctx.diagnostics)


class StubDataSource(_StubBase, DataSource):
    """Base of the generated data-source classes: validates, then refuses to read."""

    def read(self, ctx: ReadDataContext, config: Config) -> State | None:
        _refuse(ctx.diagnostics)
        return None


class VaultSchemaStub(TfProvider):
    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self._resources: list[type[Resource]] = [
            type(f"Stub_{name}", (StubResource,), {"type_name": name, "tf_schema": _to_tf_schema(body)})
            for name, body in spec.resources.items()
        ]
        self._data_sources: list[type[DataSource]] = [
            type(f"StubData_{name}", (StubDataSource,), {"type_name": name, "tf_schema": _to_tf_schema(body)})
            for name, body in spec.data_sources.items()
        ]

    def get_model_prefix(self) -> str:
        return "vault_"

    def full_name(self) -> str:
        return PROVIDER_ADDRESS

    def get_provider_schema(self, diags: Diagnostics) -> tfschema.Schema:
        return _to_tf_schema(self.spec.provider)

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        pass  # the schema itself (checked by Terraform) is all we know about the provider block

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        # Configuring is the first step of every plan/apply/refresh that would talk to Vault.
        # mock_provider never calls it, `terraform validate` neither.
        _refuse(diags)

    def get_resources(self) -> list[type[Resource]]:
        return self._resources

    def get_data_sources(self) -> list[type[DataSource]]:
        return self._data_sources


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _tgz_path(argv: list[str]) -> Path:
    value = argv[0] if argv else os.environ.get(TGZ_ENV, "")
    if not value:
        sys.exit(f"vault_schema_stub: set {TGZ_ENV} to the @cdktf/provider-vault 15.6.1 tarball (tools/fetch-vault-schema.sh)")
    path = Path(value)
    if not path.is_file():
        sys.exit(f"vault_schema_stub: {path} does not exist; run tools/fetch-vault-schema.sh")
    return path


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--describe"] and len(argv) >= 3:
        spec = load_provider_spec(_tgz_path(argv[3:]))
        name = argv[2]
        body = spec.provider if name == "provider" else spec.resources.get(name) or spec.data_sources.get(name)
        if body is None:
            sys.exit(f"vault_schema_stub: no resource or data source named {name}")
        print(json.dumps(body.as_json(), indent=2))
    elif argv[1:2] == ["--summary"]:
        spec = load_provider_spec(_tgz_path(argv[2:]))
        print(f"{SCHEMA_VERSION_NOTE}: {len(spec.resources)} resources, {len(spec.data_sources)} data sources")
    else:
        run_provider(VaultSchemaStub(load_provider_spec(_tgz_path([]))), argv)


if __name__ == "__main__":
    main(sys.argv)
