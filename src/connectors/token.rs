//! The token endpoint client (RFC 6749 §4.1.3, §6): code exchange and refresh, with the
//! response validation of S8 and the error classes S9 needs.
//!
//! Hand-written rather than through the `oauth2` crate's token requests: S9 needs the HTTP
//! status to tell a permanent refusal (`invalid_grant` → reauth) from a transient one (5xx,
//! 429, timeouts → retry with the token kept), and the exact same `resource`, `audience` and
//! `redirect_uri` on every request (S7). `oauth2` still provides PKCE.
//!
//! Invariants: a response that fails validation yields an error and no [`TokenSet`]; tokens
//! only ever live in [`SecretString`]s; no error carries a token.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::domain::connector::TokenAuthMethod;
use crate::oauth::egress::{EgressClient, EgressError, GuardedRequest, read_capped};

/// Largest token response read (S3).
pub const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;
/// Longest access or refresh token accepted.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest `expires_in` accepted as sane (one year).
pub const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;

/// How AGP authenticates to the token endpoint.
pub struct ClientAuth {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub method: TokenAuthMethod,
    /// Revocation only: when `method` is refused (400/401), retry once presenting the secret
    /// both ways (`client_auth::revocation_retry_with_both`).
    pub retry_with_both: bool,
}

/// Parameters sent identically on every token request of a connector (S7).
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    pub url: String,
    pub redirect_uri: String,
    pub resource: Option<String>,
    pub audience: Option<String>,
}

/// A validated token response.
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    /// The granted scopes, when the server says (else the requested ones apply).
    pub scope: Option<Vec<String>>,
    /// The OIDC ID token, when the server issued one: read for the account at consent, never
    /// stored (see `connectors::account`). Not validated here: a bad one only means no account.
    pub id_token: Option<SecretString>,
    /// A provider-specific account field of the response, raw (`account::provider`).
    pub account_field: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token.as_ref().map(|_| "[REDACTED]"))
            .field(
                "account_field",
                &self.account_field.as_ref().map(|_| "[personal]"),
            )
            .finish()
    }
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server refused with an OAuth error. `permanent` for `invalid_grant`,
    /// `invalid_client` and `unauthorized_client` (→ `reauth_required`, S9).
    #[error("token endpoint refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        code: String,
        description: Option<String>,
        permanent: bool,
    },
    /// 5xx, 429 or a transport failure: retry later, keep the tokens (S9).
    #[error("token endpoint unavailable: {0}")]
    Transient(String),
    /// The response is not a valid token response (S8): nothing is stored.
    #[error("invalid token response: {0}")]
    Invalid(String),
}

impl TokenError {
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TokenError::Rejected {
                permanent: true,
                ..
            }
        )
    }
}

/// Provider text, cleaned for messages and events: the shared [`crate::oauth::text::clean`]
/// (control, bidi and zero-width characters removed), at most 300 characters.
pub fn clean(s: &str) -> String {
    crate::oauth::text::clean(s, 300)
}

/// `application/x-www-form-urlencoded` component encoding (RFC 6749 §2.3.1 for Basic auth too).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A token or revocation request's form: every value (codes, verifiers, tokens, the client
/// secret) is wiped when the form is dropped (issue 14, item 11). The request body reqwest
/// encodes from it is outside AGP's reach; it lives until the request is sent.
pub(crate) type Form = Vec<(&'static str, Zeroizing<String>)>;

/// A form value.
pub(crate) fn value(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_string())
}

/// Adds the client's authentication to a token or revocation request. `client_id` is in the
/// form body whatever the method: RFC 6749 §2.3.1 and §3.2.1 allow it beside Basic
/// credentials, and some servers (the Python MCP SDK's) require it there.
pub(crate) fn authenticate(
    request: GuardedRequest,
    form: &mut Form,
    auth: &ClientAuth,
) -> GuardedRequest {
    present(
        request,
        form,
        auth,
        auth.method == TokenAuthMethod::ClientSecretBasic,
        auth.method == TokenAuthMethod::ClientSecretPost,
    )
}

/// [`authenticate`] with the secret in the Basic header and in the body at once: only the
/// revocation retry sends this (see [`ClientAuth::retry_with_both`]).
pub(crate) fn authenticate_both(
    request: GuardedRequest,
    form: &mut Form,
    auth: &ClientAuth,
) -> GuardedRequest {
    present(request, form, auth, true, true)
}

