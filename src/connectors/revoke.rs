//! RFC 7009 token revocation (S10): one attempt per token, only HTTP 200 counts as revoked.
//!
//! Not the `oauth2` crate's `revoke_token`: it refuses non-https endpoints (tests and internal
//! deployments reach allowlisted http ones) and hides the status this module must check.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::token::{ClientAuth, clean};
use crate::domain::connector::TokenAuthMethod;
use crate::oauth::egress::EgressClient;

/// What one revocation attempt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// HTTP 200.
    Yes,
    /// Anything else; the detail is safe to show (status or transport error, no token).
    No(String),
}

/// Revokes `token` (`token_type_hint` = `kind`: `refresh_token` or `access_token`).
pub async fn revoke(
    egress: &EgressClient,
    endpoint: &Url,
    auth: &ClientAuth,
    token: &SecretString,
    kind: &str,
) -> Revoked {
    let mut form: Vec<(&str, String)> = vec![
        ("token", token.expose_secret().to_string()),
        ("token_type_hint", kind.to_string()),
    ];
    let mut request = match egress.post(endpoint) {
        Ok(r) => r,
        Err(e) => return Revoked::No(e.to_string()),
    };
    match (auth.method, &auth.client_secret) {
        (TokenAuthMethod::ClientSecretBasic, Some(secret)) => {
            request = request.basic_auth(&auth.client_id, Some(secret.expose_secret()));
        }
        (TokenAuthMethod::ClientSecretPost, Some(secret)) => {
            form.push(("client_id", auth.client_id.clone()));
            form.push(("client_secret", secret.expose_secret().to_string()));
        }
        _ => form.push(("client_id", auth.client_id.clone())),
    }
    match request
        .form(
            &form
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .send()
        .await
    {
        Ok(resp) if resp.status().as_u16() == 200 => Revoked::Yes,
        Ok(resp) => Revoked::No(format!("HTTP {}", resp.status().as_u16())),
        Err(e) => Revoked::No(clean(&e.to_string())),
    }
}
