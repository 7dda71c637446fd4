"""BotDetector: crawlerdetect's verdicts on User-Agents, at a few microseconds a call.

crawlerdetect (the JayBizzle CrawlerDetect lists) calls a User-Agent a crawler when, after
deleting every match of an exclusions regex (browser tokens such as "Safari/537.36"), one of
~1,500 crawler patterns matches what is left. It runs both as case-insensitive alternations:
hundreds of µs for a User-Agent it has not cached, and a client can send a new User-Agent with
every request. So each detector builds a faster equivalent from the same lists:

1. The exclusions are rewritten for lowercased text and grouped by first character
   (``_first_char.first_char_alternation``), so ``re`` skips most of them after one compare.
2. Each crawler pattern is filed under a literal that all its matches contain ("curl",
   "bot"...). One regex, a trie of those literals, looks for them in what is left of the
   User-Agent; only the patterns filed under a literal found there are run. What is left of a
   browser's User-Agent is a few brackets and words such as "iphone" that hold no literal.

On top of crawlerdetect, a missing or blank User-Agent is a bot, and so is one that names a
headless or scripted browser (``HEADLESS_MARKERS``, used as extra crawler patterns). If a
future crawlerdetect release has a pattern that the rewrites cannot handle, the detector runs
the original regexes instead (``fast`` is then False): slower, same verdicts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from ingest.bots import _first_char, _literals, _regex

# Headless and scripted browsers run real engines and send browser-like User-Agents, so
# crawlerdetect misses some of them (jsdom, Selenium builds); we count them as bots.
HEADLESS_MARKERS = (
    "headless",  # HeadlessChrome, "Firefox Headless"
    "phantomjs",
    "slimerjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "lighthouse",  # Chrome-Lighthouse, PageSpeed Insights
    "jsdom",
    "htmlunit",
    "cypress",
)

# Non-Latin-1 characters that re.IGNORECASE equates with an ASCII letter otherwise than
# str.lower() does: dotted I (whose lowercase is two characters), dotless i, long s and the
# Kelvin sign. tests/test_bots.py checks this against every code point.
NON_LATIN1_ASCII_FOLDS = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}


class BotDetector:
    """Classifies User-Agent strings. Build one per process and share it: it is thread-safe."""

    def __init__(
        self,
        *,
        cache_size: int = 8192,
        crawler_patterns: Sequence[str] | None = None,
        exclusion_patterns: Sequence[str] | None = None,
        extra_markers: Iterable[str] = HEADLESS_MARKERS,
    ) -> None:
        if crawler_patterns is None or exclusion_patterns is None:
            # Imported here, not at module level: loading the lists is start-up work.
            from crawlerdetect.providers import crawlers, exclusions

            crawler_patterns = crawlers.data if crawler_patterns is None else crawler_patterns
            exclusion_patterns = exclusions.data if exclusion_patterns is None else exclusion_patterns
        patterns = [*crawler_patterns, *map(re.escape, extra_markers)]
        try:
            self._rule: _FastRule | _ReferenceRule = _FastRule(patterns, exclusion_patterns)
        except _regex.Unsupported:
            self._rule = _ReferenceRule(patterns, exclusion_patterns)
        self.fast = isinstance(self._rule, _FastRule)
        # Bounded: repeats (most traffic) cost a dict lookup, and a client that rotates
        # User-Agents only causes misses, which the fast rule keeps cheap.
        self._verdict = functools.lru_cache(maxsize=cache_size)(self._classify) if cache_size else self._classify

    @classmethod
    @functools.cache
    def default(cls) -> BotDetector:
        """One detector for the whole process, built on first use."""
        return cls()

    def is_bot(self, user_agent: str | None) -> bool:
        if user_agent is None:
            return True
        return self._verdict(user_agent)

    def _classify(self, user_agent: str) -> bool:
        user_agent = user_agent.strip()  # as crawlerdetect does
        return not user_agent or self._rule.matches(user_agent)


class _ReferenceRule:
    """crawlerdetect's rule with crawlerdetect's own regexes."""

    def __init__(self, crawlers: Sequence[str], exclusions: Sequence[str]) -> None:
        self._exclusions = re.compile(f"({'|'.join(exclusions)})", re.IGNORECASE)
        self._crawlers = re.compile(f"({'|'.join(crawlers)})", re.IGNORECASE)

    def matches(self, user_agent: str) -> bool:
        agent = self._exclusions.sub("", user_agent)
        # crawlerdetect counts a match only if it is not empty; _FastRule refuses patterns that
        # can match the empty string, so the two agree.
        return bool(agent) and bool((found := self._crawlers.search(agent)) and found.group())


class _FastRule:
    """The same verdicts as _ReferenceRule, from the rewritten regexes described above."""

    def __init__(self, crawlers: Sequence[str], exclusions: Sequence[str]) -> None:
        self._reference_exclusions = re.compile(f"({'|'.join(exclusions)})", re.IGNORECASE)
        try:
            exclusions_lower = _first_char.first_char_alternation(list(exclusions))
        except _regex.Unsupported:  # e.g. a pattern that starts with "." has no first character
            exclusions_lower = "|".join(map(_regex.lowercase_regex, exclusions))
        self._exclusions_lower = re.compile(exclusions_lower)
        self._fold = str.maketrans(NON_LATIN1_ASCII_FOLDS)

        filed: dict[str, list[str]] = {}
        self._lowercase: dict[str, str] = {}  # pattern -> its _regex.search_regex
        for pattern in dict.fromkeys(crawlers):
            tree = _regex.parse(pattern)
            if tree.getwidth()[0] == 0:
                # crawlerdetect ignores an empty match found first, which per-literal filing cannot
                # reproduce.
                raise _regex.Unsupported(f"{pattern!r} can match the empty string")
            self._lowercase[pattern] = _regex.search_regex(tree)
            for literal in _literals.required_literals(tree) or ("",):  # "": run it always
                filed.setdefault(_trim(literal), []).append(pattern)
        # Keep only literals that contain no other literal: text that holds "googlebot" holds
        # "bot", so a pattern filed under "googlebot" can be filed under "bot". Then no two
        # literals start at the same place, so searching again one character after each
        # literal found finds every literal there is.
        groups: dict[str, list[str]] = {"": filed.pop("", [])}
        for literal in sorted(filed, key=len):
            groups.setdefault(_contained_literal(literal, groups) or literal, []).extend(filed[literal])
        if not groups[""]:
            del groups[""]
        self._patterns = groups
        self._literal = re.compile(_literals.literal_trie_regex([literal for literal in groups if literal]))
        # Each literal's patterns, joined into one regex when the literal is first found: compiling
        # them all up front would double the start-up time for groups most processes never use.
        self._lower_groups: dict[str, re.Pattern[str]] = {}
        self._ignorecase_groups: dict[str, re.Pattern[str]] = {}  # for non-Latin-1 text

    def matches(self, user_agent: str) -> bool:
        if _is_latin1(user_agent):
            # Lowercasing is exact here (see _regex.lowercase_regex), so everything runs on
            # lowercased text with case-sensitive regexes, which re runs much faster.
            agent = scan = self._exclusions_lower.sub("", user_agent.lower())
            group = self._lower_group
        else:
            # Rare (the ingest decodes headers as Latin-1): run crawlerdetect's regexes, and fold
            # the text for the literal scan so that it finds every literal re.IGNORECASE would.
            agent = self._reference_exclusions.sub("", user_agent)
            scan = agent.translate(self._fold).lower()
            group = self._ignorecase_group
        if not agent:
            return False
        found = self._literal.search(scan)
        if found is not None:
            checked = set()
            while found is not None:
                literal = found.group()
                if literal not in checked:
                    if group(literal).search(agent):
                        return True
                    checked.add(literal)
                found = self._literal.search(scan, found.start() + 1)
        return "" in self._patterns and group("").search(agent) is not None

    def _lower_group(self, literal: str) -> re.Pattern[str]:
        group = self._lower_groups.get(literal)
        if group is None:  # a race only compiles the same regex twice
            patterns = self._patterns[literal]
            group = self._lower_groups[literal] = re.compile("|".join(self._lowercase[p] for p in patterns))
        return group

    def _ignorecase_group(self, literal: str) -> re.Pattern[str]:
        group = self._ignorecase_groups.get(literal)
        if group is None:
            group = self._ignorecase_groups[literal] = re.compile("|".join(self._patterns[literal]), re.IGNORECASE)
        return group


def _trim(literal: str) -> str:
    """``literal`` from its first letter on, if that leaves three characters or more.

    Any part of a required literal is required too. Starting each literal with a letter lets
    the scan skip spaces, digits and punctuation without trying a match there.
    """
    for start, char in enumerate(literal):
        if char.isalpha():
            return literal[start:] if len(literal) - start >= 3 else literal
    return literal


def _contained_literal(literal: str, literals: dict[str, list[str]]) -> str | None:
    """A key of ``literals`` that is a substring of ``literal``, if any."""
    for size in range(1, len(literal) + 1):
        for start in range(len(literal) - size + 1):
            if literal[start : start + size] in literals:
                return literal[start : start + size]
    return None


def _is_latin1(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
