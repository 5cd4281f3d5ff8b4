-- converge-detect: page_slow_load (page, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'page'
    AND metric IN ('load_time_ms_sum', 'load_time_samples')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 6 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
sums AS (
  SELECT tenant, entity_id,
    COALESCE(SUM(CASE WHEN metric = 'load_time_ms_sum' AND date >= DATE_SUB(@as_of, INTERVAL 6 DAY) THEN value END), 0.0) AS recent_load_time_ms_sum,
    COALESCE(SUM(CASE WHEN metric = 'load_time_samples' AND date >= DATE_SUB(@as_of, INTERVAL 6 DAY) THEN value END), 0.0) AS recent_load_time_samples
  FROM scoped
  GROUP BY tenant, entity_id
),
measured AS (
  SELECT tenant, entity_id,
    CASE WHEN recent_load_time_samples > 0 THEN SAFE_DIVIDE(recent_load_time_ms_sum, recent_load_time_samples) END AS recent_value,
    CAST(NULL AS FLOAT64) AS baseline_value,
    recent_load_time_samples AS volume,
    CAST(NULL AS FLOAT64) AS baseline_volume
  FROM sums
),
gated AS (
  SELECT * FROM measured
  WHERE volume >= 50.0
),
compared AS (
  SELECT *, PERCENTILE_CONT(recent_value, 0.5) OVER (PARTITION BY tenant) * 2.0 AS reference_value
  FROM gated
)
SELECT tenant, CAST('page' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value
FROM compared
WHERE recent_value > reference_value
ORDER BY tenant, entity_id
