//! `converge detectors list`: the shipped detector pack, one detector per line.

use converge_core::QueryDialect;
use converge_detect::{DetectorSpec, Pack};
use serde::Serialize;

/// What `converge detectors list --json` prints per detector.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorListing {
    pub id: String,
    pub title: String,
    pub entity: String,
    pub severity: String,
    /// `declarative` (compiled for both dialects) or `raw_sql`.
    pub form: &'static str,
    /// The warehouses it can run on.
    pub runs_on: Vec<&'static str>,
    /// `tested` (threshold and a test against noise), `rule` (the threshold alone) or
    /// `raw_sql`.
    pub decides: &'static str,
    /// How, in words (the test and its false-discovery rate).
    pub test: String,
}

impl DetectorListing {
    fn of(spec: &DetectorSpec) -> Self {
        let runs_on = [(QueryDialect::DuckDb, "duckdb"), (QueryDialect::BigQuery, "bigquery")]
            .into_iter()
            .filter(|(dialect, _)| spec.runs_on(*dialect))
            .map(|(_, name)| name)
            .collect();
        Self {
            id: spec.id.clone(),
            title: spec.title.clone(),
            entity: spec.entity_type.as_str().to_owned(),
            severity: spec.severity.as_str().to_owned(),
            form: if spec.raw_sql.is_some() { "raw_sql" } else { "declarative" },
            runs_on,
            decides: converge_detect::decision(spec),
            test: converge_detect::test_description(spec),
        }
    }
}

/// The shipped pack, validated (a pack that does not validate is an error, not a list).
pub fn list() -> anyhow::Result<Vec<DetectorListing>> {
    let pack = Pack::shipped()?;
    Ok(pack.detectors().iter().map(DetectorListing::of).collect())
}
