"""Rewrites of crawlerdetect's regexes that keep their verdicts but run much faster.

crawlerdetect runs every pattern case-insensitively, in two big alternations. CPython's ``re``
is slow at that: at each position of the text its BRANCH opcode tries the alternatives one by
one, and it skips one after a single compare only when the alternative starts with a
case-sensitive literal. So we parse each pattern (``re._parser``, the stdlib's own parser) and

* emit it again for text that has already been lowercased, with literals lowercased and
  case-sensitive, and with classes and non-ASCII literals wrapped in ``(?i:...)`` so they keep
  their exact case-insensitive meaning (:func:`lowercase_regex`, :func:`search_regex`);
* group an alternation by first character (:func:`first_char_alternation`);
* find literals that every match must contain (:func:`required_literals`), and look for many
  of them at once with a trie-shaped regex (:func:`literal_trie_regex`).

Anything these functions do not understand raises :class:`Unsupported`; the detector then
falls back to the original regexes, so a new crawlerdetect release can make us slower but never
change a verdict.
"""

from __future__ import annotations

import re
from re import _constants as C  # noqa: N812 - the stdlib's opcode names
from re import _parser

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


# --- required literals ---------------------------------------------------------------------


def required_literals(pattern: str | _parser.SubPattern) -> frozenset[str] | None:
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
                consider(frozenset().union(*options))
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


# --- dispatch on the first character -------------------------------------------------------


def first_char_alternation(patterns: list[str]) -> str:
    """Like ``"|".join(map(lowercase_regex, patterns))``, grouped by first character.

    ``re`` tries an alternation's branches in order at every position of the text; grouped as
    ``s(?:afari…|uper…)|f(?:irefox…)|…`` it compares the current character with one branch per
    distinct first character instead of one per pattern. The patterns that can start with a
    character keep their relative order, and no other pattern can match there, so every match
    (leftmost, first alternative wins) is the same as the flat alternation's.
    """
    groups: dict[str, list[str]] = {}
    for pattern in patterns:
        for char, rest in _split_first(list(parse(pattern))):
            groups.setdefault(char, []).append(_emit(rest))
    return "|".join(re.escape(char) + _group(rests) for char, rests in groups.items())


def _group(rests: list[str]) -> str:
    return rests[0] if len(rests) == 1 else "(?:" + "|".join(rests) + ")"


def _split_first(items: list) -> list[tuple[str, list]]:
    """(c, rest) pairs, in the order ``re`` would try them: the pattern matches at a position
    holding c exactly when one of the rests matches right after it."""
    if not items:
        raise Unsupported("a branch can match the empty string")
    (op, av), rest = items[0], items[1:]
    if op is C.LITERAL and av < 128:
        return [(chr(av).lower(), rest)]
    if op is C.IN:  # a small class of ASCII characters, e.g. [Qq]: one pair per character
        return [(char, rest) for char in _class_chars(av)]
    if op is C.SUBPATTERN and not (av[1] or av[2]):
        return _split_first(list(av[3]) + rest)
    if op is C.BRANCH:
        return [pair for branch in av[1] for pair in _split_first(list(branch) + rest)]
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, body = av
        if body.getwidth()[0] == 0 or hi == 0:
            raise Unsupported("a repeat that can match the empty string")
        # X{lo,hi} is X X{lo-1,hi-1} (when lo > 0), else a choice between that and skipping X,
        # taken in the order the greedy or lazy repeat takes it.
        left = hi if hi is C.MAXREPEAT else hi - 1
        once_more = list(body) + ([(op, (max(lo - 1, 0), left, body))] if left else []) + rest
        if lo > 0:
            return _split_first(once_more)
        order = [once_more, rest] if op is C.MAX_REPEAT else [rest, once_more]
        return [pair for option in order for pair in _split_first(option)]
    raise Unsupported(f"cannot tell the first character of opcode {op}")


def _class_chars(items) -> list[str]:
    chars: dict[str, None] = {}
    for op, av in items:
        if op is C.LITERAL and av < 128:
            chars[chr(av).lower()] = None
        elif op is C.RANGE and av[1] < 128 and av[1] - av[0] < 16:
            chars.update(dict.fromkeys(chr(code).lower() for code in range(av[0], av[1] + 1)))
        else:
            raise Unsupported(f"class item {op} as a first character")
    return list(chars)
