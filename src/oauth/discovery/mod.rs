//! Discovery (S1, S2): from an MCP server URL to the endpoints, issuer and resource AGP will use.
//!
//! Order (MCP authorization spec 2025-11-25): an unauthenticated `initialize` POST to the MCP
//! URL and its `WWW-Authenticate: Bearer resource_metadata=…` challenge; else the RFC 9728
//! well-known locations (path-suffixed, then root). Then the issuer's metadata in the spec's
//! probe order (see [`asm::metadata_candidates`]).
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

use serde::de::DeserializeOwned;
use url::Url;

use crate::domain::connector::{DiscoveredMetadata, Overrides};
use crate::oauth::egress::{EgressClient, EgressError, METADATA_CAP, read_json_capped, redacted};
use crate::oauth::text::clean;

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
    /// The PRM's `scopes_supported` (what the MCP server advertises).
    pub scopes_supported: Vec<String>,
    /// The `scope` of the 401 challenge, which the MCP spec prefers over `scopes_supported`.
    pub challenge_scopes: Option<Vec<String>>,
    /// `authorization_servers` after the first (recorded, not used).
    pub other_authorization_servers: Vec<String>,
    /// The AS metadata document that was used, if any.
    pub as_metadata_url: Option<Url>,
    pub as_scopes_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub pkce: PkceSupport,
    /// RFC 9207: the callback must carry `iss` when this is true.
    pub iss_parameter_supported: bool,
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
            steps: d.steps.clone(),
        }
    }
}

/// Parse an admin-supplied URL override.
fn parse_override(
    field: &'static str,
    value: &Option<String>,
) -> Result<Option<Url>, DiscoveryErrorKind> {
    let Some(value) = value else { return Ok(None) };
    absolute_http(value)
        .map(Some)
        .map_err(|reason| DiscoveryErrorKind::InvalidOverride { field, reason })
}

fn absolute_http(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("not an absolute https URL".into());
    }
    if url.fragment().is_some() {
        return Err("has a fragment".into());
    }
    Ok(url)
}

/// Probe log, and the fetch helper that writes to it.
struct Probe<'a> {
    client: &'a EgressClient,
    steps: Vec<String>,
}

impl Probe<'_> {
    /// GET a metadata document. `Ok(None)` when this location has no usable document (status,
    /// content type, parse, size, redirect — recorded); `Err` when the destination itself is
    /// refused or unreachable.
    async fn fetch<T: DeserializeOwned>(
        &mut self,
        label: &str,
        url: &Url,
    ) -> Result<Option<T>, EgressError> {
        let line = format!("{label} GET {}", redacted(url));
        let sent = match self.client.get(url) {
            Ok(req) => req.header("accept", "application/json").send().await,
            Err(e) => Err(e),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return self.miss_or_fail(line, e),
        };
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            self.steps.push(format!("{line} → {status}"));
            return Ok(None);
        }
        match read_json_capped(resp, METADATA_CAP).await {
            Ok(doc) => {
                self.steps.push(format!("{line} → {status}"));
                Ok(Some(doc))
            }
            Err(e) => self.miss_or_fail(format!("{line} → {status}"), e),
        }
    }

    fn miss_or_fail<T>(&mut self, line: String, e: EgressError) -> Result<Option<T>, EgressError> {
        self.steps.push(format!("{line} → {e}"));
        if e.is_document_miss() {
            Ok(None)
        } else {
            Err(e)
        }
    }

    fn fail(self, kind: impl Into<DiscoveryErrorKind>) -> DiscoveryError {
        DiscoveryError {
            kind: kind.into(),
            steps: self.steps,
        }
    }
}

