-- converge-detect: campaign_delivery_stopped (campaign, bigquery)
WITH scoped AS (
  SELECT tenant, entity_id, metric, date, value
  FROM daily_entity_metrics
  WHERE entity_type = 'campaign'
    AND metric IN ('impressions')
    AND date BETWEEN DATE_SUB(@as_of, INTERVAL 30 DAY) AND @as_of
    AND (@tenant IS NULL OR tenant = @tenant)
),
-- Each window's calendar days per tenant, with their weekday, less known events.
calendar AS (
  SELECT t.tenant, DATE_ADD(DATE_SUB(@as_of, INTERVAL 30 DAY), INTERVAL i DAY) AS date, EXTRACT(DAYOFWEEK FROM DATE_ADD(DATE_SUB(@as_of, INTERVAL 30 DAY), INTERVAL i DAY)) AS dow,
    CASE WHEN i >= 28 THEN 'recent' ELSE 'baseline' END AS win
  FROM (SELECT DISTINCT tenant FROM scoped) AS t
  CROSS JOIN UNNEST(GENERATE_ARRAY(0, 30)) AS i
),
daily AS (
  SELECT s.tenant, s.entity_id, c.date, c.dow, c.win,
    SUM(CASE WHEN s.metric = 'impressions' THEN s.value ELSE 0.0 END) AS day_impressions
  FROM scoped AS s
  JOIN calendar AS c ON c.tenant = s.tenant AND c.date = s.date
  GROUP BY s.tenant, s.entity_id, c.date, c.dow, c.win
),
-- The site's weekday profile over the baseline: each weekday's mean day over the mean day.
site_days AS (
  SELECT c.tenant, c.date, c.dow, c.win, COALESCE(SUM(d.day_impressions), 0.0) AS total
  FROM calendar AS c LEFT JOIN daily AS d ON d.tenant = c.tenant AND d.date = c.date
  GROUP BY c.tenant, c.date, c.dow, c.win
),
weekday_means AS (
  SELECT tenant, dow, AVG(CASE WHEN win = 'baseline' THEN total END) AS dow_mean FROM site_days GROUP BY tenant, dow
),
day_means AS (
  SELECT tenant, AVG(CASE WHEN win = 'baseline' THEN total END) AS day_mean FROM site_days GROUP BY tenant
),
weekday_factors AS (
  SELECT w.tenant, w.dow,
    CASE WHEN w.dow_mean IS NULL OR NOT (m.day_mean > 0) THEN 1.0 ELSE GREATEST(CASE WHEN m.day_mean > 0 THEN SAFE_DIVIDE(w.dow_mean, m.day_mean) END, 0.01) END AS factor
  FROM weekday_means AS w JOIN day_means AS m ON m.tenant = w.tenant
),
weights AS (
  SELECT c.tenant,
    SUM(CASE WHEN c.win = 'recent' THEN f.factor ELSE 0.0 END) AS recent_weight,
    SUM(CASE WHEN c.win = 'baseline' THEN f.factor ELSE 0.0 END) AS baseline_weight,
    SUM(CASE WHEN c.win = 'baseline' THEN 1 ELSE 0 END) AS baseline_days
  FROM calendar AS c JOIN weekday_factors AS f ON f.tenant = c.tenant AND f.dow = c.dow
  GROUP BY c.tenant
),
sums AS (
  SELECT d.tenant, d.entity_id,
    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_impressions END), 0.0) AS recent_impressions,
    COALESCE(SUM(CASE WHEN d.win = 'baseline' THEN d.day_impressions END), 0.0) AS baseline_impressions
  FROM daily AS d
  GROUP BY d.tenant, d.entity_id
),
estimated AS (
  SELECT s.*, w.baseline_days,
    CASE WHEN w.baseline_weight > 0 THEN SAFE_DIVIDE((s.baseline_impressions * w.recent_weight), w.baseline_weight) END AS expected,
    CASE WHEN w.baseline_weight > 0 THEN SAFE_DIVIDE(s.baseline_impressions, w.baseline_weight) END AS day_level
  FROM sums AS s JOIN weights AS w ON w.tenant = s.tenant
),
spread AS (
  SELECT d.tenant, d.entity_id,
    SUM(CASE WHEN (e.day_level * f.factor) > 0 THEN SAFE_DIVIDE(((d.day_impressions - e.day_level * f.factor) * (d.day_impressions - e.day_level * f.factor)), (e.day_level * f.factor)) END - e.day_level * f.factor) AS pearson_present
  FROM daily AS d
  JOIN estimated AS e ON e.tenant = d.tenant AND e.entity_id = d.entity_id
  JOIN weekday_factors AS f ON f.tenant = d.tenant AND f.dow = d.dow
  WHERE d.win = 'baseline' AND e.day_level > 0
  GROUP BY d.tenant, d.entity_id
),
dispersed AS (
  SELECT e.*,
    CASE WHEN e.baseline_impressions > 0 AND e.baseline_days > 1 THEN GREATEST(1.0, (COALESCE(p.pearson_present, 0.0) + e.baseline_impressions) / (e.baseline_days - 1)) END AS dispersion
  FROM estimated AS e LEFT JOIN spread AS p ON p.tenant = e.tenant AND p.entity_id = e.entity_id
),
measured AS (
  SELECT tenant, entity_id,
    recent_impressions AS recent_value,
    expected AS baseline_value,
    recent_impressions AS volume,
    baseline_impressions AS baseline_volume,
    recent_impressions AS recent_count, baseline_impressions AS baseline_count, expected, dispersion
  FROM dispersed
),
gated AS (
  SELECT * FROM measured
  WHERE baseline_volume >= 10000.0
),
compared AS (
  SELECT *, 0.0 AS reference_value
  FROM gated
),
tested AS (
  SELECT *, CASE WHEN (SQRT(dispersion * (expected + CASE WHEN baseline_count > 0 THEN SAFE_DIVIDE((expected * expected), baseline_count) END))) > 0 THEN SAFE_DIVIDE((recent_count - expected), (SQRT(dispersion * (expected + CASE WHEN baseline_count > 0 THEN SAFE_DIVIDE((expected * expected), baseline_count) END)))) END AS statistic,
    CAST(NULL AS FLOAT64) AS effect_z
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
SELECT tenant, CAST('campaign' AS STRING) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value,
  baseline_volume, statistic, p_value, q_value
FROM adjusted
WHERE baseline_value > 0 AND recent_value = 0 AND q_value <= 0.01
ORDER BY tenant, entity_id
