//! What a pass runs, and how.

use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// One pass: the run date and, optionally, a subset of tenants and detectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// The last day of every detector's recent window (inclusive), usually yesterday.
    pub as_of: NaiveDate,
    /// Tenants to run for; every tenant in the warehouse when absent (one query per
    /// detector for all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Detector ids to run; the whole pack when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Vec<String>>,
}

impl DetectRequest {
    pub fn all(as_of: NaiveDate) -> Self {
        Self { as_of, tenants: None, detectors: None }
    }

    /// The run's scope in its batch id and run record: `*` or the tenants, then the
    /// detectors after `:` when a subset was asked for. Sorted, so the order a caller
    /// names them in does not make another batch.
    pub fn scope(&self) -> String {
        let sorted = |list: &Vec<String>| {
            let mut list = list.clone();
            list.sort();
            list.dedup();
            list.join(",")
        };
        let tenants = self.tenants.as_ref().map_or_else(|| "*".to_owned(), sorted);
        match &self.detectors {
            None => tenants,
            Some(detectors) => format!("{tenants}:{}", sorted(detectors)),
        }
    }
}

/// How a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Queries in flight at once. The warehouse does the work: DuckDB parallelizes
    /// inside one query already, BigQuery has slot quotas; 4 keeps both busy without
    /// queueing a hundred detectors on them at once.
    pub concurrency: usize,
    /// Per query; past it the query is cancelled and the detector counts as failed.
    pub query_timeout: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self { concurrency: 4, query_timeout: Duration::from_secs(120) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_ignores_order_and_repeats() {
        let as_of = NaiveDate::from_ymd_opt(2025, 3, 31).unwrap();
        assert_eq!(DetectRequest::all(as_of).scope(), "*");
        let a = DetectRequest { as_of, tenants: Some(vec!["b".into(), "a".into(), "b".into()]), detectors: None };
        assert_eq!(a.scope(), "a,b");
        let b = DetectRequest { as_of, tenants: None, detectors: Some(vec!["y".into(), "x".into()]) };
        assert_eq!(b.scope(), "*:x,y");
    }

    #[test]
    fn requests_decode_from_json_and_refuse_unknown_fields() {
        let request: DetectRequest = serde_json::from_str(r#"{"as_of": "2025-03-31", "tenants": ["acme"]}"#).unwrap();
        assert_eq!(request.tenants, Some(vec!["acme".to_string()]));
        assert!(serde_json::from_str::<DetectRequest>(r#"{"as_of": "2025-03-31", "tenant": "acme"}"#).is_err());
        assert!(serde_json::from_str::<DetectRequest>(r#"{"as_of": "31/03/2025"}"#).is_err());
    }
}
