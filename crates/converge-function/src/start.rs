//! Why a function could not start: each variant names the step, and its cause follows
//! as the error's source (printed by the binary's `main` as "Caused by: …").

use converge_core::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] crate::SettingsError),
    #[error("creating the local signer's key")]
    LocalSigner(#[from] converge_auth::LocalSignerError),
    #[error("the token verifier's configuration")]
    Verifier(#[from] converge_auth::ConfigError),
    #[error("opening the backends")]
    Backends(#[source] StoreError),
    /// A cloud warehouse the setup step has not made ready exits here, naming what is
    /// missing and the command that creates it.
    #[error("readying the warehouse's tables")]
    Tables(#[source] StoreError),
    /// Anything else a function loads at start (the detector pack).
    #[error("{step}")]
    Other { step: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}
