-- converge-detect: page_conversion_rate_drop (page, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'page'
    AND metric IN ('conversions', 'sessions')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 55 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
-- Each window's calendar days per tenant, with their weekday, less known events.
calendar AS (
  SELECT t.tenant, DATE_ADD(DATE_SUB(@as_of, INTERVAL 55 DAY), INTERVAL i DAY) AS date, EXTRACT(DAYOFWEEK FROM DATE_ADD(DATE_SUB(@as_of, INTERVAL 55 DAY), INTERVAL i DAY)) AS dow,
    CASE WHEN i >= 28 THEN 'recent' ELSE 'baseline' END AS win
  FROM (SELECT DISTINCT tenant FROM scoped) AS t
  CROSS JOIN UNNEST(GENERATE_ARRAY(0, 55)) AS i
),
daily AS (
  SELECT s.tenant, s.entity_id, c.date, c.dow, c.win,
    SUM(CASE WHEN s.metric = 'conversions' THEN s.value ELSE 0.0 END) AS day_conversions,
    SUM(CASE WHEN s.metric = 'sessions' THEN s.value ELSE 0.0 END) AS day_sessions
  FROM scoped AS s
  JOIN calendar AS c ON c.tenant = s.tenant AND c.date = s.date
  GROUP BY s.tenant, s.entity_id, c.date, c.dow, c.win
),
sums AS (
  SELECT d.tenant, d.entity_id,
    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_conversions END), 0.0) AS recent_conversions,
    COALESCE(SUM(CASE WHEN d.win = 'baseline' THEN d.day_conversions END), 0.0) AS baseline_conversions,
    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_sessions END), 0.0) AS recent_sessions,
    COALESCE(SUM(CASE WHEN d.win = 'baseline' THEN d.day_sessions END), 0.0) AS baseline_sessions
  FROM daily AS d
  GROUP BY d.tenant, d.entity_id
),
estimated AS (
  SELECT s.*,
    CASE WHEN recent_sessions > 0 THEN SAFE_DIVIDE(recent_conversions, recent_sessions) END AS recent_rate,
    CASE WHEN baseline_sessions > 0 THEN SAFE_DIVIDE(baseline_conversions, baseline_sessions) END AS baseline_rate,
    CASE WHEN baseline_sessions > 0 THEN SAFE_DIVIDE(baseline_conversions, baseline_sessions) END AS spread_rate,
    CASE WHEN (recent_sessions + baseline_sessions) > 0 THEN SAFE_DIVIDE((recent_conversions + baseline_conversions), (recent_sessions + baseline_sessions)) END AS pooled_rate
  FROM sums AS s
),
spread AS (
  SELECT d.tenant, d.entity_id,
    SUM((d.day_conversions - e.spread_rate * d.day_sessions) * (d.day_conversions - e.spread_rate * d.day_sessions)) AS spread_sq,
    COUNT(*) AS spread_days
  FROM daily AS d
  JOIN estimated AS e ON e.tenant = d.tenant AND e.entity_id = d.entity_id
  WHERE d.win = 'baseline'
  GROUP BY d.tenant, d.entity_id
),
measured AS (
  SELECT e.tenant, e.entity_id,
    (recent_rate) * 100.0 AS recent_value,
    (baseline_rate) * 100.0 AS baseline_value,
    recent_sessions AS volume,
    baseline_sessions AS baseline_volume,
    recent_rate, baseline_rate, recent_sessions AS recent_trials, baseline_sessions AS baseline_trials,
    CASE WHEN p.spread_days > 1 THEN GREATEST(CASE WHEN pooled_rate < 1 THEN pooled_rate * (1.0 - pooled_rate) ELSE 0.0 END, CASE WHEN ((p.spread_days - 1) * e.baseline_sessions) > 0 THEN SAFE_DIVIDE((p.spread_sq * p.spread_days), ((p.spread_days - 1) * e.baseline_sessions)) END) ELSE CASE WHEN pooled_rate < 1 THEN pooled_rate * (1.0 - pooled_rate) ELSE 0.0 END END AS unit_variance
  FROM estimated AS e LEFT JOIN spread AS p ON p.tenant = e.tenant AND p.entity_id = e.entity_id
),
gated AS (
  SELECT * FROM measured
  WHERE volume >= 100.0
),
compared AS (
  SELECT *, baseline_value * 0.7 AS reference_value
  FROM gated
),
tested AS (
  SELECT *, CASE WHEN (SQRT(unit_variance * (CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END + CASE WHEN baseline_trials > 0 THEN SAFE_DIVIDE(1.0, baseline_trials) END))) > 0 THEN SAFE_DIVIDE((recent_rate - baseline_rate), (SQRT(unit_variance * (CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END + CASE WHEN baseline_trials > 0 THEN SAFE_DIVIDE(1.0, baseline_trials) END)))) END AS statistic,
    CASE WHEN (SQRT(unit_variance * (CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END + 0.7 * 0.7 * CASE WHEN baseline_trials > 0 THEN SAFE_DIVIDE(1.0, baseline_trials) END))) > 0 THEN SAFE_DIVIDE((recent_rate - 0.7 * baseline_rate), (SQRT(unit_variance * (CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END + 0.7 * 0.7 * CASE WHEN baseline_trials > 0 THEN SAFE_DIVIDE(1.0, baseline_trials) END)))) END AS effect_z
  FROM compared
),
alarms AS (
  SELECT *, -statistic AS alarm FROM tested
),
tails AS (
  SELECT *, 1.0 / (1.0 + 0.2316419 * ABS(alarm)) AS tail_k FROM alarms
),
scored AS (
  SELECT *, CASE WHEN alarm IS NULL THEN NULL
    WHEN alarm >= 0 THEN 0.3989422804014327 * EXP(-LEAST(alarm * alarm, 1400.0) / 2.0) * tail_k * (0.319381530 + tail_k * (-0.356563782 + tail_k * (1.781477937 + tail_k * (-1.821255978 + tail_k * 1.330274429))))
    ELSE 1.0 - 0.3989422804014327 * EXP(-LEAST(alarm * alarm, 1400.0) / 2.0) * tail_k * (0.319381530 + tail_k * (-0.356563782 + tail_k * (1.781477937 + tail_k * (-1.821255978 + tail_k * 1.330274429)))) END AS p_value
  FROM tails
),
ranked AS (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY p_value, entity_id) AS p_rank,
    COUNT(*) OVER (PARTITION BY tenant) AS tested_entities
  FROM scored WHERE p_value IS NOT NULL
),
adjusted AS (
  SELECT *, MIN(LEAST(1.0, p_value * tested_entities / p_rank)) OVER (PARTITION BY tenant ORDER BY p_rank DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS q_value
  FROM ranked
)
SELECT tenant, CAST('page' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value,
  baseline_volume, statistic, p_value, q_value
FROM adjusted
WHERE baseline_value > 0 AND q_value <= 0.01 AND effect_z <= 2.326
ORDER BY tenant, entity_id
