-- Analyst rollups of interval consumption: plain views over energy_intervals (FINAL), so a restated
-- interval shows at once; a summing materialized view would add the old and the new value together.
CREATE VIEW IF NOT EXISTS {db}.consumption_hourly_device AS
SELECT tenant_id, site_id, device_id, quantity, toStartOfHour(interval_start) AS hour,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
GROUP BY tenant_id, site_id, device_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.consumption_hourly_site AS
SELECT tenant_id, site_id, quantity, toStartOfHour(interval_start) AS hour,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
WHERE i.role != 'sub'
GROUP BY tenant_id, site_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.consumption_hourly_tenant AS
SELECT tenant_id, quantity, toStartOfHour(interval_start) AS hour,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
WHERE i.role != 'sub'
GROUP BY tenant_id, quantity, hour;

CREATE VIEW IF NOT EXISTS {db}.consumption_daily_device AS
SELECT tenant_id, site_id, device_id, quantity, local_day AS day,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
GROUP BY tenant_id, site_id, device_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.consumption_daily_site AS
SELECT tenant_id, site_id, quantity, local_day AS day,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
WHERE i.role != 'sub'
GROUP BY tenant_id, site_id, quantity, day;

CREATE VIEW IF NOT EXISTS {db}.consumption_daily_tenant AS
SELECT tenant_id, quantity, local_day AS day,
       sum(i.measured) AS measured, sum(i.estimated) AS estimated, sum(i.total) AS total,
       groupBitOr(i.flags) AS flags, toUInt32(count()) AS intervals,
       toUInt32(countIf(i.estimated > 0 OR bitAnd(i.flags, 32) != 0)) AS estimated_intervals,
       if(uniqExactIf(i.currency, i.currency != '') > 1, NULL, sumOrNull(i.cost)) AS cost,
       if(uniqExactIf(i.currency, i.currency != '') > 1, 'MIXED', anyIf(i.currency, i.currency != '')) AS currency
FROM {db}.energy_intervals AS i
WHERE i.role != 'sub'
GROUP BY tenant_id, quantity, day;
