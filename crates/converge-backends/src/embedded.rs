//! The embedded pair lives in one data directory:
//!
//! ```text
//! DATA_DIR/source.sqlite     documents, outbox, sync_errors, quarantine
//! DATA_DIR/warehouse.duckdb  changelog tables and views
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use converge_core::{Clock, ErrorLog, SourceStore, StoreError, Warehouse};

use crate::Backends;
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_sqlite::SqliteStore;

/// The embedded backends of one data directory.
#[derive(Clone)]
pub struct EmbeddedBackends {
    pub data_dir: PathBuf,
    pub source: SqliteStore,
    pub warehouse: DuckWarehouse,
}

impl EmbeddedBackends {
    pub fn source_path(data_dir: &Path) -> PathBuf {
        data_dir.join("source.sqlite")
    }

    pub fn warehouse_path(data_dir: &Path) -> PathBuf {
        data_dir.join("warehouse.duckdb")
    }

    /// Opens (creating if needed) both stores in `data_dir`.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::permanent("embedded", format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let source = SqliteStore::open(&Self::source_path(data_dir), clock, EventSource::local())?;
        let warehouse = DuckWarehouse::open(&Self::warehouse_path(data_dir))?;
        Ok(Self { data_dir: data_dir.to_owned(), source, warehouse })
    }

    pub fn source_store(&self) -> Arc<dyn SourceStore> {
        Arc::new(self.source.clone())
    }

    pub fn error_log(&self) -> Arc<dyn ErrorLog> {
        Arc::new(self.source.clone())
    }

    pub fn warehouse(&self) -> Arc<dyn Warehouse> {
        Arc::new(self.warehouse.clone())
    }

    /// Opens both stores, with the source's outbox filtered to the paths `config`
    /// mirrors: the embedded equivalent of the Eventarc trigger's document pattern, so
    /// raw operational collections (read by the nightly ETL, not mirrored) produce no
    /// change events for the relay to deliver and on-write sync to quarantine.
    pub fn open_for(data_dir: &Path, clock: Arc<dyn Clock>, config: &converge_core::MirrorConfig) -> Result<Self, StoreError> {
        let backends = Self::open(data_dir, clock)?;
        backends.source.set_outbox_filter(Some(config.clone()));
        Ok(backends)
    }

    /// The same stores behind the core traits.
    pub fn backends(&self) -> Backends {
        Backends {
            source: self.source_store(),
            errors: self.error_log(),
            warehouse: self.warehouse(),
            raw: Arc::new(self.source.clone()),
            metrics: Arc::new(self.warehouse.clone()),
            findings: Arc::new(self.warehouse.clone()),
            opportunities: Arc::new(self.source.clone()),
            kind: "embedded",
            tables_at_start: crate::TablesAtStart::Create,
        }
    }
}
