//! [`IdTokenVerifier`]: a bearer token in, a [`Caller`] or an [`AuthError`] out.
//!
//! The checks, in order, each refusing with its own error:
//! 1. the header parses and names `alg: RS256` and a `kid` (no `none`, no HS256: an
//!    HMAC "signed" with the public key must not pass);
//! 2. the key set has that `kid` and the signature verifies (jsonwebtoken, RS256 only);
//! 3. `iss` is one of the configured issuers, `aud` is the configured audience;
//! 4. `exp` has not passed, `iat` and `nbf` are not in the future, within the leeway,
//!    by the injected clock (jsonwebtoken's own time checks read the system clock, so
//!    they are off and these replace them);
//! 5. `email` is present, `email_verified` is true, and the email is in the allow-list.
//!
//! A token failing 5 is genuine, so the answer is Forbidden (403), not
//! Unauthenticated: that includes `email_verified: false`. Google only issues such
//! tokens for accounts whose address it has not confirmed; the signature is fine, the
//! identity is not one we accept.

use std::collections::HashSet;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use converge_core::{Clock, Timestamp};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::bearer::bearer_token;
use crate::config::{normalize_email, VerifierConfig};
use crate::error::{AuthError, ConfigError};
use crate::keys::KeyCache;

/// Who called, as the verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// As written in the token (the allow-list match ignores case).
    pub email: String,
    /// The token's `sub`: the account's stable id.
    pub subject: String,
    pub issuer: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Verifies ID tokens against one [`VerifierConfig`]. Cheap to clone: clones share the
/// key cache.
#[derive(Clone)]
pub struct IdTokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerifierConfig,
    allowed_emails: HashSet<String>,
    keys: KeyCache,
    clock: Arc<dyn Clock>,
    validation: Validation,
}

impl std::fmt::Debug for IdTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenVerifier").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl IdTokenVerifier {
    /// Refuses a configuration that would check less than it claims (see
    /// [`VerifierConfig`]); fetches nothing until the first token arrives.
    pub fn new(config: VerifierConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        config.validate()?;
        let keys = KeyCache::new(config.key_source().clone(), config.cache_policy().clone(), clock.clone())
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", config.key_source())))?;
        let allowed_emails = config.allowed_emails().iter().cloned().collect();
        Ok(Self { inner: Arc::new(Inner { validation: signature_only(), allowed_emails, keys, clock, config }) })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// Verifies the bearer token of a request: `X-Serverless-Authorization` if present,
    /// else `Authorization` (see [`bearer_token`]).
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        self.verify_token(token).await
    }

    /// Verifies one compact-serialized ID token.
    pub async fn verify_token(&self, token: &str) -> Result<Caller, AuthError> {
        let inner = &*self.inner;
        let kid = check_header(token)?;
        let key = inner.keys.key_for(&kid).await?;
        let claims = jsonwebtoken::decode::<IdTokenClaims>(token, &key, &inner.validation)
            .map_err(|e| match e.kind() {
                JwtErrorKind::InvalidSignature => AuthError::BadSignature { kid: kid.clone() },
                JwtErrorKind::Json(_) | JwtErrorKind::InvalidClaimFormat(_) | JwtErrorKind::MissingRequiredClaim(_) => {
                    AuthError::MalformedClaims(e.to_string())
                }
                JwtErrorKind::InvalidAlgorithm => AuthError::DisallowedAlgorithm { found: "not RS256".into() },
                _ => AuthError::MalformedToken(e.to_string()),
            })?
            .claims;
        self.check_claims(claims)
    }

    fn check_claims(&self, claims: IdTokenClaims) -> Result<Caller, AuthError> {
        let config = &self.inner.config;
        if !config.issuers().contains(&claims.iss) {
            return Err(AuthError::WrongIssuer { found: claims.iss, expected: config.issuers().to_vec() });
        }
        if !claims.aud.contains(config.audience()) {
            return Err(AuthError::WrongAudience {
                found: claims.aud.to_string(),
                expected: config.audience().to_owned(),
            });
        }

        let now = self.inner.clock.now().seconds;
        let leeway = config.leeway();
        let leeway_seconds = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        if now > claims.exp.saturating_add(leeway_seconds) {
            return Err(AuthError::Expired { expired_at: claims.exp, now, leeway });
        }
        let not_before = [("iat", Some(claims.iat)), ("nbf", claims.nbf)];
        for (claim, at) in not_before.into_iter().filter_map(|(claim, at)| Some((claim, at?))) {
            if at > now.saturating_add(leeway_seconds) {
                return Err(AuthError::NotYetValid { claim, at, now, leeway });
            }
        }

        let Some(email) = claims.email else {
            return Err(AuthError::EmailMissing { subject: claims.sub });
        };
        if !claims.email_verified.is_some_and(|verified| verified.0) {
            return Err(AuthError::EmailNotVerified { email });
        }
        if !self.inner.allowed_emails.contains(&normalize_email(&email)) {
            return Err(AuthError::EmailNotAllowed { email });
        }
        Ok(Caller {
            email,
            subject: claims.sub,
            issuer: claims.iss,
            issued_at: Timestamp::new(claims.iat, 0),
            expires_at: Timestamp::new(claims.exp, 0),
        })
    }
}