fn present(
    mut request: GuardedRequest,
    form: &mut Form,
    auth: &ClientAuth,
    basic: bool,
    body: bool,
) -> GuardedRequest {
    form.push(("client_id", value(&auth.client_id)));
    let Some(secret) = &auth.client_secret else {
        return request;
    };
    if basic {
        // RFC 6749 §2.3.1: form-encode both before Basic.
        let user = Zeroizing::new(form_encode(&auth.client_id));
        let password = Zeroizing::new(form_encode(secret.expose_secret()));
        request = request.basic_auth(user.as_str(), Some(password.as_str()));
    }
    if body {
        form.push(("client_secret", value(secret.expose_secret())));
    }
    request
}

async fn post_form(
    egress: &EgressClient,
    endpoint: &TokenEndpoint,
    auth: &ClientAuth,
    mut form: Form,
) -> Result<TokenSet, TokenError> {
    if let Some(r) = &endpoint.resource {
        form.push(("resource", value(r)));
    }
    if let Some(a) = &endpoint.audience {
        form.push(("audience", value(a)));
    }
    let url = Url::parse(&endpoint.url)
        .map_err(|e| TokenError::Invalid(format!("token endpoint is not a URL: {e}")))?;
    let mut request = egress
        .post(&url)
        .map_err(|e| TokenError::Transient(e.to_string()))?
        .header("accept", "application/json");
    request = authenticate(request, &mut form, auth);
    let response = request
        .form(
            &form
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .send()
        .await
        .map_err(|e| match e {
            EgressError::Redirect { .. } => TokenError::Invalid(e.to_string()),
            EgressError::AddressRefused { .. } | EgressError::SchemeRefused { .. } => {
                TokenError::Invalid(e.to_string())
            }
            other => TokenError::Transient(other.to_string()),
        })?;
    let status = response.status().as_u16();
    let bytes = read_capped(response, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|e| match e {
            EgressError::TooLarge { .. } => TokenError::Invalid(e.to_string()),
            other => TokenError::Transient(other.to_string()),
        })?;
    parse_response(status, &bytes)
}

/// Validates a token endpoint response (S8). Public for tests of the adversarial catalogue.
pub fn parse_response(status: u16, body: &[u8]) -> Result<TokenSet, TokenError> {
    if status == 429 || status >= 500 {
        return Err(TokenError::Transient(format!("HTTP {status}")));
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| TokenError::Invalid(format!("HTTP {status} with a body that is not JSON")))?;
    let Some(obj) = json.as_object() else {
        return Err(TokenError::Invalid("the body is not a JSON object".into()));
    };
    if let Some(code) = obj.get("error") {
        let code = clean(code.as_str().unwrap_or("invalid error field"));
        let description = obj
            .get("error_description")
            .and_then(Value::as_str)
            .map(clean);
        let permanent = matches!(
            code.as_str(),
            "invalid_grant" | "invalid_client" | "unauthorized_client"
        );
        return Err(TokenError::Rejected {
            code,
            description,
            permanent,
        });
    }
    if !(200..300).contains(&status) {
        return Err(TokenError::Invalid(format!(
            "HTTP {status} without an OAuth error"
        )));
    }
    let token = |field: &str| -> Result<Option<SecretString>, TokenError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TOKEN_LEN => {
                Ok(Some(SecretString::from(s.clone())))
            }
            Some(_) => Err(TokenError::Invalid(format!(
                "{field} must be a non-empty string of at most {MAX_TOKEN_LEN} bytes"
            ))),
        }
    };
    let access_token =
        token("access_token")?.ok_or_else(|| TokenError::Invalid("no access_token".into()))?;
    let refresh_token = token("refresh_token")?;
    // RFC 6749 §5.1: required, and case-insensitive. A missing one is refused rather than
    // assumed: §7.1 forbids using a token whose type the client does not understand
    // (docs/decisions/0026-provider-quirks.md).
    match obj.get("token_type") {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            return Err(TokenError::Invalid(format!(
                "token_type {:?} is not Bearer",
                clean(t)
            )));
        }
        None | Some(Value::Null) => {
            return Err(TokenError::Invalid(
                "no token_type (RFC 6749 §5.1 requires it; AGP uses Bearer tokens only)".into(),
            ));
        }
        Some(_) => return Err(TokenError::Invalid("token_type is not a string".into())),
    }
    let expires_in = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => {
            // RFC 6749 §5.1 makes it a number; some providers (Entra's v1 endpoint, among
            // others) send a string of digits, which means the same. Nothing looser: no sign,
            // no spaces, no fraction.
            let secs = v.as_u64().or_else(|| {
                v.as_str()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
            });
            match secs {
                Some(s) if (1..=MAX_EXPIRES_IN).contains(&s) => Some(Duration::from_secs(s)),
                _ => {
                    return Err(TokenError::Invalid(format!(
                        "expires_in must be between 1 and {MAX_EXPIRES_IN} seconds"
                    )));
                }
            }
        }
    };
    let scope = obj
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect());
    // Any string: an unusable ID token costs the account, never the consent.
    let id_token = obj
        .get("id_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_string()));
    Ok(TokenSet {
        access_token,
        refresh_token,
        expires_in,
        scope,
        id_token,
        account_field: crate::connectors::account::provider::account_field(obj),
    })
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens.
pub async fn exchange_code(
    egress: &EgressClient,
    endpoint: &TokenEndpoint,
    auth: &ClientAuth,
    code: &SecretString,
    pkce_verifier: &SecretString,
) -> Result<TokenSet, TokenError> {
    let form: Form = vec![
        ("grant_type", value("authorization_code")),
        ("code", value(code.expose_secret())),
        ("redirect_uri", value(&endpoint.redirect_uri)),
        ("code_verifier", value(pkce_verifier.expose_secret())),
    ];
    post_form(egress, endpoint, auth, form).await
}

/// Uses a refresh token. A response without a new refresh token means: keep the old one (S9).
pub async fn refresh(
    egress: &EgressClient,
    endpoint: &TokenEndpoint,
    auth: &ClientAuth,
    refresh_token: &SecretString,
) -> Result<TokenSet, TokenError> {
    let form: Form = vec![
        ("grant_type", value("refresh_token")),
        ("refresh_token", value(refresh_token.expose_secret())),
    ];
    post_form(egress, endpoint, auth, form).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(status: u16, body: &str) -> TokenError {
        parse_response(status, body.as_bytes()).expect_err(body)
    }

    #[test]
    fn the_adversarial_token_responses_store_nothing() {
        for body in [
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":99999999999}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"+3600"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":" 3600"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600.0"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"1h"}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":""}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":3600.5}"#,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":true}"#,
            r#"{"access_token":"a","token_type":null}"#,
            r#"{"access_token":"a","token_type":7}"#,
            r#"{"access_token":"a","token_type":"Bearer "}"#,
            r#"{"access_token":"a","token_type":"DPoP"}"#,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":5,"token_type":"Bearer"}"#,
            r#"[1,2]"#,
            "<html>hello</html>",
        ] {
            assert!(
                matches!(invalid(200, body), TokenError::Invalid(_)),
                "{body}"
            );
        }
        assert!(matches!(invalid(302, r#"{"x":1}"#), TokenError::Invalid(_)));
    }

    #[test]
    fn oauth_errors_are_classified() {
        let e = invalid(
            200,
            r#"{"error":"invalid_grant","error_description":"gone <b>"}"#,
        );
        assert!(e.is_permanent(), "200 with an error is still an error");
        assert!(invalid(400, r#"{"error":"invalid_client"}"#).is_permanent());
        assert!(!invalid(400, r#"{"error":"invalid_request"}"#).is_permanent());
        assert_eq!(
            invalid(503, "down"),
            TokenError::Transient("HTTP 503".into())
        );
        assert_eq!(invalid(429, "{}"), TokenError::Transient("HTTP 429".into()));
    }

    #[test]
    fn a_good_response_parses_and_debug_hides_tokens() {
        let set = parse_response(
            200,
            br#"{"access_token":"canary-at","refresh_token":"canary-rt","token_type":"bearer","expires_in":"3600","scope":"a b","id_token":"canary-id","team":{"name":"canary-team"}}"#,
        )
        .unwrap();
        assert!(set.id_token.is_some());
        assert_eq!(set.account_field.as_deref(), Some("canary-team"));
        assert_eq!(set.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(set.scope, Some(vec!["a".to_string(), "b".to_string()]));
        let debug = format!("{set:?}");
        assert!(!debug.contains("canary"), "{debug}");
    }

    /// RFC 6749 §5.1: `token_type` is case-insensitive; `expires_in` is a number, and a string
    /// of digits is read as the same number (real providers send one). A missing `token_type`
    /// is refused (see docs/decisions/0026-provider-quirks.md).
    #[test]
    fn token_type_in_any_case_and_expires_in_as_a_number_or_digits() {
        for t in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            for e in ["3600", "\"3600\""] {
                let body = format!(r#"{{"access_token":"a","token_type":"{t}","expires_in":{e}}}"#);
                let set = parse_response(200, body.as_bytes()).expect(&body);
                assert_eq!(set.expires_in, Some(Duration::from_secs(3600)), "{body}");
            }
        }
        let none = parse_response(200, br#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(
            none.expires_in, None,
            "no expires_in: the token's lifetime is unknown"
        );
        for body in [
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","token_type":null}"#,
        ] {
            let TokenError::Invalid(why) = invalid(200, body) else {
                panic!("{body}")
            };
            assert!(why.starts_with("no token_type"), "{why}");
        }
    }
}
