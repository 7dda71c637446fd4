"""Whether the bot detector's fast path is active, logged and exported (kept out of the package's
``__init__``: importing ``ingest.bots`` must not import logging or prometheus_client, which compile
regexes at import)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.bots.detector import BotDetector
    from shared.prom import Metrics

log = logging.getLogger(__name__)


def report_fast_path(detector: BotDetector, metrics: Metrics) -> BotDetector:
    """Logs once, when the app is built, whether ``detector`` runs its fast path (which relies on
    the private ``re._parser``), and exports it as ``abacus_bot_fast_path_active`` (1/0): a Python
    or crawlerdetect upgrade that turns it off is then seen, not only felt as latency."""
    gauge = metrics.gauge(
        "abacus_bot_fast_path_active", "1 if the bot detector runs its rewritten regexes (re._parser), 0 if the originals."
    )
    gauge.set(1 if detector.fast else 0)
    if detector.fast:
        log.info("bot detector: fast path active (rewritten crawlerdetect regexes)")
    else:
        log.warning("bot detector: fast path NOT active, crawlerdetect's original regexes run (slower, same verdicts)")
    return detector
