//! An RSA key that mints RS256 JWTs: the local signer's key, and the test keys.
//!
//! Crypto stack: aws-lc-rs, the library rustls and jsonwebtoken's `aws_lc_rs` backend
//! already build here, so generating and signing adds no second RSA implementation
//! (the RustCrypto `rsa` crate would). Signing is done with aws-lc-rs directly rather
//! than through `jsonwebtoken::encode`: jsonwebtoken's aws-lc signer wants a PKCS#1
//! key, aws-lc-rs generates and serializes PKCS#8, and jsonwebtoken can only convert
//! between them with its PEM feature (two more crates). A JWS is three base64url
//! parts; the verifier checks what we mint with jsonwebtoken, an independent reader.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Why a key could not be made, read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("generating an RSA-2048 key failed")]
    Generate,
    #[error("private key is not usable: expected a PEM `PRIVATE KEY` (PKCS#8) holding an RSA key, {0}")]
    KeyRejected(String),
    #[error("token claims do not serialize to a JSON object: {0}")]
    Claims(String),
    #[error("RSA signing failed")]
    Sign,
}

/// An RSA private key and the key id tokens signed with it carry.
pub struct RsaSigningKey {
    key_pair: KeyPair,
    key_id: String,
}

impl fmt::Debug for RsaSigningKey {
    // The private half never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl RsaSigningKey {
    /// A fresh RSA-2048 key whose key id is its RFC 7638 thumbprint.
    pub fn generate() -> Result<Self, SigningError> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningError::Generate)?;
        Ok(Self::with_thumbprint_id(key_pair))
    }

    /// Reads a PEM `PRIVATE KEY` (PKCS#8), as [`to_pkcs8_pem`](Self::to_pkcs8_pem) writes it.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningError> {
        let body = pem
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or_else(|| SigningError::KeyRejected(format!("got no `{PEM_BEGIN}` … `{PEM_END}` block")))?;
        let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(base64).map_err(|e| SigningError::KeyRejected(format!("got invalid base64: {e}")))?;
        let key_pair = KeyPair::from_pkcs8(&der).map_err(|e| SigningError::KeyRejected(format!("got {e}")))?;
        Ok(Self::with_thumbprint_id(key_pair))
    }

    /// The private key as PEM `PRIVATE KEY` (PKCS#8), lines of 64 characters.
    pub fn to_pkcs8_pem(&self) -> Result<String, SigningError> {
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&self.key_pair)
            .map_err(|_| SigningError::KeyRejected("it could not be serialized".into()))?;
        let base64 = STANDARD.encode(der.as_ref());
        let mut pem = String::with_capacity(base64.len() + 100);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Ok(pem)
    }

    /// The same key under another key id: for tests that need two keys sharing one.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a JWK: `kty` RSA, `use` sig, `alg` RS256, `kid`.
    pub fn public_jwk(&self) -> Jwk {
        let (n, e) = self.public_components();
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::RS256),
                key_id: Some(self.key_id.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters { key_type: RSAKeyType::RSA, n, e }),
        }
    }

    /// A key set holding just this key's public half.
    pub fn jwk_set(&self) -> JwkSet {
        JwkSet { keys: vec![self.public_jwk()] }
    }

    /// An RS256 JWS of `claims` (which must serialize to a JSON object), with this
    /// key's `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SigningError> {
        let claims = serde_json::to_value(claims).map_err(|e| SigningError::Claims(e.to_string()))?;
        if !claims.is_object() {
            return Err(SigningError::Claims(format!("got {claims}")));
        }
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": self.key_id });
        let signing_input = format!("{}.{}", encode_json(&header), encode_json(&claims));
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .map_err(|_| SigningError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn with_thumbprint_id(key_pair: KeyPair) -> Self {
        let mut key = Self { key_pair, key_id: String::new() };
        let (n, e) = key.public_components();
        // RFC 7638: SHA-256 over the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        key.key_id = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        key
    }

    /// Modulus and exponent, base64url without padding, as a JWK carries them.
    fn public_components(&self) -> (String, String) {
        let public = self.key_pair.public_key();
        (
            URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        )
    }
}

fn encode_json(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    #[test]
    fn signs_what_jsonwebtoken_verifies_and_survives_a_pem_round_trip() {
        let key = RsaSigningKey::generate().unwrap();
        let reread = RsaSigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(reread.key_id(), key.key_id());
        assert_eq!(reread.public_jwk(), key.public_jwk());

        let token = reread.sign(&serde_json::json!({ "sub": "s", "exp": 4_000_000_000u64 })).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(key.key_id()));
        let decoding = DecodingKey::from_jwk(&key.public_jwk()).unwrap();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &Validation::new(Algorithm::RS256)).unwrap();
        assert_eq!(data.claims["sub"], "s");

        let other = RsaSigningKey::generate().unwrap();
        assert_ne!(other.key_id(), key.key_id());
        let wrong = DecodingKey::from_jwk(&other.public_jwk()).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &wrong, &Validation::new(Algorithm::RS256)).is_err());
    }

    #[test]
    fn key_id_is_the_rfc_7638_thumbprint() {
        let key = RsaSigningKey::generate().unwrap();
        let thumbprint = key.public_jwk().thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).unwrap();
        assert_eq!(key.key_id(), thumbprint);
    }

    #[test]
    fn rejects_text_that_is_not_a_pkcs8_pem() {
        let err = RsaSigningKey::from_pkcs8_pem("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")
            .unwrap_err();
        assert!(err.to_string().contains("got no `-----BEGIN PRIVATE KEY-----`"), "{err}");
        let err = RsaSigningKey::from_pkcs8_pem(&format!("{PEM_BEGIN}\nAAAA\n{PEM_END}")).unwrap_err();
        assert!(matches!(err, SigningError::KeyRejected(_)), "{err}");
        let key = RsaSigningKey::generate().unwrap();
        assert!(matches!(key.sign(&"a string"), Err(SigningError::Claims(_))));
    }
}
