"""Bot and crawler filtering on the User-Agent header (see detector.py for how and why)."""

from ingest.bots.detector import BotDetector

__all__ = ["BotDetector"]
