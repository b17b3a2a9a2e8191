-- Interval consumption of cumulative registers: 15 minutes aligned to UTC hours.
-- Data class: intervals/rollups. Retention default 1095 days.
-- Written by the stream, which recomputes every interval a batch can change (a pure function
-- of the stored readings) and overwrites it: the newest computed_at wins.
-- flags: bits of pipeline.flags.Flag (estimated 32, rollover 64, reset 128, implausible_jump 256,
-- conflict 512).
CREATE TABLE IF NOT EXISTS {db}.intervals_store
(
    tenant_id      LowCardinality(String),
    site_id        LowCardinality(String),
    device_id      String,
    quantity       LowCardinality(String),
    interval_start DateTime64(3, 'UTC'),
    local_day      Date,                    -- date of interval_start in the device's registry time zone
    role           LowCardinality(String),  -- registry attribute: main | sub | ''
    measured       Float64,                 -- register units (Wh, varh, L, m3, s)
    estimated      Float64,                 -- gap-filled share, never mixed into measured
    flags          UInt32,
    n_readings     UInt32,
    cost           Nullable(Float64),       -- (measured + estimated) x tariff rate, where a tariff applies
    currency       LowCardinality(String),
    computed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant_id, device_id, quantity, interval_start)
TTL toDateTime(interval_start) + INTERVAL 1095 DAY DELETE;

CREATE VIEW IF NOT EXISTS {db}.energy_intervals AS
SELECT tenant_id, site_id, device_id, quantity, interval_start, local_day, role, measured, estimated,
       measured + estimated AS total, flags, n_readings, cost, currency
FROM {db}.intervals_store FINAL;

-- Register events (rollover, reset, replacement, implausible_jump, gap, conflict) for alerts and audits.
CREATE TABLE IF NOT EXISTS {db}.register_events_store
(
    tenant_id   LowCardinality(String),
    site_id     LowCardinality(String),
    device_id   String,
    quantity    LowCardinality(String),
    kind        LowCardinality(String),
    ts          DateTime64(3, 'UTC'),
    prev_ts     Nullable(DateTime64(3, 'UTC')),
    prev_value  Nullable(Float64),
    value       Float64,
    delta       Float64,
    cap         Nullable(Float64),
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, device_id, quantity, ts, kind)
TTL toDateTime(ts) + INTERVAL 1095 DAY DELETE;

CREATE VIEW IF NOT EXISTS {db}.register_events AS
SELECT tenant_id, site_id, device_id, quantity, kind, ts, prev_ts, prev_value, value, delta, cap
FROM {db}.register_events_store FINAL;
