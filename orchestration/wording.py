"""How the product says things, in every front-end: counts with the right plural."""
from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """plural(1, "story") -> "1 story"; plural(2, "story") -> "2 stories"; plural(3, "change") -> "3 changes"."""
    if count == 1:
        return f"{count} {noun}"
    if nouns is None:
        nouns = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{count} {nouns}"
