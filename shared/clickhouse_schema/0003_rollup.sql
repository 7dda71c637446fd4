-- The results rollup: what `GET /api/v1/experiments/results` reads instead of scanning every event.
-- One roller (elected among the workers) folds the stream, entry by entry, into these tables;
-- docs/performance.md ("Results query") explains the design and README.md how analysts use it.

-- Every session's events per experiment, as the roller last saw them: it compares a session
-- before and after new events to know what to add to the totals. Parallel arrays, one element
-- per distinct (variant_key, event_id), as abacus.events deduplicates them.
-- The highest version is the current state (read with FINAL).
CREATE TABLE IF NOT EXISTS abacus.rollup_sessions
(
    experiment_key LowCardinality(String),
    session_id     String,
    version        UInt64,
    variant_keys   Array(LowCardinality(String)),
    event_ids      Array(String),
    event_types    Array(LowCardinality(String)),
    event_values   Array(Float64)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (experiment_key, session_id)
SETTINGS index_granularity = 1024, non_replicated_deduplication_window = 1000;

-- Signed differences of the per-variant totals, one row per variant per roller step; summed they
-- are the results' counts and the analysis' sufficient statistics (columns as in the API's rollup).
-- Merges sum rows with the same key, so the table stays a few rows per variant.
CREATE TABLE IF NOT EXISTS abacus.rollup_totals
(
    experiment_key          LowCardinality(String),
    variant_key             LowCardinality(String),
    impressions             Int64,
    cta_clicks              Int64,
    form_starts             Int64,
    form_submits            Int64,
    conversions             Int64,
    unique_sessions         Int64,
    exposed_sessions        Int64,
    exposed_converted       Int64,
    value_total             Float64,
    clean_exposed           Int64,
    clean_converted         Int64,
    clean_value_sum         Float64,
    clean_value_sum_squares Float64,
    multi_variant_share     Float64
)
ENGINE = SummingMergeTree
ORDER BY (experiment_key, variant_key)
SETTINGS non_replicated_deduplication_window = 1000;
