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

# The results rollup's keys: read and written only by shared/rollup/protocol.py, which owns them.
ROLLUP_GROUP = "abacus-rollup"
"""Consumer group that only bookmarks how far the roller has folded the stream: its position holds
back trimming until the roller has read an entry. With ABACUS_ROLLUP_SHARDS=n > 1, one group per
share of experiments, ``abacus-rollup:<share>of<n>``."""
ROLLUP_REBUILD = "abacus:rollup:rebuild"
"""Counts rebuild requests (`POST /api/v1/admin/rollup/rebuild`): every share whose last rebuild
served an earlier request recomputes its part of the rollup from abacus.events."""
ROLLUP_ROLLERS = "abacus:rollup:rollers"
"""Sorted set of running roller processes, scored by when their heartbeat expires: how many share
the work, so each takes its fair number of shares."""


def rollup_group(shard: int, shards: int) -> str:
    return ROLLUP_GROUP if shards == 1 else f"{ROLLUP_GROUP}:{shard}of{shards}"


def rollup_shard_key(name: str, shard: int, shards: int) -> str:
    """A key of one share: ``lock`` (held, with a TTL its roller renews, by the one process folding
    it), ``built`` ("<generation> <rebuild request served>", set once its tables hold everything
    up to its bookmark), ``step`` (the stream range being folded, redone exactly after a crash),
    ``alive`` (refreshed by its roller, expiring minutes after it last ran: once gone, trimming no
    longer waits for the share and its next roller rebuilds)."""
    base = f"abacus:rollup:{name}"
    return base if shards == 1 else f"{base}:{shard}of{shards}"

DEAD_LETTERS_REPLAYED = "abacus:dead-letters:replayed"
"""Hash: dead-letter entry id -> the stream id it was replayed as. Written in one script with the
XADD (jobs/dead_letters.py), so a replay run twice appends nothing twice; the dead letters stay
(the roller skips their source entries by reading them)."""

ROLLUP_VERIFICATION = "abacus:rollup:verification"
"""JSON of the last rollup verification (jobs/verify.py): when, variants checked, mismatches."""
VERIFY_DAY = "abacus:jobs:verify-enqueued:"
"""Prefix of a per-UTC-day key (SET NX) that lets one `abacus jobs` process enqueue the nightly verification."""
ALERT_SLOT = "abacus:jobs:alert-check:"
"""Prefix of a per-interval key (SET NX) that lets one process enqueue each periodic alert check."""
