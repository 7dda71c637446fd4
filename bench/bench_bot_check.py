"""Per-call cost of classifying a User-Agent never seen before: ingest.bots vs crawlerdetect.

A client can put a new User-Agent on every request, so caches do not help: every User-Agent
here is unique (real browser and bot User-Agents with random version and build numbers). Both
detectors see the same list in the same run. Usage, from the repository root:

    .venv/bin/python bench/bench_bot_check.py [--n 20000] [--seed 1]

The last line is the ratio of the medians, e.g. "ratio baseline/abacus median: 35.2x".
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawlerdetect import CrawlerDetect  # noqa: E402

from ingest.bots import BotDetector  # noqa: E402

BOT_SHARE = 0.25


def _browser_templates(r: random.Random) -> list[Callable[[], str]]:
    def chrome() -> str:
        return f"{r.randint(100, 135)}.0.{r.randint(1000, 7999)}.{r.randint(0, 300)}"

    def ios() -> str:
        return f"{r.randint(15, 18)}_{r.randint(0, 7)}"

    return [
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android {r.randint(10, 15)}; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Mobile Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android 14; Pixel {r.randint(5, 9)}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Mobile Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Safari/537.36 Edg/{chrome()}"
        ),
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Safari/537.36 OPR/{chrome()}"
        ),
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{r.randint(100, 135)}.0) Gecko/20100101 Firefox/{r.randint(100, 135)}.{r.randint(0, 9)}"
        ),
        lambda: f"Mozilla/5.0 (X11; Linux x86_64; rv:{r.randint(100, 135)}.0) Gecko/20100101 Firefox/{r.randint(100, 135)}.0",
        lambda: (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{r.randint(15, 18)}.{r.randint(0, 6)} Safari/605.1.{r.randint(1, 99)}"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios()} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{r.randint(15, 18)}.{r.randint(0, 6)} Mobile/15E{r.randint(100, 999)} Safari/604.1"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios()} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/{chrome()} Mobile/15E148 Safari/604.1"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S{r.randint(900, 999)}B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{r.randint(20, 27)}.0 Chrome/{chrome()} Mobile Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios()} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/{r.randint(400, 499)}.0.0.{r.randint(10, 99)}.{r.randint(10, 99)};FBBV/{r.randint(10**8, 10**9)};FBDV/iPhone14,2;FBMD/iPhone;FBSN/iOS;FBSV/17.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.{r.randint(100000, 999999)}.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/{chrome()} Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/{r.randint(400, 499)}.0.0.{r.randint(10, 99)}.{r.randint(10, 99)};]"
        ),
        lambda: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios()} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram {r.randint(250, 350)}.0.0.{r.randint(10, 99)}.{r.randint(10, 199)} (iPhone15,3; iOS 17_1; en_US; en; scale=3.00; 1290x2796; {r.randint(10**8, 10**9)})"
        ),
    ]


def _bot_templates(r: random.Random) -> list[Callable[[], str]]:
    def ver() -> str:
        return f"{r.randint(1, 9)}.{r.randint(0, 99)}.{r.randint(0, 999)}"

    def chrome() -> str:
        return f"{r.randint(100, 135)}.0.{r.randint(1000, 7999)}.{r.randint(0, 300)}"

    return [
        lambda: f"Mozilla/5.0 (compatible; Googlebot/{ver()}; +http://www.google.com/bot.html)",
        lambda: (
            f"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome()} Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
        ),
        lambda: f"Mozilla/5.0 (compatible; bingbot/{ver()}; +http://www.bing.com/bingbot.htm)",
        lambda: f"Mozilla/5.0 (compatible; AhrefsBot/{ver()}; +http://ahrefs.com/robot/)",
        lambda: f"Mozilla/5.0 (compatible; YandexBot/{ver()}; +http://yandex.com/bots)",
        lambda: f"Mozilla/5.0 (compatible; SemrushBot/{ver()}~bl; +http://www.semrush.com/bot.html)",
        lambda: f"facebookexternalhit/{ver()} (+http://www.facebook.com/externalhit_uatext.php)",
        lambda: f"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/{ver()}; +https://openai.com/gptbot)",
        lambda: f"curl/{ver()}",
        lambda: f"python-requests/{ver()}",
        lambda: f"Go-http-client/{ver()}",
        lambda: f"Wget/{ver()} (linux-gnu)",
        lambda: f"Apache-HttpClient/{ver()} (Java/17.0.{r.randint(1, 12)})",
        lambda: f"Scrapy/{ver()} (+https://scrapy.org)",
        lambda: f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/{chrome()} Safari/537.36",
    ]


def unique_user_agents(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    browsers, bots = _browser_templates(r), _bot_templates(r)
    seen: set[str] = set()
    while len(seen) < n:
        templates = bots if r.random() < BOT_SHARE else browsers
        seen.add(r.choice(templates)())
    agents = list(seen)
    r.shuffle(agents)
    return agents


def time_calls(check: Callable[[str], object], agents: list[str]) -> list[float]:
    """Microseconds per call, one call per User-Agent."""
    clock = time.perf_counter_ns
    out = []
    gc.collect()
    for agent in agents:
        start = clock()
        check(agent)
        out.append((clock() - start) / 1000)
    return out


def summary(name: str, costs: list[float]) -> tuple[float, float]:
    costs = sorted(costs)
    median = statistics.median(costs)
    p99 = costs[min(len(costs) - 1, int(len(costs) * 0.99))]
    print(f"{name:<28} median {median:8.2f} µs   p99 {p99:8.2f} µs   ({len(costs)} calls)")
    return median, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="unique User-Agents per detector")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # Separate lists, so each detector's first sight of a User-Agent is in the timed loop, and
    # a warm-up list so neither pays for first-call effects there.
    agents = unique_user_agents(2 * args.n + 200, args.seed)
    warmup, ours, theirs = agents[:200], agents[200 : 200 + args.n], agents[200 + args.n :]

    started = time.perf_counter()
    abacus = BotDetector()
    print(f"BotDetector() built in {time.perf_counter() - started:.3f} s (fast path: {abacus.fast})")
    baseline = CrawlerDetect()
    for agent in warmup:
        abacus.is_bot(agent)
        baseline.is_crawler(agent)

    ours_costs = time_calls(abacus.is_bot, ours)
    theirs_costs = time_calls(baseline.is_crawler, theirs)
    bots = {agent for agent in ours if abacus.is_bot(agent)}
    summary("abacus, browsers", [c for a, c in zip(ours, ours_costs) if a not in bots])
    summary("abacus, bots", [c for a, c in zip(ours, ours_costs) if a in bots])
    our_median, _ = summary("abacus (ingest.bots)", ours_costs)
    their_median, _ = summary("baseline (crawlerdetect)", theirs_costs)

    differ = [a for a in ours if abacus.is_bot(a) != CrawlerDetect().is_crawler(a)]
    print(
        f"verdicts differing from crawlerdetect: {len(differ)} (headless markers: {sum('headless' in a.lower() for a in differ)})"
    )
    print(f"ratio baseline/abacus median: {their_median / our_median:.1f}x")


if __name__ == "__main__":
    main()
