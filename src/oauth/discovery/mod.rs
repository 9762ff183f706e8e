//! Discovery (S1, S2): from an MCP server URL to the endpoints, issuer and resource AGP will use.
//!
//! Order (MCP authorization spec 2025-11-25): an unauthenticated `initialize` POST to the MCP
//! URL and its `WWW-Authenticate: Bearer resource_metadata=…` challenge; else the RFC 9728
//! well-known locations (path-suffixed, then root). Then the issuer's metadata in the spec's
//! probe order (see [`metadata_candidates`]).
//!
//! Invariants:
//! - every request goes through the [`EgressClient`] with the 64 KiB metadata cap;
//! - a PRM whose `resource` does not match is never used; AS metadata whose `issuer` differs is
//!   never used; S256 must be advertised unless the caller passes the audited relaxation;
//! - every filled override replaces discovery for its field; with an issuer override or both
//!   endpoints overridden, missing metadata is not fatal (the AS is pinned by the admin);
//! - `steps` has one line per probe and never a query string.

mod asm;
mod error;
mod prm;
mod probe;

use url::Url;

use crate::domain::connector::{DiscoveredMetadata, Overrides};
use crate::oauth::egress::EgressClient;
use probe::{Probe, absolute_http, parse_override};

pub use asm::metadata_candidates;
pub use error::{DiscoveryError, DiscoveryErrorKind};
pub use prm::{BearerChallenge, parse_bearer_challenge, resource_matches};

/// Relaxations the caller must audit when it uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Accept an authorization server whose metadata does not say whether it supports PKCE
    /// (`code_challenge_methods_supported` absent or `[]`, or no metadata at all because the
    /// endpoints are overridden). Never accepts a list that omits S256. AGP sends S256 anyway.
    pub allow_missing_pkce_metadata: bool,
}

/// How S256 support was established. AGP always uses PKCE S256; this records why it believes
/// the AS will accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkceSupport {
    /// The metadata lists `S256` in `code_challenge_methods_supported`.
    Advertised,
    /// Not advertised (absent, `[]`, or no metadata); accepted because of
    /// [`DiscoveryOptions::allow_missing_pkce_metadata`]. The caller audits this.
    AssumedByRelaxation,
}

/// What discovery established, after overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The PRM document that was used, if any.
    pub resource_metadata_url: Option<Url>,
    /// The RFC 8707 `resource` to send; `None` when `omit_resource` is set.
    pub resource: Option<String>,
    /// The issuer (expected `iss` on the callback); `None` only when both endpoints are
    /// overridden and no issuer is known.
    pub issuer: Option<String>,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub registration_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// The OIDC userinfo endpoint, when the metadata names a usable one. Only the consent
    /// callback uses it (for the account), so it is not part of the recorded metadata: the
    /// consent flow carries it.
    pub userinfo_endpoint: Option<Url>,
    /// The PRM's `scopes_supported` (what the MCP server advertises).
    pub scopes_supported: Vec<String>,
    /// The `scope` of the 401 challenge, which the MCP spec prefers over `scopes_supported`.
    pub challenge_scopes: Option<Vec<String>>,
    /// `authorization_servers` after the first (recorded, not used).
    pub other_authorization_servers: Vec<String>,
    /// The AS metadata document that was used, if any.
    pub as_metadata_url: Option<Url>,
    pub as_scopes_supported: Vec<String>,
    /// `None` when the metadata lists none (or there is no metadata).
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `None` when the metadata lists none (or there is no metadata).
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub pkce: PkceSupport,
    /// RFC 9207: the callback must carry `iss` when this is true.
    pub iss_parameter_supported: bool,
    /// The AS metadata's `client_id_metadata_document_supported` is `true`: AGP may present a
    /// Client ID Metadata Document URL as its client id.
    pub client_id_metadata_document_supported: bool,
    pub steps: Vec<String>,
}

impl Discovery {
    /// Scopes to request when the admin chose none: the challenge's `scope`, else the PRM's
    /// `scopes_supported` (MCP spec, scope selection).
    pub fn default_scopes(&self) -> Vec<String> {
        self.challenge_scopes
            .clone()
            .unwrap_or_else(|| self.scopes_supported.clone())
    }
}

