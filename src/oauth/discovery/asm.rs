//! Authorization-server metadata (RFC 8414, OIDC Discovery 1.0): the probe order and the
//! `issuer` check.
//!
//! Invariant: a metadata document is used only if its `issuer` is, as an exact string, the
//! issuer it was fetched for (RFC 8414 §3.3); otherwise it is recorded and skipped.

use serde::Deserialize;
use url::Url;

use super::prm::{well_known_inserted, well_known_root};
use super::probe::{Probe, absolute_http};
use super::{DiscoveryErrorKind, DiscoveryOptions, PkceSupport};
use crate::oauth::text::clean;

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
    /// OIDC Discovery; read for the connector's account at consent only. Any JSON value: a
    /// malformed one must not cost the connector, so it is checked where it is used.
    #[serde(default)]
    pub userinfo_endpoint: Option<serde_json::Value>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// `None` when absent: distinguished from `[]` only for the error message.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `None` when absent: RFC 8414's default (`client_secret_basic`) applies.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `None` when absent: RFC 8414's default (`client_secret_basic`) applies.
    #[serde(default)]
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// draft-ietf-oauth-client-id-metadata-document §5: the server fetches client metadata
    /// from an https `client_id`. Any JSON value: only `true` counts, and a malformed one must
    /// not cost the rest of the metadata.
    #[serde(default)]
    pub client_id_metadata_document_supported: Option<serde_json::Value>,
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

/// The issuer as a URL to probe: the override's parsed URL, else the PRM's string, which must
/// be an absolute http(s) URL without query or fragment (RFC 8414 §2).
pub(super) fn issuer_url(issuer: &str, overridden: Option<Url>) -> Result<Url, DiscoveryErrorKind> {
    let invalid = |reason: String| DiscoveryErrorKind::InvalidIssuer {
        issuer: clean(issuer, 200),
        reason,
    };
    match overridden {
        Some(u) => Ok(u),
        None => match absolute_http(issuer) {
            Ok(u) if u.query().is_none() => Ok(u),
            Ok(_) => Err(invalid("has a query".into())),
            Err(reason) => Err(invalid(reason)),
        },
    }
}

/// Fetch `issuer`'s metadata in probe order; use the first document whose `issuer` matches.
/// With both endpoints pinned by the admin, finding none is not fatal.
pub(super) async fn find(
    probe: &mut Probe<'_>,
    issuer: &str,
    issuer_url: &Url,
    endpoints_pinned: bool,
) -> Result<Option<(Url, AuthorizationServerMetadata)>, DiscoveryErrorKind> {
    let mut mismatch = None;
    for (label, url) in metadata_candidates(issuer_url) {
        let Some(doc) = probe
            .fetch::<AuthorizationServerMetadata>(label, &url)
            .await?
        else {
            continue;
        };
        if doc.issuer.as_deref() == Some(issuer) {
            return Ok(Some((url, doc)));
        }
        let found = clean(doc.issuer.as_deref().unwrap_or("(none)"), 200);
        probe.steps.push(format!(
            "as-metadata not used: issuer {found:?} is not {issuer:?}"
        ));
        mismatch.get_or_insert(found);
    }
    if endpoints_pinned {
        return Ok(None);
    }
    Err(match mismatch {
        Some(found) => DiscoveryErrorKind::IssuerMismatch {
            expected: clean(issuer, 200),
            found,
        },
        None => DiscoveryErrorKind::NoAuthorizationServerMetadata {
            issuer: clean(issuer, 200),
        },
    })
}

/// S256 must be advertised. The relaxation covers an absent or empty list, or no metadata;
/// never a list that names other methods only.
pub(super) fn pkce_support(
    probe: &mut Probe<'_>,
    md: Option<&AuthorizationServerMetadata>,
    options: &DiscoveryOptions,
) -> Result<PkceSupport, DiscoveryErrorKind> {
    let methods = md.and_then(|m| m.code_challenge_methods_supported.as_deref());
    match methods {
        Some(list) if list.iter().any(|m| m == "S256") => Ok(PkceSupport::Advertised),
        Some(list) if !list.is_empty() => Err(DiscoveryErrorKind::PkceS256NotSupported {
            advertised: list.iter().take(8).map(|m| clean(m, 32)).collect(),
        }),
        _ if options.allow_missing_pkce_metadata => {
            probe
                .steps
                .push("pkce: S256 not advertised; accepted by relaxation".into());
            Ok(PkceSupport::AssumedByRelaxation)
        }
        other => Err(DiscoveryErrorKind::PkceMetadataMissing {
            state: match (md, other) {
                (None, _) => "unknown: no metadata",
                (Some(_), None) => "absent",
                (Some(_), Some(_)) => "empty",
            },
        }),
    }
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
