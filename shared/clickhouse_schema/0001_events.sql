-- Raw beacon events, one row per accepted beacon.
-- ReplacingMergeTree on a key that ends in event_id collapses a beacon that arrived twice (a client
-- retry, or a batch re-inserted after a worker crash); queries read it with FINAL so a duplicate
-- is never counted even before a background merge has removed it.
-- The key starts with (experiment_key, variant_key, session_id): every results query filters one
-- experiment and groups by variant and session, which then reads a contiguous range in order.
-- Monthly partitions keep parts few and let retention drop whole months.
CREATE TABLE IF NOT EXISTS abacus.events
(
    event_id         String,
    experiment_key   LowCardinality(String),
    variant_key      LowCardinality(String),
    session_id       String,
    event_type       LowCardinality(String),
    path             String CODEC(ZSTD(1)),
    conversion_value Nullable(Float64),
    metadata         String CODEC(ZSTD(1)),
    client_ts        Nullable(DateTime64(3, 'UTC')),
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (experiment_key, variant_key, session_id, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
