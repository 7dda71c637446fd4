-- Who asked for an erasure and when (`POST /api/v1/admin/erase`), never what was erased: the
-- subject is kept only as a SHA-256 of "<kind>:<id>", enough to answer "was this id erased, and
-- when?" for someone who brings the id, and nothing to anyone who does not. One row per job; a
-- job rq runs again (it is idempotent) writes the same row, which the engine collapses.
CREATE TABLE IF NOT EXISTS abacus.erasure_audit
(
    job_id         String,
    subject_kind   LowCardinality(String),
    subject_sha256 String,
    requested_by   String,
    requested_at   DateTime64(3, 'UTC'),
    erased_at      DateTime64(3, 'UTC'),
    events_erased  UInt64
)
ENGINE = ReplacingMergeTree(erased_at)
ORDER BY job_id;
