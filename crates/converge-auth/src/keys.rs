//! The cached key set: public keys by key id, fetched once and shared.
//!
//! - A fresh set that holds the token's `kid` answers without any I/O.
//! - An absent or expired set is fetched. Fetches are single-flight: one at a time
//!   under a mutex, and whoever waited on someone else's fetch takes its outcome
//!   instead of fetching again, so a burst of requests on a cold cache makes one
//!   request to the key server, and a burst while it is down does not queue one
//!   timeout per request.
//! - A fresh set without the `kid` is refetched once (how a key rotation is picked
//!   up), but never when the set is younger than
//!   [`min_refetch_interval`](KeyCachePolicy::min_refetch_interval).
//! - When a fetch fails, an expired set keeps verifying for
//!   [`serve_stale_for`](KeyCachePolicy::serve_stale_for); without one, Unavailable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use converge_core::Clock;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use tokio::sync::{Mutex, RwLock};

use crate::config::{KeyCachePolicy, KeySource};
use crate::error::AuthError;

/// Keys of one fetch.
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Microseconds since the epoch, by the injected clock.
    fresh_until: i64,
}

impl KeySet {
    fn is_fresh(&self, now: i64) -> bool {
        now < self.fresh_until
    }
}

#[derive(Default)]
struct FetchLog {
    last_attempt_at: Option<i64>,
    last_failure: Option<String>,
}

pub(crate) struct KeyCache {
    source: KeySource,
    source_label: String,
    policy: KeyCachePolicy,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held for the length of a fetch: the single flight.
    fetch: Mutex<FetchLog>,
    /// Fetches finished so far, counted before the mutex is released: a request that
    /// saw one number on arrival and another once it holds the mutex knows a fetch
    /// ended while it waited, and takes that fetch's outcome.
    completed_fetches: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(source: KeySource, policy: KeyCachePolicy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(policy.fetch_timeout)
            // The key URL is fixed; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the HTTP client failed: {e}"))?;
        let current = match &source {
            KeySource::Static(set) => {
                let by_kid = usable_keys(set)?;
                Some(Arc::new(KeySet { by_kid, fresh_until: i64::MAX }))
            }
            KeySource::Jwks { .. } | KeySource::File { .. } => None,
        };
        Ok(Self {
            source_label: source.to_string(),
            source,
            policy,
            http,
            clock,
            current: RwLock::new(current),
            fetch: Mutex::new(FetchLog::default()),
            completed_fetches: AtomicU64::new(0),
        })
    }