/// Run discovery for `mcp_server_url` (see the module doc for the order and the invariants).
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
    macro_rules! tri {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err(probe.fail(e)),
            }
        };
    }
    if let Err(reason) = absolute_http(mcp_server_url.as_str()) {
        return Err(probe.fail(DiscoveryErrorKind::InvalidServerUrl { reason }));
    }
    let issuer_override = tri!(parse_override("issuer", &overrides.issuer));
    let auth_override = tri!(parse_override(
        "authorization_endpoint",
        &overrides.authorization_endpoint
    ));
    let token_override = tri!(parse_override("token_endpoint", &overrides.token_endpoint));
    let reg_override = tri!(parse_override(
        "registration_endpoint",
        &overrides.registration_endpoint
    ));
    let rev_override = tri!(parse_override(
        "revocation_endpoint",
        &overrides.revocation_endpoint
    ));
    let endpoints_pinned = auth_override.is_some() && token_override.is_some();
    let as_pinned = issuer_override.is_some() || endpoints_pinned;

    // 1. Protected-resource metadata.
    let challenge = tri!(probe_mcp(&mut probe, mcp_server_url).await);
    let mut prm_candidates: Vec<(&str, Url)> = Vec::new();
    if let Some(rm) = challenge
        .as_ref()
        .and_then(|c| c.resource_metadata.as_deref())
    {
        match absolute_http(rm) {
            Ok(url) => prm_candidates.push(("prm (WWW-Authenticate)", url)),
            Err(reason) => probe.steps.push(format!(
                "WWW-Authenticate resource_metadata ignored: {reason}"
            )),
        }
    }
    if let Some(url) = prm::well_known_inserted(mcp_server_url, "oauth-protected-resource") {
        prm_candidates.push(("prm", url));
    }
    if let Some(url) = prm::well_known_root(mcp_server_url, "oauth-protected-resource") {
        prm_candidates.push(("prm", url));
    }
    let mut found_prm = None;
    for (label, url) in prm_candidates {
        if let Some(doc) = tri!(
            probe
                .fetch::<prm::ProtectedResourceMetadata>(label, &url)
                .await
        ) {
            found_prm = Some((url, doc));
            break;
        }
    }
    let mut prm_used = None;
    match found_prm {
        Some((url, doc)) => {
            let resource = doc.resource.clone().unwrap_or_default();
            if resource_matches(&resource, mcp_server_url) {
                prm_used = Some((url, doc));
            } else if as_pinned {
                probe.steps.push(format!(
                    "prm not used: resource {:?} does not match",
                    clean(&resource, 200)
                ));
            } else {
                return Err(probe.fail(DiscoveryErrorKind::ResourceMismatch {
                    found: clean(&resource, 200),
                    expected: redacted(mcp_server_url),
                }));
            }
        }
        None if as_pinned => probe
            .steps
            .push("prm: none found; authorization server pinned by override".into()),
        None => return Err(probe.fail(DiscoveryErrorKind::NoResourceMetadata)),
    }

    // 2. The issuer.
    let prm_servers = prm_used
        .as_ref()
        .map(|(_, d)| d.authorization_servers.clone())
        .unwrap_or_default();
    let issuer: Option<String> = match (&overrides.issuer, prm_servers.first()) {
        (Some(i), _) => {
            probe.steps.push("issuer: override".into());
            Some(i.clone())
        }
        (None, Some(i)) => Some(i.clone()),
        (None, None) if endpoints_pinned => None,
        (None, None) => return Err(probe.fail(DiscoveryErrorKind::NoAuthorizationServer)),
    };
    let other_authorization_servers: Vec<String> = if overrides.issuer.is_some() {
        prm_servers.clone()
    } else {
        prm_servers.iter().skip(1).cloned().collect()
    };

    // 3. Authorization-server metadata.
    let mut metadata = None;
    if let Some(issuer) = &issuer {
        let issuer_url = match (issuer_override.clone(), absolute_http(issuer)) {
            (Some(u), _) => u,
            (None, Ok(u)) if u.query().is_none() => u,
            (None, Ok(_)) => {
                return Err(probe.fail(DiscoveryErrorKind::InvalidIssuer {
                    issuer: clean(issuer, 200),
                    reason: "has a query".into(),
                }));
            }
            (None, Err(reason)) => {
                return Err(probe.fail(DiscoveryErrorKind::InvalidIssuer {
                    issuer: clean(issuer, 200),
                    reason,
                }));
            }
        };
        let mut mismatch = None;
        for (label, url) in metadata_candidates(&issuer_url) {
            let Some(doc) = tri!(
                probe
                    .fetch::<asm::AuthorizationServerMetadata>(label, &url)
                    .await
            ) else {
                continue;
            };
            if doc.issuer.as_deref() == Some(issuer.as_str()) {
                metadata = Some((url, doc));
                break;
            }
            let found = clean(doc.issuer.as_deref().unwrap_or("(none)"), 200);
            probe.steps.push(format!(
                "as-metadata not used: issuer {found:?} is not {issuer:?}"
            ));
            mismatch.get_or_insert(found);
        }
        if metadata.is_none() && !endpoints_pinned {
            return Err(probe.fail(match mismatch {
                Some(found) => DiscoveryErrorKind::IssuerMismatch {
                    expected: clean(issuer, 200),
                    found,
                },
                None => DiscoveryErrorKind::NoAuthorizationServerMetadata {
                    issuer: clean(issuer, 200),
                },
            }));
        }
    }
    let md = metadata.as_ref().map(|(_, d)| d);

    // 4. Endpoints: an override replaces, else the metadata.
    let from_md = |field: &'static str,
                   v: Option<&String>|
     -> Result<Option<Url>, DiscoveryErrorKind> {
        v.map(|s| {
            absolute_http(s).map_err(|reason| DiscoveryErrorKind::InvalidMetadata { field, reason })
        })
        .transpose()
    };
    let pick =
        |steps: &mut Vec<String>, field: &'static str, ov: Option<Url>, v: Option<&String>| {
            if ov.is_some() {
                steps.push(format!("{field}: override"));
                return Ok(ov);
            }
            from_md(field, v)
        };
    let authorization_endpoint = tri!(pick(
        &mut probe.steps,
        "authorization_endpoint",
        auth_override,
        md.and_then(|m| m.authorization_endpoint.as_ref())
    ));
    let token_endpoint = tri!(pick(
        &mut probe.steps,
        "token_endpoint",
        token_override,
        md.and_then(|m| m.token_endpoint.as_ref())
    ));
    let registration_endpoint = tri!(pick(
        &mut probe.steps,
        "registration_endpoint",
        reg_override,
        md.and_then(|m| m.registration_endpoint.as_ref())
    ));
    let revocation_endpoint = tri!(pick(
        &mut probe.steps,
        "revocation_endpoint",
        rev_override,
        md.and_then(|m| m.revocation_endpoint.as_ref())
    ));
    let Some(authorization_endpoint) = authorization_endpoint else {
        return Err(probe.fail(DiscoveryErrorKind::MissingEndpoint {
            field: "authorization_endpoint",
        }));
    };
    let Some(token_endpoint) = token_endpoint else {
        return Err(probe.fail(DiscoveryErrorKind::MissingEndpoint {
            field: "token_endpoint",
        }));
    };

    // 5. PKCE.
    let methods = md.and_then(|m| m.code_challenge_methods_supported.clone());
    let pkce = match methods.as_deref() {
        Some(list) if list.iter().any(|m| m == "S256") => PkceSupport::Advertised,
        Some(list) if !list.is_empty() => {
            return Err(probe.fail(DiscoveryErrorKind::PkceS256NotSupported {
                advertised: list.iter().take(8).map(|m| clean(m, 32)).collect(),
            }));
        }
        _ if options.allow_missing_pkce_metadata => {
            probe
                .steps
                .push("pkce: S256 not advertised; accepted by relaxation".into());
            PkceSupport::AssumedByRelaxation
        }
        other => {
            let state = match (md, other) {
                (None, _) => "unknown: no metadata",
                (Some(_), None) => "absent",
                (Some(_), Some(_)) => "empty",
            };
            return Err(probe.fail(DiscoveryErrorKind::PkceMetadataMissing { state }));
        }
    };

    // 6. The resource indicator.
    let resource = if overrides.omit_resource {
        probe.steps.push("resource: omitted by override".into());
        None
    } else if let Some(r) = &overrides.resource {
        probe.steps.push("resource: override".into());
        Some(r.clone())
    } else if let Some((_, doc)) = &prm_used {
        doc.resource.clone()
    } else {
        Some(canonical_resource(mcp_server_url))
    };

    let challenge_scopes = challenge
        .and_then(|c| c.scope)
        .map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty());
    Ok(Discovery {
        resource_metadata_url: prm_used.as_ref().map(|(u, _)| u.clone()),
        resource,
        issuer,
        authorization_endpoint,
        token_endpoint,
        registration_endpoint,
        revocation_endpoint,
        scopes_supported: prm_used
            .as_ref()
            .map(|(_, d)| d.scopes_supported.clone())
            .unwrap_or_default(),
        challenge_scopes,
        other_authorization_servers,
        as_metadata_url: metadata.as_ref().map(|(u, _)| u.clone()),
        as_scopes_supported: md.map(|m| m.scopes_supported.clone()).unwrap_or_default(),
        token_endpoint_auth_methods_supported: md
            .map(|m| m.token_endpoint_auth_methods_supported.clone())
            .unwrap_or_default(),
        pkce,
        iss_parameter_supported: md
            .and_then(|m| m.authorization_response_iss_parameter_supported)
            .unwrap_or(false),
        steps: probe.steps,
    })
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

