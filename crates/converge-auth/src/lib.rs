//! Who may call Converge's HTTP endpoints: verification of OIDC ID tokens, and a local
//! signer for the embedded setup.
//!
//! On Cloud Run, the IAM invoker check already refuses callers without `run.invoker`;
//! this crate checks again inside the app (defence in depth) and narrows the callers
//! to an email allow-list. Callers send their Google-signed ID token in
//! `X-Serverless-Authorization` (see [`bearer`] for why).
//!
//! # Layout
//!
//! - [`config`]: [`VerifierConfig`] (keys, issuers, audience, allow-list, leeway) and
//!   [`KeySource`]; [`VerifierConfig::google`] and [`VerifierConfig::local`].
//! - [`verifier`]: [`IdTokenVerifier`]: headers or a token in, a [`Caller`] out.
//! - [`bearer`]: finding the token in `X-Serverless-Authorization` / `Authorization`.
//! - [`keys`]: the cached JWKS: max-age, single-flight fetches, refetch on an unknown
//!   key id, stale keys while the key server is down.
//! - [`error`]: [`AuthError`], its [`AuthErrorKind`] (401/403/503) and the detail-free
//!   public message.
//! - [`signing`]: [`RsaSigningKey`]: generates RSA-2048 keys and mints RS256 tokens.
//! - [`local`]: [`LocalSigner`]: a key kept in the data directory, tokens for
//!   `converge rebuild` against the embedded server.
//! - `testing` (feature `testing`): a JWKS server on loopback and token claims for tests.

pub mod bearer;
pub mod config;
pub mod error;
mod keys;
pub mod local;
pub mod signing;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verifier;

pub use bearer::{bearer_token, SERVERLESS_AUTHORIZATION};
pub use config::{parse_email_list, KeyCachePolicy, KeySource, VerifierConfig, GOOGLE_ISSUERS, GOOGLE_JWKS_URL};
pub use error::{AuthError, AuthErrorKind, ConfigError};
pub use local::{local_signer_dir, LocalSigner, LocalSignerError, LOCAL_ISSUER};
pub use signing::{RsaSigningKey, SigningError};
pub use verifier::{Caller, IdTokenVerifier};

/// The key-set types of [`KeySource::Static`], re-exported so callers need not depend
/// on jsonwebtoken themselves.
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
