-- converge-detect: page_slow_load (page, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'page'
    AND metric IN ('load_time_ms_sum', 'load_time_samples')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 6 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
-- Each window's calendar days per tenant, with their weekday, less known events.
calendar AS (
  SELECT t.tenant, DATE_ADD(DATE_SUB(@as_of, INTERVAL 6 DAY), INTERVAL i DAY) AS date, EXTRACT(DAYOFWEEK FROM DATE_ADD(DATE_SUB(@as_of, INTERVAL 6 DAY), INTERVAL i DAY)) AS dow,
    CASE WHEN i >= 0 THEN 'recent' ELSE 'baseline' END AS win
  FROM (SELECT DISTINCT tenant FROM scoped) AS t
  CROSS JOIN UNNEST(GENERATE_ARRAY(0, 6)) AS i
),
daily AS (
  SELECT s.tenant, s.entity_id, c.date, c.dow, c.win,
    SUM(CASE WHEN s.metric = 'load_time_ms_sum' THEN s.value ELSE 0.0 END) AS day_load_time_ms_sum,
    SUM(CASE WHEN s.metric = 'load_time_samples' THEN s.value ELSE 0.0 END) AS day_load_time_samples
  FROM scoped AS s
  JOIN calendar AS c ON c.tenant = s.tenant AND c.date = s.date
  GROUP BY s.tenant, s.entity_id, c.date, c.dow, c.win
),
sums AS (
  SELECT d.tenant, d.entity_id,
    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_load_time_ms_sum END), 0.0) AS recent_load_time_ms_sum,
    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_load_time_samples END), 0.0) AS recent_load_time_samples
  FROM daily AS d
  GROUP BY d.tenant, d.entity_id
),
estimated AS (
  SELECT s.*,
    CASE WHEN recent_load_time_samples > 0 THEN SAFE_DIVIDE(recent_load_time_ms_sum, recent_load_time_samples) END AS recent_rate,
    CAST(NULL AS FLOAT64) AS baseline_rate,
    CASE WHEN recent_load_time_samples > 0 THEN SAFE_DIVIDE(recent_load_time_ms_sum, recent_load_time_samples) END AS spread_rate,
    CASE WHEN recent_load_time_samples > 0 THEN SAFE_DIVIDE(recent_load_time_ms_sum, recent_load_time_samples) END AS pooled_rate
  FROM sums AS s
),
spread AS (
  SELECT d.tenant, d.entity_id,
    SUM((d.day_load_time_ms_sum - e.spread_rate * d.day_load_time_samples) * (d.day_load_time_ms_sum - e.spread_rate * d.day_load_time_samples)) AS spread_sq,
    COUNT(*) AS spread_days
  FROM daily AS d
  JOIN estimated AS e ON e.tenant = d.tenant AND e.entity_id = d.entity_id
  WHERE d.win = 'recent'
  GROUP BY d.tenant, d.entity_id
),
measured AS (
  SELECT e.tenant, e.entity_id,
    recent_rate AS recent_value,
    baseline_rate AS baseline_value,
    recent_load_time_samples AS volume,
    CAST(NULL AS FLOAT64) AS baseline_volume,
    recent_rate, baseline_rate, recent_load_time_samples AS recent_trials, CAST(NULL AS FLOAT64) AS baseline_trials,
    CASE WHEN p.spread_days > 1 THEN GREATEST(0.0, CASE WHEN ((p.spread_days - 1) * e.recent_load_time_samples) > 0 THEN SAFE_DIVIDE((p.spread_sq * p.spread_days), ((p.spread_days - 1) * e.recent_load_time_samples)) END) ELSE CAST(NULL AS FLOAT64) END AS unit_variance
  FROM estimated AS e LEFT JOIN spread AS p ON p.tenant = e.tenant AND p.entity_id = e.entity_id
),
gated AS (
  SELECT * FROM measured
  WHERE volume >= 50.0
),
compared AS (
  SELECT *, PERCENTILE_CONT(recent_value, 0.5) OVER (PARTITION BY tenant) * 2.0 AS reference_value
  FROM gated
),
tested AS (
  SELECT *, CASE WHEN (SQRT(unit_variance * CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END)) > 0 THEN SAFE_DIVIDE((recent_rate - reference_value), (SQRT(unit_variance * CASE WHEN recent_trials > 0 THEN SAFE_DIVIDE(1.0, recent_trials) END))) END AS statistic,
    CAST(NULL AS FLOAT64) AS effect_z
  FROM compared
),
alarms AS (
  SELECT *, statistic AS alarm FROM tested
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
WHERE recent_value > reference_value AND q_value <= 0.01
ORDER BY tenant, entity_id
