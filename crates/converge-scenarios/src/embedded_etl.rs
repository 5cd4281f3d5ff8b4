//! The nightly-ETL runner on a data directory's embedded stores: the wiring
//! `converge etl`, the demo's planted-patterns pass and `converge bench etl` share.

use std::sync::Arc;

use converge_backends::EmbeddedBackends;
use converge_core::Clock;
use converge_etl::{EtlBackends, EtlRunner};

/// The runner on a data directory's embedded stores.
pub fn runner(backends: &EmbeddedBackends, clock: Arc<dyn Clock>) -> EtlRunner {
    EtlRunner::new(
        EtlBackends {
            raw: Arc::new(backends.source.clone()),
            source: Arc::new(backends.source.clone()),
            errors: Arc::new(backends.source.clone()),
            warehouse: Arc::new(backends.warehouse.clone()),
            metrics: Arc::new(backends.warehouse.clone()),
        },
        clock,
    )
}
