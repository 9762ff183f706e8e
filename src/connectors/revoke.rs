//! RFC 7009 token revocation (S10): one attempt per token, only HTTP 200 counts as revoked.
//! The client authenticates as the server's `revocation_endpoint_auth_methods_supported` allows
//! (the caller's [`ClientAuth`], chosen by `domain::connector::client_auth::for_revocation`).
//!
//! Not the `oauth2` crate's `revoke_token`: it refuses non-https endpoints (tests and internal
//! deployments reach allowlisted http ones) and hides the status this module must check.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::token::{ClientAuth, authenticate, authenticate_both, clean};
use crate::oauth::egress::EgressClient;

/// What one revocation attempt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// HTTP 200; the note says so when it took the fallback method.
    Yes(Option<String>),
    /// Anything else; the detail is safe to show (status or transport error, no token).
    No(String),
}

/// Why one request did not revoke.
enum Refused {
    Status(u16),
    /// No answer; the cleaned transport error.
    Transport(String),
}

impl Refused {
    fn detail(self) -> String {
        match self {
            Refused::Status(s) => format!("HTTP {s}"),
            Refused::Transport(e) => e,
        }
    }
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
        Err(Refused::Status(status @ (400 | 401))) if auth.retry_with_both => {
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
    let mut form: Vec<(&'static str, String)> = vec![
        ("token", token.expose_secret().to_string()),
        ("token_type_hint", kind.to_string()),
    ];
    let request = match egress.post(endpoint) {
        Ok(r) if both => authenticate_both(r, &mut form, auth),
        Ok(r) => authenticate(r, &mut form, auth),
        Err(e) => return Err(Refused::Transport(e.to_string())),
    };
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match request.form(&pairs).send().await {
        Ok(resp) if resp.status().as_u16() == 200 => Ok(()),
        Ok(resp) => Err(Refused::Status(resp.status().as_u16())),
        Err(e) => Err(Refused::Transport(clean(&e.to_string()))),
    }
}
