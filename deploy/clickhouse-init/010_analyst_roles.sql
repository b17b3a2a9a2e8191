-- Analyst access on a ClickHouse server (chDB has no users): one role per tenant that can
-- read the analyst views, and row policies so that it sees only its tenant's rows.
-- Run after `telemetry db migrate` has created the tables (the worker does at start);
-- per-tenant roles are created the same way for each tenant (see README "Storage").
CREATE DATABASE IF NOT EXISTS telemetry;
CREATE ROLE IF NOT EXISTS analyst_acme_energy;
GRANT SELECT ON telemetry.readings TO analyst_acme_energy;
GRANT SELECT ON telemetry.readings_store TO analyst_acme_energy;
GRANT SELECT ON telemetry.sim_usage TO analyst_acme_energy;
GRANT SELECT ON telemetry.sim_usage_store TO analyst_acme_energy;
GRANT SELECT ON telemetry.device_registry TO analyst_acme_energy;
GRANT SELECT ON telemetry.device_registry_store TO analyst_acme_energy;
CREATE ROW POLICY IF NOT EXISTS acme_energy_readings ON telemetry.readings_store
    FOR SELECT USING tenant_id = 'acme-energy' TO analyst_acme_energy;
CREATE ROW POLICY IF NOT EXISTS acme_energy_sim ON telemetry.sim_usage_store
    FOR SELECT USING tenant_id = 'acme-energy' TO analyst_acme_energy;
CREATE ROW POLICY IF NOT EXISTS acme_energy_registry ON telemetry.device_registry_store
    FOR SELECT USING tenant_id = 'acme-energy' TO analyst_acme_energy;
CREATE USER IF NOT EXISTS analyst_acme IDENTIFIED WITH sha256_password BY 'acme-analyst' DEFAULT ROLE analyst_acme_energy;
GRANT analyst_acme_energy TO analyst_acme;
