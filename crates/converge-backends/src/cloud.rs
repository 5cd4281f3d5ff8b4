//! The cloud pair: Firestore holds the documents and the error log (next to the
//! source, so a failing warehouse cannot swallow the record of its failure); BigQuery
//! holds the changelog. Pointed at emulators when the settings name them.

use std::sync::Arc;

use converge_bigquery::{BigQueryConfig, BigQueryWarehouse};
use converge_core::{ErrorLog, SourceStore, StoreError, Warehouse};
use converge_firestore::{FirestoreConfig, FirestoreSource};
use converge_function::{env, CloudSettings};

use crate::Backends;

#[derive(Clone)]
pub struct CloudBackends {
    pub source: FirestoreSource,
    pub warehouse: BigQueryWarehouse,
}

impl CloudBackends {
    pub async fn open(settings: &CloudSettings) -> Result<Self, StoreError> {
        let mut firestore = FirestoreConfig::new(settings.project.clone()).with_database_id(settings.firestore_database.clone());
        firestore.emulator_host = settings.firestore_emulator_host.clone();
        let invalid = |name: &str, error: String| StoreError::permanent("settings", format!("setting {name}: {error}"));
        let bigquery = match &settings.bigquery_emulator {
            Some((rest, grpc)) => BigQueryConfig::emulator(settings.project.clone(), settings.bigquery_dataset.clone(), rest.clone(), grpc.clone()),
            None => BigQueryConfig::new(settings.project.clone(), settings.bigquery_dataset.clone()),
        }
        .map_err(|e| invalid(env::BIGQUERY_DATASET, e.to_string()))?;
        let bigquery = match &settings.bigquery_location {
            Some(location) => bigquery.with_location(location.clone()).map_err(|e| invalid(env::BIGQUERY_LOCATION, e.to_string()))?,
            None => bigquery,
        };
        let source = FirestoreSource::connect(firestore).await?;
        let warehouse = BigQueryWarehouse::connect(bigquery).await?;
        tracing::info!(
            project = settings.project,
            dataset = settings.bigquery_dataset,
            firestore_emulator = settings.firestore_emulator_host.as_deref(),
            bigquery_emulator = settings.bigquery_emulator.as_ref().map(|(rest, _)| rest.as_str()),
            "cloud backends connected"
        );
        Ok(Self { source, warehouse })
    }

    pub fn backends(&self) -> Backends {
        let source: Arc<dyn SourceStore> = Arc::new(self.source.clone());
        let errors: Arc<dyn ErrorLog> = Arc::new(self.source.clone());
        let warehouse: Arc<dyn Warehouse> = Arc::new(self.warehouse.clone());
        let raw: Arc<dyn converge_core::RawSource> = Arc::new(self.source.clone());
        let metrics: Arc<dyn converge_core::MetricsWarehouse> = Arc::new(self.warehouse.clone());
        let findings: Arc<dyn converge_core::FindingsWarehouse> = Arc::new(self.warehouse.clone());
        let opportunities: Arc<dyn converge_core::OpportunityStore> = Arc::new(self.source.clone());
        Backends { source, errors, warehouse, raw, metrics, findings, opportunities, kind: "cloud", tables_at_start: crate::TablesAtStart::Check }
    }
}
