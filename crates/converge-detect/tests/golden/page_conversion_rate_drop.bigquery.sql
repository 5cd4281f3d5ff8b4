-- converge-detect: page_conversion_rate_drop (page, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'page'
    AND metric IN ('conversions', 'sessions')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 55 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
sums AS (
  SELECT tenant, entity_id,
    COALESCE(SUM(CASE WHEN metric = 'conversions' AND date >= DATE_SUB(@as_of, INTERVAL 27 DAY) THEN value END), 0.0) AS recent_conversions,
    COALESCE(SUM(CASE WHEN metric = 'conversions' AND date BETWEEN DATE_SUB(@as_of, INTERVAL 55 DAY) AND DATE_SUB(@as_of, INTERVAL 28 DAY) THEN value END), 0.0) AS baseline_conversions,
    COALESCE(SUM(CASE WHEN metric = 'sessions' AND date >= DATE_SUB(@as_of, INTERVAL 27 DAY) THEN value END), 0.0) AS recent_sessions,
    COALESCE(SUM(CASE WHEN metric = 'sessions' AND date BETWEEN DATE_SUB(@as_of, INTERVAL 55 DAY) AND DATE_SUB(@as_of, INTERVAL 28 DAY) THEN value END), 0.0) AS baseline_sessions
  FROM scoped
  GROUP BY tenant, entity_id
),
measured AS (
  SELECT tenant, entity_id,
    (CASE WHEN recent_sessions > 0 THEN SAFE_DIVIDE(recent_conversions, recent_sessions) END) * 100.0 AS recent_value,
    (CASE WHEN baseline_sessions > 0 THEN SAFE_DIVIDE(baseline_conversions, baseline_sessions) END) * 100.0 AS baseline_value,
    recent_sessions AS volume,
    baseline_sessions AS baseline_volume
  FROM sums
),
gated AS (
  SELECT * FROM measured
  WHERE volume >= 100.0
),
compared AS (
  SELECT *, baseline_value * 0.7 AS reference_value
  FROM gated
)
SELECT tenant, CAST('page' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value
FROM compared
WHERE baseline_value > 0 AND recent_value < reference_value
ORDER BY tenant, entity_id
