-- converge-detect: campaign_spend_without_conversions (campaign, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'campaign'
    AND metric IN ('conversions', 'cost')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 6 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
sums AS (
  SELECT tenant, entity_id,
    COALESCE(SUM(CASE WHEN metric = 'conversions' AND date >= DATE_SUB(@as_of, INTERVAL 6 DAY) THEN value END), 0.0) AS recent_conversions,
    COALESCE(SUM(CASE WHEN metric = 'cost' AND date >= DATE_SUB(@as_of, INTERVAL 6 DAY) THEN value END), 0.0) AS recent_cost
  FROM scoped
  GROUP BY tenant, entity_id
),
measured AS (
  SELECT tenant, entity_id,
    recent_conversions AS recent_value,
    CAST(NULL AS FLOAT64) AS baseline_value,
    recent_cost AS volume,
    CAST(NULL AS FLOAT64) AS baseline_volume
  FROM sums
),
gated AS (
  SELECT * FROM measured
  WHERE volume >= 200.0
),
compared AS (
  SELECT *, 1.0 AS reference_value
  FROM gated
)
SELECT tenant, CAST('campaign' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value,
  baseline_volume, CAST(NULL AS FLOAT64) AS statistic, CAST(NULL AS FLOAT64) AS p_value, CAST(NULL AS FLOAT64) AS q_value
FROM compared
WHERE recent_value < reference_value
ORDER BY tenant, entity_id
