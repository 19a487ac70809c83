"""Find many fixed phrases in text at once: a dictionary of token sequences, leftmost-longest, whole tokens only.

A regular expression alternating hundreds of phrases tries each at every position (about a millisecond a line);
this looks up each token position's n-grams in a dict (tens of microseconds).

>>> idx = PhraseIndex({"no evidence of": "NEG", "no": "NEG1", "brain metastases": "CNS"})
>>> idx.find("no evidence of brain metastases")
[(0, 14, 'NEG'), (15, 31, 'CNS')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@lru_cache(maxsize=512)
def tokens(text: str) -> list[tuple[int, int, str]]:
    """'h/o cancer' -> [(0, 1, 'h'), (1, 2, '/'), (2, 3, 'o'), (4, 10, 'cancer')] (text already lower case)."""
    return [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(text)]


class PhraseIndex:
    """Phrases (lower case) -> values; ``find`` returns non-overlapping (start, end, value), leftmost-longest."""

    def __init__(self, phrases: dict[str, object] | Iterable[tuple[str, object]]):
        items = phrases.items() if isinstance(phrases, dict) else phrases
        self._index: dict[tuple[str, ...], object] = {}
        self._longest = 1
        for phrase, value in items:
            key = tuple(t for _, _, t in tokens(phrase.lower()))
            if key and key not in self._index:  # the first value given for a phrase wins
                self._index[key] = value
                self._longest = max(self._longest, len(key))
        sizes: dict[str, set[int]] = {}
        for k in self._index:
            sizes.setdefault(k[0], set()).add(len(k))
        self._sizes = {first: sorted(v, reverse=True) for first, v in sizes.items()}

    def find(self, text: str, toks: list[tuple[int, int, str]] | None = None) -> list[tuple[int, int, object]]:
        toks = tokens(text) if toks is None else toks
        out = []
        i, n = 0, len(toks)
        while i < n:
            sizes = self._sizes.get(toks[i][2])
            if sizes is None:
                i += 1
                continue
            for size in sizes:
                if i + size > n:
                    continue
                value = self._index.get(tuple(t for _, _, t in toks[i:i + size]))
                if value is not None:
                    out.append((toks[i][0], toks[i + size - 1][1], value))
                    i += size
                    break
            else:
                i += 1
        return out


__all__ = ["PhraseIndex", "tokens"]
