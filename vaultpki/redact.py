"""Secrets never reach a log through a record's ``repr``.

Records are ``msgspec.Struct``s, whose fields are all in the generated ``repr``; a record that holds
a token, a key or an environment defines ``__repr__`` with ``redacted_repr``.
"""

from __future__ import annotations

import msgspec

__all__ = ["REDACTED", "redacted_repr"]

REDACTED = "<redacted>"


def redacted_repr(record: msgspec.Struct, *secrets: str) -> str:
    """``repr(record)`` with each field named in *secrets* shown as ``'<redacted>'`` (or None when unset)."""
    masked = {name: None if getattr(record, name) is None else REDACTED for name in secrets}
    return msgspec.Struct.__repr__(msgspec.structs.replace(record, **masked))
