-- Device registry as materialised from registry.devices. Data class: registry.
-- Retention default 3650 days after the last change. One row per subject; the
-- newest version (registry topic offset) wins; unregistered subjects are kept
-- with deleted = 1 so that history stays explainable.
-- SIM subjects are stored under their pseudonym, never the raw ICCID.
CREATE TABLE IF NOT EXISTS {db}.device_registry_store
(
    tenant_id    LowCardinality(String),
    site_id      LowCardinality(String),
    branch       LowCardinality(String),
    subject_id   String,
    subject_type LowCardinality(String),
    kind         LowCardinality(String),
    timezone     LowCardinality(String),
    gateway_id   String,
    sim_id       String,
    attributes   String,      -- the registration as JSON (identifiers pseudonymised, no keys)
    deleted      UInt8,
    version      UInt64,      -- registry topic offset
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, subject_id)
TTL toDateTime(updated_at) + INTERVAL 3650 DAY DELETE;

CREATE VIEW IF NOT EXISTS {db}.device_registry AS
SELECT tenant_id, site_id, branch, subject_id, subject_type, kind, timezone, gateway_id, sim_id,
       attributes, updated_at
FROM {db}.device_registry_store FINAL
WHERE deleted = 0;
