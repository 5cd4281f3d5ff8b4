//! Settings every function reads at start. A missing or wrong setting fails here,
//! naming the variable, rather than at the first request.

use std::path::PathBuf;

use converge_core::MirrorConfig;

use crate::env;

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    /// The address to listen on: `CONVERGE_BIND`, else every interface on Cloud Run
    /// (where the platform's front end is the only way in) and loopback elsewhere (a
    /// laptop's functions are not for the network unless asked).
    pub bind: std::net::IpAddr,
    pub data_dir: PathBuf,
    pub mirror: MirrorConfig,
    pub max_body_bytes: usize,
    pub backend: Backend,
    /// Serve the Firestore emulator's delivery route too (local runs only).
    pub accept_emulator_events: bool,
    /// What the runs' `cost` is estimated with (`CONVERGE_PRICE_*`, else Google's list
    /// prices: `converge_core::cost`).
    pub prices: converge_core::PriceTable,
}

/// Which systems the functions run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and DuckDB in [`Settings::data_dir`]: no account, no network.
    Embedded,
    /// Firestore and BigQuery (or their emulators).
    Cloud(CloudSettings),
}

/// Where the cloud backends are. Turned into adapter configurations by
/// `converge-backends`; validated further (identifier syntax) there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    pub project: String,
    pub firestore_database: String,
    /// `host:port` of a Firestore emulator.
    pub firestore_emulator_host: Option<String>,
    pub bigquery_dataset: String,
    pub bigquery_location: Option<String>,
    /// Emulator endpoints (REST, Storage API gRPC) as URLs; both or neither.
    pub bigquery_emulator: Option<(String, String)>,
}

impl CloudSettings {
    /// True when both services are emulated: nothing leaves the machine.
    pub fn is_local(&self) -> bool {
        self.firestore_emulator_host.is_some() && self.bigquery_emulator.is_some()
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {problem}")]
pub struct SettingsError {
    pub name: &'static str,
    pub problem: String,
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let port = match lookup(env::PORT) {
            None => 8080,
            Some(text) => text.parse().map_err(|_| SettingsError {
                name: env::PORT,
                problem: format!("expected a port number 0-65535, found {text:?}"),
            })?,
        };
        let bind = match lookup(env::BIND) {
            Some(text) => text.trim().parse().map_err(|_| SettingsError {
                name: env::BIND,
                problem: format!("expected an IP address such as 127.0.0.1 or 0.0.0.0, found {text:?}"),
            })?,
            None if lookup(env::CLOUD_RUN_SERVICE).is_some() => std::net::IpAddr::from([0, 0, 0, 0]),
            None => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let data_dir = lookup(env::DATA_DIR).map_or_else(|| PathBuf::from(".converge"), PathBuf::from);
        let mirror = match lookup(env::CONFIG) {
            None => MirrorConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| SettingsError { name: env::CONFIG, problem: format!("cannot read {path}: {e}") })?;
                MirrorConfig::from_toml(&text).map_err(|e| SettingsError { name: env::CONFIG, problem: format!("{path}: {e}") })?
            }
        };
        let max_body_bytes = match lookup(env::MAX_BODY_BYTES) {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(text) => text.parse().ok().filter(|n| *n >= 1024).ok_or_else(|| SettingsError {
                name: env::MAX_BODY_BYTES,
                problem: format!("expected a byte count of at least 1024, found {text:?}"),
            })?,
        };
        let backend = match lookup(env::BACKEND).as_deref() {
            None | Some("embedded") => Backend::Embedded,
            Some("cloud") => Backend::Cloud(cloud_settings(&lookup)?),
            Some(other) => {
                return Err(SettingsError { name: env::BACKEND, problem: format!("expected `embedded` or `cloud`, found {other:?}") })
            }
        };
        let accept_emulator_events = match lookup(env::ACCEPT_EMULATOR_EVENTS).as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(SettingsError { name: env::ACCEPT_EMULATOR_EVENTS, problem: format!("expected `true` or `false`, found {other:?}") })
            }
        };
        if accept_emulator_events && lookup(env::CLOUD_RUN_SERVICE).is_some() {
            return Err(SettingsError {
                name: env::ACCEPT_EMULATOR_EVENTS,
                problem: "the emulator delivery route is for local runs; it cannot be enabled on Cloud Run (unset it)".into(),
            });
        }
        // A malformed price stops the start, naming the variable: a typo must not price
        // every run at the default.
        let prices = env::prices_from_lookup(&lookup).map_err(|e| SettingsError {
            name: if e.setting == env::PRICE_BIGQUERY_PER_TIB { env::PRICE_BIGQUERY_PER_TIB } else { env::PRICE_FIRESTORE_READS_PER_100K },
            problem: format!("expected a price in US dollars as a plain number of at least 0, such as the default {}; found {:?}", e.default, e.found),
        })?;
        Ok(Self { port, bind, data_dir, mirror, max_body_bytes, backend, accept_emulator_events, prices })
    }

    /// Where a function listens: [`Settings::bind`] and [`Settings::port`].
    pub fn listen_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.bind, self.port)
    }
}