impl From<&Discovery> for DiscoveredMetadata {
    fn from(d: &Discovery) -> Self {
        DiscoveredMetadata {
            resource_metadata_url: d.resource_metadata_url.as_ref().map(Url::to_string),
            resource: d.resource.clone(),
            issuer: d.issuer.clone(),
            authorization_endpoint: Some(d.authorization_endpoint.to_string()),
            token_endpoint: Some(d.token_endpoint.to_string()),
            registration_endpoint: d.registration_endpoint.as_ref().map(Url::to_string),
            revocation_endpoint: d.revocation_endpoint.as_ref().map(Url::to_string),
            scopes_supported: d.scopes_supported.clone(),
            token_endpoint_auth_methods_supported: d.token_endpoint_auth_methods_supported.clone(),
            revocation_endpoint_auth_methods_supported: d
                .revocation_endpoint_auth_methods_supported
                .clone(),
            steps: d.steps.clone(),
        }
    }
}

/// Run discovery for `mcp_server_url` (see the module doc for the order and the invariants).
/// On failure the error carries every step taken.
#[tracing::instrument(skip_all, fields(host = mcp_server_url.host_str()))]
pub async fn discover(
    client: &EgressClient,
    mcp_server_url: &Url,
    overrides: &Overrides,
    options: &DiscoveryOptions,
) -> Result<Discovery, DiscoveryError> {
    let mut probe = Probe {
        client,
        steps: Vec::new(),
    };
    match run(&mut probe, mcp_server_url, overrides, options).await {
        Ok(mut d) => {
            d.steps = probe.steps;
            Ok(d)
        }
        Err(kind) => Err(DiscoveryError {
            kind,
            steps: probe.steps,
        }),
    }
}

