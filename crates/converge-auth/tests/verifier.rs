//! IdTokenVerifier end to end: keys generated here, a JWKS served on loopback, time
//! from a manual clock.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use converge_auth::testing::{google_claims, unreachable_jwks_url, JwksServer};
use converge_auth::{
    AuthError, AuthErrorKind, Caller, IdTokenVerifier, JwkSet, KeyCachePolicy, KeySource, RsaSigningKey,
    VerifierConfig, GOOGLE_ISSUERS, SERVERLESS_AUTHORIZATION,
};
use converge_core::{ManualClock, Timestamp};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use serde_json::json;

const AUDIENCE: &str = "https://converge-rebuild-abc123-uc.a.run.app";
const ALLOWED: &str = "deployer@converge-prod.iam.gserviceaccount.com";
/// The manual clock's start, unix seconds.
const T0: i64 = 1_800_000_000;

struct Fixture {
    key: RsaSigningKey,
    jwks: JwksServer,
    clock: Arc<ManualClock>,
    verifier: IdTokenVerifier,
}

impl Fixture {
    async fn new() -> Self {
        let key = RsaSigningKey::generate().unwrap();
        let jwks = JwksServer::start(key.jwk_set()).await;
        Self::serving(key, jwks)
    }

    fn serving(key: RsaSigningKey, jwks: JwksServer) -> Self {
        let clock = Arc::new(ManualClock::at(Timestamp::new(T0, 0)));
        let config = VerifierConfig::new(KeySource::jwks(jwks.url()), GOOGLE_ISSUERS, AUDIENCE, [ALLOWED]);
        let verifier = IdTokenVerifier::new(config, clock.clone()).unwrap();
        Self { key, jwks, clock, verifier }
    }

    fn now(&self) -> i64 {
        use converge_core::Clock as _;
        self.clock.now().seconds
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance_micros(seconds * 1_000_000);
    }

    /// A valid token for `email`, issued now, for an hour.
    fn token_for(&self, email: &str) -> String {
        self.key.sign(&google_claims(email, AUDIENCE, self.now(), 3600)).unwrap()
    }

    /// A valid token for the allowed caller with `change` applied to its claims.
    fn token_with(&self, change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut claims = google_claims(ALLOWED, AUDIENCE, self.now(), 3600);
        change(&mut claims);
        self.key.sign(&claims).unwrap()
    }

    async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.verifier.verify_headers(&bearer(token)).await
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    headers
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test]
async fn the_allowed_caller_is_let_in_and_named() {
    let f = Fixture::new().await;
    let caller = f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(
        caller,
        Caller {
            email: ALLOWED.into(),
            subject: "117003457437398467251".into(),
            issuer: "https://accounts.google.com".into(),
            issued_at: Timestamp::new(T0, 0),
            expires_at: Timestamp::new(T0 + 3600, 0),
        }
    );
    // The allow-list ignores case; the caller is reported as the token wrote it.
    let shouty = ALLOWED.to_uppercase();
    assert_eq!(f.verify(&f.token_for(&shouty)).await.unwrap().email, shouty);
    // Google's other issuer spelling.
    let bare_issuer = f.token_with(|c| c["iss"] = json!("accounts.google.com"));
    assert_eq!(f.verify(&bare_issuer).await.unwrap().issuer, "accounts.google.com");
    assert_eq!(f.jwks.fetch_count(), 1, "one fetch serves every verification while fresh");
}

#[tokio::test]
async fn a_request_without_a_token_is_unauthenticated() {
    let f = Fixture::new().await;
    let err = f.verifier.verify_headers(&HeaderMap::new()).await.unwrap_err();
    assert_eq!(err, AuthError::MissingToken);
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);
    assert_eq!(err.public_message(), "missing or invalid credentials");
    assert_eq!(f.jwks.fetch_count(), 0);
}

