//! Why discovery failed, with the steps taken so far (the connector view shows them).
//!
//! Strings taken from provider documents are cleaned and bounded before they enter an error.

use crate::oauth::egress::EgressError;

/// A failed discovery: what went wrong and every probe made before it.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct DiscoveryError {
    pub kind: DiscoveryErrorKind,
    /// One human line per probe, as in `Discovery::steps`.
    pub steps: Vec<String>,
}

/// The reason. Every variant surfaces as a failed `connectors add`/`reconnect` (HTTP 502 when
/// the provider misbehaved, 400 for the admin's own input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryErrorKind {
    /// The MCP server URL is unusable (400).
    #[error("invalid MCP server URL: {reason}")]
    InvalidServerUrl { reason: String },
    /// An admin override is not an absolute http(s) URL (400).
    #[error("invalid override {field}: {reason}")]
    InvalidOverride { field: &'static str, reason: String },
    /// The destination was refused or unreachable (502).
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// No protected-resource metadata at any location (502).
    #[error(
        "no OAuth protected-resource metadata found for the MCP server (RFC 9728); pass --issuer or the endpoint overrides"
    )]
    NoResourceMetadata,
    /// The PRM names another resource (S2) (502).
    #[error(
        "protected-resource metadata names resource {found:?}, which does not match {expected}"
    )]
    ResourceMismatch { found: String, expected: String },
    /// The PRM lists no authorization server (502).
    #[error("protected-resource metadata lists no authorization server; pass --issuer")]
    NoAuthorizationServer,
    /// The issuer is not an absolute http(s) URL without query or fragment (502).
    #[error("invalid issuer {issuer:?}: {reason}")]
    InvalidIssuer { issuer: String, reason: String },
    /// No metadata at any location for the issuer (502).
    #[error("no authorization-server metadata found for issuer {issuer} (RFC 8414 / OIDC)")]
    NoAuthorizationServerMetadata { issuer: String },
    /// Metadata was found but named another issuer, so it was not used (502).
    #[error("authorization-server metadata for {expected} names issuer {found:?}; not used")]
    IssuerMismatch { expected: String, found: String },
    /// Neither metadata nor an override gives this endpoint (502).
    #[error("no {field} discovered; pass the override")]
    MissingEndpoint { field: &'static str },
    /// A metadata field is not an absolute http(s) URL (502).
    #[error("authorization-server metadata field {field} is invalid: {reason}")]
    InvalidMetadata { field: &'static str, reason: String },
    /// `code_challenge_methods_supported` is absent or empty, or there is no metadata (502).
    #[error(
        "the authorization server does not advertise PKCE S256 support (code_challenge_methods_supported {state}); refusing the connector"
    )]
    PkceMetadataMissing { state: &'static str },
    /// `code_challenge_methods_supported` lists methods, none of them S256 (502).
    #[error("the authorization server does not support PKCE S256 (it advertises {advertised:?})")]
    PkceS256NotSupported { advertised: Vec<String> },
}