    /// The key a token with key id `kid` must verify against.
    pub(crate) async fn key_for(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let observed_fetches = self.completed_fetches.load(Ordering::SeqCst);
        let now = self.now();
        let current = self.current.read().await.clone();
        if let Some(keys) = current.as_deref().filter(|keys| keys.is_fresh(now)) {
            if let Some(key) = keys.by_kid.get(kid) {
                return Ok(key.clone());
            }
        }
        if matches!(self.source, KeySource::Static(_)) {
            return Err(self.unknown(kid));
        }

        let mut log = self.fetch.lock().await;
        let now = self.now();
        let current = self.current.read().await.clone();
        let fresh = current.as_deref().filter(|keys| keys.is_fresh(now));
        if let Some(key) = fresh.and_then(|keys| keys.by_kid.get(kid)) {
            return Ok(key.clone());
        }
        let fetched_while_waiting = self.completed_fetches.load(Ordering::SeqCst) != observed_fetches;
        let waited_long_enough = |interval: Duration| match log.last_attempt_at {
            Some(at) => now.saturating_sub(at) >= micros(interval),
            None => true,
        };
        let should_fetch = !fetched_while_waiting
            && match (fresh, &log.last_failure) {
                // A fresh set without this kid: a rotation, or a made-up kid.
                (Some(_), _) => waited_long_enough(self.policy.min_refetch_interval),
                // Cold or expired, and the last try failed.
                (None, Some(_)) => waited_long_enough(self.policy.retry_after_failure),
                (None, None) => true,
            };
        if should_fetch {
            log.last_attempt_at = Some(now);
            let fetched = self.fetch_key_set(now).await;
            match fetched {
                Ok(keys) => {
                    tracing::info!(
                        key_source = %self.source_label,
                        keys = keys.by_kid.len(),
                        fresh_for_seconds = (keys.fresh_until - now) / 1_000_000,
                        "fetched the ID-token key set"
                    );
                    *self.current.write().await = Some(Arc::new(keys));
                    log.last_failure = None;
                }
                Err(detail) => {
                    tracing::warn!(key_source = %self.source_label, error = %detail, "fetching the ID-token key set failed");
                    log.last_failure = Some(detail);
                }
            }
            self.completed_fetches.fetch_add(1, Ordering::SeqCst);
        }

        let now = self.now();
        let current = self.current.read().await.clone();
        let usable = current
            .as_deref()
            .filter(|keys| now < keys.fresh_until.saturating_add(micros(self.policy.serve_stale_for)));
        match (usable, &log.last_failure) {
            (Some(keys), failure) => match keys.by_kid.get(kid) {
                Some(key) => Ok(key.clone()),
                // The set may be out of date: the kid could be a new key we failed to fetch.
                None if failure.is_some() => Err(self.unavailable(failure.as_deref())),
                None => Err(self.unknown(kid)),
            },
            (None, failure) => Err(self.unavailable(failure.as_deref())),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().as_micros()
    }

    fn unknown(&self, kid: &str) -> AuthError {
        AuthError::UnknownKeyId { kid: kid.to_owned(), key_source: self.source_label.clone() }
    }

    fn unavailable(&self, failure: Option<&str>) -> AuthError {
        AuthError::KeysUnavailable {
            key_source: self.source_label.clone(),
            detail: failure.unwrap_or("no key set has been fetched yet").to_owned(),
        }
    }

    async fn fetch_key_set(&self, now: i64) -> Result<KeySet, String> {
        let (body, max_age) = match &self.source {
            KeySource::Jwks { url } => self.fetch_url(url).await?,
            KeySource::File { path } => {
                let body = tokio::fs::read(path).await.map_err(|e| format!("reading it failed: {e}"))?;
                (body, None)
            }
            KeySource::Static(_) => unreachable!("a static key set is never fetched"),
        };
        let set = parse_key_set(&body)?;
        let by_kid = usable_keys(&set)?;
        let freshness = max_age
            .unwrap_or(self.policy.default_max_age)
            .clamp(self.policy.min_refetch_interval, self.policy.longest_max_age);
        Ok(KeySet { by_kid, fresh_until: now.saturating_add(micros(freshness)) })
    }

    /// The body and the freshness the response announces.
    async fn fetch_url(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("the request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("expected 200 OK, got {status}"));
        }
        let header = |name: http::HeaderName| {
            response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
        };
        let max_age = header(http::header::CACHE_CONTROL).as_deref().and_then(max_age);
        let age = header(http::header::AGE).and_then(|age| age.trim().parse::<u64>().ok()).unwrap_or(0);
        let body = response.bytes().await.map_err(|e| format!("reading the body failed: {e}"))?;
        // `Age` is how long a cache in between has held the response already.
        Ok((body.to_vec(), max_age.map(|max_age| max_age.saturating_sub(Duration::from_secs(age)))))
    }
}

/// The `max-age` directive of a `Cache-Control` value; `no-store` and `no-cache` count
/// as zero (then the floor of the cache policy applies).
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            found = value.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    found
}

/// The key set's keys, each parsed on its own: one key of a type we do not use
/// (an encryption key, an EC key) must not make the whole set unreadable.
fn parse_key_set(body: &[u8]) -> Result<JwkSet, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|e| format!("expected a JWKS document (`{{\"keys\": [...]}}`), got {e}"))?;
    let keys = raw.keys.into_iter().filter_map(|key| serde_json::from_value::<Jwk>(key).ok()).collect();
    Ok(JwkSet { keys })
}

/// RSA signature keys with a key id, allowed for RS256.
fn usable_keys(set: &JwkSet) -> Result<HashMap<String, DecodingKey>, String> {
    let mut by_kid = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.as_deref() else { continue };
        let for_signatures = matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature));
        let for_rs256 = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256));
        if !(for_signatures && for_rs256 && matches!(jwk.algorithm, AlgorithmParameters::RSA(_))) {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            by_kid.insert(kid.to_owned(), key);
        }
    }
    if by_kid.is_empty() {
        return Err(format!(
            "expected at least one RSA signature key for RS256 with a `kid`, got none among {} keys",
            set.keys.len()
        ));
    }
    Ok(by_kid)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age_among_other_directives() {
        assert_eq!(max_age("public, max-age=19548, must-revalidate, no-transform"), Some(Duration::from_secs(19548)));
        assert_eq!(max_age("Max-Age = 60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
        assert_eq!(max_age("no-store, max-age=600"), Some(Duration::ZERO));
    }

    #[test]
    fn keeps_rsa_signature_keys_and_skips_the_rest() {
        let body = serde_json::json!({ "keys": [
            { "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "kid": "ps", "alg": "PS256", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "n": "sXch", "e": "AQAB" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA" },
            { "something": "else" }
        ]});
        let set = parse_key_set(body.to_string().as_bytes()).unwrap();
        let keys = usable_keys(&set).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["rsa"]);
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error_naming_what_was_expected() {
        let body = br#"{ "keys": [ { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" } ] }"#;
        let err = usable_keys(&parse_key_set(body).unwrap()).unwrap_err();
        assert_eq!(err, "expected at least one RSA signature key for RS256 with a `kid`, got none among 1 keys");
        assert!(parse_key_set(b"<html>").unwrap_err().starts_with("expected a JWKS document"));
    }
}
