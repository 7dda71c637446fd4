"""Which sessions the rollup has ever stored, approximately: a Bloom filter.

Most sessions a roller step touches are either in its cache or brand new. Looking every new one
up in ClickHouse would cost a query that reads more of ``abacus.rollup_sessions`` as it grows;
the filter answers "certainly never stored" for them in memory (about 2 bytes per session), so
only sessions it may have stored are looked up. A false "maybe" costs one needless lookup, never
a wrong count.
"""

from __future__ import annotations

_PROBES = 4
_BITS_PER_SESSION = 16  # about 0.2% false positives at the planned size, 2.4% at twice that


class KnownSessions:
    def __init__(self, expected_sessions: int) -> None:
        bits = 1 << max(20, (max(1, expected_sessions) * _BITS_PER_SESSION - 1).bit_length())
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)
        self.added = 0
        self.capacity = bits // _BITS_PER_SESSION
        """Sessions it was sized for; past about twice that, rebuild it larger."""

    # The probes are unrolled (_PROBES of them): both run once per session a step touches.
    def add(self, experiment_key: str, session_id: str) -> None:
        bits, mask = self._bits, self._mask
        h = hash((experiment_key, session_id))
        step = (h >> 32) | 1
        p = h & mask
        bits[p >> 3] |= 1 << (p & 7)
        p = (h + step) & mask
        bits[p >> 3] |= 1 << (p & 7)
        p = (h + 2 * step) & mask
        bits[p >> 3] |= 1 << (p & 7)
        p = (h + 3 * step) & mask
        bits[p >> 3] |= 1 << (p & 7)
        self.added += 1

    def may_contain(self, experiment_key: str, session_id: str) -> bool:
        bits, mask = self._bits, self._mask
        h = hash((experiment_key, session_id))
        step = (h >> 32) | 1
        p = h & mask
        if not bits[p >> 3] & (1 << (p & 7)):
            return False
        p = (h + step) & mask
        if not bits[p >> 3] & (1 << (p & 7)):
            return False
        p = (h + 2 * step) & mask
        if not bits[p >> 3] & (1 << (p & 7)):
            return False
        p = (h + 3 * step) & mask
        return bool(bits[p >> 3] & (1 << (p & 7)))

    @property
    def overfull(self) -> bool:
        return self.added > 2 * self.capacity