#[tokio::test]
async fn malformed_headers_and_tokens_are_refused_before_any_key_is_fetched() {
    let f = Fixture::new().await;
    let mut basic = HeaderMap::new();
    basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
    let err = f.verifier.verify_headers(&basic).await.unwrap_err();
    assert!(matches!(err, AuthError::MalformedHeader { header: "Authorization", .. }), "{err}");
    assert!(!err.to_string().contains("dXNlcjpwYXNz"), "the credential is not logged: {err}");

    let err = f.verify("not-a-jwt").await.unwrap_err();
    assert!(matches!(err, AuthError::MalformedToken(_)), "{err}");
    let no_kid = format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&json!({})));
    assert_eq!(f.verify(&no_kid).await.unwrap_err(), AuthError::MissingKeyId);
    assert_eq!(f.jwks.fetch_count(), 0);

    // Signed claims that are not an ID token's: caught after the signature.
    let valid = f.token_for(ALLOWED);
    let (header, _) = valid.split_once('.').unwrap();
    let empty = f.key.sign(&json!({})).unwrap();
    let err = f.verify(&empty).await.unwrap_err();
    assert!(matches!(&err, AuthError::MalformedClaims(detail) if detail.contains("missing field")), "{err}");
    let truncated = format!("{header}.e30");
    assert!(matches!(f.verify(&truncated).await.unwrap_err(), AuthError::MalformedToken(_)));
}

#[tokio::test]
async fn an_expired_token_is_refused_beyond_the_leeway() {
    let f = Fixture::new().await;
    let just_inside = f.token_with(|c| {
        c["iat"] = json!(T0 - 3659);
        c["exp"] = json!(T0 - 59);
    });
    f.verify(&just_inside).await.unwrap();
    let expired = f.token_with(|c| {
        c["iat"] = json!(T0 - 3661);
        c["exp"] = json!(T0 - 61);
    });
    let err = f.verify(&expired).await.unwrap_err();
    assert_eq!(err, AuthError::Expired { expired_at: T0 - 61, now: T0, leeway: Duration::from_secs(60) });
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);

    // The same token expires by the clock, not by when it was minted.
    let fresh = f.token_for(ALLOWED);
    f.advance(3600 + 61);
    assert!(matches!(f.verify(&fresh).await.unwrap_err(), AuthError::Expired { .. }));
}

#[tokio::test]
async fn a_token_from_the_future_is_not_yet_valid() {
    let f = Fixture::new().await;
    let skewed = f.token_with(|c| c["iat"] = json!(T0 + 30));
    f.verify(&skewed).await.unwrap();
    let issued_later = f.token_with(|c| {
        c["iat"] = json!(T0 + 120);
        c["exp"] = json!(T0 + 3720);
    });
    assert_eq!(
        f.verify(&issued_later).await.unwrap_err(),
        AuthError::NotYetValid { claim: "iat", at: T0 + 120, now: T0, leeway: Duration::from_secs(60) }
    );
    let not_before = f.token_with(|c| c["nbf"] = json!(T0 + 120));
    assert!(matches!(f.verify(&not_before).await.unwrap_err(), AuthError::NotYetValid { claim: "nbf", .. }));
    // Once the clock catches up, the same token passes.
    f.advance(61);
    f.verify(&not_before).await.unwrap();
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let f = Fixture::new().await;
    let other = f.token_with(|c| c["aud"] = json!("https://some-other-service.a.run.app"));
    let err = f.verify(&other).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::WrongAudience { found: "`https://some-other-service.a.run.app`".into(), expected: AUDIENCE.into() }
    );
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);
    let trailing_slash = f.token_with(|c| c["aud"] = json!(format!("{AUDIENCE}/")));
    assert!(matches!(f.verify(&trailing_slash).await.unwrap_err(), AuthError::WrongAudience { .. }));
    let listed = f.token_with(|c| c["aud"] = json!(["other", AUDIENCE]));
    f.verify(&listed).await.unwrap();
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let f = Fixture::new().await;
    let other = f.token_with(|c| c["iss"] = json!("https://securetoken.google.com/someone-elses-project"));
    let err = f.verify(&other).await.unwrap_err();
    assert!(matches!(&err, AuthError::WrongIssuer { found, .. } if found.contains("someone-elses-project")), "{err}");
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);
}

