"""Rewrites of crawlerdetect's regexes that keep their verdicts but run much faster.

crawlerdetect runs every pattern case-insensitively, in two big alternations. CPython's ``re``
is slow at that: at each position of the text its BRANCH opcode tries the alternatives one by
one, and it skips one after a single compare only when the alternative starts with a
case-sensitive literal. So we parse each pattern (``re._parser``, the stdlib's own parser) and

* emit it again for text that has already been lowercased, with literals lowercased and
  case-sensitive, and with classes and non-ASCII literals wrapped in ``(?i:...)`` so they keep
  their exact case-insensitive meaning (:func:`lowercase_regex`, :func:`search_regex`);
* group an alternation by first character (``_first_char.first_char_alternation``);
* find literals that every match must contain (``_literals.required_literals``), and look for
  many of them at once with a trie-shaped regex (``_literals.literal_trie_regex``).

This module parses and emits; the other two build on its parse trees. ``re._parser`` is private,
so whether the fast path is active is logged at start and exported as a gauge (``ingest.bots``).

Anything these functions do not understand raises :class:`Unsupported`; the detector then
falls back to the original regexes, so a new crawlerdetect release can make us slower but never
change a verdict.
"""

from __future__ import annotations

import re
from re import _constants as C  # noqa: N812 - the stdlib's opcode names
from re import _parser

Tree = _parser.SubPattern  # a parsed pattern, as the other rewrite modules take it

_CATEGORIES = {
    C.CATEGORY_DIGIT: r"\d",
    C.CATEGORY_NOT_DIGIT: r"\D",
    C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S",
    C.CATEGORY_WORD: r"\w",
    C.CATEGORY_NOT_WORD: r"\W",
}
_ANCHORS = {
    C.AT_BEGINNING: "^",
    C.AT_END: "$",
    C.AT_BEGINNING_STRING: r"\A",
    C.AT_END_STRING: r"\Z",
    C.AT_BOUNDARY: r"\b",
    C.AT_NON_BOUNDARY: r"\B",
}
_REPEATS = {C.MAX_REPEAT: "", C.MIN_REPEAT: "?", C.POSSESSIVE_REPEAT: "+"}
_BOUNDS = {(0, C.MAXREPEAT): "*", (1, C.MAXREPEAT): "+", (0, 1): "?"}


class Unsupported(ValueError):
    """A regex construct that the rewrites below do not handle."""


def parse(pattern: str) -> _parser.SubPattern:
    """The parse tree of ``pattern``, if the rewrites below can use it."""
    tree = _parser.parse(pattern, re.IGNORECASE)
    if tree.state.flags & ~(re.IGNORECASE | re.UNICODE):  # e.g. a leading (?s) or (?m)
        raise Unsupported(f"inline flags in {pattern!r}")
    # The rewrites drop and renumber groups, which would break a reference back to one.
    for op, _ in _walk(tree):
        if op in (C.GROUPREF, C.GROUPREF_EXISTS):
            raise Unsupported(f"backreference in {pattern!r}")
    return tree


def _walk(items):
    for op, av in items:
        yield op, av
        if op is C.SUBPATTERN:
            yield from _walk(av[3])
        elif op is C.BRANCH:
            for branch in av[1]:
                yield from _walk(branch)
        elif op in _REPEATS or op in (C.ASSERT, C.ASSERT_NOT):
            yield from _walk(av[-1])
        elif op is C.ATOMIC_GROUP:
            yield from _walk(av)


# --- lowercase rewrite ---------------------------------------------------------------------


def lowercase_regex(pattern: str | _parser.SubPattern) -> str:
    """``pattern`` (meant for re.IGNORECASE) as a case-sensitive regex over lowercased text.

    Exact for any text whose characters lowercase one-to-one the way ``re`` folds them (all of
    Latin-1 does): under IGNORECASE every comparison ``re`` makes uses the lowercased character,
    so it cannot tell a text from its ``str.lower()``. Takes a pattern or its :func:`parse`.
    """
    return _emit(parse(pattern) if isinstance(pattern, str) else pattern)


def search_regex(pattern: str | _parser.SubPattern) -> str:
    """:func:`lowercase_regex`, for telling only whether the pattern is found somewhere.

    A leading or trailing part that may match nothing (``[a-z]*`` in ``[a-z]*(bot|crawl)``)
    cannot change that answer, and dropping it spares ``re`` from trying it at every position.
    """
    items = list(parse(pattern) if isinstance(pattern, str) else pattern)
    while items and _optional(items[0]):
        items.pop(0)
    while items and _optional(items[-1]):
        items.pop()
    return _emit(items)


def _optional(item) -> bool:
    op, av = item
    # Not a possessive repeat: it cannot give back what it took, so it is not optional in front.
    return op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] == 0


def _emit(items) -> str:
    return "".join(_emit_item(op, av) for op, av in items)


def _emit_item(op, av) -> str:
    if op is C.LITERAL:
        char = chr(av)
        return re.escape(char.lower()) if char.isascii() else f"(?i:{re.escape(char)})"
    if op is C.NOT_LITERAL:
        return f"(?i:[^{re.escape(chr(av))}])"
    if op is C.ANY:
        return "."
    if op is C.IN:
        return _emit_class(av)
    if op is C.AT and av in _ANCHORS:
        return _ANCHORS[av]
    if op is C.BRANCH:
        return "(?:" + "|".join(_emit(branch) for branch in av[1]) + ")"
    if op is C.SUBPATTERN:
        _group, add_flags, del_flags, body = av
        if add_flags or del_flags:
            raise Unsupported("inline flags")
        return f"(?:{_emit(body)})"
    if op in _REPEATS:
        lo, hi, body = av
        bounds = _BOUNDS.get((lo, hi)) or (f"{{{lo},}}" if hi is C.MAXREPEAT else f"{{{lo},{hi}}}")
        return f"(?:{_emit(body)}){bounds}{_REPEATS[op]}"
    if op in (C.ASSERT, C.ASSERT_NOT):
        direction, body = av
        kind = ("=" if op is C.ASSERT else "!") if direction == 1 else ("<=" if op is C.ASSERT else "<!")
        return f"(?{kind}{_emit(body)})"
    if op is C.ATOMIC_GROUP:
        return f"(?>{_emit(av)})"
    raise Unsupported(f"regex opcode {op}")


def _emit_class(items) -> str:
    parts = []
    for op, av in items:
        if op is C.NEGATE:
            parts.append("^")
        elif op is C.LITERAL:
            parts.append(re.escape(chr(av)))
        elif op is C.RANGE:
            parts.append(f"{re.escape(chr(av[0]))}-{re.escape(chr(av[1]))}")
        elif op is C.CATEGORY and av in _CATEGORIES:
            parts.append(_CATEGORIES[av])
        else:
            raise Unsupported(f"class item {op}")
    body = "[" + "".join(parts) + "]"
    # re.IGNORECASE adds the other case of each letter in a class, so a class with letters
    # keeps that flag. One without ([\d\.], [0-9_]) is left case-sensitive: re runs it faster.
    return body if _uncased(items) else f"(?i:{body})"


def _uncased(items) -> bool:
    """True if no item of the class has a case variant (categories are tested on the lowercased
    character either way)."""
    for op, av in items:
        if op is C.LITERAL and chr(av).lower() != chr(av).upper():
            return False
        if op is C.RANGE and (av[1] - av[0] > 256 or not _uncased([(C.LITERAL, c) for c in range(av[0], av[1] + 1)])):
            return False
        if op is C.CATEGORY and av not in _CATEGORIES:
            return False
    return True
