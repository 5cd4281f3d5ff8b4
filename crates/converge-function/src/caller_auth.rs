//! Who may call an authenticated function (rebuild, detector runner), from the
//! environment: one rule for every such function, so they cannot drift apart.
//!
//! In the cloud, Google-signed ID tokens only, and both the audience and the allow-list
//! must be set: there is no default and no switch that loosens them. Embedded, tokens
//! of the local signer in the data directory (the `converge` commands sign with it).

use std::path::Path;
use std::sync::Arc;

use converge_auth::{parse_email_list, IdTokenVerifier, VerifierConfig};
use converge_core::Clock;

use crate::settings::{Backend, Settings, SettingsError};
use crate::env;
use crate::start::StartError;

/// The caller allowed by default on the embedded setup: who the `converge` commands
/// sign as.
pub const LOCAL_OPERATOR: &str = "operator@converge.local";

/// The verifier's configuration. `local_audience` is the audience of local tokens when
/// `CONVERGE_AUTH_AUDIENCE` is unset (embedded only); `purpose` completes "allowed to …"
/// in the error naming a missing allow-list.
pub fn verifier_config(
    settings: &Settings,
    lookup: impl Fn(&str) -> Option<String>,
    local_audience: &str,
    purpose: &str,
) -> Result<VerifierConfig, SettingsError> {
    let audience = lookup(env::AUTH_AUDIENCE).filter(|v| !v.trim().is_empty());
    let emails = lookup(env::AUTH_ALLOWED_EMAILS).map(|v| parse_email_list(&v)).filter(|v| !v.is_empty());
    match &settings.backend {
        Backend::Cloud(_) => {
            let audience = audience.ok_or_else(|| SettingsError {
                name: env::AUTH_AUDIENCE,
                problem: "required on the cloud backend: the service's URL, which callers request their ID token for".into(),
            })?;
            let emails = emails.ok_or_else(|| SettingsError {
                name: env::AUTH_ALLOWED_EMAILS,
                problem: format!("required on the cloud backend: the comma-separated emails (people or service accounts) allowed to {purpose}"),
            })?;
            Ok(VerifierConfig::google(audience, emails))
        }
        Backend::Embedded => Ok(VerifierConfig::local(
            converge_auth::local_signer_dir(&settings.data_dir),
            audience.unwrap_or_else(|| local_audience.into()),
            emails.unwrap_or_else(|| vec![LOCAL_OPERATOR.into()]),
        )),
    }
}

/// Makes sure the embedded setup's local signer (and the key file the verifier trusts)
/// exists, so the first local command and the server agree on the key.
pub fn ensure_local_signer(data_dir: &Path) -> Result<(), converge_auth::LocalSignerError> {
    converge_auth::LocalSigner::open(converge_auth::local_signer_dir(data_dir))?;
    Ok(())
}

/// The verifier of a function that checks tokens, from the environment (see
/// [`verifier_config`]); on the embedded setup it first makes sure the local signer
/// exists, so the `converge` commands and the function agree on the key.
pub fn open_verifier(settings: &Settings, local_audience: &str, purpose: &str, clock: Arc<dyn Clock>) -> Result<IdTokenVerifier, StartError> {
    let config = verifier_config(settings, |name| std::env::var(name).ok(), local_audience, purpose)?;
    if settings.backend == Backend::Embedded {
        ensure_local_signer(&settings.data_dir)?;
    }
    Ok(IdTokenVerifier::new(config, clock)?)
}
