"""ingest.bots.BotDetector: verdicts, agreement with crawlerdetect, and the regex rewrites.

The reference for "same verdicts as crawlerdetect" is crawlerdetect itself (its CrawlerDetect
class, and its compiled exclusions regex for the marker rule), never ingest.bots code.
"""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from re import _constants as C  # noqa: N812
from re import _parser

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.crawlerdetect import get_compiled_exclusions_regex
from crawlerdetect.providers.crawlers import data as CRAWLERS
from crawlerdetect.providers.exclusions import data as EXCLUSIONS

from ingest.bots import BotDetector, _first_char, _literals, _regex
from ingest.bots.detector import HEADLESS_MARKERS, NON_LATIN1_ASCII_FOLDS

REPO = Path(__file__).resolve().parent.parent

BOT_UAS = [
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Googlebot-Image/1.0",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) "
    "Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 "
    "Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot",
    "CCBot/2.0 (https://commoncrawl.org/faq/)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "Python-urllib/3.11",
    "Go-http-client/1.1",
    "axios/1.7.2",
    "Java/17.0.2",
    "Apache-HttpClient/4.5.14 (Java/17.0.8)",
    "Scrapy/2.11.2 (+https://scrapy.org)",
    "PostmanRuntime/7.39.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.28 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 PTST/240201.150000",
]

# Bots by our rules only: crawlerdetect calls each of these human (asserted below).
EXTRA_RULE_BOTS = [
    None,
    "",
    " ",
    "\t\r\n",
    "Mozilla/5.0 (linux) AppleWebKit/537.36 (KHTML, like Gecko) jsdom/22.1.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Selenium",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36 Playwright/1.44.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Cypress/13.6.0 "
    "Chrome/118.0.5993.159 Electron/27.1.3 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0 HtmlUnit",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Puppeteer",
    "SlimerJS/1.0.0",
]

HUMAN_UAS = [
    "Mozilla/5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 "
    "Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 "
    "OPR/115.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
    "YaBrowser/24.12.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 "
    "Vivaldi/7.0.3495.18",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.7 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 "
    "Mobile/15E148 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 "
    "Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36 OPR/86.0.0.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36 EdgA/131.0.2903.87",
    # In-app browsers: Facebook (iOS, Android), Instagram (iOS, Android), TikTok.
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/FBIOS;FBAV/440.0.0.32.118;FBBV/548418476;FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1;FBSS/3;FBID/phone;"
    "FBLC/en_US;FBOP/5;FBRV/550281425]",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/490.0.0.48.82;]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "Instagram 307.0.0.34.111 (iPhone15,3; iOS 17_1; en_US; en; scale=3.00; 1290x2796; 532277863)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/128.0.6613.127 Mobile Safari/537.36 Instagram 346.0.0.34.108 Android (34/14; 420dpi; "
    "1080x2400; Google/google; Pixel 7; panther; panther; en_US; 634108168)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "musical_ly_32.9.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0)",
    "Opera/9.80 (Windows NT 6.1; U; en) Presto/2.10.289 Version/12.02",
]


@pytest.fixture(scope="module")
def detector() -> BotDetector:
    return BotDetector()


_REFERENCE = CrawlerDetect()


def expected_verdict(user_agent: str | None) -> bool:
    """crawlerdetect's verdict, plus our two rules, computed without ingest.bots."""
    if user_agent is None or not user_agent.strip():
        return True
    if _REFERENCE.is_crawler(user_agent):
        return True
    # The markers count as extra crawler patterns: searched, like crawlerdetect's, in what is
    # left after its exclusions.
    agent = get_compiled_exclusions_regex().sub("", user_agent.strip())
    return any(re.search(re.escape(marker), agent, re.IGNORECASE) for marker in HEADLESS_MARKERS)


# --- plain verdicts --------------------------------------------------------------------------


@pytest.mark.parametrize("user_agent", BOT_UAS)
def test_bots(detector, user_agent):
    assert detector.is_bot(user_agent)
    assert _REFERENCE.is_crawler(user_agent)  # the list holds crawlerdetect bots only


