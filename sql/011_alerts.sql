-- Alert transitions (raised / updated / cleared), one row per transition published on the alerts topic.
-- Data class: alerts. Retention default 730 days.
-- Keyed by the episode id, state and last_seen: a re-published transition (replay, redelivery)
-- collapses to one row.
CREATE TABLE IF NOT EXISTS {db}.alerts_store
(
    alert_id     String,
    tenant_id    LowCardinality(String),
    site_id      LowCardinality(String),
    subject_id   String,                    -- device id, or the SIM pseudonym (sim_id) for SIM rules
    subject_type LowCardinality(String),    -- device | sim
    rule         LowCardinality(String),
    severity     LowCardinality(String),    -- info | warning | critical
    state        LowCardinality(String),    -- raised | updated | cleared
    first_seen   DateTime64(3, 'UTC'),      -- event time of the episode's first firing evaluation
    last_seen    DateTime64(3, 'UTC'),      -- event time of its latest firing evaluation
    count        UInt32,                    -- firing evaluations in the episode so far
    observed     Nullable(Float64),
    threshold    Nullable(Float64),
    message      String,
    attributes   Map(String, String),       -- e.g. cause = connectivity | device | unknown for gap alerts
    published_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(published_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (tenant_id, alert_id, state, last_seen, count)
TTL toDateTime(first_seen) + INTERVAL 730 DAY DELETE;

-- Every transition, newest first per episode: the alert history analysts query.
CREATE VIEW IF NOT EXISTS {db}.alerts AS
SELECT alert_id, tenant_id, site_id, subject_id, subject_type, rule, severity, state, first_seen, last_seen,
       count, observed, threshold, message, attributes, published_at
FROM {db}.alerts_store FINAL;

-- Episodes still open: the latest transition of each episode, when it is not a clear.
-- Columns: alert_id, tenant_id, site_id, subject_id, subject_type, rule, severity (current),
-- first_seen, last_seen, count, message, attributes (of the latest transition), transitions.
CREATE VIEW IF NOT EXISTS {db}.alerts_open AS
SELECT alert_id, tenant_id, any(site_id) AS site_id, any(subject_id) AS subject_id,
       any(subject_type) AS subject_type, any(rule) AS rule,
       argMax(severity, (published_at, a.count, a.last_seen)) AS severity,
       min(first_seen) AS first_seen, max(a.last_seen) AS last_seen, max(a.count) AS count,
       argMax(message, (published_at, a.count, a.last_seen)) AS message,
       argMax(attributes, (published_at, a.count, a.last_seen)) AS attributes,
       count() AS transitions
FROM {db}.alerts_store AS a FINAL
GROUP BY tenant_id, alert_id
HAVING countIf(state = 'cleared') = 0;

-- Episodes per tenant, rule and severity per day (of first_seen, UTC), with how many are still open.
CREATE VIEW IF NOT EXISTS {db}.alerts_daily AS
SELECT tenant_id, rule, severity, toDate(first_seen) AS day, uniqExact(alert_id) AS episodes,
       uniqExactIf(alert_id, state = 'cleared') AS cleared
FROM {db}.alerts_store FINAL
GROUP BY tenant_id, rule, severity, day;
