//! Test support: raw records of every collection, and an ETL on real embedded stores
//! (SQLite source, DuckDB warehouse) in a temporary directory.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::NaiveDate;
use converge_core::{DocWrite, Fields, ManualClock, MetricsWarehouse, MirrorConfig, SourceStore, Timestamp, Value, Warehouse};
use converge_etl::collections::MeasureKind;
use converge_etl::{EtlBackends, EtlRunner, RawCollection};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_sqlite::SqliteStore;

pub fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 4, d).expect("an April day")
}

/// A valid record of `collection` on `date`: raw id `id` (id fields joined by the
/// collection's separator), other key fields `k{variant}`, measures from `scale`.
pub fn record(collection: &RawCollection, date: NaiveDate, id: &str, variant: u32, scale: i64) -> Fields {
    let mut fields = Fields::new();
    fields.insert("date".into(), Value::String(date.to_string()));
    let parts: Vec<&str> = if collection.id_separator.is_empty() { vec![id] } else { id.splitn(2, collection.id_separator).collect() };
    for field in collection.key_fields {
        let value = match collection.id_fields.iter().position(|f| f == field) {
            Some(i) => parts[i].to_owned(),
            None => format!("k{variant}"),
        };
        fields.insert((*field).into(), Value::String(value));
    }
    for (i, measure) in collection.measures.iter().enumerate() {
        let n = scale * (i as i64 + 1);
        let value = match measure.kind {
            MeasureKind::Count => Value::Integer(n),
            MeasureKind::Micros => Value::Integer(n * 1_000_000),
            MeasureKind::Amount => Value::Double(n as f64 * 0.5),
        };
        fields.insert(measure.field.into(), value);
    }
    fields
}

pub fn set(path: String, fields: Fields) -> DocWrite {
    DocWrite::Set { path, fields }
}

/// A day's worth of every collection for `tenant`: `per_collection` records each.
pub fn day_writes(tenant: &str, date: NaiveDate, per_collection: u32) -> Vec<DocWrite> {
    let mut writes = Vec::new();
    for collection in converge_etl::RAW_COLLECTIONS {
        for i in 0..per_collection {
            let id = match collection.name {
                "ga4_pages" => format!("https://shop.example/page{}?utm_source=s{i}", i % 3),
                "ga4_devices" => ["Desktop", "mobile", "TABLET"][(i % 3) as usize].to_owned(),
                "ga4_traffic_sources" => format!("Google/CPC{}", i % 2),
                "funnel_events" => format!("Checkout:Step {}", i % 2),
                "ad_keywords" => format!("  Running Shoes {} ", i % 4),
                _ => format!("Campaign {}", i % 2),
            };
            writes.push(set(format!("orgs/{tenant}/{}/{date}-{i}", collection.name), record(collection, date, &id, i, 1 + i64::from(i % 5))));
        }
    }
    writes
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub source: SqliteStore,
    pub warehouse: DuckWarehouse,
    pub clock: Arc<ManualClock>,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = Arc::new(ManualClock::at(Timestamp::new(1_745_000_000, 0)));
        let source = SqliteStore::open(&dir.path().join("source.sqlite"), clock.clone(), EventSource::local()).expect("SQLite");
        source.set_outbox_filter(Some(MirrorConfig::default()));
        let warehouse = DuckWarehouse::open(&dir.path().join("warehouse.duckdb")).expect("DuckDB");
        warehouse.ensure_tables(&MirrorConfig::default()).await.expect("changelog and runs tables");
        warehouse.ensure_metrics_tables().await.expect("metrics tables");
        Env { dir, source, warehouse, clock }
    }

    pub fn backends(&self) -> EtlBackends {
        EtlBackends {
            raw: Arc::new(self.source.clone()),
            source: Arc::new(self.source.clone()),
            errors: Arc::new(self.source.clone()),
            warehouse: Arc::new(self.warehouse.clone()),
            metrics: Arc::new(self.warehouse.clone()),
        }
    }

    pub fn runner(&self) -> EtlRunner {
        EtlRunner::new(self.backends(), self.clock.clone())
    }

    pub async fn write(&self, writes: Vec<DocWrite>) {
        for batch in writes.chunks(500) {
            self.source.apply(batch.to_vec()).await.expect("write raw records");
        }
        self.clock.advance_micros(1_000_000);
    }
}