@pytest.mark.parametrize("user_agent", EXTRA_RULE_BOTS)
def test_blank_and_headless_user_agents_are_bots_though_crawlerdetect_disagrees(detector, user_agent):
    assert detector.is_bot(user_agent)
    assert not _REFERENCE.is_crawler(user_agent or "")


@pytest.mark.parametrize("user_agent", HUMAN_UAS)
def test_humans(detector, user_agent):
    assert not detector.is_bot(user_agent)
    assert not detector.is_bot(f"  {user_agent}\t")  # surrounding blanks are stripped
    assert not _REFERENCE.is_crawler(user_agent)


def test_case_does_not_matter(detector):
    assert detector.is_bot("GOOGLEBOT/2.1") and detector.is_bot("googlebot/2.1") and detector.is_bot("cUrL/8.0")
    assert not detector.is_bot(HUMAN_UAS[1].upper()) and not detector.is_bot(HUMAN_UAS[1].lower())


def test_repeated_user_agents_keep_their_verdict(detector):
    for _ in range(3):
        assert [detector.is_bot(ua) for ua in BOT_UAS + HUMAN_UAS] == [True] * len(BOT_UAS) + [False] * len(HUMAN_UAS)
    uncached = BotDetector(cache_size=0)
    assert uncached.is_bot(BOT_UAS[0]) and not uncached.is_bot(HUMAN_UAS[1])


def test_default_is_built_once():
    assert BotDetector.default() is BotDetector.default()
    assert BotDetector.default().is_bot("curl/8.5.0")


# --- same verdicts as crawlerdetect on a large corpus --------------------------------------


def _sample(items, rng: random.Random) -> str:
    """A string meant to match the parsed regex ``items`` (case-insensitively)."""
    out = []
    for op, av in items:
        if op is C.LITERAL:
            char = chr(av)
            out.append(char.swapcase() if rng.random() < 0.3 else char)
        elif op is C.NOT_LITERAL:
            out.append("q" if chr(av).lower() != "q" else "z")
        elif op is C.ANY:
            out.append(rng.choice("x-/ "))
        elif op is C.IN:
            out.append(_class_sample(av, rng))
        elif op is C.BRANCH:
            out.append(_sample(rng.choice(av[1]), rng))
        elif op is C.SUBPATTERN:
            out.append(_sample(av[3], rng))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            lo, hi, body = av
            count = lo + rng.randint(0, min(2, hi - lo))
            out.extend(_sample(body, rng) for _ in range(count))
        # anchors and lookarounds consume nothing
    return "".join(out)


def _class_sample(items, rng: random.Random) -> str:
    if items and items[0][0] is C.NEGATE:
        return "~"
    op, av = rng.choice(items)
    if op is C.LITERAL:
        return chr(av)
    if op is C.RANGE:
        return chr(rng.randint(*av))
    return {C.CATEGORY_DIGIT: "7", C.CATEGORY_SPACE: " ", C.CATEGORY_WORD: "w"}.get(av, "x")


def _browser_user_agents(rng: random.Random, n: int) -> list[str]:
    def version() -> str:
        return f"{rng.randint(80, 140)}.0.{rng.randint(1000, 7999)}.{rng.randint(0, 300)}"

    templates = [
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{version()} Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android {rng.randint(8, 15)}; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{version()} Mobile Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {rng.randint(12, 18)}_{rng.randint(0, 7)} like Mac OS X) "
            f"AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{rng.randint(12, 18)}.0 Mobile/15E148 Safari/604.1"
        ),
        lambda: (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{rng.randint(0, 7)}; rv:{rng.randint(90, 135)}.0) "
            f"Gecko/20100101 Firefox/{rng.randint(90, 135)}.0"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S{rng.randint(900, 999)}B) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) SamsungBrowser/{rng.randint(20, 27)}.0 Chrome/{version()} Mobile Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Mobile/15E148 [FBAN/FBIOS;FBAV/{rng.randint(400, 499)}.0.0.{rng.randint(10, 99)}.{rng.randint(10, 99)};"
            "FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1;FBLC/en_US]"
        ),
        lambda: (
            f"Opera/9.80 (J2ME/MIDP; Opera Mini/{rng.randint(4, 9)}.{rng.randint(0, 9)}.{rng.randint(100, 99999)}/"
            f"{rng.randint(20, 40)}.{rng.randint(1000, 9999)}; U; en) Presto/2.8.119 Version/11.10"
        ),
    ]
    return [rng.choice(templates)() for _ in range(n)]


