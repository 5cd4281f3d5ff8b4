-- converge-detect: landing_page_entries_drop (page, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'page'
    AND metric IN ('entries')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 34 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
    AND entity_id NOT LIKE @entity_not_like
),
sums AS (
  SELECT tenant, entity_id,
    COALESCE(SUM(CASE WHEN metric = 'entries' AND date >= DATE_SUB(@as_of, INTERVAL 6 DAY) THEN value END), 0.0) AS recent_entries,
    COALESCE(SUM(CASE WHEN metric = 'entries' AND date BETWEEN DATE_SUB(@as_of, INTERVAL 34 DAY) AND DATE_SUB(@as_of, INTERVAL 7 DAY) THEN value END), 0.0) AS baseline_entries
  FROM scoped
  GROUP BY tenant, entity_id
),
measured AS (
  SELECT tenant, entity_id,
    recent_entries AS recent_value,
    baseline_entries * 0.25 AS baseline_value,
    recent_entries AS volume,
    baseline_entries AS baseline_volume
  FROM sums
),
gated AS (
  SELECT * FROM measured
  WHERE baseline_volume >= 400.0
),
compared AS (
  SELECT *, baseline_value * 0.5 AS reference_value
  FROM gated
)
SELECT tenant, CAST('page' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value
FROM compared
WHERE baseline_value > 0 AND recent_value < reference_value
ORDER BY tenant, entity_id