fn cloud_settings(lookup: &impl Fn(&str) -> Option<String>) -> Result<CloudSettings, SettingsError> {
    let non_empty = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let project = non_empty(env::PROJECT).ok_or_else(|| SettingsError {
        name: env::PROJECT,
        problem: "required with CONVERGE_BACKEND=cloud: the project holding the Firestore database and the BigQuery dataset".into(),
    })?;
    let as_url = |host: String| if host.contains("://") { host } else { format!("http://{host}") };
    let bigquery_emulator = match (non_empty(env::BIGQUERY_EMULATOR_HOST), non_empty(env::BIGQUERY_STORAGE_EMULATOR_HOST)) {
        (None, None) => None,
        (Some(rest), Some(grpc)) => Some((as_url(rest), as_url(grpc))),
        (Some(_), None) => {
            return Err(SettingsError {
                name: env::BIGQUERY_STORAGE_EMULATOR_HOST,
                problem: format!("required with {}: the emulator's Storage API (gRPC) host:port", env::BIGQUERY_EMULATOR_HOST),
            })
        }
        (None, Some(_)) => {
            return Err(SettingsError {
                name: env::BIGQUERY_EMULATOR_HOST,
                problem: format!("required with {}: the emulator's REST host:port", env::BIGQUERY_STORAGE_EMULATOR_HOST),
            })
        }
    };
    Ok(CloudSettings {
        project,
        firestore_database: non_empty(env::FIRESTORE_DATABASE).unwrap_or_else(|| "(default)".into()),
        firestore_emulator_host: non_empty(env::FIRESTORE_EMULATOR_HOST),
        bigquery_dataset: non_empty(env::BIGQUERY_DATASET).unwrap_or_else(|| "converge".into()),
        bigquery_location: non_empty(env::BIGQUERY_LOCATION),
        bigquery_emulator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_listen_on_loopback_unless_on_cloud_run_or_told() {
        let on = |vars: &'static [(&'static str, &'static str)]| {
            Settings::from_lookup(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned())).unwrap().listen_address().to_string()
        };
        assert_eq!(on(&[]), "127.0.0.1:8080");
        assert_eq!(on(&[(env::CLOUD_RUN_SERVICE, "converge-sync"), (env::PORT, "9000")]), "0.0.0.0:9000");
        assert_eq!(on(&[(env::BIND, "0.0.0.0")]), "0.0.0.0:8080");
        assert_eq!(on(&[(env::BIND, "::1")]), "[::1]:8080");
        let err = Settings::from_lookup(|n| (n == env::BIND).then(|| "everywhere".to_owned())).unwrap_err();
        assert!(err.to_string().contains("CONVERGE_BIND"), "{err}");
    }

    #[test]
    fn prices_come_from_the_variables_and_a_malformed_one_stops_the_start() {
        let default = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(default.prices, converge_core::PriceTable::default());
        let set = Settings::from_lookup(|n| (n == env::PRICE_FIRESTORE_READS_PER_100K).then(|| "0.06".to_owned())).unwrap();
        assert_eq!(set.prices.firestore_usd_per_100k_reads, 0.06);
        assert_eq!(set.prices.bigquery_usd_per_tib, default.prices.bigquery_usd_per_tib);
        let err = Settings::from_lookup(|n| (n == env::PRICE_BIGQUERY_PER_TIB).then(|| "6,25".to_owned())).unwrap_err();
        assert!(err.to_string().starts_with("setting CONVERGE_PRICE_BIGQUERY_PER_TIB: expected a price"), "{err}");
        assert!(err.to_string().contains("\"6,25\""), "{err}");
    }

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!((settings.port, settings.max_body_bytes), (8080, DEFAULT_MAX_BODY_BYTES));
        assert_eq!(settings.data_dir, PathBuf::from(".converge"));
        let err = Settings::from_lookup(|n| (n == env::PORT).then(|| "eighty".to_owned())).unwrap_err();
        assert_eq!(err.to_string(), "setting PORT: expected a port number 0-65535, found \"eighty\"");
        let err = Settings::from_lookup(|n| (n == env::CONFIG).then(|| "/nonexistent/converge.toml".to_owned())).unwrap_err();
        assert!(err.to_string().starts_with("setting CONVERGE_CONFIG: cannot read /nonexistent/converge.toml"), "{err}");
        assert_eq!((settings.backend, settings.accept_emulator_events), (Backend::Embedded, false));
    }

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_cloud_backend_needs_a_project_and_complete_emulator_endpoints() {
        let err = Settings::from_lookup(with(&[(env::BACKEND, "cloud")])).unwrap_err();
        assert_eq!(err.name, env::PROJECT);
        let err = Settings::from_lookup(with(&[(env::BACKEND, "clod")])).unwrap_err();
        assert_eq!(err.to_string(), "setting CONVERGE_BACKEND: expected `embedded` or `cloud`, found \"clod\"");
        let err = Settings::from_lookup(with(&[(env::BACKEND, "cloud"), (env::PROJECT, "p"), (env::BIGQUERY_EMULATOR_HOST, "127.0.0.1:9050")]))
            .unwrap_err();
        assert_eq!(err.name, env::BIGQUERY_STORAGE_EMULATOR_HOST);

        let settings = Settings::from_lookup(with(&[
            (env::BACKEND, "cloud"),
            (env::PROJECT, "acme-prod"),
            (env::FIRESTORE_EMULATOR_HOST, "127.0.0.1:8081"),
            (env::BIGQUERY_EMULATOR_HOST, "127.0.0.1:9050"),
            (env::BIGQUERY_STORAGE_EMULATOR_HOST, "http://127.0.0.1:9060"),
        ]))
        .unwrap();
        let Backend::Cloud(cloud) = settings.backend else { panic!("cloud backend expected") };
        assert_eq!(cloud.bigquery_emulator, Some(("http://127.0.0.1:9050".into(), "http://127.0.0.1:9060".into())));
        assert_eq!((cloud.bigquery_dataset.as_str(), cloud.firestore_database.as_str()), ("converge", "(default)"));
        assert!(cloud.is_local());
    }

    #[test]
    fn the_emulator_route_cannot_be_enabled_on_cloud_run() {
        assert!(Settings::from_lookup(with(&[(env::ACCEPT_EMULATOR_EVENTS, "true")])).unwrap().accept_emulator_events);
        let err = Settings::from_lookup(with(&[(env::ACCEPT_EMULATOR_EVENTS, "true"), (env::CLOUD_RUN_SERVICE, "on-write-sync")])).unwrap_err();
        assert_eq!(err.name, env::ACCEPT_EMULATOR_EVENTS);
    }
}