/// The unauthenticated MCP request: an `initialize` POST (what streamable-HTTP servers answer
/// with 401); a 405 gets one GET. Returns the Bearer challenge of a 401, if any.
async fn probe_mcp(
    probe: &mut Probe<'_>,
    url: &Url,
) -> Result<Option<BearerChallenge>, EgressError> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "agp", "version": env!("CARGO_PKG_VERSION") }
        }
    });
    for method in ["POST", "GET"] {
        let line = format!("mcp {method} {}", redacted(url));
        let req = if method == "POST" {
            probe.client.post(url).map(|r| r.json(&body))
        } else {
            probe.client.get(url)
        };
        let sent = match req {
            Ok(r) => {
                r.header("accept", "application/json, text/event-stream")
                    .send()
                    .await
            }
            Err(e) => Err(e),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                probe.miss_or_fail::<()>(line, e)?;
                return Ok(None);
            }
        };
        let status = resp.status().as_u16();
        let challenge = if status == 401 {
            let values = resp.headers().get_all(reqwest::header::WWW_AUTHENTICATE);
            parse_bearer_challenge(values.iter().filter_map(|v| v.to_str().ok()))
        } else {
            None
        };
        let note = match &challenge {
            Some(c) if c.resource_metadata.is_some() => ", WWW-Authenticate resource_metadata",
            Some(_) => ", WWW-Authenticate Bearer without resource_metadata",
            None => "",
        };
        probe.steps.push(format!("{line} → {status}{note}"));
        if status != 405 {
            return Ok(challenge);
        }
    }
    Ok(None)
}
