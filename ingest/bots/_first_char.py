"""An alternation of rewritten patterns grouped by their first character (see ``_regex``)."""

from __future__ import annotations

import re

from ingest.bots._regex import C, Unsupported, _emit, parse

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