async fn run(
    probe: &mut Probe<'_>,
    mcp: &Url,
    overrides: &Overrides,
    options: &DiscoveryOptions,
) -> Result<Discovery, DiscoveryErrorKind> {
    if let Err(reason) = absolute_http(mcp.as_str()) {
        return Err(DiscoveryErrorKind::InvalidServerUrl { reason });
    }
    let issuer_override = parse_override("issuer", &overrides.issuer)?;
    let auth_override =
        parse_override("authorization_endpoint", &overrides.authorization_endpoint)?;
    let token_override = parse_override("token_endpoint", &overrides.token_endpoint)?;
    let reg_override = parse_override("registration_endpoint", &overrides.registration_endpoint)?;
    let rev_override = parse_override("revocation_endpoint", &overrides.revocation_endpoint)?;
    let endpoints_pinned = auth_override.is_some() && token_override.is_some();
    let as_pinned = issuer_override.is_some() || endpoints_pinned;

    // 1. Protected-resource metadata.
    let prm = prm::find(probe, mcp, as_pinned).await?;
    let prm_doc = prm.used.as_ref().map(|(_, d)| d);

    // 2. The issuer: the override, else the PRM's first authorization server.
    let prm_servers = prm_doc
        .map(|d| d.authorization_servers.clone())
        .unwrap_or_default();
    let issuer = match (&overrides.issuer, prm_servers.first()) {
        (Some(i), _) => {
            probe.steps.push("issuer: override".into());
            Some(i.clone())
        }
        (None, Some(i)) => Some(i.clone()),
        (None, None) if endpoints_pinned => None,
        (None, None) => return Err(DiscoveryErrorKind::NoAuthorizationServer),
    };
    let skip = usize::from(overrides.issuer.is_none());
    let other_authorization_servers = prm_servers.iter().skip(skip).cloned().collect();

    // 3. Authorization-server metadata.
    let metadata = match &issuer {
        Some(issuer) => {
            let url = asm::issuer_url(issuer, issuer_override)?;
            asm::find(probe, issuer, &url, endpoints_pinned).await?
        }
        None => None,
    };
    let md = metadata.as_ref().map(|(_, d)| d);

    // 4. Endpoints: an override replaces, else the metadata.
    let mut pick = |field: &'static str, ov: Option<Url>, v: Option<&String>| {
        if ov.is_some() {
            probe.steps.push(format!("{field}: override"));
            return Ok(ov);
        }
        v.map(|s| {
            absolute_http(s).map_err(|reason| DiscoveryErrorKind::InvalidMetadata { field, reason })
        })
        .transpose()
    };
    let authorization_endpoint = pick(
        "authorization_endpoint",
        auth_override,
        md.and_then(|m| m.authorization_endpoint.as_ref()),
    )?
    .ok_or(DiscoveryErrorKind::MissingEndpoint {
        field: "authorization_endpoint",
    })?;
    let token_endpoint = pick(
        "token_endpoint",
        token_override,
        md.and_then(|m| m.token_endpoint.as_ref()),
    )?
    .ok_or(DiscoveryErrorKind::MissingEndpoint {
        field: "token_endpoint",
    })?;
    let registration_endpoint = pick(
        "registration_endpoint",
        reg_override,
        md.and_then(|m| m.registration_endpoint.as_ref()),
    )?;
    let revocation_endpoint = pick(
        "revocation_endpoint",
        rev_override,
        md.and_then(|m| m.revocation_endpoint.as_ref()),
    )?;

    // An unusable userinfo endpoint costs the account label only, never the connector.
    let userinfo_endpoint = md
        .and_then(|m| m.userinfo_endpoint.as_ref())
        .and_then(serde_json::Value::as_str)
        .and_then(|s| absolute_http(s).ok());

    // 5. PKCE.
    let pkce = asm::pkce_support(probe, md, options)?;

    // 6. The resource indicator.
    let resource = if overrides.omit_resource {
        probe.steps.push("resource: omitted by override".into());
        None
    } else if let Some(r) = &overrides.resource {
        probe.steps.push("resource: override".into());
        Some(r.clone())
    } else if let Some(doc) = prm_doc {
        doc.resource.clone()
    } else {
        Some(canonical_resource(mcp))
    };

    let challenge_scopes = prm
        .challenge
        .and_then(|c| c.scope)
        .map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty());
    Ok(Discovery {
        resource_metadata_url: prm.used.as_ref().map(|(u, _)| u.clone()),
        resource,
        issuer,
        authorization_endpoint,
        token_endpoint,
        registration_endpoint,
        revocation_endpoint,
        userinfo_endpoint,
        scopes_supported: prm_doc
            .map(|d| d.scopes_supported.clone())
            .unwrap_or_default(),
        challenge_scopes,
        other_authorization_servers,
        as_metadata_url: metadata.as_ref().map(|(u, _)| u.clone()),
        as_scopes_supported: md.map(|m| m.scopes_supported.clone()).unwrap_or_default(),
        token_endpoint_auth_methods_supported: md
            .and_then(|m| auth_methods(m.token_endpoint_auth_methods_supported.as_deref())),
        revocation_endpoint_auth_methods_supported: md
            .and_then(|m| auth_methods(m.revocation_endpoint_auth_methods_supported.as_deref())),
        pkce,
        iss_parameter_supported: md
            .and_then(|m| m.authorization_response_iss_parameter_supported)
            .unwrap_or(false),
        client_id_metadata_document_supported: md
            .and_then(|m| m.client_id_metadata_document_supported.as_ref())
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        steps: Vec::new(),
    })
}

/// A metadata list of authentication methods as recorded: cleaned, at most 16 entries of 64
/// characters; `None` when absent or empty (RFC 8414's default applies then).
fn auth_methods(list: Option<&[String]>) -> Option<Vec<String>> {
    let list: Vec<String> = list?
        .iter()
        .take(16)
        .map(|m| crate::oauth::text::clean(m, 64))
        .filter(|m| !m.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The MCP URL as an RFC 8707 resource: no fragment, and no trailing slash on a bare origin.
fn canonical_resource(url: &Url) -> String {
    let s = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        s.trim_end_matches('/').to_string()
    } else {
        s.to_string()
    }
}
