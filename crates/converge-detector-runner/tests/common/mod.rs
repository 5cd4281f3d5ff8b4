//! Test support: the embedded pair (DuckDB warehouse, SQLite opportunity store) with
//! `daily_entity_metrics` filled with the detector crate's planted dataset.
#![allow(dead_code)]

/// The planted dataset is converge-detect's (the same file its own tests use), so the
/// runner is held to exactly the findings the compiler is.
#[path = "../../../converge-detect/tests/common/planted.rs"]
pub mod planted;

use std::sync::Arc;

use chrono::NaiveDate;
use converge_core::{ManualClock, MirrorConfig, Timestamp, Warehouse};
use converge_detect::Pack;
use converge_detector_runner::{DetectorRunner, RunnerOptions};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_sqlite::SqliteStore;

/// One `daily_entity_metrics` row (the shape `planted.rs` builds).
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub date: NaiveDate,
    pub tenant: String,
    pub entity_type: &'static str,
    pub entity_id: String,
    pub metric: &'static str,
    pub value: f64,
}

pub struct Embedded {
    pub warehouse: DuckWarehouse,
    pub store: SqliteStore,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

pub const METRICS_DDL: &str = "CREATE TABLE IF NOT EXISTS daily_entity_metrics (
    date DATE NOT NULL, tenant VARCHAR NOT NULL, entity_type VARCHAR NOT NULL,
    entity_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE NOT NULL)";

impl Embedded {
    pub async fn new() -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp::new(1_743_465_600, 0)));
        let store = SqliteStore::open(&dir.path().join("source.sqlite"), clock.clone(), EventSource::local()).unwrap();
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
        warehouse.reader().unwrap().execute_batch(METRICS_DDL).unwrap();
        Embedded { warehouse, store, clock, _dir: dir }
    }

    pub async fn planted() -> Embedded {
        let env = Embedded::new().await;
        env.insert(&planted::dataset());
        env
    }

    /// Through a VARCHAR staging table: the appender takes text, the cast makes dates.
    pub fn insert(&self, rows: &[MetricRow]) {
        let conn = self.warehouse.reader().unwrap();
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS staging (date VARCHAR, tenant VARCHAR, entity_type VARCHAR, entity_id VARCHAR, metric VARCHAR, value DOUBLE)",
        )
        .unwrap();
        {
            let mut appender = conn.appender("staging").unwrap();
            for row in rows {
                appender
                    .append_row(duckdb::params![row.date.to_string(), row.tenant, row.entity_type, row.entity_id, row.metric, row.value])
                    .unwrap();
            }
        }
        conn.execute_batch(
            "INSERT INTO daily_entity_metrics SELECT CAST(date AS DATE), tenant, entity_type, entity_id, metric, value FROM staging; DELETE FROM staging;",
        )
        .unwrap();
    }

    pub fn execute(&self, sql: &str) {
        self.warehouse.reader().unwrap().execute_batch(sql).unwrap();
    }

    pub fn runner(&self, pack: Pack, options: RunnerOptions) -> DetectorRunner {
        DetectorRunner::new(
            pack,
            Arc::new(self.warehouse.clone()),
            Arc::new(self.warehouse.clone()),
            Arc::new(self.store.clone()),
            self.clock.clone(),
            options,
        )
    }
}
