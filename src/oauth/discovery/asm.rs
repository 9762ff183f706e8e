//! Authorization-server metadata (RFC 8414, OIDC Discovery 1.0): the probe order and the
//! `issuer` check.
//!
//! Invariant: a metadata document is used only if its `issuer` is, as an exact string, the
//! issuer it was fetched for (RFC 8414 §3.3); otherwise it is recorded and skipped.

use serde::Deserialize;
use url::Url;

use super::prm::{well_known_inserted, well_known_root};

/// The parts of RFC 8414 / OIDC metadata AGP uses. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct AuthorizationServerMetadata {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// `None` when absent: distinguished from `[]` only for the error message.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

/// Where to look for an issuer's metadata, in the MCP authorization spec's order.
///
/// With a path (`https://as/tenant1`): RFC 8414 path insertion, OIDC path insertion, OIDC path
/// appending. Without: RFC 8414 then OIDC at the root.
pub fn metadata_candidates(issuer: &Url) -> Vec<(&'static str, Url)> {
    const OAUTH: &str = "oauth-authorization-server";
    const OIDC: &str = "openid-configuration";
    let mut out = Vec::new();
    if well_known_inserted(issuer, OAUTH).is_some() {
        let appended = Url::parse(&format!(
            "{}{}/.well-known/{OIDC}",
            issuer.origin().ascii_serialization(),
            issuer.path().trim_end_matches('/')
        ))
        .ok();
        for (label, url) in [
            ("as-metadata (rfc8414)", well_known_inserted(issuer, OAUTH)),
            ("as-metadata (oidc)", well_known_inserted(issuer, OIDC)),
            ("as-metadata (oidc, appended)", appended),
        ] {
            if let Some(url) = url {
                out.push((label, url));
            }
        }
    } else {
        for (label, url) in [
            ("as-metadata (rfc8414)", well_known_root(issuer, OAUTH)),
            ("as-metadata (oidc)", well_known_root(issuer, OIDC)),
        ] {
            if let Some(url) = url {
                out.push((label, url));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        metadata_candidates(&Url::parse(issuer).unwrap())
            .into_iter()
            .map(|(_, u)| u.to_string())
            .collect()
    }

    #[test]
    fn probe_order_with_and_without_path() {
        assert_eq!(
            urls("https://auth.example.com/tenant1"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://auth.example.com/"),
            urls("https://auth.example.com")
        );
    }
}
