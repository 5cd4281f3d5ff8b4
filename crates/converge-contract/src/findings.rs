//! The findings warehouse contract: detector queries in the warehouse's own dialect,
//! over the `daily_entity_metrics` its ETL side loads, come back as typed rows of
//! exactly [`FINDING_COLUMNS`], and fail with the kind the runner acts on (a broken
//! query is permanent, a missed deadline retryable).
//!
//! The queries are written per dialect (probes) or compiled by `converge-detect` for
//! [`FindingsWarehouse::dialect`], so the parameters are bound the way the runner
//! binds them: a DATE run date, a STRING tenant that may be a typed NULL, and an
//! entity pattern after them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use converge_core::{ErrorKind, FindingRow, FindingsQuery, QueryDialect, StoreError, FINDING_COLUMNS};
use converge_detect::{compile, DetectorSpec};
use futures::TryStreamExt;

use crate::case;
use crate::kit::{days, fire, MetricsAndFindings, MetricsLoader};

fn run_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 31).expect("a date")
}

/// Sums each entity's values up to the run date, for every tenant or one: the shape
/// of every detector, in the warehouse's dialect.
fn probe(dialect: QueryDialect) -> &'static str {
    match dialect {
        QueryDialect::DuckDb => {
            "SELECT tenant, entity_type, entity_id, SUM(value) AS recent_value, CAST(NULL AS DOUBLE) AS baseline_value, \
             CAST(COUNT(*) AS DOUBLE) AS volume, MAX(value) AS reference_value, CAST(NULL AS DOUBLE) AS baseline_volume, CAST(NULL AS DOUBLE) AS statistic, CAST(NULL AS DOUBLE) AS p_value, CAST(NULL AS DOUBLE) AS q_value \
             FROM daily_entity_metrics \
             WHERE date <= CAST($1 AS DATE) AND (CAST($2 AS VARCHAR) IS NULL OR tenant = CAST($2 AS VARCHAR)) \
             GROUP BY tenant, entity_type, entity_id ORDER BY tenant, entity_id"
        }
        QueryDialect::BigQuery => {
            "SELECT tenant, entity_type, entity_id, SUM(value) AS recent_value, CAST(NULL AS FLOAT64) AS baseline_value, \
             CAST(COUNT(*) AS FLOAT64) AS volume, MAX(value) AS reference_value, CAST(NULL AS FLOAT64) AS baseline_volume, CAST(NULL AS FLOAT64) AS statistic, CAST(NULL AS FLOAT64) AS p_value, CAST(NULL AS FLOAT64) AS q_value \
             FROM daily_entity_metrics \
             WHERE date <= @as_of AND (@tenant IS NULL OR tenant = @tenant) \
             GROUP BY tenant, entity_type, entity_id ORDER BY tenant, entity_id"
        }
    }
}

/// `sql` with the run date and `tenant` bound as a compiled detector binds them.
fn query(dialect: QueryDialect, sql: &str, tenant: Option<&str>, timeout: Duration) -> FindingsQuery {
    let spec = raw_spec(dialect, sql);
    let compiled = compile(&spec, dialect, run_date(), tenant, &converge_core::KnownEvents::default()).unwrap_or_else(|e| panic!("the probe compiles: {e}"));
    FindingsQuery { label: "probe".into(), ..compiled.into_query(timeout) }
}

/// A raw-SQL detector carrying `sql` for `dialect`.
fn raw_spec(dialect: QueryDialect, sql: &str) -> DetectorSpec {
    DetectorSpec {
        raw_sql: Some(converge_detect::RawSql {
            duckdb: (dialect == QueryDialect::DuckDb).then(|| sql.to_owned()),
            bigquery: (dialect == QueryDialect::BigQuery).then(|| sql.to_owned()),
        }),
        ..DetectorSpec::from_toml(PROBE_SPEC).expect("the probe spec")
    }
}

const PROBE_SPEC: &str = r#"
id = "probe"
title = "Probe"
entity_type = "page"
severity = "info"
message = "{entity_id}"
windows = { recent_days = 1 }
[raw_sql]
duckdb = "SELECT $1, $2"
"#;

async fn collect(warehouse: &dyn MetricsAndFindings, query: FindingsQuery) -> Result<Vec<FindingRow>, StoreError> {
    warehouse.query_findings(query).await?.try_collect().await
}

/// Five `acme` pages with a value on the run date and one the day after (which the
/// run date excludes), and one `beta` page.
async fn seed(warehouse: &Arc<dyn MetricsAndFindings>) {
    let loader = MetricsLoader::new(warehouse.clone()).await;
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.extend(days("acme", "page", &format!("/p{i}"), "sessions", run_date() + chrono::Days::new(1), &[i as f64 + 1.5, 1000.0]));
    }
    rows.extend(days("beta", "page", "/b", "sessions", run_date() - chrono::Days::new(1), &[7.0]));
    loader.insert(rows).await;
}

