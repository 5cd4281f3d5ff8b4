//! Where the warehouse lives and how long to wait for it.
//!
//! Built from explicit values only: reading environment variables is the caller's job
//! (their names live in `converge-function`'s `env` module). Project, dataset and location
//! end up in SQL text (as quoted identifiers and one string literal), so they are
//! validated here, once.

use std::time::Duration;

/// A BigQuery project and dataset, and the endpoints to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryConfig {
    /// Project id (billing and storage), e.g. `acme-analytics`.
    pub project: String,
    /// Dataset holding every changelog table and view; created if missing.
    pub dataset: String,
    /// Location of the dataset when it has to be created (`US`, `europe-west1`);
    /// `None` leaves BigQuery's default.
    pub location: Option<String>,
    /// REST endpoint (jobs, DDL); `None` = Google's.
    pub rest_endpoint: Option<String>,
    /// Storage Write API endpoint (gRPC); `None` = Google's.
    pub grpc_endpoint: Option<String>,
    /// Send no credentials (emulators); otherwise Application Default Credentials.
    pub anonymous: bool,
    /// Upper bound on any one call (a query with its polling, one append, a commit),
    /// retries included. Without it the client retries a dead endpoint for a long
    /// time; a caller (the sync function) must instead fail fast and be redelivered.
    pub call_timeout: Duration,
    /// Upper bound on one attempt of an append on the default stream.
    pub attempt_timeout: Duration,
    /// Rows per page when reading query results (bounded memory per page).
    pub page_size: u32,
    /// Open a new AppendRows connection for every append request instead of keeping
    /// one per table. Only for the emulator: the client names the write stream on the
    /// first request of a connection only (as the API allows), and `bqemulator` 1.4
    /// answers any later request without it with NOT_FOUND "Stream not found". Real
    /// BigQuery keeps the cheaper long-lived connection (`false`).
    pub connection_per_append: bool,
}

/// A configuration value that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("BigQuery project id `{0}` is not valid: expected 6-30 characters of [a-z0-9-] (optionally `domain:` prefixed), starting with a letter")]
    Project(String),
    #[error("BigQuery dataset `{0}` is not valid: expected 1-1024 characters of [A-Za-z0-9_]")]
    Dataset(String),
    #[error("BigQuery location `{0}` is not valid: expected a region or multi-region name such as `US` or `europe-west1`")]
    Location(String),
}

impl BigQueryConfig {
    /// Google's endpoints with Application Default Credentials.
    pub fn new(project: impl Into<String>, dataset: impl Into<String>) -> Result<Self, ConfigError> {
        let config = Self {
            project: project.into(),
            dataset: dataset.into(),
            location: None,
            rest_endpoint: None,
            grpc_endpoint: None,
            anonymous: false,
            call_timeout: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(30),
            page_size: 10_000,
            connection_per_append: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// An emulator at `rest` (e.g. `http://127.0.0.1:9050`) and `grpc`
    /// (e.g. `http://127.0.0.1:9060`), without credentials, with short timeouts: on
    /// loopback a call that takes seconds is a dead emulator, not a slow network.
    pub fn emulator(project: impl Into<String>, dataset: impl Into<String>, rest: impl Into<String>, grpc: impl Into<String>) -> Result<Self, ConfigError> {
        let mut config = Self::new(project, dataset)?;
        config.rest_endpoint = Some(rest.into());
        config.grpc_endpoint = Some(grpc.into());
        config.anonymous = true;
        config.connection_per_append = true;
        config.call_timeout = Duration::from_secs(30);
        config.attempt_timeout = Duration::from_secs(10);
        Ok(config)
    }

    pub fn with_location(mut self, location: impl Into<String>) -> Result<Self, ConfigError> {
        self.location = Some(location.into());
        self.validate()?;
        Ok(self)
    }

    /// Checks every value that reaches SQL text.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_project(&self.project) {
            return Err(ConfigError::Project(self.project.clone()));
        }
        let d = &self.dataset;
        if d.is_empty() || d.len() > 1024 || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Dataset(d.clone()));
        }
        if let Some(l) = &self.location {
            if l.is_empty() || l.len() > 64 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::Location(l.clone()));
            }
        }
        Ok(())
    }

    /// `projects/{project}/datasets/{dataset}/tables/{table}`, the Storage Write API's name.
    pub fn table_resource(&self, table: &str) -> String {
        format!("projects/{}/datasets/{}/tables/{}", self.project, self.dataset, table)
    }
}

/// Google's rule (6-30 characters, lower case, digits, hyphens, starting with a
/// letter), relaxed to 1-30 so emulator projects such as `test` pass, plus the legacy
/// `domain.com:project` form.
fn valid_project(project: &str) -> bool {
    let id = match project.rsplit_once(':') {
        Some((domain, id)) => {
            if domain.is_empty() || !domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-') {
                return false;
            }
            id
        }
        None => project,
    };
    !id.is_empty()
        && id.len() <= 30
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_reach_sql_are_checked() {
        assert!(BigQueryConfig::new("acme-analytics", "converge").is_ok());
        assert!(BigQueryConfig::new("example.com:acme", "converge_1").is_ok());
        assert!(matches!(BigQueryConfig::new("acme`; DROP", "d"), Err(ConfigError::Project(_))));
        assert!(matches!(BigQueryConfig::new("acme", "my-dataset"), Err(ConfigError::Dataset(_))));
        assert!(matches!(BigQueryConfig::new("acme", "d").unwrap().with_location("US\""), Err(ConfigError::Location(_))));
        assert_eq!(BigQueryConfig::new("p1", "d").unwrap().table_resource("records"), "projects/p1/datasets/d/tables/records");
    }
}
