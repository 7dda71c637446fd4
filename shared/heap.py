"""How a long-running process that folds or drains the stream sets up Python's cyclic collector.

Two measured reasons (docs/performance.md, "Sixth pass" of the rollup):

- The start-up heap (every imported module) lives as long as the process. Frozen, it is no
  longer walked by the full collections that stream replies set off.
- A step's session states are not tracked, but the dicts and lists that hold them (keyed by
  tuples, which the collector tracks until it has looked at them) are, and were walked again by
  every full collection: at the default threshold (700 allocations) a roller ran 28 full
  collections per million events, 0.7 s of a 6 s fold, a worker 0.5 s of its drain. Young
  collections every ``YOUNG_COLLECTION_EVERY`` allocations leave 4 (0.05 s). Garbage is freed
  by reference counting as before; only the rare reference cycle waits longer to be collected.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 20_000
"""Container allocations between young collections (CPython's default: 700)."""


def settle_heap() -> None:
    """Freeze what is alive now and collect young objects less often; call once, when the
    process has built everything it runs with."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
