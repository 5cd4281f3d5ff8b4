WITH device_sums AS (
  SELECT tenant, entity_id,
    SUM(CASE WHEN metric = 'conversions' THEN value ELSE 0 END) AS conversions,
    SUM(CASE WHEN metric = 'sessions' THEN value ELSE 0 END) AS sessions
  FROM daily_entity_metrics
  WHERE entity_type = 'device'
    AND entity_id IN ('mobile', 'desktop')
    AND metric IN ('conversions', 'sessions')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 27 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
  GROUP BY tenant, entity_id
),
rates AS (
  SELECT tenant, entity_id, sessions,
    CASE WHEN sessions > 0 THEN SAFE_DIVIDE(conversions, sessions) * 100.0 END AS rate
  FROM device_sums
)
SELECT mobile.tenant, CAST('device' AS STRING) AS entity_type, mobile.entity_id,
  mobile.rate AS recent_value, desktop.rate AS baseline_value, mobile.sessions AS volume,
  desktop.rate * 0.5 AS reference_value, desktop.sessions AS baseline_volume,
  CAST(NULL AS FLOAT64) AS statistic, CAST(NULL AS FLOAT64) AS p_value, CAST(NULL AS FLOAT64) AS q_value
FROM rates AS mobile
JOIN rates AS desktop ON desktop.tenant = mobile.tenant AND desktop.entity_id = 'desktop'
WHERE mobile.entity_id = 'mobile'
  AND mobile.sessions >= 500 AND desktop.sessions >= 500
  AND desktop.rate > 0 AND mobile.rate < desktop.rate * 0.5
ORDER BY mobile.tenant, mobile.entity_id
