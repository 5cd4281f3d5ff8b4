//! Test support: the embedded pair (DuckDB warehouse, SQLite opportunity store) with
//! `daily_entity_metrics` filled with the kit's planted dataset, the same one the
//! detector compiler's tests use, so the runner is held to exactly the findings the
//! compiler is.
#![allow(dead_code)]

use std::sync::Arc;

use converge_contract::kit::backends::fresh_sqlite;
use converge_contract::kit::MetricsLoader;
use converge_core::{ManualClock, MetricsWarehouse, MirrorConfig, Timestamp, Warehouse};
use converge_detect::Pack;
use converge_detector_runner::{DetectorRunner, RunnerOptions};
use converge_duckdb::DuckWarehouse;
use converge_sqlite::SqliteStore;

// Not every test file reads the planted dataset.
#[allow(unused_imports)]
pub use converge_contract::kit::planted;

pub struct Embedded {
    pub warehouse: DuckWarehouse,
    pub store: SqliteStore,
    pub clock: Arc<ManualClock>,
}

impl Embedded {
    pub async fn new() -> Embedded {
        let clock = Arc::new(ManualClock::at(Timestamp::new(1_743_465_600, 0)));
        let store = fresh_sqlite(clock.clone());
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
        warehouse.ensure_metrics_tables().await.unwrap();
        Embedded { warehouse, store, clock }
    }

    pub async fn planted() -> Embedded {
        let env = Embedded::new().await;
        MetricsLoader::new(Arc::new(env.warehouse.clone())).await.insert(planted::dataset()).await;
        env
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
