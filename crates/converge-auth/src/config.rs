//! What a verifier trusts: which keys, which issuers, which audience, which callers.
//!
//! There is deliberately no switch that turns a check off, and nothing here reads the
//! environment: an endpoint may take its audience and allow-list from settings, but the
//! key source and issuers of [`VerifierConfig::google`] are fixed in code, so no
//! variable can point a deployed service at someone else's keys.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use crate::error::ConfigError;
use crate::local::{LOCAL_ISSUER, LOCAL_JWKS_FILE};

/// Google's signing keys for ID tokens, as a JWKS.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The `iss` values Google puts in ID tokens (both forms occur).
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Clock skew tolerated on `exp`, `iat` and `nbf` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest leeway accepted: beyond it an expired token is simply accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Where the public keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS document fetched over HTTPS (plain HTTP only to a loopback host, for
    /// tests), cached per its `Cache-Control: max-age`.
    Jwks { url: String },
    /// A JWKS document in a file, re-read like a fetched one: the local signer's keys.
    File { path: PathBuf },
    /// A fixed key set, never refreshed.
    Static(JwkSet),
}

impl KeySource {
    pub fn jwks(url: impl Into<String>) -> Self {
        KeySource::Jwks { url: url.into() }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Jwks { url } => write!(f, "JWKS {url}"),
            KeySource::File { path } => write!(f, "JWKS file {}", path.display()),
            KeySource::Static(set) => write!(f, "a static key set of {} keys", set.keys.len()),
        }
    }
}

/// How long fetched keys are trusted and how often they may be fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// Freshness when the response has no `Cache-Control: max-age` (and for files).
    pub default_max_age: Duration,
    /// Upper bound on an announced `max-age`.
    pub longest_max_age: Duration,
    /// A token with a key id missing from a key set younger than this is refused
    /// without refetching. Google publishes keys before signing with them, so such a
    /// kid is almost surely bogus, and a flood of them must not become a flood of
    /// requests to Google. Also the lower bound of a key set's freshness.
    pub min_refetch_interval: Duration,
    /// After a failed fetch, the next one waits at least this long; requests in
    /// between use the stale keys if they may, or answer Unavailable.
    pub retry_after_failure: Duration,
    /// How long past its expiry a key set still verifies tokens while refetching it
    /// fails (stale-if-error).
    pub serve_stale_for: Duration,
    /// Timeout of one JWKS request.
    pub fetch_timeout: Duration,
}

impl Default for KeyCachePolicy {
    fn default() -> Self {
        Self {
            default_max_age: Duration::from_secs(3600),
            longest_max_age: Duration::from_secs(24 * 3600),
            min_refetch_interval: Duration::from_secs(30),
            retry_after_failure: Duration::from_secs(5),
            serve_stale_for: Duration::from_secs(6 * 3600),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything an [`IdTokenVerifier`](crate::IdTokenVerifier) checks a token against.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    key_source: KeySource,
    issuers: Vec<String>,
    audience: String,
    allowed_emails: Vec<String>,
    leeway: Duration,
    cache_policy: KeyCachePolicy,
}

impl VerifierConfig {
    /// Tokens signed by `key_source`, from one of `issuers`, for exactly `audience`,
    /// carrying a verified email in `allowed_emails` (compared case-insensitively).
    pub fn new(
        key_source: KeySource,
        issuers: impl IntoIterator<Item = impl Into<String>>,
        audience: impl Into<String>,
        allowed_emails: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            key_source,
            issuers: issuers.into_iter().map(Into::into).collect(),
            audience: audience.into(),
            allowed_emails: allowed_emails.into_iter().map(|email| normalize_email(&email.into())).collect(),
            leeway: DEFAULT_LEEWAY,
            cache_policy: KeyCachePolicy::default(),
        }
    }

    /// Google-signed ID tokens: Google's JWKS and issuers. `audience` is the URL the
    /// caller asked its token for: the service URL on Cloud Run.
    pub fn google(audience: impl Into<String>, allowed_emails: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::new(KeySource::jwks(GOOGLE_JWKS_URL), GOOGLE_ISSUERS, audience, allowed_emails)
    }

    /// Tokens minted by the [`LocalSigner`](crate::LocalSigner) whose directory is
    /// `signer_dir`: its JWKS file and issuer [`LOCAL_ISSUER`], nothing else.
    pub fn local(
        signer_dir: impl AsRef<Path>,
        audience: impl Into<String>,
        allowed_emails: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let path = signer_dir.as_ref().join(LOCAL_JWKS_FILE);
        Self::new(KeySource::File { path }, [LOCAL_ISSUER], audience, allowed_emails)
    }

    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    pub fn with_cache_policy(mut self, policy: KeyCachePolicy) -> Self {
        self.cache_policy = policy;
        self
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Lower-cased.
    pub fn allowed_emails(&self) -> &[String] {
        &self.allowed_emails
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    pub fn cache_policy(&self) -> &KeyCachePolicy {
        &self.cache_policy
    }

    /// Refuses a configuration under which the verifier would check less than it says.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.audience.trim().is_empty() {
            return invalid("the audience is empty; expected the URL callers request tokens for".into());
        }
        if self.issuers.is_empty() || self.issuers.iter().any(|issuer| issuer.trim().is_empty()) {
            return invalid(format!("issuers must be a non-empty list of non-empty names, got {:?}", self.issuers));
        }
        if self.allowed_emails.is_empty() {
            return invalid("the email allow-list is empty; expected at least one caller".into());
        }
        if let Some(bad) = self.allowed_emails.iter().find(|email| !looks_like_email(email)) {
            return invalid(format!("allow-list entry `{bad}` is not an email address"));
        }
        if self.leeway > MAX_LEEWAY {
            return invalid(format!("leeway {:?} is larger than the maximum {:?}", self.leeway, MAX_LEEWAY));
        }
        match &self.key_source {
            KeySource::Jwks { url } => check_jwks_url(url)?,
            KeySource::Static(set) if set.keys.is_empty() => {
                return invalid("the static key set is empty".into());
            }
            KeySource::Static(_) | KeySource::File { .. } => {}
        }
        Ok(())
    }
}

/// Splits an allow-list setting: emails separated by commas and/or whitespace.
pub fn parse_email_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|part| !part.is_empty()).map(normalize_email).collect()
}

pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn looks_like_email(email: &str) -> bool {
    matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
}

/// Keys must travel over TLS; plain HTTP only reaches a test server on loopback.
fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ConfigError::Invalid(format!("JWKS URL `{url}` does not parse: {e}")))?;
    // `host_str` writes IPv6 addresses in brackets.
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        scheme => Err(ConfigError::Invalid(format!(
            "JWKS URL `{url}` uses {scheme}; expected https (http only to a loopback host)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: KeySource) -> VerifierConfig {
        VerifierConfig::new(source, ["issuer"], "https://svc.example", ["ops@example.com"])
    }

    #[test]
    fn google_config_uses_googles_keys_and_issuers() {
        let config = VerifierConfig::google("https://svc.example", ["Ops@Example.com"]);
        assert!(matches!(config.key_source(), KeySource::Jwks { url } if url == GOOGLE_JWKS_URL));
        assert_eq!(config.issuers(), ["https://accounts.google.com", "accounts.google.com"]);
        assert_eq!(config.allowed_emails(), ["ops@example.com"]);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn jwks_must_be_https_unless_on_loopback() {
        assert!(config(KeySource::jwks("http://keys.example/certs")).validate().is_err());
        assert!(config(KeySource::jwks("ftp://127.0.0.1/certs")).validate().is_err());
        assert_eq!(config(KeySource::jwks("http://127.0.0.1:9/certs")).validate(), Ok(()));
        assert_eq!(config(KeySource::jwks("http://[::1]:9/certs")).validate(), Ok(()));
        assert_eq!(config(KeySource::jwks("https://keys.example/certs")).validate(), Ok(()));
    }

    #[test]
    fn refuses_configurations_that_would_check_less() {
        let source = || KeySource::jwks("https://keys.example/certs");
        let empty_audience = VerifierConfig::new(source(), ["issuer"], " ", ["ops@example.com"]);
        assert!(empty_audience.validate().unwrap_err().to_string().contains("audience"));
        let no_issuers = VerifierConfig::new(source(), Vec::<String>::new(), "aud", ["ops@example.com"]);
        assert!(no_issuers.validate().unwrap_err().to_string().contains("issuers"));
        let nobody = VerifierConfig::new(source(), ["issuer"], "aud", Vec::<String>::new());
        assert!(nobody.validate().unwrap_err().to_string().contains("allow-list is empty"));
        let not_an_email = VerifierConfig::new(source(), ["issuer"], "aud", ["ops"]);
        assert!(not_an_email.validate().unwrap_err().to_string().contains("`ops`"));
        let lax = config(source()).with_leeway(Duration::from_secs(3600));
        assert!(lax.validate().unwrap_err().to_string().contains("leeway"));
        assert!(config(KeySource::Static(JwkSet { keys: vec![] })).validate().is_err());
    }

    #[test]
    fn email_lists_split_on_commas_and_whitespace() {
        assert_eq!(
            parse_email_list(" Ops@Example.com,deploy@x.iam.gserviceaccount.com\n  a@b.c ,,"),
            ["ops@example.com", "deploy@x.iam.gserviceaccount.com", "a@b.c"]
        );
        assert!(parse_email_list("  ").is_empty());
    }
}
