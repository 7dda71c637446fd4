-- The results rollup, second layout: totals per UTC day of first exposure, and the roller's own
-- copy of the events it has folded. docs/performance.md ("Results query") explains the design.

-- Every event the roller has folded, as abacus.events holds it (same columns, same deduplication
-- by (experiment, variant, session, event_id), the last copy winning). The roller reads a
-- session's folded events back from here when the session returns after leaving its cache, so
-- the key starts with (experiment_key, session_id). It holds only what was folded: abacus.events
-- may already hold more (stored, not yet folded), which must not be mistaken for folded.
CREATE TABLE IF NOT EXISTS abacus.rollup_events
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
ORDER BY (experiment_key, session_id, variant_key, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Signed differences of the per-variant totals, per UTC day of each session's first impression
-- in the experiment (cohort_day; 1970-01-01 for sessions never exposed), one row per variant and
-- day per roller step. Summed over every day they are the all-time results; over a range of
-- days, the results of the sessions first exposed in it. Merges sum rows with the same key.
CREATE TABLE IF NOT EXISTS abacus.rollup_day_totals
(
    experiment_key          LowCardinality(String),
    variant_key             LowCardinality(String),
    cohort_day              Date,
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
ORDER BY (experiment_key, variant_key, cohort_day)
SETTINGS non_replicated_deduplication_window = 1000;

-- The first layout (all-time totals and per-session arrays) is rebuilt into the tables above.
DROP TABLE IF EXISTS abacus.rollup_totals;
DROP TABLE IF EXISTS abacus.rollup_sessions
