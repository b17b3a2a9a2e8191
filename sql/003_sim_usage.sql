-- SIM usage records. Data class: SIM usage. Retention default 730 days.
-- Identifiers are keyed pseudonyms (HMAC-SHA256 with a per-tenant key derived from
-- PSEUDONYM_SECRET); the raw ICCID/IMSI/MSISDN/IMEI live only in sim_identity.
CREATE TABLE IF NOT EXISTS {db}.sim_usage_store
(
    tenant_id     LowCardinality(String),
    site_id       LowCardinality(String),
    sim_id        String,             -- pseudonym of the ICCID
    imei_id       String,             -- pseudonym of the IMEI ('' if none)
    period_start  DateTime64(3, 'UTC'),
    period_end    DateTime64(3, 'UTC'),
    bytes_up      UInt64,
    bytes_down    UInt64,
    sms_mo        UInt32,
    sms_mt        UInt32,
    voice_seconds UInt32,
    csd_seconds   UInt32,
    sessions      UInt32,
    mcc           LowCardinality(String),
    mnc           LowCardinality(String),
    home_mcc      LowCardinality(String),
    home_mnc      LowCardinality(String),
    roaming       UInt8,
    rat           LowCardinality(String),
    plan_id       LowCardinality(String),
    flags         UInt32,
    src_topic     LowCardinality(String),
    src_partition UInt16,
    src_offset    UInt64,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    keep_first    UInt64 MATERIALIZED 18446744073709551615 - src_offset
)
ENGINE = ReplacingMergeTree(keep_first)
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant_id, sim_id, period_start, period_end)
TTL toDateTime(period_start) + INTERVAL 730 DAY DELETE;

CREATE VIEW IF NOT EXISTS {db}.sim_usage AS
SELECT tenant_id, site_id, sim_id, imei_id, period_start, period_end, bytes_up, bytes_down,
       sms_mo, sms_mt, voice_seconds, csd_seconds, sessions, mcc, mnc, home_mcc, home_mnc,
       roaming, rat, plan_id, flags
FROM {db}.sim_usage_store FINAL;

-- Restricted: raw identifiers for operations (support, erasure). Grant to operators only.
-- Same retention as SIM usage, counted from the last time the SIM was seen.
CREATE TABLE IF NOT EXISTS {db}.sim_identity
(
    tenant_id  LowCardinality(String),
    sim_id     String,
    iccid      String,
    imsi       String,
    msisdn     String,
    imei       String,
    last_seen  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(last_seen)
ORDER BY (tenant_id, sim_id)
TTL toDateTime(last_seen) + INTERVAL 730 DAY DELETE;
