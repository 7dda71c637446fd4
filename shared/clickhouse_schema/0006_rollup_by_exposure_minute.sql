-- The results rollup, third layout: totals per UTC *minute* of first exposure (was: day), with the
-- metrics' sufficient statistics per built-in event type. Minutes let any window of whole minutes
-- (hours, days) and every phase of an experiment be summed from the rollup: an allocation change
-- at an instant cuts at most one minute, the only sessions then grouped from the events. The
-- metric columns let `metrics=` (binomial and ratio metrics of cta_click, form_start,
-- form_submit and conversion) come from the rollup too. docs/performance.md ("Results query")
-- has the measurements. A new share key (shared/redis_keys.py, ROLLUP_BUILT) makes every share
-- rebuild once into this table; abacus.rollup_events is unchanged.

-- Signed differences of the per-variant totals, per UTC minute of each session's first impression
-- in the experiment (1970-01-01 00:00 for sessions never exposed), one row per variant and minute
-- per roller step. Summed over every minute they are the all-time results; over a range of
-- minutes, the results of the sessions first exposed in it. Merges sum rows with the same key.
-- The clean_* metric columns count only sessions exposed to this variant alone ("clean").
CREATE TABLE IF NOT EXISTS abacus.rollup_cohort_totals
(
    experiment_key                 LowCardinality(String),
    variant_key                    LowCardinality(String),
    cohort_minute                  DateTime('UTC'),
    impressions                    Int64,
    cta_clicks                     Int64,
    form_starts                    Int64,
    form_submits                   Int64,
    conversions                    Int64,
    unique_sessions                Int64,
    exposed_sessions               Int64,
    exposed_converted              Int64,
    value_total                    Float64,
    clean_exposed                  Int64,
    clean_converted                Int64,
    clean_value_sum                Float64,
    clean_value_sum_squares        Float64,
    multi_variant_share            Float64,
    clean_with_cta_click           Int64,
    clean_with_form_start          Int64,
    clean_with_form_submit         Int64,
    clean_cta_click_sum            Int64,
    clean_cta_click_squares        Int64,
    clean_form_start_sum           Int64,
    clean_form_start_squares       Int64,
    clean_form_submit_sum          Int64,
    clean_form_submit_squares      Int64,
    clean_conversion_sum           Int64,
    clean_conversion_squares       Int64,
    clean_cta_click_x_form_start   Int64,
    clean_cta_click_x_form_submit  Int64,
    clean_cta_click_x_conversion   Int64,
    clean_form_start_x_form_submit Int64,
    clean_form_start_x_conversion  Int64,
    clean_form_submit_x_conversion Int64
)
ENGINE = SummingMergeTree
ORDER BY (experiment_key, variant_key, cohort_minute)
SETTINGS non_replicated_deduplication_window = 1000;

DROP TABLE IF EXISTS abacus.rollup_day_totals
