//! Finding the bearer token in a request's headers.
//!
//! Cloud Run's IAM invoker check verifies the caller's token and hands the app a copy
//! whose signature is replaced by `SIGNATURE_REMOVED_BY_GOOGLE`, which no key can
//! verify. It checks `X-Serverless-Authorization` when present, else `Authorization`,
//! and leaves the other header as sent. So a caller that sends its ID token in both
//! headers gets one intact copy to the app whichever the platform checked: the app
//! verifies the first intact token, `X-Serverless-Authorization` first, and skips a
//! stripped one.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

use crate::error::AuthError;

/// The header Cloud Run passes through with its signature intact.
pub const SERVERLESS_AUTHORIZATION: HeaderName = HeaderName::from_static("x-serverless-authorization");

/// What Cloud Run's invoker check puts in place of the signature of the
/// `Authorization` token it forwards.
pub const REMOVED_SIGNATURE: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// The first token, of `X-Serverless-Authorization` then `Authorization`, that still
/// carries its signature. A malformed header is an error, not skipped: two
/// credentials where one is garbage is not a request to guess about.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut stripped = false;
    for (name, shown) in [(&SERVERLESS_AUTHORIZATION, "X-Serverless-Authorization"), (&AUTHORIZATION, "Authorization")] {
        if !headers.contains_key(name) {
            continue;
        }
        let token = token_of(headers, name, shown)?;
        if token.rsplit('.').next() == Some(REMOVED_SIGNATURE) {
            stripped = true;
            continue;
        }
        return Ok(token);
    }
    Err(if stripped { AuthError::SignatureRemovedByProxy } else { AuthError::MissingToken })
}

fn token_of<'h>(headers: &'h HeaderMap, name: &HeaderName, shown: &'static str) -> Result<&'h str, AuthError> {
    let malformed = |found: &str| AuthError::MalformedHeader { header: shown, found: found.to_owned() };
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    let extra = values.count();
    if extra > 0 {
        // Two credentials: which one counts would be up to whoever parses first.
        return Err(malformed(&format!("got {} values", extra + 1)));
    }
    let value = value.to_str().map_err(|_| malformed("got bytes that are not visible ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // The scheme is safe to log; whatever follows it is a credential and is not shown.
        let scheme: String = scheme.chars().take(16).collect();
        return Err(malformed(&format!("got scheme `{scheme}`")));
    }
    let token = token.trim_start();
    if token.is_empty() {
        return Err(malformed("got no token"));
    }
    if token.contains(char::is_whitespace) {
        return Err(malformed("got a token containing whitespace"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_authorization_with_any_case_of_bearer() {
        assert_eq!(bearer_token(&headers(&[(&AUTHORIZATION, "Bearer a.b.c")])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[(&AUTHORIZATION, "bearer   a.b.c ")])), Ok("a.b.c"));
    }

    #[test]
    fn serverless_authorization_takes_precedence() {
        let both = headers(&[(&AUTHORIZATION, "Bearer outer.b.c"), (&SERVERLESS_AUTHORIZATION, "Bearer inner.b.c")]);
        assert_eq!(bearer_token(&both), Ok("inner.b.c"));
        // Present but malformed: no falling back to the other header.
        let bad = headers(&[(&AUTHORIZATION, "Bearer outer.b.c"), (&SERVERLESS_AUTHORIZATION, "Basic xyz")]);
        assert!(matches!(
            bearer_token(&bad),
            Err(AuthError::MalformedHeader { header: "X-Serverless-Authorization", .. })
        ));
    }

    #[test]
    fn refuses_missing_and_malformed_headers_without_echoing_the_credential() {
        assert_eq!(bearer_token(&HeaderMap::new()), Err(AuthError::MissingToken));
        let basic = bearer_token(&headers(&[(&AUTHORIZATION, "Basic c2VjcmV0")])).unwrap_err();
        assert_eq!(
            basic.to_string(),
            "Authorization header is malformed: expected `Bearer <token>`, got scheme `Basic`"
        );
        assert!(matches!(
            bearer_token(&headers(&[(&AUTHORIZATION, "Bearer")])),
            Err(AuthError::MalformedHeader { found, .. }) if found == "got no token"
        ));
        assert!(matches!(
            bearer_token(&headers(&[(&AUTHORIZATION, "Bearer a.b.c extra")])),
            Err(AuthError::MalformedHeader { found, .. }) if found.contains("whitespace")
        ));
        assert!(matches!(
            bearer_token(&headers(&[(&AUTHORIZATION, "Bearer a.b.c"), (&AUTHORIZATION, "Bearer d.e.f")])),
            Err(AuthError::MalformedHeader { found, .. }) if found == "got 2 values"
        ));
    }

    #[test]
    fn names_the_signature_cloud_run_removed() {
        let stripped = headers(&[(&AUTHORIZATION, "Bearer eyJh.eyJp.SIGNATURE_REMOVED_BY_GOOGLE")]);
        assert_eq!(bearer_token(&stripped), Err(AuthError::SignatureRemovedByProxy));
    }

    #[test]
    fn the_intact_copy_counts_whichever_header_cloud_run_checked() {
        // Cloud Run checked X-Serverless-Authorization: Authorization arrives as sent.
        let checked_serverless =
            headers(&[(&SERVERLESS_AUTHORIZATION, "Bearer eyJh.eyJp.SIGNATURE_REMOVED_BY_GOOGLE"), (&AUTHORIZATION, "Bearer eyJh.eyJp.sig")]);
        assert_eq!(bearer_token(&checked_serverless), Ok("eyJh.eyJp.sig"));
        // Cloud Run checked Authorization (no X-Serverless-Authorization sent).
        let both_stripped = headers(&[
            (&SERVERLESS_AUTHORIZATION, "Bearer eyJh.eyJp.SIGNATURE_REMOVED_BY_GOOGLE"),
            (&AUTHORIZATION, "Bearer eyJh.eyJp.SIGNATURE_REMOVED_BY_GOOGLE"),
        ]);
        assert_eq!(bearer_token(&both_stripped), Err(AuthError::SignatureRemovedByProxy));
    }
}