#[tokio::test]
async fn a_signature_by_another_key_under_the_same_kid_is_refused() {
    let f = Fixture::new().await;
    let impostor = RsaSigningKey::generate().unwrap().with_key_id(f.key.key_id());
    let forged = impostor.sign(&google_claims(ALLOWED, AUDIENCE, T0, 3600)).unwrap();
    let err = f.verify(&forged).await.unwrap_err();
    assert_eq!(err, AuthError::BadSignature { kid: f.key.key_id().into() });
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);

    // A genuine token with its claims swapped after signing.
    let genuine = f.token_for(ALLOWED);
    let parts: Vec<&str> = genuine.split('.').collect();
    let swapped = b64(&google_claims("intruder@example.com", AUDIENCE, T0, 3600));
    let tampered = format!("{}.{swapped}.{}", parts[0], parts[2]);
    assert!(matches!(f.verify(&tampered).await.unwrap_err(), AuthError::BadSignature { .. }));
}

#[tokio::test]
async fn an_unknown_key_id_is_refetched_once_then_refused() {
    let f = Fixture::new().await;
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 1);
    let stranger = RsaSigningKey::generate().unwrap();
    let token = stranger.sign(&google_claims(ALLOWED, AUDIENCE, T0, 7200)).unwrap();

    // Within the minimum interval the young key set is trusted: no refetch.
    let err = f.verify(&token).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::UnknownKeyId { kid: stranger.key_id().into(), key_source: format!("JWKS {}", f.jwks.url()) }
    );
    assert_eq!(f.jwks.fetch_count(), 1);

    f.advance(31);
    assert!(matches!(f.verify(&token).await.unwrap_err(), AuthError::UnknownKeyId { .. }));
    assert_eq!(f.jwks.fetch_count(), 2, "one refetch for the unknown kid");
    // A flood of unknown kids right after does not reach the key server.
    for _ in 0..20 {
        assert!(matches!(f.verify(&token).await.unwrap_err(), AuthError::UnknownKeyId { .. }));
    }
    assert_eq!(f.jwks.fetch_count(), 2);
    // The known key keeps working throughout.
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_the_unknown_kid_refetch() {
    let f = Fixture::new().await;
    let old = f.key.sign(&google_claims(ALLOWED, AUDIENCE, T0, 3 * 3600)).unwrap();
    f.verify(&old).await.unwrap();

    let next = RsaSigningKey::generate().unwrap();
    f.jwks.set_keys(JwkSet { keys: vec![f.key.public_jwk(), next.public_jwk()] });
    f.advance(31);
    let new = next.sign(&google_claims(ALLOWED, AUDIENCE, f.now(), 3600)).unwrap();
    assert_eq!(f.verify(&new).await.unwrap().email, ALLOWED);
    assert_eq!(f.jwks.fetch_count(), 2);
    f.verify(&old).await.unwrap();

    // The old key retires: trusted while the cached set is fresh, refused once the set
    // is refetched without it.
    f.jwks.set_keys(next.jwk_set());
    f.advance(31);
    f.verify(&old).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 2);
    f.advance(3600);
    let err = f.verify(&old).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId { .. }), "{err}");
    assert_eq!(f.jwks.fetch_count(), 3);
    f.verify(&next.sign(&google_claims(ALLOWED, AUDIENCE, f.now(), 3600)).unwrap()).await.unwrap();
}

#[tokio::test]
async fn alg_none_and_hs256_tokens_are_refused() {
    let f = Fixture::new().await;
    let claims = google_claims(ALLOWED, AUDIENCE, T0, 3600);
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "kid": f.key.key_id()})), b64(&claims));
    assert_eq!(f.verify(&unsigned).await.unwrap_err(), AuthError::DisallowedAlgorithm { found: "none".into() });

    // Key confusion: an HMAC keyed with the public modulus, which anyone can read.
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &f.key.public_jwk().algorithm else { unreachable!() };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(f.key.key_id().into());
    let hmac =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(rsa.n.as_bytes())).unwrap();
    let err = f.verify(&hmac).await.unwrap_err();
    assert_eq!(err, AuthError::DisallowedAlgorithm { found: "HS256".into() });
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);
    assert_eq!(f.jwks.fetch_count(), 0, "refused on the header alone");
}

