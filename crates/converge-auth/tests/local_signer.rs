//! The local signer: keys kept on disk, tokens the local verifier configuration accepts.

use std::sync::Arc;
use std::time::Duration;

use converge_auth::local::{LocalSignerError, LOCAL_JWKS_FILE, LOCAL_SIGNER_KEY_FILE};
use converge_auth::{
    local_signer_dir, AuthError, AuthErrorKind, IdTokenVerifier, LocalSigner, VerifierConfig, LOCAL_ISSUER,
};
use converge_core::{ManualClock, Timestamp};

const AUDIENCE: &str = "http://127.0.0.1:8080";
const EMAIL: &str = "dev@localhost.test";
const T0: i64 = 1_800_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(Timestamp::new(T0, 0)))
}

#[tokio::test]
async fn a_locally_signed_token_passes_the_local_verifier() {
    let data_dir = tempfile::tempdir().unwrap();
    let dir = local_signer_dir(data_dir.path());
    let clock = clock();
    let signer = LocalSigner::open(&dir).unwrap().with_clock(clock.clone());
    let token = signer.sign(EMAIL, AUDIENCE, Duration::from_secs(300)).unwrap();

    let verifier = IdTokenVerifier::new(VerifierConfig::local(&dir, AUDIENCE, [EMAIL]), clock.clone()).unwrap();
    let caller = verifier.verify_token(&token).await.unwrap();
    assert_eq!((caller.email.as_str(), caller.subject.as_str(), caller.issuer.as_str()), (EMAIL, EMAIL, LOCAL_ISSUER));
    assert_eq!(caller.expires_at, Timestamp::new(T0 + 300, 0));

    // Local tokens get every check the cloud ones do.
    let other_audience = signer.sign(EMAIL, "http://127.0.0.1:9999", Duration::from_secs(300)).unwrap();
    assert!(matches!(verifier.verify_token(&other_audience).await.unwrap_err(), AuthError::WrongAudience { .. }));
    let stranger = signer.sign("stranger@localhost.test", AUDIENCE, Duration::from_secs(300)).unwrap();
    assert_eq!(verifier.verify_token(&stranger).await.unwrap_err().kind(), AuthErrorKind::Forbidden);
    clock.advance_micros(361 * 1_000_000);
    assert!(matches!(verifier.verify_token(&token).await.unwrap_err(), AuthError::Expired { .. }));
}

#[tokio::test]
async fn the_key_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalSigner::open(dir.path()).unwrap();
    let jwks_before = std::fs::read_to_string(dir.path().join(LOCAL_JWKS_FILE)).unwrap();
    let token = first.sign(EMAIL, AUDIENCE, Duration::from_secs(300)).unwrap();
    drop(first);

    let second = LocalSigner::open(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join(LOCAL_JWKS_FILE)).unwrap(), jwks_before);
    assert!(jwks_before.contains(second.key_id()));
    // A token from before the reopen still verifies, and so does one from after.
    let verifier = IdTokenVerifier::new(
        VerifierConfig::local(dir.path(), AUDIENCE, [EMAIL]),
        Arc::new(converge_core::SystemClock),
    )
    .unwrap();
    verifier.verify_token(&token).await.unwrap();
    verifier.verify_token(&second.sign(EMAIL, AUDIENCE, Duration::from_secs(300)).unwrap()).await.unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(LOCAL_SIGNER_KEY_FILE), 0o600);
        assert_eq!(mode(LOCAL_JWKS_FILE) & 0o600, 0o600);
    }
}

#[test]
fn concurrent_first_opens_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth");
    let key_ids: Vec<String> = std::thread::scope(|scope| {
        let opens: Vec<_> =
            (0..4).map(|_| scope.spawn(|| LocalSigner::open(&path).unwrap().key_id().to_owned())).collect();
        opens.into_iter().map(|open| open.join().unwrap()).collect()
    });
    assert!(key_ids.iter().all(|id| id == &key_ids[0]), "{key_ids:?}");
    assert_eq!(LocalSigner::open(&path).unwrap().key_id(), key_ids[0]);
    let leftovers: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_token_from_another_signer_directory_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    LocalSigner::open(ours.path()).unwrap();
    let foreign = LocalSigner::open(theirs.path()).unwrap().with_clock(clock());
    let verifier = IdTokenVerifier::new(VerifierConfig::local(ours.path(), AUDIENCE, [EMAIL]), clock()).unwrap();
    let err =
        verifier.verify_token(&foreign.sign(EMAIL, AUDIENCE, Duration::from_secs(60)).unwrap()).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId { .. }), "{err}");
}

#[tokio::test]
async fn a_server_started_before_the_key_exists_picks_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let verifier = IdTokenVerifier::new(VerifierConfig::local(dir.path(), AUDIENCE, [EMAIL]), clock.clone()).unwrap();
    let stray = LocalSigner::open(tempfile::tempdir().unwrap().path()).unwrap().with_clock(clock.clone());
    let err = verifier.verify_token(&stray.sign(EMAIL, AUDIENCE, Duration::from_secs(60)).unwrap()).await.unwrap_err();
    assert!(matches!(&err, AuthError::KeysUnavailable { detail, .. } if detail.contains("reading it failed")), "{err}");

    let signer = LocalSigner::open(dir.path()).unwrap().with_clock(clock.clone());
    clock.advance_micros(6 * 1_000_000);
    verifier.verify_token(&signer.sign(EMAIL, AUDIENCE, Duration::from_secs(60)).unwrap()).await.unwrap();
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    LocalSigner::open(dir.path()).unwrap();
    let key = dir.path().join(LOCAL_SIGNER_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalSigner::open(dir.path()).unwrap_err();
    assert!(matches!(err, LocalSignerError::KeyFileExposed { mode: 0o644, .. }), "{err}");
    assert!(err.to_string().contains("expected 600"), "{err}");
}

#[test]
fn a_corrupt_key_file_is_reported_not_replaced() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    LocalSigner::open(dir.path()).unwrap();
    let key = dir.path().join(LOCAL_SIGNER_KEY_FILE);
    std::fs::OpenOptions::new().write(true).truncate(true).open(&key).unwrap().write_all(b"garbage").unwrap();
    let err = LocalSigner::open(dir.path()).unwrap_err();
    assert!(matches!(err, LocalSignerError::Key { .. }), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
}

#[test]
fn token_lifetimes_must_be_positive_and_at_most_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::open(dir.path()).unwrap();
    assert!(matches!(signer.sign(EMAIL, AUDIENCE, Duration::ZERO), Err(LocalSignerError::Lifetime { .. })));
    assert!(matches!(
        signer.sign(EMAIL, AUDIENCE, Duration::from_secs(24 * 3600 + 1)),
        Err(LocalSignerError::Lifetime { .. })
    ));
    signer.sign(EMAIL, AUDIENCE, Duration::from_secs(24 * 3600)).unwrap();
}
