-- Proposed, not yet applied: 15-minute instantaneous statistics and generator fuel tables with their
-- rollup views. They land in sql/ together with the stream code that fills them (issue 4).

-- 15-minute statistics of instantaneous quantities (voltage, frequency, PF, power, temperatures...).
-- Data class: intervals/rollups. Retention default 1095 days. Overwritten like intervals_store.
CREATE TABLE IF NOT EXISTS {db}.instant_stats_store
(
    tenant_id      LowCardinality(String),
    site_id        LowCardinality(String),
    device_id      String,
    quantity       LowCardinality(String),
    interval_start DateTime64(3, 'UTC'),
    local_day      Date,
    min            Float64,
    max            Float64,
    sum            Float64,
    n              UInt32,
    computed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant_id, device_id, quantity, interval_start)
TTL toDateTime(interval_start) + INTERVAL 1095 DAY DELETE;

-- Generator fuel per 15-minute interval (litres) and runtime (s). Data class: intervals/rollups.
CREATE TABLE IF NOT EXISTS {db}.fuel_intervals_store
(
    tenant_id           LowCardinality(String),
    site_id             LowCardinality(String),
    device_id           String,
    interval_start      DateTime64(3, 'UTC'),
    local_day           Date,
    used_l              Float64,
    refuel_l            Float64,
    unexplained_drop_l  Float64,
    runtime_s           Float64,
    runtime_estimated_s Float64,
    n_readings          UInt32,
    computed_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant_id, device_id, interval_start)
TTL toDateTime(interval_start) + INTERVAL 1095 DAY DELETE;

CREATE VIEW IF NOT EXISTS {db}.fuel_daily AS
SELECT tenant_id, site_id, device_id, local_day AS day, sum(f.used_l) AS used_l, sum(f.refuel_l) AS refuel_l,
       sum(f.unexplained_drop_l) AS unexplained_drop_l, sum(f.runtime_s) AS runtime_s,
       sum(f.runtime_estimated_s) AS runtime_estimated_s
FROM {db}.fuel_intervals_store AS f FINAL
GROUP BY tenant_id, site_id, device_id, day;

CREATE VIEW IF NOT EXISTS {db}.instant_hourly_device AS
SELECT tenant_id, site_id, device_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, site_id, device_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_hourly_site AS
SELECT tenant_id, site_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, site_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_hourly_tenant AS
SELECT tenant_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_device AS
SELECT tenant_id, site_id, device_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, site_id, device_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_site AS
SELECT tenant_id, site_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, site_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_tenant AS
SELECT tenant_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_stats_store AS s FINAL
GROUP BY tenant_id, quantity, day;
