-- Rollups of instantaneous quantities (analyst views over the raw readings) and generator fuel
-- (a table the stream writes, pipeline/worker/fuel.py, and its daily view).

-- instant_intervals: min / avg / max of instantaneous quantities and levels (voltage per phase,
-- current, frequency, power factor, power, temperatures, battery voltage, fuel level) per device
-- x quantity x 15 minutes (UTC), straight from the current readings (readings_store FINAL), so a
-- late or corrected reading shows at once and the stream pays nothing for it.
--   interval_start  start of the 15-minute interval, UTC
--   local_day       date of interval_start in the device's registry time zone (UTC if none); every
--                   zone offset is a multiple of 15 minutes, so an interval never straddles midnight
--   min, max, avg   of the readings in the interval, in the quantity's unit (catalogue)
--   sum, n          sum and number of readings (avg = sum / n; weight averages of averages by n)
-- The quantity list is the catalogue's instantaneous and level codes
-- (pipeline.derive.instantaneous_codes; tests/unit/test_instant_views.py keeps them equal).
-- formatDateTime takes a time zone per row (ClickHouse 23.8+), toDate(ts, tz) does not.
CREATE VIEW IF NOT EXISTS {db}.instant_intervals AS
SELECT s.tenant_id AS tenant_id, s.site_id AS site_id, s.device_id AS device_id, s.quantity AS quantity,
       s.interval_start AS interval_start,
       toDate(formatDateTime(s.interval_start, '%F', if(r.timezone = '', 'UTC', r.timezone))) AS local_day,
       s.min AS min, s.sum / s.n AS avg, s.max AS max, s.sum AS sum, s.n AS n
FROM
(
    SELECT tenant_id, site_id, device_id, quantity, toStartOfFifteenMinutes(ts) AS interval_start,
           min(value) AS min, max(value) AS max, sum(value) AS sum, toUInt32(count()) AS n
    FROM {db}.readings_store FINAL
    WHERE quantity IN ('active_power', 'active_power_export', 'active_power_l1', 'active_power_l2',
                       'active_power_l3', 'battery_voltage', 'coolant_temperature', 'current_l1', 'current_l2',
                       'current_l3', 'frequency', 'fuel_level', 'hvac_return_air_temp', 'hvac_supply_air_temp',
                       'hvac_water_inlet_temp', 'hvac_water_outlet_temp', 'power_factor', 'relative_humidity',
                       'voltage_l1', 'voltage_l2', 'voltage_l3')
    GROUP BY tenant_id, site_id, device_id, quantity, interval_start
) AS s
LEFT JOIN
(
    SELECT tenant_id, subject_id, timezone FROM {db}.device_registry_store FINAL WHERE subject_type = 'device'
) AS r ON r.tenant_id = s.tenant_id AND r.subject_id = s.device_id;

-- instant_{hourly,daily}_{device,site,tenant}: the same statistics per hour (UTC) or per day (local_day
-- of each device: a site's or tenant's day is the union of its devices' local days).
--   hour | day     grain
--   min, max        extremes of every reading in the group
--   avg             mean of every reading in the group (for sites and tenants: over all their devices)
--   n               readings in the group
-- Sub-meters (registry attribute role = sub) count here: a voltage or temperature is not double counted
-- the way energy is.
CREATE VIEW IF NOT EXISTS {db}.instant_hourly_device AS
SELECT tenant_id, site_id, device_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, site_id, device_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_hourly_site AS
SELECT tenant_id, site_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, site_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_hourly_tenant AS
SELECT tenant_id, quantity, toStartOfHour(interval_start) AS hour,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_device AS
SELECT tenant_id, site_id, device_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, site_id, device_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_site AS
SELECT tenant_id, site_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, site_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.instant_daily_tenant AS
SELECT tenant_id, quantity, local_day AS day,
       min(s.min) AS min, sum(s.sum) / sum(s.n) AS avg, max(s.max) AS max, sum(s.n) AS n
FROM {db}.instant_intervals AS s
GROUP BY tenant_id, quantity, day;

-- Generator fuel and runtime per 15-minute interval (UTC), derived in the stream from fuel_level,
-- engine_state and generator_runtime (pipeline.derive.fuel). Data class: intervals/rollups, 1095 days.
-- Overwritten like intervals_store: a late sample recomputes the intervals it touches, newest
-- computed_at wins.
CREATE TABLE IF NOT EXISTS {db}.fuel_intervals_store
(
    tenant_id           LowCardinality(String),
    site_id             LowCardinality(String),
    device_id           String,
    interval_start      DateTime64(3, 'UTC'),
    local_day           Date,       -- date of interval_start in the device's registry time zone
    used_l              Float64,    -- level drops while the engine runs (never negative)
    refuel_l            Float64,    -- level rises above 1 L
    unexplained_drop_l  Float64,    -- level drops while stopped, above 0.5 L of sensor noise (leak, theft)
    runtime_s           Float64,    -- runtime register advance, measured
    runtime_estimated_s Float64,    -- runtime register advance across a reading gap, estimated
    n_readings          UInt32,     -- fuel level samples in the interval
    computed_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant_id, device_id, interval_start)
TTL toDateTime(interval_start) + INTERVAL 1095 DAY DELETE;

-- fuel_intervals: the current value of every interval (columns as in the table, without computed_at).
CREATE VIEW IF NOT EXISTS {db}.fuel_intervals AS
SELECT tenant_id, site_id, device_id, interval_start, local_day, used_l, refuel_l, unexplained_drop_l,
       runtime_s, runtime_estimated_s, n_readings
FROM {db}.fuel_intervals_store FINAL;

-- fuel_daily: per generator and day in its registry time zone.
--   used_l, refuel_l, unexplained_drop_l   litres
--   runtime_s, runtime_estimated_s         seconds the engine ran (measured / across gaps)
--   litres_per_hour                        used_l per measured running hour (NULL when it did not run)
--   intervals                              15-minute intervals with data
CREATE VIEW IF NOT EXISTS {db}.fuel_daily AS
SELECT tenant_id, site_id, device_id, local_day AS day, sum(f.used_l) AS used_l, sum(f.refuel_l) AS refuel_l,
       sum(f.unexplained_drop_l) AS unexplained_drop_l, sum(f.runtime_s) AS runtime_s,
       sum(f.runtime_estimated_s) AS runtime_estimated_s,
       if(sum(f.runtime_s) > 0, sum(f.used_l) / (sum(f.runtime_s) / 3600), NULL) AS litres_per_hour,
       toUInt32(count()) AS intervals
FROM {db}.fuel_intervals AS f
GROUP BY tenant_id, site_id, device_id, day;