def _corpus() -> list[str]:
    rng = random.Random(20240611)
    browsers = _browser_user_agents(rng, 300)
    tokens = [_sample(_parser.parse(p, re.IGNORECASE), rng) for p in EXCLUSIONS]
    corpus = [*BOT_UAS, *HUMAN_UAS, *(ua for ua in EXTRA_RULE_BOTS if ua), *browsers]
    for pattern in [*CRAWLERS, *map(re.escape, HEADLESS_MARKERS)]:
        sample = _sample(_parser.parse(pattern, re.IGNORECASE), rng)
        cut = rng.randint(0, len(sample))
        contexts = [
            sample,
            f"Mozilla/5.0 (compatible; {sample}/{rng.randint(1, 9)}.{rng.randint(0, 9)}; +https://example.com/bot)",
            f"{rng.choice(browsers)} {sample}",
            f"{sample} {rng.choice(browsers)}".upper(),
            # An exclusion token inside the sample: crawlerdetect deletes it, joining the halves.
            f"{sample[:cut]}{rng.choice(tokens)}{sample[cut:]}",
            # A near miss: one character dropped.
            f"{rng.choice(browsers)} {sample[:cut]}{sample[cut + 1 :]}",
        ]
        corpus.append(rng.choice(contexts))
    # Text outside ASCII: Latin-1 (what the ingest produces) and beyond, including characters
    # that re.IGNORECASE folds onto ASCII letters.
    odd = "éÉßÿÀ\u00b5\u0130\u0131\u017f\u212a\u2603中\t"
    for _ in range(200):
        parts = [
            rng.choice(tokens),
            rng.choice(browsers)[:40],
            *rng.choices(odd, k=3),
            _sample(_parser.parse(rng.choice(CRAWLERS), re.IGNORECASE), rng),
        ]
        rng.shuffle(parts)
        corpus.append("".join(parts))
    corpus += ["Googlebot", "G\u0131rl", "\u017fcrapy/1.0", "CUR\u212aL", "bİngbot", "\u212aurl", "Mozilla/5.0Java/1.8"]
    return corpus


def test_same_verdicts_as_crawlerdetect_on_a_generated_corpus(detector):
    corpus = _corpus()
    expected = [expected_verdict(ua) for ua in corpus]
    got = [detector.is_bot(ua) for ua in corpus]
    wrong = [(ua, want) for ua, want, have in zip(corpus, expected, got) if want != have]
    assert not wrong, f"{len(wrong)} of {len(corpus)} differ, e.g. {wrong[:5]}"
    # The corpus has to exercise both verdicts and both extra rules to mean anything.
    assert sum(expected) > 1000 and len(expected) - sum(expected) > 500
    assert sum(want and not _REFERENCE.is_crawler(ua) for ua, want in zip(corpus, expected)) >= len(HEADLESS_MARKERS)


def test_fallback_to_the_original_regexes_keeps_the_verdicts():
    # A case-sensitive part is beyond the rewrites: the detector must notice, use plain regexes.
    slow = BotDetector(crawler_patterns=[*CRAWLERS, r"(?-i:ZqX)"])
    assert not slow.fast
    assert slow.is_bot("Mozilla/5.0 ZqX") and not slow.is_bot("Mozilla/5.0 zqx")
    for ua in BOT_UAS[:10] + HUMAN_UAS + EXTRA_RULE_BOTS:
        assert slow.is_bot(ua) == expected_verdict(ua), ua


