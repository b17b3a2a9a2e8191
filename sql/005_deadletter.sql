-- One row per dead-letter record (the bytes stay on the deadletter topic).
-- Data class: dead letters. Retention default 30 days.
-- Keyed by source position + reason so that a re-delivered message does not count twice.
CREATE TABLE IF NOT EXISTS {db}.deadletter_store
(
    tenant_id     LowCardinality(String),   -- '' when the tenant is unknown (undecodable, unknown device)
    reason        LowCardinality(String),
    detail        String,
    src_topic     LowCardinality(String),
    src_partition UInt16,
    src_offset    UInt64,
    record_index  Int32,
    message_key   String,
    value_bytes   UInt32,
    failed_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(failed_at)
PARTITION BY toYYYYMMDD(failed_at)
ORDER BY (tenant_id, reason, src_topic, src_partition, src_offset, record_index)
TTL toDateTime(failed_at) + INTERVAL 30 DAY DELETE;

-- Dead-letter summary per tenant, reason, source topic and day.
CREATE VIEW IF NOT EXISTS {db}.deadletter_summary AS
SELECT tenant_id, reason, src_topic, toDate(failed_at) AS day, count() AS records,
       any(detail) AS example_detail
FROM {db}.deadletter_store FINAL
GROUP BY tenant_id, reason, src_topic, day;
