"""PEM exactly as Go's ``encoding/pem`` reads it (``pem.Decode``, Go 1.19), so what vaultpki reads from a
certs-dir is what CockroachDB reads (pure).

Go is stricter than most PEM readers, and quiet about it: a ``-----BEGIN`` must start a line, the
``-----END`` line must hold nothing after its closing dashes, header lines (``Key: value``) may only come
first, and the body must be base64 with its padding. A block that breaks a rule is passed over without a
word: ``pem.Decode`` goes on looking for the next ``-----BEGIN`` at the start of a line. So two blocks run
together on one line (``-----END CERTIFICATE----------BEGIN CERTIFICATE-----``) are both lost, and
``tls.X509KeyPair`` then fails with "tls: failed to find any PEM data in certificate input".

``decode`` returns the blocks Go reads, and, for every ``-----BEGIN`` Go does not read, why not: the
callers (``crypto.load_certs``, ``crypto.load_key``) refuse a file with a block CockroachDB would not see.
"""

from __future__ import annotations

import binascii

import msgspec

__all__ = ["Block", "Skipped", "decode"]

_BEGIN = b"-----BEGIN "
_END = b"-----END "
_DASHES = b"-----"


class Block(msgspec.Struct, frozen=True):
    """One PEM block Go reads: its type, its headers (``Proc-Type: 4,ENCRYPTED``), its DER bytes."""

    type: str
    headers: dict[str, str]
    der: bytes
    line: int                    # 1-based line of its -----BEGIN
    offset: int                  # where its -----BEGIN is in the data


class Skipped(msgspec.Struct, frozen=True):
    """A ``-----BEGIN`` that Go's pem.Decode passes over, and why."""

    line: int
    begin: str                   # the text of its BEGIN line, for the message
    reason: str

    def __str__(self) -> str:
        return (f"the PEM block at line {self.line} ({self.begin}) is not read by Go's encoding/pem, so CockroachDB "
                f"does not see it: {self.reason}")


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    """Go's getLine: the line at ``pos`` without its newline (``\\r\\n`` too) and trailing blanks, and where the next starts."""
    i = data.find(b"\n", pos)
    if i < 0:
        return data[pos:].rstrip(b" \t"), len(data)
    end = i - 1 if i > pos and data[i - 1:i] == b"\r" else i
    return data[pos:end].rstrip(b" \t"), i + 1


def _line_no(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _decode_one(data: bytes, pos: int, skipped: dict[int, str]) -> tuple[Block | None, int]:
    """Go's pem.Decode of ``data[pos:]``: the next block and where the rest starts (None: no more blocks).
    Each candidate Go passes over is noted in ``skipped`` (its BEGIN offset -> why)."""
    rest = pos
    while True:
        # A BEGIN counts at the start of what is left (always a line start) or right after a newline.
        if data.startswith(_BEGIN, rest):
            begin = rest
        else:
            found = data.find(b"\n" + _BEGIN, rest)
            if found < 0:
                return None, pos
            begin = found + 1
        type_line, rest = _line(data, begin + len(_BEGIN))
        if not type_line.endswith(_DASHES):
            skipped[begin] = "its BEGIN line does not end with ----- (nothing may follow on that line)"
            continue
        kind = type_line[:-len(_DASHES)]
        headers: dict[str, str] = {}
        while True:
            if rest >= len(data):
                skipped[begin] = "it has no END line"
                return None, pos
            line, following = _line(data, rest)
            key, colon, value = line.partition(b":")
            if not colon:
                break
            headers[key.strip().decode(errors="replace")] = value.strip().decode(errors="replace")
            rest = following
        if not headers and data.startswith(_END, rest):
            end_index, trailer = rest, rest + len(_END)
        else:
            end_index = data.find(b"\n" + _END, rest)
            trailer = end_index + 1 + len(_END)
        if end_index < 0:
            skipped[begin] = "it has no END line at the start of a line"
            continue
        end_type = data[trailer:trailer + len(kind) + len(_DASHES)]
        if len(end_type) < len(kind) + len(_DASHES) or not end_type.startswith(kind) or not end_type.endswith(_DASHES):
            skipped[begin] = "its END line does not name the same type as its BEGIN line"
            continue
        after_end, _ = _line(data, trailer + len(end_type))
        if after_end:
            shown = after_end[:40].decode(errors="replace")
            skipped[begin] = (f"its END line goes on after the closing ----- ({shown!r}); each BEGIN and END line "
                              "must be a line of its own")
            continue
        body = data[rest:end_index].translate(None, b" \t\r\n")
        try:
            der = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error:
            skipped[begin] = "its body is not valid base64 (a header line among the data, a stray character, or bad padding)"
            continue
        _, after = _line(data, end_index + len(_END))
        return Block(kind.decode(errors="replace"), headers, der, _line_no(data, begin), begin), after


def decode(data: bytes) -> tuple[list[Block], list[Skipped]]:
    """Every block Go's pem.Decode loop reads from ``data``, in order, and every ``-----BEGIN`` it does not read."""
    blocks: list[Block] = []
    reasons: dict[int, str] = {}
    pos = 0
    while True:
        block, pos = _decode_one(data, pos, reasons)
        if block is None:
            break
        blocks.append(block)
    read = {b.offset for b in blocks}
    skipped = []
    start = data.find(_BEGIN)
    while start >= 0:
        begin_line, _ = _line(data, start)
        # One Go never looked at is not at the start of a line: a block's BEGIN line if it ends as one, else prose.
        if start in reasons or (start not in read and begin_line.endswith(_DASHES)):
            reason = reasons.get(start, "its -----BEGIN does not start a line (Go looks for one only at the start of a line)")
            skipped.append(Skipped(_line_no(data, start), begin_line[:60].decode(errors="replace"), reason))
        start = data.find(_BEGIN, start + 1)
    return blocks, skipped
