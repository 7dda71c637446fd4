"""Names of every Redis key Abacus uses, in one place."""

REGISTRY_SNAPSHOT = "abacus:registry:snapshot"
REGISTRY_GENERATION = "abacus:registry:generation"
REGISTRY_LOCK = "abacus:registry:lock"


def inflight_batches(consumer: str) -> str:
    """Hash of the batches a consumer has begun to insert and not yet acknowledged (last entry id
    -> entry count), so that after a restart it re-forms the very same batches."""
    return f"abacus:worker:inflight-batches:{consumer}"


def inflight_batch(consumer: str) -> str:
    """What a worker before the hash above wrote: one batch as "<count> <last id>" (or the count
    alone); still read on recovery, so a batch left in flight across an upgrade is re-formed."""
    return f"abacus:worker:inflight:{consumer}"

ROLLUP_GROUP = "abacus-rollup"
"""Consumer group that only bookmarks how far the roller has folded the stream: its position holds
back trimming until the roller has read an entry."""
ROLLUP_LOCK = "abacus:rollup:lock"
"""Held (with a TTL the roller keeps renewing) by the one process folding the stream into the rollup."""
ROLLUP_READY = "abacus:rollup:ready"
"""Set once the rollup tables hold everything up to the roller's bookmark (after a rebuild)."""
ROLLUP_REBUILD = "abacus:rollup:rebuild"
"""Set by `abacus rollup --rebuild`: the roller recomputes the rollup from abacus.events."""
ROLLUP_STEP = "abacus:rollup:step"
"""The stream range the roller is folding, so after a crash it redoes exactly that range."""
ROLLUP_BEHIND_MS = "abacus:rollup:behind_ms"
"""How far (stream milliseconds) the roller's last step ended behind what the workers had stored;
past ABACUS_ROLLUP_MAX_LAG_MS results are computed from the events instead."""
ROLLUP_ALIVE = "abacus:rollup:alive"
"""Refreshed by the roller, expiring minutes after it last ran: while it exists, trimming waits for
the roller's bookmark; once it is gone the rollup counts as abandoned (trimming goes on, and the
next roller rebuilds)."""