#[tokio::test]
async fn a_genuine_token_for_someone_not_allowed_is_forbidden() {
    let f = Fixture::new().await;
    let err = f.verify(&f.token_for("someone@example.com")).await.unwrap_err();
    assert_eq!(err, AuthError::EmailNotAllowed { email: "someone@example.com".into() });
    assert_eq!(err.kind(), AuthErrorKind::Forbidden);
    assert_eq!(err.public_message(), "the caller is not allowed to use this endpoint");
    assert!(err.to_string().contains("someone@example.com"), "the log line names the caller: {err}");
}

#[tokio::test]
async fn an_unverified_or_missing_email_is_forbidden() {
    let f = Fixture::new().await;
    let unverified = f.token_with(|c| c["email_verified"] = json!(false));
    let err = f.verify(&unverified).await.unwrap_err();
    assert_eq!(err, AuthError::EmailNotVerified { email: ALLOWED.into() });
    assert_eq!(err.kind(), AuthErrorKind::Forbidden);
    let unstated = f.token_with(|c| {
        c.as_object_mut().unwrap().remove("email_verified");
    });
    assert!(matches!(f.verify(&unstated).await.unwrap_err(), AuthError::EmailNotVerified { .. }));
    let as_text = f.token_with(|c| c["email_verified"] = json!("true"));
    f.verify(&as_text).await.unwrap();

    let no_email = f.token_with(|c| {
        c.as_object_mut().unwrap().remove("email");
    });
    let err = f.verify(&no_email).await.unwrap_err();
    assert_eq!(err, AuthError::EmailMissing { subject: "117003457437398467251".into() });
    assert_eq!(err.kind(), AuthErrorKind::Forbidden);
}

#[tokio::test]
async fn x_serverless_authorization_takes_precedence() {
    let f = Fixture::new().await;
    let allowed = f.token_for(ALLOWED);
    let (signed_part, _) = allowed.rsplit_once('.').unwrap();
    let stripped = format!("{signed_part}.SIGNATURE_REMOVED_BY_GOOGLE");

    // What the app sees behind Cloud Run's invoker check.
    let mut behind_cloud_run = bearer(&stripped);
    behind_cloud_run.insert(SERVERLESS_AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {allowed}")).unwrap());
    assert_eq!(f.verifier.verify_headers(&behind_cloud_run).await.unwrap().email, ALLOWED);

    // The stripped token alone says what went wrong.
    let err = f.verifier.verify_headers(&bearer(&stripped)).await.unwrap_err();
    assert_eq!(err, AuthError::SignatureRemovedByProxy);
    assert_eq!(err.kind(), AuthErrorKind::Unauthenticated);

    // When both are present, the X-Serverless-Authorization token is the one judged.
    let mut both = bearer(&allowed);
    let other = f.token_for("someone@example.com");
    both.insert(SERVERLESS_AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {other}")).unwrap());
    assert!(matches!(f.verifier.verify_headers(&both).await.unwrap_err(), AuthError::EmailNotAllowed { .. }));
}

#[tokio::test]
async fn a_cold_cache_with_the_key_server_down_is_unavailable() {
    // Nothing listening.
    let key = RsaSigningKey::generate().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(T0, 0)));
    let url = unreachable_jwks_url();
    let config = VerifierConfig::new(KeySource::jwks(&url), GOOGLE_ISSUERS, AUDIENCE, [ALLOWED]);
    let verifier = IdTokenVerifier::new(config, clock).unwrap();
    let token = key.sign(&google_claims(ALLOWED, AUDIENCE, T0, 3600)).unwrap();
    let err = verifier.verify_headers(&bearer(&token)).await.unwrap_err();
    assert!(matches!(&err, AuthError::KeysUnavailable { detail, .. } if detail.contains("request failed")), "{err}");
    assert_eq!(err.kind(), AuthErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(!err.public_message().contains(&url));

    // Answering 503, then recovering.
    let f = Fixture::new().await;
    f.jwks.set_failing(true);
    let token = f.token_for(ALLOWED);
    let err = f.verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, AuthError::KeysUnavailable { detail, .. } if detail.contains("expected 200 OK, got 503")),
        "{err}"
    );
    f.jwks.set_failing(false);
    // Right after a failure, no new attempt yet.
    assert!(matches!(f.verify(&token).await.unwrap_err(), AuthError::KeysUnavailable { .. }));
    assert_eq!(f.jwks.fetch_count(), 1);
    f.advance(6);
    f.verify(&token).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 2);
}

