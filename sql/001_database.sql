-- Database and migration bookkeeping.
-- {db} is replaced by the configured database name when the file is applied.
CREATE DATABASE IF NOT EXISTS {db};

-- Bookkeeping only (no TTL: it must outlive every data class).
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY name;
