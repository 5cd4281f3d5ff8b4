-- converge-detect: campaign_delivery_stopped (campaign, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'campaign'
    AND metric IN ('impressions')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 30 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
sums AS (
  SELECT tenant, entity_id,
    COALESCE(SUM(CASE WHEN metric = 'impressions' AND date >= DATE_SUB(@as_of, INTERVAL 2 DAY) THEN value END), 0.0) AS recent_impressions,
    COALESCE(SUM(CASE WHEN metric = 'impressions' AND date BETWEEN DATE_SUB(@as_of, INTERVAL 30 DAY) AND DATE_SUB(@as_of, INTERVAL 3 DAY) THEN value END), 0.0) AS baseline_impressions
  FROM scoped
  GROUP BY tenant, entity_id
),
measured AS (
  SELECT tenant, entity_id,
    recent_impressions AS recent_value,
    baseline_impressions * 0.10714285714285714 AS baseline_value,
    recent_impressions AS volume,
    baseline_impressions AS baseline_volume
  FROM sums
),
gated AS (
  SELECT * FROM measured
  WHERE baseline_volume >= 10000.0
),
compared AS (
  SELECT *, 0.0 AS reference_value
  FROM gated
)
SELECT tenant, CAST('campaign' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value
FROM compared
WHERE baseline_value > 0 AND recent_value = reference_value
ORDER BY tenant, entity_id