def test_an_exclusion_without_a_first_character_still_runs_fast():
    exclusions = [*EXCLUSIONS, r".?Fooling/\d"]  # "." and "?" leave no first character to group by
    custom = BotDetector(exclusion_patterns=exclusions)
    assert custom.fast
    reference_exclusions = re.compile(f"({'|'.join(exclusions)})", re.IGNORECASE)
    reference_crawlers = re.compile(f"({'|'.join(CRAWLERS)})", re.IGNORECASE)
    for ua in ["Fooling/1", "xFooling/2 curl", "Mozilla/5.0 Foolingbot/1", *BOT_UAS, *HUMAN_UAS]:
        agent = reference_exclusions.sub("", ua)
        assert custom.is_bot(ua) == bool(agent and reference_crawlers.search(agent)), ua


# --- the rewrites, one by one --------------------------------------------------------------


def _texts(rng: random.Random, n: int) -> list[str]:
    """Latin-1 texts mixing exclusion matches, browser User-Agents and odd characters."""
    tokens = [_sample(_parser.parse(p, re.IGNORECASE), rng) for p in EXCLUSIONS]
    browsers = _browser_user_agents(rng, 50)
    odd = list("éÉßÿÀ\u00b5 ;()/._-0123456789") + ["like ", "Mac OS X ", "CPU iPhone OS 1_2_3 like Mac OS X"]
    return ["".join(rng.choices(tokens + browsers + odd, k=rng.randint(1, 12))) for _ in range(n)]


def test_lowercased_exclusions_delete_the_same_text():
    rng = random.Random(7)
    reference = get_compiled_exclusions_regex()
    grouped = re.compile(_first_char.first_char_alternation(list(EXCLUSIONS)))
    flat = re.compile("|".join(map(_regex.lowercase_regex, EXCLUSIONS)))
    for text in _texts(rng, 1500):
        want = reference.sub("", text).lower()
        assert grouped.sub("", text.lower()) == want, text
        assert flat.sub("", text.lower()) == want, text


def test_first_char_grouping_keeps_the_order_of_alternatives():
    patterns = ["ab", "a", "(x)?y+", "x+z", "c*?d", "[Qq]r", "(?:k|m)n"]
    reference = re.compile("|".join(patterns), re.IGNORECASE)
    grouped = re.compile(_first_char.first_char_alternation(patterns))
    rng = random.Random(3)
    for _ in range(2000):
        text = "".join(rng.choices("abxyzcdqrkmnABXY ", k=rng.randint(0, 12)))
        assert grouped.sub("", text.lower()) == reference.sub("", text).lower(), text
    with pytest.raises(_regex.Unsupported):
        _first_char.first_char_alternation(["a", ".b"])
    with pytest.raises(_regex.Unsupported):
        _first_char.first_char_alternation(["a", "[^b]c"])


def test_each_crawler_pattern_rewritten_for_lowercase_text_finds_the_same_texts():
    rng = random.Random(11)
    for pattern in CRAWLERS:
        original = re.compile(pattern, re.IGNORECASE)
        lowered = re.compile(_regex.lowercase_regex(pattern))
        trimmed = re.compile(_regex.search_regex(pattern))
        sample = _sample(_parser.parse(pattern, re.IGNORECASE), rng)
        for text in (sample, sample.upper(), f"xÉ {sample}ß", sample[1:], sample[:-1] + "é"):
            want = bool(original.search(text))
            assert bool(lowered.search(text.lower())) == want, (pattern, text)
            assert bool(trimmed.search(text.lower())) == want, (pattern, text)
    assert _regex.search_regex(r"[a-z0-9\-_]*(bot|crawl)") == "(?:(?:bot|crawl))"


