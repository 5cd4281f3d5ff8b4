//! Why a request was refused, in two registers: the [`AuthError`] variant and its
//! `Display` carry the detail for logs; its [`AuthErrorKind`] (which the functions turn
//! into a status in one place, `converge_function::answer`: 401, 403 or 503) and
//! [`AuthError::public_message`] are all a response may show, so a caller probing the
//! endpoint learns nothing about which check failed.
//!
//! Neither register ever contains the token itself.

use std::time::Duration;


/// What the endpoint answers, decided on the kind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// No credentials, or credentials that do not prove anything: missing, malformed,
    /// expired, badly signed, for another audience or from another issuer. 401.
    Unauthenticated,
    /// A genuine token whose identity may not call this endpoint. 403.
    Forbidden,
    /// The key set to check signatures against could not be fetched. 503: the same
    /// request may succeed later.
    Unavailable,
}

impl AuthErrorKind {

    /// The response body: fixed per kind, free of detail.
    pub fn public_message(self) -> &'static str {
        match self {
            AuthErrorKind::Unauthenticated => "missing or invalid credentials",
            AuthErrorKind::Forbidden => "the caller is not allowed to use this endpoint",
            AuthErrorKind::Unavailable => "credentials cannot be checked right now; retry later",
        }
    }
}

/// A refused request. `Display` is for logs: it names the check that failed, what was
/// expected and what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: neither X-Serverless-Authorization nor Authorization is present")]
    MissingToken,
    #[error("{header} header is malformed: expected `Bearer <token>`, {found}")]
    MalformedHeader { header: &'static str, found: String },
    #[error(
        "the token in Authorization has the signature SIGNATURE_REMOVED_BY_GOOGLE (Cloud Run's \
         invoker check strips it); send the token in X-Serverless-Authorization instead"
    )]
    SignatureRemovedByProxy,
    #[error("token is malformed: {0}")]
    MalformedToken(String),
    #[error("token algorithm is `{found}`, expected `RS256`")]
    DisallowedAlgorithm { found: String },
    #[error("token header has no key id (`kid`)")]
    MissingKeyId,
    #[error("token key id `{kid}` is not in the key set from {key_source}")]
    UnknownKeyId { kid: String, key_source: String },
    #[error("token signature does not verify against key `{kid}`")]
    BadSignature { kid: String },
    #[error("token claims are malformed: {0}")]
    MalformedClaims(String),
    #[error("token issuer is `{found}`, expected one of {expected:?}")]
    WrongIssuer { found: String, expected: Vec<String> },
    #[error("token audience is {found}, expected `{expected}`")]
    WrongAudience { found: String, expected: String },
    #[error("token expired at {expired_at} (unix seconds); now is {now}, leeway {leeway:?}")]
    Expired { expired_at: i64, now: i64, leeway: Duration },
    #[error("token `{claim}` is {at} (unix seconds), in the future: now is {now}, leeway {leeway:?}")]
    NotYetValid { claim: &'static str, at: i64, now: i64, leeway: Duration },
    #[error("token for subject `{subject}` has no `email` claim (service accounts must request ID tokens with the email included)")]
    EmailMissing { subject: String },
    #[error("token email `{email}` is not verified (`email_verified` is not true)")]
    EmailNotVerified { email: String },
    #[error("token email `{email}` is not in the allow-list")]
    EmailNotAllowed { email: String },
    #[error("the key set from {key_source} is unavailable: {detail}")]
    KeysUnavailable { key_source: String, detail: String },
}

impl AuthError {
    pub fn kind(&self) -> AuthErrorKind {
        match self {
            AuthError::MissingToken
            | AuthError::MalformedHeader { .. }
            | AuthError::SignatureRemovedByProxy
            | AuthError::MalformedToken(_)
            | AuthError::DisallowedAlgorithm { .. }
            | AuthError::MissingKeyId
            | AuthError::UnknownKeyId { .. }
            | AuthError::BadSignature { .. }
            | AuthError::MalformedClaims(_)
            | AuthError::WrongIssuer { .. }
            | AuthError::WrongAudience { .. }
            | AuthError::Expired { .. }
            | AuthError::NotYetValid { .. } => AuthErrorKind::Unauthenticated,
            // The signature, issuer, audience and lifetime all checked out: the caller
            // is who the token says, just not someone allowed here.
            AuthError::EmailMissing { .. } | AuthError::EmailNotVerified { .. } | AuthError::EmailNotAllowed { .. } => {
                AuthErrorKind::Forbidden
            }
            AuthError::KeysUnavailable { .. } => AuthErrorKind::Unavailable,
        }
    }

    /// What the response body may say: fixed per kind, no detail.
    pub fn public_message(&self) -> &'static str {
        self.kind().public_message()
    }

    pub fn is_retryable(&self) -> bool {
        self.kind() == AuthErrorKind::Unavailable
    }
}

/// A verifier configuration that cannot be used; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ID-token verifier: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_kind_and_a_message_free_of_detail() {
        let forbidden = AuthError::EmailNotAllowed { email: "mallory@example.com".into() };
        assert_eq!(forbidden.kind(), AuthErrorKind::Forbidden);
        assert!(forbidden.to_string().contains("mallory@example.com"));
        assert!(!forbidden.public_message().contains("mallory"));

        let unknown = AuthError::UnknownKeyId { kid: "k1".into(), key_source: "x".into() };
        assert_eq!(unknown.kind(), AuthErrorKind::Unauthenticated);
        assert!(!unknown.public_message().contains("k1"));

        let unavailable = AuthError::KeysUnavailable { key_source: "x".into(), detail: "timeout".into() };
        assert_eq!(unavailable.kind(), AuthErrorKind::Unavailable);
        assert!(unavailable.is_retryable());
        assert!(!unavailable.public_message().contains("timeout"));
    }
}
