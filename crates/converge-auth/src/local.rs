//! [`LocalSigner`]: ID tokens for the embedded setup, where there is no Google to ask.
//!
//! The first [`LocalSigner::open`] on a directory generates an RSA-2048 key and stores
//! it as `local-signer.pem` (PKCS#8, mode 0600), with its public half as
//! `local-jwks.json`; later opens load the same key. The embedded server verifies with
//! [`VerifierConfig::local`](crate::VerifierConfig::local), which trusts that JWKS
//! file and the issuer [`LOCAL_ISSUER`] and nothing else; `converge rebuild` signs.
//! The same checks run as in the cloud: only the key and issuer differ.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use converge_core::{Clock, SystemClock};

use crate::signing::{RsaSigningKey, SigningError};

/// The `iss` of locally signed tokens.
pub const LOCAL_ISSUER: &str = "converge-local";
/// The private key, in the signer's directory.
pub const LOCAL_SIGNER_KEY_FILE: &str = "local-signer.pem";
/// The public key set, in the signer's directory.
pub const LOCAL_JWKS_FILE: &str = "local-jwks.json";
/// The longest lifetime a local token may be given.
pub const MAX_LOCAL_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The signer's directory under an embedded data directory (`CONVERGE_DATA_DIR`).
pub fn local_signer_dir(data_dir: impl AsRef<Path>) -> PathBuf {
    data_dir.as_ref().join("auth")
}

/// Why the local signer could not open or sign.
#[derive(Debug, thiserror::Error)]
pub enum LocalSignerError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: SigningError },
    #[error("{path} is readable by others (mode {mode:o}); expected 600: chmod 600 it, or delete it to get a new key")]
    KeyFileExposed { path: PathBuf, mode: u32 },
    #[error("token lifetime {lifetime:?} is out of range: expected more than zero and at most {max:?}")]
    Lifetime { lifetime: Duration, max: Duration },
    #[error("signing a local token failed: {0}")]
    Sign(SigningError),
}

/// Mints ID tokens with a key kept in a directory.
pub struct LocalSigner {
    dir: PathBuf,
    key: RsaSigningKey,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner").field("dir", &self.dir).field("key_id", &self.key.key_id()).finish()
    }
}

impl LocalSigner {
    /// Loads the key in `dir`, generating it first if there is none. Also (re)writes
    /// `local-jwks.json` when it does not match the key.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LocalSignerError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        let key_path = dir.join(LOCAL_SIGNER_KEY_FILE);
        let key = match read_key(&key_path) {
            Err(LocalSignerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                create_key(&dir, &key_path)?
            }
            other => other?,
        };
        write_jwks(&dir, &key)?;
        Ok(Self { dir, key, clock: Arc::new(SystemClock) })
    }

    /// Stamps `iat` and `exp` by `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key_id(&self) -> &str {
        self.key.key_id()
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join(LOCAL_JWKS_FILE)
    }

    /// An RS256 ID token for `email`, for `audience` (the URL of the endpoint it is
    /// for), valid for `lifetime` from now.
    pub fn sign(&self, email: &str, audience: &str, lifetime: Duration) -> Result<String, LocalSignerError> {
        if lifetime.is_zero() || lifetime > MAX_LOCAL_TOKEN_LIFETIME {
            return Err(LocalSignerError::Lifetime { lifetime, max: MAX_LOCAL_TOKEN_LIFETIME });
        }
        let now = self.clock.now().seconds;
        let claims = serde_json::json!({
            "iss": LOCAL_ISSUER,
            "sub": email,
            "aud": audience,
            "email": email,
            "email_verified": true,
            "iat": now,
            "exp": now + lifetime.as_secs() as i64,
        });
        self.key.sign(&claims).map_err(LocalSignerError::Sign)
    }
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> LocalSignerError + 'p {
    move |source| LocalSignerError::Io { action, path: path.to_path_buf(), source }
}

fn create_private_dir(dir: &Path) -> Result<(), LocalSignerError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error("creating directory", dir))
}

fn read_key(path: &Path) -> Result<RsaSigningKey, LocalSignerError> {
    let metadata = fs::metadata(path).map_err(io_error("reading", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(LocalSignerError::KeyFileExposed { path: path.to_path_buf(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let pem = fs::read_to_string(path).map_err(io_error("reading", path))?;
    RsaSigningKey::from_pkcs8_pem(&pem).map_err(|source| LocalSignerError::Key { path: path.to_path_buf(), source })
}

/// Writes a new key where none is. Two processes opening the same directory at once
/// (the server and `converge rebuild`) must end up with one key, so the key is written
/// whole to a private temporary file and then hard-linked into place, which fails if
/// the other process got there first; the loser loads the winner's key.
fn create_key(dir: &Path, key_path: &Path) -> Result<RsaSigningKey, LocalSignerError> {
    let key =
        RsaSigningKey::generate().map_err(|source| LocalSignerError::Key { path: key_path.to_path_buf(), source })?;
    let pem = key.to_pkcs8_pem().map_err(|source| LocalSignerError::Key { path: key_path.to_path_buf(), source })?;
    let temporary = temporary_path(dir, LOCAL_SIGNER_KEY_FILE);
    write_new_file(&temporary, pem.as_bytes(), 0o600)?;
    let linked = fs::hard_link(&temporary, key_path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(key_path),
        Err(e) => Err(io_error("linking the new key to", key_path)(e)),
    }
}

/// The public key set, replaced atomically (write, then rename) so a verifier never
/// reads half a file.
fn write_jwks(dir: &Path, key: &RsaSigningKey) -> Result<(), LocalSignerError> {
    let path = dir.join(LOCAL_JWKS_FILE);
    let jwks = serde_json::to_string_pretty(&key.jwk_set()).expect("a JWK set serializes") + "\n";
    if fs::read_to_string(&path).is_ok_and(|existing| existing == jwks) {
        return Ok(());
    }
    let temporary = temporary_path(dir, LOCAL_JWKS_FILE);
    write_new_file(&temporary, jwks.as_bytes(), 0o644)?;
    fs::rename(&temporary, &path).map_err(io_error("renaming into place", &path))
}

/// A name no other process or thread is using: the opens racing each other may be
/// threads of one process.
fn temporary_path(dir: &Path, file: &str) -> PathBuf {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).expect("the system random source works");
    dir.join(format!(".{file}.{}.{}.tmp", std::process::id(), u64::from_le_bytes(nonce)))
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), LocalSignerError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io_error("creating", path))?;
    file.write_all(contents).map_err(io_error("writing", path))?;
    file.sync_all().map_err(io_error("syncing", path))
}
