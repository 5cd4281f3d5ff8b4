//! Settings every function reads at start. A missing or wrong setting fails here,
//! naming the variable, rather than at the first request.

use std::path::PathBuf;

use converge_core::MirrorConfig;

use crate::env;

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub data_dir: PathBuf,
    pub mirror: MirrorConfig,
    pub max_body_bytes: usize,
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
        Ok(Self { port, data_dir, mirror, max_body_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!((settings.port, settings.max_body_bytes), (8080, DEFAULT_MAX_BODY_BYTES));
        assert_eq!(settings.data_dir, PathBuf::from(".converge"));
        let err = Settings::from_lookup(|n| (n == env::PORT).then(|| "eighty".to_owned())).unwrap_err();
        assert_eq!(err.to_string(), "setting PORT: expected a port number 0-65535, found \"eighty\"");
        let err = Settings::from_lookup(|n| (n == env::CONFIG).then(|| "/nonexistent/converge.toml".to_owned())).unwrap_err();
        assert!(err.to_string().starts_with("setting CONVERGE_CONFIG: cannot read /nonexistent/converge.toml"), "{err}");
    }
}