/// jsonwebtoken checks the algorithm and the signature; the claims are checked in
/// [`IdTokenVerifier::check_claims`], against the injected clock.
fn signature_only() -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

/// The `kid` of a token whose header asks for RS256. Read here rather than by
/// jsonwebtoken so that an `alg` it does not know (`none`) is named in the error.
fn check_header(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Header {
        alg: Option<String>,
        kid: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedToken(format!(
            "expected three dot-separated parts, got {}",
            token.split('.').count()
        )));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| AuthError::MalformedToken(format!("the header is not base64url: {e}")))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| AuthError::MalformedToken(format!("the header is not a JSON object: {e}")))?;
    match header.alg.as_deref() {
        Some("RS256") => {}
        found => return Err(AuthError::DisallowedAlgorithm { found: found.unwrap_or("(none given)").to_owned() }),
    }
    header.kid.filter(|kid| !kid.is_empty()).ok_or(AuthError::MissingKeyId)
}

#[derive(Deserialize)]
struct IdTokenClaims {
    iss: String,
    aud: Audience,
    sub: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: i64,
    #[serde(deserialize_with = "numeric_date")]
    iat: i64,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    nbf: Option<i64>,
    email: Option<String>,
    email_verified: Option<EmailVerified>,
}

/// `aud` is one string in Google's tokens; OIDC also allows a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|one| one == audience),
        }
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Audience::One(one) => write!(f, "`{one}`"),
            Audience::Many(many) => write!(f, "{many:?}"),
        }
    }
}

/// `email_verified`: a boolean, or the strings "true"/"false" that some Google tokens
/// have carried.
struct EmailVerified(bool);

impl<'de> Deserialize<'de> for EmailVerified {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        Ok(EmailVerified(match Raw::deserialize(deserializer)? {
            Raw::Bool(verified) => verified,
            Raw::Text(text) => text.eq_ignore_ascii_case("true"),
        }))
    }
}

/// A NumericDate: seconds since the epoch, an integer or (rarely) a fraction.
fn numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let seconds = f64::deserialize(deserializer)?;
    if !seconds.is_finite() {
        return Err(serde::de::Error::custom("expected seconds since the epoch, got a non-finite number"));
    }
    Ok(seconds.floor() as i64)
}

fn optional_numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    numeric_date(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_check_names_the_refused_algorithm() {
        let token = |header: &str| format!("{}.{}.sig", encode(header), encode("{}"));
        assert_eq!(check_header(&token(r#"{"alg":"RS256","kid":"k"}"#)), Ok("k".to_owned()));
        assert_eq!(
            check_header(&token(r#"{"alg":"none","kid":"k"}"#)),
            Err(AuthError::DisallowedAlgorithm { found: "none".into() })
        );
        assert_eq!(
            check_header(&token(r#"{"alg":"HS256","kid":"k"}"#)),
            Err(AuthError::DisallowedAlgorithm { found: "HS256".into() })
        );
        assert_eq!(
            check_header(&token(r#"{"kid":"k"}"#)),
            Err(AuthError::DisallowedAlgorithm { found: "(none given)".into() })
        );
        assert_eq!(check_header(&token(r#"{"alg":"RS256"}"#)), Err(AuthError::MissingKeyId));
        assert_eq!(check_header(&token(r#"{"alg":"RS256","kid":""}"#)), Err(AuthError::MissingKeyId));
    }

    #[test]
    fn header_check_refuses_what_is_not_a_jws() {
        let refused = |token: &str| match check_header(token) {
            Err(AuthError::MalformedToken(detail)) => detail,
            other => panic!("expected MalformedToken for {token:?}, got {other:?}"),
        };
        assert_eq!(refused("abc"), "expected three dot-separated parts, got 1");
        assert_eq!(refused("a.b.c.d.e"), "expected three dot-separated parts, got 5");
        assert!(refused("%%%.b.c").starts_with("the header is not base64url"));
        assert!(refused(&format!("{}.b.c", encode("[1]"))).starts_with("the header is not a JSON object"));
    }

    #[test]
    fn claims_accept_the_shapes_google_uses() {
        let claims: IdTokenClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://accounts.google.com", "aud": ["a", "b"], "sub": "1",
            "exp": 100.9, "iat": 50, "email": "x@y.z", "email_verified": "true"
        }))
        .unwrap();
        assert_eq!((claims.exp, claims.iat, claims.nbf), (100, 50, None));
        assert!(claims.aud.contains("b") && !claims.aud.contains("c"));
        assert!(claims.email_verified.unwrap().0);
        let missing_exp = serde_json::from_value::<IdTokenClaims>(serde_json::json!({
            "iss": "i", "aud": "a", "sub": "1", "iat": 50
        }));
        assert!(missing_exp.is_err());
    }
}
