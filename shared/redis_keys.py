"""Names of every Redis key Abacus uses, in one place."""

from __future__ import annotations

import dataclasses
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

REGISTRY_SNAPSHOT = "abacus:registry:snapshot"
REGISTRY_GENERATION = "abacus:registry:generation"
REGISTRY_LOCK = "abacus:registry:lock"


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


ROLLUP_BUILT = "built-layout4"
"""The share key set once its tables hold everything up to its bookmark (``rollup_shard_key``),
named after the layout of the rollup's tables: a migration that changes them renames the key, so
every share is rebuilt once into the new tables instead of trusting the old bookmark
(shared/clickhouse_schema/0006_rollup_by_exposure_minute.sql made it layout 3,
0007_rollup_events_by_entry.sql layout 4)."""


def rollup_group(shard: int, shards: int) -> str:
    return ROLLUP_GROUP if shards == 1 else f"{ROLLUP_GROUP}:{shard}of{shards}"


def rollup_shard_key(name: str, shard: int, shards: int) -> str:
    """A key of one share: ``lock`` (held, with a TTL its roller renews, by the one process folding
    it), ``ROLLUP_BUILT`` ("<generation> <rebuild request served>", set once its tables hold
    everything up to its bookmark), ``step`` (the stream range being folded, redone exactly after a crash),
    ``alive`` (refreshed by its roller, expiring minutes after it last ran: once gone, trimming no
    longer waits for the share and its next roller rebuilds)."""
    base = f"abacus:rollup:{name}"
    return base if shards == 1 else f"{base}:{shard}of{shards}"


# ----- stream shards ---------------------------------------------------------------------------
# With ABACUS_STREAM_SHARDS=n > 1, or on a Redis Cluster, every key of one stream shard (the stream,
# its dead letters, the rollup's step in hand) carries the shard's
# hash tag, so Redis Cluster keeps them in one slot and the transactions and scripts over them
# stay legal. The consumer groups (workers' and rollup bookmarks) live inside the stream itself.
# One stream on a single server keeps the untagged names, so existing data keeps working.


@dataclasses.dataclass(frozen=True, slots=True)
class StreamShard:
    index: int
    shards: int
    stream: str
    dead_letter: str
    tag: str
    """"" for the untagged single stream, else "{...}" (the hash tag, braces included)."""

    def rollup_step(self, share: int, shares: int) -> str:
        """The stream range a rollup share is folding from this stream shard (redone after a crash)."""
        base = rollup_shard_key("step", share, shares)
        return base if not self.tag else f"{base}:{self.tag}"


def stream_shards(stream: str, dead_letter: str, shards: int = 1, tagged: bool = False) -> list[StreamShard]:
    """The stream shards, in order. ``tagged``: hash tags even for one shard (Redis Cluster)."""
    shards = max(1, shards)
    if shards == 1 and not tagged:
        return [StreamShard(0, 1, stream, dead_letter, "")]
    layout = []
    for index in range(shards):
        tag = "{" + (stream if shards == 1 else f"{stream}:{index}") + "}"
        layout.append(StreamShard(index, shards, tag, f"{dead_letter}:{tag}", tag))
    return layout


def rollup_share_key(name: str, shard: int, shards: int, tagged: bool) -> str:
    """``rollup_shard_key`` with the share's own hash tag when ``tagged``: its lock script sets
    ``lock`` and ``alive`` in one call, so on a Redis Cluster they must share a slot."""
    if not tagged:
        return rollup_shard_key(name, shard, shards)
    return "{abacus:rollup:" + f"{shard}of{shards}" + "}:" + name


def session_shard(session_id: str, shards: int) -> int:
    """The stream shard of a session: CRC-32 of its id, so every process (of any version) agrees
    and one session's events stay in order in one stream."""
    return 0 if shards <= 1 else zlib.crc32(session_id.encode()) % shards


def stream_layout(settings: Settings) -> list[StreamShard]:
    """The stream shards the settings name: what every process of one deployment agrees on."""
    return stream_shards(settings.stream, settings.dead_letter_stream, settings.stream_shards, settings.hash_tagged)


DEAD_LETTERS_REPLAYED = "abacus:dead-letters:replayed"
"""Hash: dead-letter entry id -> the stream id it was replayed as. Written in one script with the
XADD (jobs/dead_letters.py), so a replay run twice appends nothing twice; the dead letters stay
(the roller skips their source entries by reading them)."""


def dead_letters_replayed(dead_letter_stream: str) -> str:
    """DEAD_LETTERS_REPLAYED for one dead-letter stream: a tagged (sharded) one has a hash of its
    own, in its slot, as the replay script writes it with the XADD to the shard's stream; the
    untagged default keeps the one name. (Tagged dead letters replayed before they had their own
    hash are still found in DEAD_LETTERS_REPLAYED.)"""
    return DEAD_LETTERS_REPLAYED if "{" not in dead_letter_stream else f"{DEAD_LETTERS_REPLAYED}:{dead_letter_stream}"


ROLLUP_VERIFICATION = "abacus:rollup:verification"
"""JSON of the last rollup verification (jobs/verify.py): when, variants checked, mismatches."""
VERIFY_DAY = "abacus:jobs:verify-enqueued:"
"""Prefix of a per-UTC-day key (SET NX) that lets one `abacus jobs` process enqueue the nightly verification."""
ALERT_SLOT = "abacus:jobs:alert-check:"
"""Prefix of a per-interval key (SET NX) that lets one process enqueue each periodic alert check."""
