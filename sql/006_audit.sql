-- Audit log: who did what, when, with which parameters and outcome.
-- Data class: audit log. Retention default 2555 days (7 years).
CREATE TABLE IF NOT EXISTS {db}.audit_log
(
    tenant_id  LowCardinality(String),   -- '' for platform-wide actions
    at         DateTime64(3, 'UTC'),
    actor      String,
    action     LowCardinality(String),
    parameters String,                   -- JSON
    outcome    String                    -- JSON
)
ENGINE = MergeTree
ORDER BY (tenant_id, at)
TTL toDateTime(at) + INTERVAL 2555 DAY DELETE;
