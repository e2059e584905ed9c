"""The commands a page of the docs tells an operator to type, for tests that follow the page word for word.

A block a test runs is marked in the Markdown by an HTML comment on the line before its fence,
``<!-- block: NAME -->``, which renders as nothing. A test asks for the block by page and name and
runs its text as it is: a changed page changes what the test runs, and a test that cannot find its
block fails.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DOCS", "doc_block"]

DOCS = Path(__file__).resolve().parents[2] / "docs"


def doc_block(page: str, name: str) -> str:
    """The text of the fenced block marked ``<!-- block: name -->`` in ``docs/page``."""
    text = (DOCS / page).read_text()
    pattern = rf"^<!-- block: {re.escape(name)} -->\n(?P<fence>```+)[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$"
    found = list(re.finditer(pattern, text, re.MULTILINE | re.DOTALL))
    if len(found) != 1:
        raise AssertionError(f"docs/{page} has {len(found)} blocks marked {name!r}, expected one")
    return found[0]["body"]
