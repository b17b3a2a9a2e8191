-- Raw readings, long format: one row per (device, quantity, timestamp).
-- Data class: raw readings. Retention default 395 days (13 months), see README "Retention".
--
-- Idempotency: ReplacingMergeTree keyed by (tenant_id, device_id, quantity, ts).
-- A re-delivered or replayed message produces rows with the same key, which
-- collapse at merge time and are hidden at query time by the `readings` view
-- (FINAL). The version column keeps the FIRST arrival (lowest source offset)
-- when two different values share a key, matching the validation rule
-- "conflicting duplicate: keep the first, flag".
CREATE TABLE IF NOT EXISTS {db}.readings_store
(
    tenant_id     LowCardinality(String),
    site_id       LowCardinality(String),
    branch        LowCardinality(String),
    device_id     String,
    quantity      LowCardinality(String),
    ts            DateTime64(3, 'UTC'),
    value         Float64,
    flags         UInt32,
    quality       Int32,
    gateway_id    String,
    src_topic     LowCardinality(String),
    src_partition UInt16,
    src_offset    UInt64,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    keep_first    UInt64 MATERIALIZED 18446744073709551615 - src_offset
)
ENGINE = ReplacingMergeTree(keep_first)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, device_id, quantity, ts)
TTL toDateTime(ts) + INTERVAL 395 DAY DELETE;

-- Analyst view: current, de-duplicated readings with the unit from the catalogue.
CREATE VIEW IF NOT EXISTS {db}.readings AS
SELECT tenant_id, site_id, branch, device_id, quantity, ts, value, flags, quality, gateway_id
FROM {db}.readings_store FINAL;
