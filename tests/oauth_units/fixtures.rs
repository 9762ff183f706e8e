//! A working fake MCP server + authorization server for the discovery tests, and shortcuts to
//! run discovery against it.

use agp::domain::connector::Overrides;
use agp::oauth::discovery::{
    Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryOptions, discover,
};
use serde_json::json;

use crate::helpers::{Canned, FakeServer, client};

pub const PRM_SUFFIXED: &str = "/.well-known/oauth-protected-resource/mcp";
pub const PRM_ROOT: &str = "/.well-known/oauth-protected-resource";
pub const AS_ROOT: &str = "/.well-known/oauth-authorization-server";

pub fn prm(resource: &str, issuer: &str) -> Canned {
    Canned::json(
        200,
        json!({
            "resource": resource,
            "authorization_servers": [issuer, "https://backup-as.example"],
            "scopes_supported": ["files:read", "files:write"],
        }),
    )
}

pub fn as_metadata(issuer: &str, base: &str) -> serde_json::Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "scopes_supported": ["openid", "files:read"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "authorization_response_iss_parameter_supported": true,
    })
}

/// A fully working provider; the MCP endpoint answers 401 with no challenge.
pub async fn provider() -> FakeServer {
    let s = FakeServer::start().await;
    let mcp = format!("{}/mcp", s.base);
    s.route("POST /mcp", Canned::status(401));
    s.route(PRM_SUFFIXED, prm(&mcp, &s.base));
    s.route(AS_ROOT, Canned::json(200, as_metadata(&s.base, &s.base)));
    s
}

pub async fn run(
    s: &FakeServer,
    overrides: &Overrides,
    options: DiscoveryOptions,
) -> Result<Discovery, DiscoveryError> {
    discover(&client(), &s.url("/mcp"), overrides, &options).await
}

pub async fn ok(s: &FakeServer) -> Discovery {
    run(s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap()
}

pub async fn kind(s: &FakeServer) -> DiscoveryErrorKind {
    run(s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap_err()
        .kind
}
