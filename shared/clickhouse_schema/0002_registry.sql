-- Every change to an experiment definition, kept forever: the admin API's history and the
-- durable source of the registry snapshot that Redis caches for ingest.
CREATE TABLE IF NOT EXISTS abacus.experiment_versions
(
    experiment_key String,
    version        UInt32,
    action         LowCardinality(String),
    changed_at     DateTime64(3, 'UTC'),
    changed_by     String,
    archived       Bool,
    definition     String
)
ENGINE = ReplacingMergeTree
ORDER BY (experiment_key, version);

-- Every change to the site settings (the global kill switch).
CREATE TABLE IF NOT EXISTS abacus.settings_versions
(
    version             UInt32,
    changed_at          DateTime64(3, 'UTC'),
    changed_by          String,
    experiments_enabled Bool
)
ENGINE = ReplacingMergeTree
ORDER BY version;