def test_required_literals_are_in_every_match():
    rng = random.Random(5)
    for pattern in CRAWLERS:
        literals = _literals.required_literals(pattern)
        assert literals, pattern  # none has to be run on every User-Agent
        for _ in range(3):
            text = _sample(_parser.parse(pattern, re.IGNORECASE), rng)
            found = re.search(pattern, text, re.IGNORECASE)
            if found:
                assert any(literal in found.group().lower() for literal in literals), (pattern, text)
    assert _literals.required_literals(r"HAA(A)?RTLAND http client") == {"rtland http client"}
    assert _literals.required_literals(r"^Ruby|Ruby\/[0-9]") == {"ruby", "ruby/"}
    assert _literals.required_literals(r"(a|b)?c") == {"c"}
    assert _literals.required_literals(r"\d+[ab]x?") is None


def test_unsupported_constructs_are_refused():
    for pattern in (r"(a)\1", r"(?s)a.b", r"(?m)^a"):
        with pytest.raises(_regex.Unsupported):
            _regex.lowercase_regex(pattern)


def test_trie_refuses_words_that_are_prefixes_of_others():
    assert re.fullmatch(_literals.literal_trie_regex(["bot", "crawl", "cron"]), "cron")
    with pytest.raises(ValueError):
        _literals.literal_trie_regex(["bo", "bot"])


def test_non_latin1_folds_cover_every_code_point():
    # Every character beyond Latin-1 that re.IGNORECASE matches to an ASCII character.
    codes = array("I", [*range(0x100, 0xD800), *range(0xE000, 0x110000)])
    text = codes.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")
    found = {char: char for char in re.findall(r"[\x00-\x7f]", text, re.IGNORECASE)}
    assert set(found) == set(NON_LATIN1_ASCII_FOLDS)
    for char, ascii_char in NON_LATIN1_ASCII_FOLDS.items():
        assert re.fullmatch(re.escape(ascii_char), char, re.IGNORECASE)


# --- startup and speed ----------------------------------------------------------------------


def test_import_does_no_work():
    script = (
        "import re, sys; cached = len(re._cache); import ingest.bots; "
        "assert 'crawlerdetect' not in sys.modules, 'crawlerdetect imported'; "
        "assert len(re._cache) == cached, 'regexes compiled at import'"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)


def test_unseen_user_agents_are_cheap(detector):
    # A loose bound that still catches a silent fallback to crawlerdetect's regexes (hundreds
    # of µs); bench/bench_bot_check.py measures properly.
    assert detector.fast
    agents = _browser_user_agents(random.Random(99), 2000)
    costs = []
    for agent in agents:
        started = time.perf_counter()
        detector.is_bot(agent)
        costs.append(time.perf_counter() - started)
    assert statistics.median(costs) < 60e-6


# --- whether the fast path is active: logged and exported ---------------------------------------


def test_the_fast_path_is_logged_and_exported_as_a_gauge(detector, caplog):
    from ingest.bots.report import report_fast_path
    from shared.prom import Metrics

    slow = BotDetector(crawler_patterns=[*CRAWLERS, r"(?-i:ZqX)"])
    rendered = {}
    with caplog.at_level("INFO", logger="ingest.bots"):
        for name, each in (("fast", detector), ("slow", slow)):
            metrics = Metrics()
            assert report_fast_path(each, metrics) is each
            rendered[name] = metrics.render().decode()
    assert "abacus_bot_fast_path_active 1.0" in rendered["fast"]
    assert "abacus_bot_fast_path_active 0.0" in rendered["slow"]
    messages = [record.getMessage() for record in caplog.records]
    assert any("fast path active" in m for m in messages) and any("fast path NOT active" in m for m in messages)


def test_ingest_and_serve_export_the_fast_path_gauge_on_metrics(settings, redis_client):
    from litestar.testing import TestClient

    from ingest.app import create_app
    from tests.helpers import serve_client

    with TestClient(app=create_app(settings)) as ingest:  # type: ignore[arg-type]
        assert "abacus_bot_fast_path_active 1.0" in ingest.get("/metrics").text
    with serve_client(settings) as serve:
        assert "abacus_bot_fast_path_active 1.0" in serve.get("/metrics").text
