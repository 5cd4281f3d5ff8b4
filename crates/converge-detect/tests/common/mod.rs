//! Test support: an in-memory DuckDB `daily_entity_metrics` and a runner for compiled
//! detectors (binding parameters the way the detector runner will).
#![allow(dead_code)]

pub mod planted;

use chrono::NaiveDate;
use converge_detect::{compile, CompiledDetector, DetectorRow, DetectorSpec, Dialect, ParamValue, RESULT_COLUMNS};
use duckdb::types::Value;
use duckdb::Connection;

pub struct MetricsDb {
    conn: Connection,
}

/// One `daily_entity_metrics` row.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub date: NaiveDate,
    pub tenant: String,
    pub entity_type: &'static str,
    pub entity_id: String,
    pub metric: &'static str,
    pub value: f64,
}

impl MetricsDb {
    pub fn new() -> MetricsDb {
        let conn = Connection::open_in_memory().expect("in-memory DuckDB");
        conn.execute_batch(
            "CREATE TABLE daily_entity_metrics (
                date DATE NOT NULL,
                tenant VARCHAR NOT NULL,
                entity_type VARCHAR NOT NULL,
                entity_id VARCHAR NOT NULL,
                metric VARCHAR NOT NULL,
                value DOUBLE NOT NULL
            );
            CREATE TABLE staging (date VARCHAR, tenant VARCHAR, entity_type VARCHAR,
                entity_id VARCHAR, metric VARCHAR, value DOUBLE);",
        )
        .expect("create daily_entity_metrics");
        MetricsDb { conn }
    }

    pub fn insert(&self, rows: &[MetricRow]) {
        {
            let mut appender = self.conn.appender("staging").expect("appender");
            for row in rows {
                appender
                    .append_row(duckdb::params![
                        row.date.to_string(),
                        row.tenant,
                        row.entity_type,
                        row.entity_id,
                        row.metric,
                        row.value
                    ])
                    .expect("append");
            }
        }
        self.conn
            .execute_batch(
                "INSERT INTO daily_entity_metrics
                 SELECT CAST(date AS DATE), tenant, entity_type, entity_id, metric, value FROM staging;
                 DELETE FROM staging;",
            )
            .expect("move staged rows");
    }

    /// Adds one value per day for `days` consecutive days ending on `last_day`.
    pub fn add_days(
        &self,
        tenant: &str,
        entity_type: &'static str,
        entity_id: &str,
        metric: &'static str,
        last_day: NaiveDate,
        values_oldest_first: &[f64],
    ) {
        let count = values_oldest_first.len() as u64;
        let rows: Vec<MetricRow> = values_oldest_first
            .iter()
            .enumerate()
            .map(|(i, value)| MetricRow {
                date: last_day - chrono::Days::new(count - 1 - i as u64),
                tenant: tenant.to_string(),
                entity_type,
                entity_id: entity_id.to_string(),
                metric,
                value: *value,
            })
            .collect();
        self.insert(&rows);
    }

    pub fn run(&self, compiled: &CompiledDetector) -> Result<Vec<DetectorRow>, duckdb::Error> {
        assert_eq!(compiled.dialect, Dialect::DuckDb);
        let values: Vec<Value> = compiled
            .params
            .iter()
            .map(|param| match &param.value {
                ParamValue::Date(date) => Value::Text(date.to_string()),
                ParamValue::String(Some(text)) => Value::Text(text.clone()),
                ParamValue::String(None) => Value::Null,
            })
            .collect();
        let mut statement = self.conn.prepare(&compiled.sql)?;
        let mut rows = statement.query(duckdb::params_from_iter(values))?;
        let columns: Vec<String> = rows.as_ref().expect("statement").column_names();
        assert_eq!(columns, RESULT_COLUMNS, "{}: result columns", compiled.detector_id);
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(DetectorRow {
                tenant: row.get(0)?,
                entity_type: row.get(1)?,
                entity_id: row.get(2)?,
                recent_value: row.get(3)?,
                baseline_value: row.get(4)?,
                volume: row.get(5)?,
                reference_value: row.get(6)?,
            });
        }
        Ok(out)
    }

    /// Compiles for DuckDB and runs; panics on errors (tests of errors call the parts).
    pub fn fire(&self, spec: &DetectorSpec, as_of: NaiveDate, tenant: Option<&str>) -> Vec<DetectorRow> {
        let compiled = compile(spec, Dialect::DuckDb, as_of, tenant).unwrap_or_else(|e| panic!("{e}"));
        self.run(&compiled).unwrap_or_else(|e| panic!("{}: {e}\n{}", spec.id, compiled.sql))
    }

    /// The entity ids that fire, in order.
    pub fn fired_ids(&self, spec: &DetectorSpec, as_of: NaiveDate, tenant: Option<&str>) -> Vec<String> {
        self.fire(spec, as_of, tenant).into_iter().map(|row| row.entity_id).collect()
    }
}

pub fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("YYYY-MM-DD")
}

pub fn spec(toml_text: &str) -> DetectorSpec {
    DetectorSpec::from_toml(toml_text).unwrap_or_else(|e| panic!("{e}"))
}
