"""Hints for a name that a registry does not know: the closest valid name, and any non-ASCII character.

A look-alike (``cоnv_3x3`` with a Cyrillic ``о``) prints exactly like the valid name, so "unknown op" alone
leaves the user staring at two identical strings; every registry's lookup adds :func:`name_hint`.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable


def non_ascii_note(name: str) -> str:
    """``"it contains the non-ASCII character 'о' (U+043E CYRILLIC SMALL LETTER O) at position 2"``, or
    ``""`` for an ASCII name."""
    bad = [(i, ch) for i, ch in enumerate(name, 1) if not ch.isascii()]
    if not bad:
        return ""
    position, ch = bad[0]
    title = unicodedata.name(ch, "")
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return (
        f"it contains the non-ASCII character {ch!r} (U+{ord(ch):04X}{' ' + title if title else ''}) "
        f"at position {position}{more}"
    )


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``name`` (case-insensitive), or None when none is close."""
    names = list(valid)
    lowered = {n.lower(): n for n in names}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def name_hint(name: object, valid: Iterable[str]) -> str:
    """``" (it contains the non-ASCII character ...; did you mean 'conv_3x3'?)"`` for an unknown ``name``,
    or ``""`` when there is nothing to add."""
    if not isinstance(name, str):
        return ""
    parts = [non_ascii_note(name)]
    match = closest_name(name, valid)
    if match is not None and match != name:
        parts.append(f"did you mean {match!r}?")
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""
