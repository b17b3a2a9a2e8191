-- SIM usage per UTC day and per billing cycle (cycle start day from the registry plan; a month
-- shorter than the start day starts its cycle on its last day).
CREATE VIEW IF NOT EXISTS {db}.sim_usage_daily AS
SELECT tenant_id, sim_id, toDate(period_start, 'UTC') AS day, sum(u.bytes_up) AS bytes_up, sum(u.bytes_down) AS bytes_down, sum(u.sms_mo) AS sms_mo, sum(u.sms_mt) AS sms_mt, sum(u.voice_seconds) AS voice_seconds, sum(u.csd_seconds) AS csd_seconds, sum(u.sessions) AS sessions, toUInt32(count()) AS records
FROM {db}.sim_usage AS u
GROUP BY tenant_id, sim_id, day;

CREATE VIEW IF NOT EXISTS {db}.sim_usage_daily_tenant AS
SELECT tenant_id, toDate(period_start, 'UTC') AS day, sum(u.bytes_up) AS bytes_up, sum(u.bytes_down) AS bytes_down, sum(u.sms_mo) AS sms_mo, sum(u.sms_mt) AS sms_mt, sum(u.voice_seconds) AS voice_seconds, sum(u.csd_seconds) AS csd_seconds, sum(u.sessions) AS sessions, toUInt32(uniqExact(sim_id)) AS sims,
       toUInt32(count()) AS records
FROM {db}.sim_usage AS u
GROUP BY tenant_id, day;

CREATE VIEW IF NOT EXISTS {db}.sim_usage_cycle AS
WITH greatest(1, least(31, if(p.cycle_start_day = 0, 1, p.cycle_start_day))) AS sd,
     toStartOfMonth(d.day) AS m0,
     addMonths(m0, -1) AS pm,
     if(d.day >= m0 + (least(sd, toDayOfMonth(toLastDayOfMonth(m0))) - 1),
        m0 + (least(sd, toDayOfMonth(toLastDayOfMonth(m0))) - 1),
        pm + (least(sd, toDayOfMonth(toLastDayOfMonth(pm))) - 1)) AS cs,
     addMonths(toStartOfMonth(cs), 1) AS nm
SELECT d.tenant_id AS tenant_id, d.sim_id AS sim_id, cs AS cycle_start,
       nm + (least(sd, toDayOfMonth(toLastDayOfMonth(nm))) - 1) AS cycle_end,
       sum(d.bytes_up) AS bytes_up, sum(d.bytes_down) AS bytes_down, sum(d.sms_mo) AS sms_mo, sum(d.sms_mt) AS sms_mt, sum(d.voice_seconds) AS voice_seconds, sum(d.csd_seconds) AS csd_seconds, sum(d.sessions) AS sessions, sum(d.records) AS records,
       any(p.allowance_bytes) AS allowance_bytes,
       (sum(d.bytes_up) + sum(d.bytes_down)) / nullIf(any(p.allowance_bytes), 0) AS used_ratio
FROM {db}.sim_usage_daily AS d
LEFT JOIN
(
    SELECT tenant_id, subject_id AS sim_id,
           toInt64(JSONExtractInt(attributes, 'plan_cycle_start_day')) AS cycle_start_day,
           toInt64(JSONExtractInt(attributes, 'plan_allowance_bytes')) AS allowance_bytes
    FROM {db}.device_registry
    WHERE subject_type = 'sim'
) AS p ON d.tenant_id = p.tenant_id AND d.sim_id = p.sim_id
GROUP BY tenant_id, sim_id, cycle_start, cycle_end;
