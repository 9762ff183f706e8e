//! RFC 7009 token revocation (S10): one attempt per token, only HTTP 200 counts as revoked.
//! The client authenticates as the server's `revocation_endpoint_auth_methods_supported` allows
//! (the caller's [`ClientAuth`], chosen by `domain::connector::client_auth::for_revocation`).
//!
//! Not the `oauth2` crate's `revoke_token`: it refuses non-https endpoints (tests and internal
//! deployments reach allowlisted http ones) and hides the status this module must check.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::token::{ClientAuth, Form, authenticate, authenticate_both, clean, value};
use crate::oauth::egress::EgressClient;

/// What one revocation attempt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// HTTP 200; the note says so when it took the fallback method.
    Yes(Option<String>),
    /// Anything else; the detail is safe to show (status or transport error, no token).
    No(String),
    /// HTTP 400 `invalid_token` or `invalid_grant`: the provider says the token is not valid
    /// (any more), so it cannot be used and there is nothing left to revoke.
    Invalid(String),
    /// HTTP 400 `unsupported_token_type` (RFC 7009 §2.2.1): the provider cannot revoke this
    /// kind of token; retrying will not change that.
    Unsupported(String),
}

/// Largest error body read from a revocation endpoint (only its `error` code is kept).
const MAX_ERROR_BODY: usize = 4096;

/// Why one request did not revoke.
enum Refused {
    /// The status, and the RFC 6749 `error` code of the body when it had a well-formed one.
    Status(u16, Option<String>),
    /// No answer; the cleaned transport error.
    Transport(String),
}

impl Refused {
    fn detail(self) -> String {
        match self {
            Refused::Status(s, Some(code)) => format!("HTTP {s} {code}"),
            Refused::Status(s, None) => format!("HTTP {s}"),
            Refused::Transport(e) => e,
        }
    }
}

/// The `error` code of an error body: only a short lowercase code is kept, never the
/// provider's text (a hostile provider could put anything there, S27).
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    let plain = !code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plain.then(|| code.to_string())
}

/// Revokes `token` (`token_type_hint` = `kind`: `refresh_token` or `access_token`) with the
/// client's revocation method; if that is refused with 400 or 401 and the client allows it,
/// once more with the secret presented both ways.
pub async fn revoke(
    egress: &EgressClient,
    endpoint: &Url,
    auth: &ClientAuth,
    token: &SecretString,
    kind: &str,
) -> Revoked {
    let first = attempt(egress, endpoint, auth, false, token, kind).await;
    match first {
        Ok(()) => Revoked::Yes(None),
        // About the token, not the client's authentication: no retry with the secret both ways.
        Err(Refused::Status(400, Some(code)))
            if code == "invalid_token" || code == "invalid_grant" =>
        {
            Revoked::Invalid(format!("HTTP 400 {code}"))
        }
        Err(Refused::Status(400, Some(code))) if code == "unsupported_token_type" => {
            Revoked::Unsupported(format!("HTTP 400 {code}"))
        }
        Err(Refused::Status(status @ (400 | 401), _)) if auth.retry_with_both => {
            match attempt(egress, endpoint, auth, true, token, kind).await {
                Ok(()) => Revoked::Yes(Some(format!(
                    "revoked on a retry with the secret both in the Basic header and the body: \
                     the endpoint refused {} alone (HTTP {status})",
                    auth.method.as_str()
                ))),
                Err(again) => Revoked::No(format!(
                    "HTTP {status} with {}, then {} with the secret presented both ways",
                    auth.method.as_str(),
                    again.detail(),
                )),
            }
        }
        Err(refused) => Revoked::No(refused.detail()),
    }
}

/// One request: `Ok` on HTTP 200 and nothing else.
async fn attempt(
    egress: &EgressClient,
    endpoint: &Url,
    auth: &ClientAuth,
    both: bool,
    token: &SecretString,
    kind: &str,
) -> Result<(), Refused> {
    let mut form: Form = vec![
        ("token", value(token.expose_secret())),
        ("token_type_hint", value(kind)),
    ];
    let request = match egress.post(endpoint) {
        Ok(r) if both => authenticate_both(r, &mut form, auth),
        Ok(r) => authenticate(r, &mut form, auth),
        Err(e) => return Err(Refused::Transport(e.to_string())),
    };
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match request.form(&pairs).send().await {
        Ok(resp) if resp.status().as_u16() == 200 => Ok(()),
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                if body.len() + chunk.len() > MAX_ERROR_BODY {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Err(Refused::Status(status, error_code(&body)))
        }
        Err(e) => Err(Refused::Transport(clean(&e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::error_code;

    #[test]
    fn only_a_plain_error_code_is_kept() {
        assert_eq!(
            error_code(br#"{"error":"invalid_token","error_description":"tok_canary"}"#),
            Some("invalid_token".into())
        );
        assert_eq!(error_code(br#"{"error":"Bearer tok_canary"}"#), None);
        assert_eq!(error_code(b"<html>"), None);
        assert_eq!(error_code(br#"{"error":""}"#), None);
    }
}
