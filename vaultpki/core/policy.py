"""Render the ACL policy templates in ``policies/`` exactly as Terraform's ``templatefile()`` does.

The same ``.hcl.tftpl`` files are used by the Terraform module and by the embedded
provisioner (``make demo``, tests), so what the tests prove about a policy is what
Terraform applies. Only the template features those files use are supported:
``${name}``, ``%{ if name != "" }`` / ``%{ if name }``, ``%{ for x in name }``, their
``endif``/``endfor``, and the ``~`` whitespace-strip markers. Anything else is an
error, not a guess. A test compares this renderer with ``terraform console``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from vaultpki.errors import ConfigError

__all__ = ["POLICY_NAMES", "render"]

POLICY_NAMES = ("crdb-node", "crdb-operator", "crdb-root-operator", "crdb-user-self", "crdb-ui")

_TOKEN = re.compile(r"(%\{~?.*?~?\}|\$\{~?.*?~?\})", re.DOTALL)
_IF = re.compile(r'^if\s+([A-Za-z_]\w*)(?:\s*!=\s*"")?$')
_FOR = re.compile(r"^for\s+([A-Za-z_]\w*)\s+in\s+([A-Za-z_]\w*)$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


class _Node(msgspec.Struct):
    kind: str                      # "text", "var", "if", "for"
    value: str = ""
    target: str = ""
    body: list[_Node] | None = None


_LEFT_SPACE = re.compile(r"[ \t]*(\r?\n)?\Z")
_RIGHT_SPACE = re.compile(r"\A[ \t]*(\r?\n)?")


def _strip(parts: list[str]) -> list[str]:
    """Apply ``~`` markers as HCL does: ``%{~`` eats the spaces and at most one newline before the
    directive, ``~}`` the spaces and at most one newline after it (checked against terraform console)."""
    out = list(parts)
    for i, part in enumerate(out):
        if not _TOKEN.fullmatch(part):
            continue
        if part[2:3] == "~" and i > 0:
            out[i - 1] = _LEFT_SPACE.sub("", out[i - 1], count=1)
        if part[-2:-1] == "~" and i + 1 < len(out):
            out[i + 1] = _RIGHT_SPACE.sub("", out[i + 1], count=1)
    return out


def _parse(parts: list[str], pos: int, until: str | None) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while pos < len(parts):
        part = parts[pos]
        pos += 1
        if not _TOKEN.fullmatch(part):
            if part:
                nodes.append(_Node("text", part))
            continue
        inner = part[2:-1].strip("~").strip()
        if part.startswith("${"):
            if not _NAME.match(inner):
                raise ConfigError(f"policy template: unsupported expression ${{{inner}}}")
            nodes.append(_Node("var", inner))
        elif inner in ("endif", "endfor"):
            if inner != until:
                raise ConfigError(f"policy template: unexpected %{{ {inner} }}")
            return nodes, pos
        elif (m := _IF.match(inner)) is not None:
            body, pos = _parse(parts, pos, "endif")
            nodes.append(_Node("if", m.group(1), body=body))
        elif (m := _FOR.match(inner)) is not None:
            body, pos = _parse(parts, pos, "endfor")
            nodes.append(_Node("for", m.group(2), target=m.group(1), body=body))
        else:
            raise ConfigError(f"policy template: unsupported directive %{{ {inner} }}")
    if until is not None:
        raise ConfigError(f"policy template: missing %{{ {until} }}")
    return nodes, pos


def _eval(nodes: Sequence[_Node], scope: Mapping[str, object]) -> str:
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "var":
            if node.value not in scope:
                raise ConfigError(f"policy template: no value for {node.value}")
            out.append(str(scope[node.value]))
        elif node.kind == "if":
            if scope.get(node.value):
                out.append(_eval(node.body or [], scope))
        else:
            items = scope.get(node.value)
            if not isinstance(items, (list, tuple)):
                raise ConfigError(f"policy template: {node.value} must be a list")
            for item in items:
                out.append(_eval(node.body or [], {**scope, node.target: item}))
    return "".join(out)


def render(template: str, variables: Mapping[str, object]) -> str:
    """The policy text for ``variables`` (what ``templatefile(path, variables)`` returns)."""
    nodes, _ = _parse(_strip(_TOKEN.split(template)), 0, None)
    return _eval(nodes, variables)