/// erfc(x) to ~1e-7 (Abramowitz & Stegun 7.1.26 is too coarse for 1e-6; this is
/// Numerical Recipes' erfcc, fractional error < 1.2e-7), for the expected p-values.
fn libm_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * (-z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
        .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// A detector that fires on pages whose conversion rate fell below 70% of the week
/// before, for pages matching `like`.
fn conversion_drop(like: &str) -> DetectorSpec {
    DetectorSpec::from_toml(&format!(
        r#"
        id = "cvr_drop"
        title = "Conversion rate dropped"
        entity_type = "page"
        severity = "warning"
        message = "{{entity_id}}"
        measure = {{ kind = "ratio", numerator = "conversions", denominator = "sessions", scale = 100.0 }}
        windows = {{ recent_days = 7, baseline_days = 7 }}
        comparison = {{ kind = "below_fraction_of_baseline", fraction = 0.7 }}
        entity_filter = {{ like = {like:?} }}
        "#
    ))
    .expect("a valid spec")
}

/// A query that cannot finish within its timeout, and that timeout. DuckDB gets real
/// work (a cross join of 10^12 rows) it must be interrupted in; BigQuery a microsecond,
/// within which no answer arrives however fast the service, so the emulator is not
/// left burning a core on a job nobody waits for.
fn slow(dialect: QueryDialect) -> (&'static str, Duration) {
    match dialect {
        QueryDialect::DuckDb => (
            "SELECT 't' AS tenant, 'page' AS entity_type, 'x' AS entity_id, sum(a.range * b.range)::DOUBLE AS recent_value, \
             NULL::DOUBLE AS baseline_value, NULL::DOUBLE AS volume, NULL::DOUBLE AS reference_value, NULL::DOUBLE AS baseline_volume, NULL::DOUBLE AS statistic, NULL::DOUBLE AS p_value, NULL::DOUBLE AS q_value \
             FROM range(1000000) a, range(1000000) b WHERE CAST($1 AS DATE) IS NOT NULL AND (CAST($2 AS VARCHAR) IS NULL OR true)",
            Duration::from_millis(300),
        ),
        QueryDialect::BigQuery => (probe(QueryDialect::BigQuery), Duration::from_micros(1)),
    }
}

/// Runs every findings warehouse case, each on a fresh, empty warehouse from `fresh`.
/// `many_rows` entities must come back whole and in order: more than one chunk or
/// page of the backend.
pub async fn findings_warehouse_contract<F, Fut>(many_rows: usize, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn MetricsAndFindings>>,
{
    let suite = "findings warehouse";

    case(suite, "rows come back typed, dated up to the run date, for every tenant (a NULL tenant) or one", async {
        let warehouse = fresh().await;
        seed(&warehouse).await;
        let dialect = warehouse.dialect();
        let all = collect(&*warehouse, query(dialect, probe(dialect), None, Duration::from_secs(60))).await.unwrap();
        let ids: Vec<(&str, &str)> = all.iter().map(|r| (r.tenant.as_str(), r.entity_id.as_str())).collect();
        assert_eq!(ids, [("acme", "/p0"), ("acme", "/p1"), ("acme", "/p2"), ("acme", "/p3"), ("acme", "/p4"), ("beta", "/b")], "a NULL tenant reads every tenant");
        assert_eq!(
            all[1],
            FindingRow {
                tenant: "acme".into(),
                entity_type: "page".into(),
                entity_id: "/p1".into(),
                recent_value: Some(2.5),
                baseline_value: None,
                volume: Some(1.0),
                reference_value: Some(2.5),
                baseline_volume: None,
                statistic: None,
                p_value: None,
                q_value: None,
            },
            "the day after the run date is excluded; NULL stays NULL"
        );
        let beta = collect(&*warehouse, query(dialect, probe(dialect), Some("beta"), Duration::from_secs(60))).await.unwrap();
        assert_eq!(beta.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["/b"]);
        let nobody = collect(&*warehouse, query(dialect, probe(dialect), Some("nobody"), Duration::from_secs(60))).await.unwrap();
        assert!(nobody.is_empty(), "no rows is an empty stream, not an error");
    })
    .await;

    case(suite, "more rows than a chunk or page arrive whole and in order", async {
        let warehouse = fresh().await;
        let loader = MetricsLoader::new(warehouse.clone()).await;
        loader.insert((0..many_rows).flat_map(|i| days("acme", "page", &format!("/p{i:05}"), "sessions", run_date(), &[i as f64]))).await;
        let dialect = warehouse.dialect();
        let rows = collect(&*warehouse, query(dialect, probe(dialect), None, Duration::from_secs(120))).await.unwrap();
        assert_eq!(rows.len(), many_rows);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!((row.entity_id.as_str(), row.recent_value), (format!("/p{i:05}").as_str(), Some(i as f64)));
        }
    })
    .await;

    case(suite, "a compiled detector binds its run date, tenant and entity pattern and fires on exactly its entities", async {
        let warehouse = fresh().await;
        let loader = MetricsLoader::new(warehouse.clone()).await;
        // Every page's conversion rate falls from 10% to 5% in the last week; pages of
        // another tenant and days after the run date must not count.
        let mut rows = Vec::new();
        for page in ["/blog/a", "/blog/b", "/pricing"] {
            rows.extend(days("acme", "page", page, "sessions", run_date(), &[100.0; 14]));
            rows.extend(days("acme", "page", page, "conversions", run_date(), &[[10.0; 7], [5.0; 7]].concat()));
        }
        rows.extend(days("beta", "page", "/blog/c", "sessions", run_date(), &[100.0; 14]));
        rows.extend(days("beta", "page", "/blog/c", "conversions", run_date(), &[[10.0; 7], [5.0; 7]].concat()));
        rows.extend(days("acme", "page", "/blog/a", "conversions", run_date() + chrono::Days::new(1), &[1000.0]));
        loader.insert(rows).await;

        let dialect = warehouse.dialect();
        let compiled = |like: &str, tenant: Option<&str>| compile(&conversion_drop(like), dialect, run_date(), tenant, &converge_core::KnownEvents::default()).expect("compiles");
        let fired = fire(&*warehouse, compiled("/blog/%", Some("acme"))).await.unwrap();
        // The test: steady rates have no day-to-day spread, so the binomial's p(1 − p)
        // per session at the pooled rate p = 105 / 1,400 = 0.075; z = (0.05 − 0.10) /
        // √(0.075 × 0.925 × (1/700 + 1/700)) = −3.551, one-sided p = Φ(−3.551); both
        // pages tie, so Benjamini–Hochberg leaves q = p.
        let z = (0.05 - 0.10) / (0.075f64 * 0.925 * (2.0 / 700.0)).sqrt();
        let p = 0.5 * libm_erfc(-z / std::f64::consts::SQRT_2);
        for row in &fired {
            let (statistic, p_value, q_value) = (row.statistic.unwrap(), row.p_value.unwrap(), row.q_value.unwrap());
            assert!((statistic - z).abs() < 1e-6, "z {statistic}, expected {z}");
            assert!((p_value - p).abs() < 1e-6 && (q_value - p).abs() < 1e-6, "p {p_value}, q {q_value}, expected {p}");
        }
        assert_eq!(
            fired.into_iter().map(|row| FindingRow { statistic: None, p_value: None, q_value: None, ..row }).collect::<Vec<_>>(),
            ["/blog/a", "/blog/b"]
                .map(|page| FindingRow {
                    tenant: "acme".into(),
                    entity_type: "page".into(),
                    entity_id: page.into(),
                    recent_value: Some(5.0),
                    baseline_value: Some(10.0),
                    volume: Some(700.0),
                    reference_value: Some(7.0),
                    baseline_volume: Some(700.0),
                    statistic: None,
                    p_value: None,
                    q_value: None,
                })
                .to_vec()
        );
        let every_tenant = fire(&*warehouse, compiled("/blog/%", None)).await.unwrap();
        assert_eq!(every_tenant.iter().map(|r| (r.tenant.as_str(), r.entity_id.as_str())).collect::<Vec<_>>(), [("acme", "/blog/a"), ("acme", "/blog/b"), ("beta", "/blog/c")]);
        // A quote in a pattern is data, not SQL: it is bound, and matches nothing here.
        assert!(fire(&*warehouse, compiled("x' OR '1'='1", None)).await.unwrap().is_empty());
    })
    .await;

    case(suite, "result columns other than FINDING_COLUMNS in order are a permanent error naming the query", async {
        let warehouse = fresh().await;
        seed(&warehouse).await;
        let dialect = warehouse.dialect();
        let swapped = probe(dialect).replace("AS recent_value,", "AS swapped_value,").replace("AS baseline_value,", "AS recent_value,").replace("AS swapped_value,", "AS baseline_value,");
        let error = collect(&*warehouse, query(dialect, &swapped, None, Duration::from_secs(60))).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
        assert!(error.message.contains("query `probe`") && error.message.contains(FINDING_COLUMNS[3]), "{error}");
    })
    .await;

    case(suite, "SQL the warehouse refuses is a permanent error naming the query and the problem", async {
        let warehouse = fresh().await;
        seed(&warehouse).await;
        let dialect = warehouse.dialect();
        let broken = probe(dialect).replace("SUM(value)", "SUM(no_such_column)");
        let error = collect(&*warehouse, query(dialect, &broken, None, Duration::from_secs(60))).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
        assert!(error.message.contains("query `probe`") && error.message.contains("no_such_column"), "{error}");
    })
    .await;

    case(suite, "a query past its timeout ends, promptly, in a retryable error naming the timeout", async {
        let warehouse = fresh().await;
        seed(&warehouse).await;
        let dialect = warehouse.dialect();
        let (sql, timeout) = slow(dialect);
        let started = Instant::now();
        let error = collect(&*warehouse, query(dialect, sql, None, timeout)).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
        assert!(error.message.contains("query `probe`") && error.message.contains("timeout"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(20), "given up on, not run to the end: {:?}", started.elapsed());
    })
    .await;
}
