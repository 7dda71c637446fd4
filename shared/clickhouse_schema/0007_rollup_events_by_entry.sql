-- The roller's copy of the events it folded, second layout: each row names the stream entry it
-- was folded up to (folded_entry, the entry id as ms * 2^64 + seq; 0 for a rebuild's copy), and
-- only the columns a session's state is read back from. So a step can send its events while it
-- is still folding (worker/rollup_share.py): rows a crashed step left beyond its share's bookmark
-- are passed over when a session is read back (only rows up to the step's start count, the last
-- copy of each event by folded_entry winning), so they can never make a redone step think its
-- events were already counted. `corrected` marks the copy abacus.events keeps of an event that
-- arrived twice with other contents (written at the step's end, it wins over the raw copies of
-- the same step). A new share key (shared/redis_keys.py, ROLLUP_BUILT) makes every share rebuild
-- once into this table. docs/performance.md ("The rollup") has the measurements.
DROP TABLE IF EXISTS abacus.rollup_events;

CREATE TABLE IF NOT EXISTS abacus.rollup_events
(
    event_id         String,
    experiment_key   LowCardinality(String),
    variant_key      LowCardinality(String),
    session_id       String,
    event_type       LowCardinality(String),
    conversion_value Nullable(Float64),
    received_at      DateTime64(3, 'UTC'),
    folded_entry     UInt128,
    corrected        UInt8
)
ENGINE = ReplacingMergeTree
ORDER BY (experiment_key, session_id, variant_key, event_id, folded_entry, corrected)
SETTINGS non_replicated_deduplication_window = 1000
