"""Literals every match of a pattern must contain, and a trie-shaped regex that finds many at once.

The detector files each crawler pattern under one of its required literals and scans a
User-Agent for all literals with one regex (see ``ingest/bots/detector.py``).
"""

from __future__ import annotations

import re

from ingest.bots._regex import _REPEATS, C, Tree, parse

# --- required literals ---------------------------------------------------------------------


def required_literals(pattern: str | Tree) -> frozenset[str] | None:
    """Lowercase ASCII strings, at least one of which is in (the lowercase of) every match.

    None when no such set was found. The set is picked to make the longest shortest string,
    since short strings such as "go" would flag half the browsers as candidates. Takes a
    pattern or its :func:`parse`.
    """
    return _required(parse(pattern) if isinstance(pattern, str) else pattern)


def _required(items) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    run: list[str] = []

    def consider(option: frozenset[str] | None) -> None:
        nonlocal best
        if option and (best is None or _rank(option) > _rank(best)):
            best = option

    for op, av in items:
        char = _ascii_char(op, av)
        if char is not None:
            run.append(char)
            continue
        # Anything else ends the literal run; it may still hold required literals of its own.
        consider(frozenset(["".join(run)]) if run else None)
        run = []
        if op is C.SUBPATTERN:
            consider(_required(av[3]))
        elif op is C.ATOMIC_GROUP:
            consider(_required(av))
        elif op in _REPEATS and av[0] >= 1:
            consider(_required(av[2]))
        elif op is C.BRANCH:
            options = [_required(branch) for branch in av[1]]
            if all(options):
                consider(frozenset[str]().union(*(option for option in options if option)))
    consider(frozenset(["".join(run)]) if run else None)
    return best


def _rank(option: frozenset[str]) -> tuple[int, int]:
    return min(map(len, option)), -len(option)


def _ascii_char(op, av) -> str | None:
    """The lowercase character an item matches, if it is one ASCII character up to case."""
    if op is C.IN and len(av) == 1 and av[0][0] is C.LITERAL:  # a one-character class: [ ]
        op, av = av[0]
    if op is C.LITERAL and av < 128:
        return chr(av).lower()
    return None


# --- a trie of literals as one regex ---------------------------------------------------------


def literal_trie_regex(words: list[str]) -> str:
    """One regex matching any of ``words``, factored by common prefixes.

    ``re`` tries the alternatives of a flat alternation one by one at every position; a trie
    leaves it one short branch per character. No word may be a prefix of another.
    """
    trie: dict = {}
    for word in sorted(words, key=len):
        node = trie
        for char in word:
            if "" in node:
                raise ValueError(f"a word is a prefix of {word!r}")
            node = node.setdefault(char, {})
        if node:
            raise ValueError(f"{word!r} is a prefix of another word, or repeated")
        node[""] = None  # marks the end of a word; _emit_trie skips it
    return _emit_trie(trie)


def _emit_trie(node: dict) -> str:
    branches = [re.escape(char) + _emit_trie(child) for char, child in sorted(node.items()) if char]
    if len(branches) <= 1:
        return "".join(branches)
    return "(?:" + "|".join(branches) + ")"