#[tokio::test]
async fn a_warm_cache_keeps_verifying_while_the_key_server_is_down() {
    let f = Fixture::new().await;
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    f.jwks.set_failing(true);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 1);

    // Expired (max-age 3600) and the refetch fails: the stale keys still verify.
    f.advance(3601);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 2);
    // But a kid the stale set lacks may be a key we failed to fetch: unavailable, not refused.
    let newer = RsaSigningKey::generate().unwrap();
    let err = f.verify(&newer.sign(&google_claims(ALLOWED, AUDIENCE, f.now(), 3600)).unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable, "{err}");

    // Six hours past expiry, stale keys are no longer trusted.
    f.advance(6 * 3600);
    let err = f.verify(&f.token_for(ALLOWED)).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Unavailable, "{err}");
    f.jwks.set_failing(false);
    f.advance(6);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_on_a_cold_cache_share_one_fetch() {
    let f = Fixture::new().await;
    // Slow enough that every request arrives while the first fetch is in flight.
    f.jwks.set_response_delay(Duration::from_millis(300));
    let token = f.token_for(ALLOWED);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let verifier = f.verifier.clone();
            let headers = bearer(&token);
            tokio::spawn(async move { verifier.verify_headers(&headers).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().email, ALLOWED);
    }
    assert_eq!(f.jwks.fetch_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_while_the_key_server_is_down_share_one_failed_fetch() {
    let key = RsaSigningKey::generate().unwrap();
    let jwks = JwksServer::start(key.jwk_set()).await;
    let mut f = Fixture::serving(key, jwks);
    // No pause after a failure: only the single flight keeps the waiters from each trying.
    let policy = KeyCachePolicy { retry_after_failure: Duration::ZERO, ..KeyCachePolicy::default() };
    let config = f.verifier.config().clone().with_cache_policy(policy);
    f.verifier = IdTokenVerifier::new(config, f.clock.clone()).unwrap();
    f.jwks.set_failing(true);
    f.jwks.set_response_delay(Duration::from_millis(300));
    let token = f.token_for(ALLOWED);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let verifier = f.verifier.clone();
            let headers = bearer(&token);
            tokio::spawn(async move { verifier.verify_headers(&headers).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().kind(), AuthErrorKind::Unavailable);
    }
    assert_eq!(f.jwks.fetch_count(), 1, "waiters take the failed fetch's outcome instead of each trying");
}

#[tokio::test]
async fn cache_control_max_age_sets_how_long_keys_are_fresh() {
    let f = Fixture::new().await;
    f.jwks.set_cache_control(Some("public, max-age=100, must-revalidate, no-transform"));
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    f.advance(99);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 1);
    f.advance(2);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 2);

    // Without max-age, the default hour.
    f.jwks.set_cache_control(None);
    f.advance(101);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 3);
    f.advance(3599);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 3);
    f.advance(2);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 4);

    // max-age=0 would mean a fetch per request: the refetch interval is the floor.
    f.jwks.set_cache_control(Some("max-age=0"));
    f.advance(3601);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    f.advance(29);
    f.verify(&f.token_for(ALLOWED)).await.unwrap();
    assert_eq!(f.jwks.fetch_count(), 5);
}

#[tokio::test]
async fn a_static_key_set_verifies_without_fetching() {
    let key = RsaSigningKey::generate().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(T0, 0)));
    let config = VerifierConfig::new(KeySource::Static(key.jwk_set()), ["issuer-x"], AUDIENCE, [ALLOWED]);
    let verifier = IdTokenVerifier::new(config, clock).unwrap();
    let mut claims = google_claims(ALLOWED, AUDIENCE, T0, 3600);
    claims["iss"] = json!("issuer-x");
    verifier.verify_token(&key.sign(&claims).unwrap()).await.unwrap();
    let stranger = RsaSigningKey::generate().unwrap();
    let err = verifier.verify_token(&stranger.sign(&claims).unwrap()).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId { .. }), "{err}");
}
