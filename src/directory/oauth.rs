//! The OAuth 2.0 token endpoint's success answer (RFC 6749 §5.1), read the same way for Entra and
//! Okta: an access token that must not be empty, its lifetime, and the scopes granted.

use crate::secret::Secret;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

/// A token as granted.
pub(crate) struct Grant {
    pub token: Secret,
    pub lifetime: Duration,
    /// The `scope` field, when the server sent one.
    pub scope: Option<String>,
}

/// Decodes a 2xx token answer; `default_lifetime` applies when `expires_in` is absent. The
/// error text never holds the body (it may hold a token).
pub(crate) fn decode_grant(body: &[u8], default_lifetime: u64) -> Result<Grant, String> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("token response: {e}"))?;
    if parsed.access_token.is_empty() {
        return Err("token response has an empty access_token".into());
    }
    Ok(Grant {
        token: Secret::new(parsed.access_token),
        lifetime: Duration::from_secs(parsed.expires_in.unwrap_or(default_lifetime).max(1)),
        scope: parsed.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_token_is_refused_and_the_lifetime_defaults() {
        assert!(decode_grant(br#"{"access_token":""}"#, 60).is_err());
        let g = decode_grant(br#"{"access_token":"t","scope":"a b"}"#, 60).unwrap();
        assert_eq!(
            (g.lifetime.as_secs(), g.scope.as_deref()),
            (60, Some("a b"))
        );
    }
}
