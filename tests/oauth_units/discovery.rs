//! Discovery against a fake MCP server + authorization server on 127.0.0.1: the three PRM
//! routes, the resource and issuer checks, PKCE, the probe order for an issuer with a path,
//! and overrides.

use agp::domain::connector::{DiscoveredMetadata, Overrides};
use agp::oauth::discovery::{
    Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryOptions, PkceSupport, discover,
};
use serde_json::json;

use crate::helpers::{Canned, FakeServer, client};

const PRM_SUFFIXED: &str = "/.well-known/oauth-protected-resource/mcp";
const PRM_ROOT: &str = "/.well-known/oauth-protected-resource";
const AS_ROOT: &str = "/.well-known/oauth-authorization-server";

fn prm(s: &FakeServer, resource: &str, issuer: &str) -> Canned {
    let _ = s;
    Canned::json(
        200,
        json!({
            "resource": resource,
            "authorization_servers": [issuer, "https://backup-as.example"],
            "scopes_supported": ["files:read", "files:write"],
        }),
    )
}

fn as_metadata(issuer: &str, base: &str) -> serde_json::Value {
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
async fn provider() -> FakeServer {
    let s = FakeServer::start().await;
    let mcp = format!("{}/mcp", s.base);
    s.route("POST /mcp", Canned::status(401));
    s.route(PRM_SUFFIXED, prm(&s, &mcp, &s.base));
    s.route(AS_ROOT, Canned::json(200, as_metadata(&s.base, &s.base)));
    s
}

async fn run(
    s: &FakeServer,
    overrides: &Overrides,
    options: DiscoveryOptions,
) -> Result<Discovery, DiscoveryError> {
    discover(&client(), &s.url("/mcp"), overrides, &options).await
}

async fn ok(s: &FakeServer) -> Discovery {
    run(s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap()
}

async fn kind(s: &FakeServer) -> DiscoveryErrorKind {
    run(s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap_err()
        .kind
}

#[tokio::test]
async fn discovers_via_www_authenticate() {
    let s = provider().await;
    let header = format!(
        r#"Bearer error="invalid_token", resource_metadata="{}/custom/prm", scope="files:read""#,
        s.base
    );
    s.route(
        "POST /mcp",
        Canned::status(401).with_header("www-authenticate", &header),
    );
    s.route("/custom/prm", prm(&s, &format!("{}/mcp", s.base), &s.base));
    let d = ok(&s).await;
    assert_eq!(
        s.lines(),
        [
            "POST /mcp",
            "GET /custom/prm",
            format!("GET {AS_ROOT}").as_str()
        ]
    );
    assert_eq!(
        d.resource_metadata_url.as_ref().map(|u| u.path()),
        Some("/custom/prm")
    );
    assert_eq!(d.challenge_scopes, Some(vec!["files:read".to_string()]));
    assert_eq!(d.default_scopes(), ["files:read"]);
    assert_eq!(d.scopes_supported, ["files:read", "files:write"]);
    assert_eq!(d.issuer.as_deref(), Some(s.base.as_str()));
    assert_eq!(d.other_authorization_servers, ["https://backup-as.example"]);
    assert_eq!(d.pkce, PkceSupport::Advertised);
    assert!(d.iss_parameter_supported);
    assert_eq!(
        d.token_endpoint_auth_methods_supported,
        ["client_secret_basic", "none"]
    );
    // The initialize probe is a JSON-RPC POST.
    let first = &s.log()[0];
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["method"], "initialize");

    let m = DiscoveredMetadata::from(&d);
    assert_eq!(
        m.resource.as_deref(),
        Some(format!("{}/mcp", s.base).as_str())
    );
    assert_eq!(m.token_endpoint, Some(format!("{}/token", s.base)));
    assert_eq!(
        m.registration_endpoint,
        Some(format!("{}/register", s.base))
    );
    assert_eq!(m.revocation_endpoint, Some(format!("{}/revoke", s.base)));
    assert_eq!(m.scopes_supported, ["files:read", "files:write"]);
    assert_eq!(
        m.steps,
        [
            format!(
                "mcp POST {}/mcp → 401, WWW-Authenticate resource_metadata",
                s.base
            ),
            format!("prm (WWW-Authenticate) GET {}/custom/prm → 200", s.base),
            format!("as-metadata (rfc8414) GET {}{AS_ROOT} → 200", s.base),
        ]
    );
}

#[tokio::test]
async fn discovers_via_path_suffixed_prm_after_405() {
    let s = provider().await;
    s.route("POST /mcp", Canned::status(405));
    s.route("GET /mcp", Canned::status(401));
    let d = ok(&s).await;
    assert_eq!(
        s.lines(),
        [
            "POST /mcp",
            "GET /mcp",
            &format!("GET {PRM_SUFFIXED}"),
            &format!("GET {AS_ROOT}")
        ]
    );
    assert_eq!(
        d.resource_metadata_url.as_ref().unwrap().path(),
        PRM_SUFFIXED
    );
    assert_eq!(d.challenge_scopes, None);
    assert_eq!(d.default_scopes(), ["files:read", "files:write"]);
}

/// The path-suffixed location answers HTML (an SPA catch-all): not JSON, so the root is tried.
#[tokio::test]
async fn discovers_via_root_prm() {
    let s = provider().await;
    s.route(
        PRM_SUFFIXED,
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<html/>".into(),
        },
    );
    s.route(PRM_ROOT, prm(&s, &s.base, &s.base));
    let d = ok(&s).await;
    assert_eq!(
        s.lines(),
        [
            "POST /mcp",
            &format!("GET {PRM_SUFFIXED}"),
            &format!("GET {PRM_ROOT}"),
            &format!("GET {AS_ROOT}")
        ]
    );
    assert_eq!(d.resource.as_deref(), Some(s.base.as_str()));
    assert!(d.steps[1].contains("not JSON"), "{:?}", d.steps);
}

#[tokio::test]
async fn prm_naming_another_origin_is_refused() {
    let s = provider().await;
    s.route(PRM_SUFFIXED, prm(&s, "https://evil.example/mcp", &s.base));
    let err = run(&s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, DiscoveryErrorKind::ResourceMismatch { .. }),
        "{}",
        err
    );
    assert_eq!(err.steps.len(), 2);
    // No authorization-server request was made.
    assert_eq!(s.lines(), ["POST /mcp", &format!("GET {PRM_SUFFIXED}")]);
}

#[tokio::test]
async fn as_metadata_with_another_issuer_is_not_used() {
    let s = provider().await;
    s.route(
        AS_ROOT,
        Canned::json(200, as_metadata("https://evil.example", &s.base)),
    );
    s.route(
        "/.well-known/openid-configuration",
        Canned::json(200, as_metadata(&format!("{}/", s.base), &s.base)),
    );
    match kind(&s).await {
        DiscoveryErrorKind::IssuerMismatch { found, .. } => {
            assert_eq!(found, "https://evil.example")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.lines()[2..],
        [
            format!("GET {AS_ROOT}"),
            "GET /.well-known/openid-configuration".to_string()
        ]
    );
}

#[tokio::test]
async fn pkce_s256_must_be_advertised() {
    for (methods, want_state) in [
        (None, Some("absent")),
        (Some(json!([])), Some("empty")),
        (Some(json!(["plain"])), None),
    ] {
        let s = provider().await;
        let mut md = as_metadata(&s.base, &s.base);
        match &methods {
            None => drop(
                md.as_object_mut()
                    .unwrap()
                    .remove("code_challenge_methods_supported"),
            ),
            Some(m) => md["code_challenge_methods_supported"] = m.clone(),
        }
        s.route(AS_ROOT, Canned::json(200, md));
        let err = kind(&s).await;
        match (want_state, &err) {
            (Some(w), DiscoveryErrorKind::PkceMetadataMissing { state }) => assert_eq!(*state, w),
            (None, DiscoveryErrorKind::PkceS256NotSupported { advertised }) => {
                assert_eq!(advertised, &["plain"])
            }
            _ => panic!("{methods:?}: {err:?}"),
        }
        assert!(err.to_string().contains("S256"), "{err}");
        // The relaxation covers missing metadata, never a list without S256.
        let relaxed = run(
            &s,
            &Overrides::default(),
            DiscoveryOptions {
                allow_missing_pkce_metadata: true,
            },
        )
        .await;
        match want_state {
            Some(_) => assert_eq!(relaxed.unwrap().pkce, PkceSupport::AssumedByRelaxation),
            None => assert!(relaxed.is_err()),
        }
    }
}

/// An issuer with a path: RFC 8414 insertion, OIDC insertion, OIDC appending, in that order.
#[tokio::test]
async fn issuer_with_a_path_is_probed_in_spec_order() {
    let s = provider().await;
    let issuer = format!("{}/tenant1", s.base);
    s.route(PRM_SUFFIXED, prm(&s, &format!("{}/mcp", s.base), &issuer));
    s.route(
        "/tenant1/.well-known/openid-configuration",
        Canned::json(200, as_metadata(&issuer, &s.base)),
    );
    let d = ok(&s).await;
    assert_eq!(
        s.lines()[2..],
        [
            "GET /.well-known/oauth-authorization-server/tenant1",
            "GET /.well-known/openid-configuration/tenant1",
            "GET /tenant1/.well-known/openid-configuration",
        ]
    );
    assert_eq!(d.issuer.as_deref(), Some(issuer.as_str()));
    assert_eq!(
        d.as_metadata_url.unwrap().path(),
        "/tenant1/.well-known/openid-configuration"
    );
}

#[tokio::test]
async fn overrides_replace_discovered_values() {
    let s = provider().await;
    let other = format!("{}/other", s.base);
    s.route(
        "/.well-known/oauth-authorization-server/other",
        Canned::json(200, as_metadata(&other, &format!("{}/o", s.base))),
    );
    let overrides = Overrides {
        issuer: Some(other.clone()),
        token_endpoint: Some("https://tokens.example/t".into()),
        registration_endpoint: Some("https://reg.example/r".into()),
        resource: Some("https://api.example".into()),
        ..Overrides::default()
    };
    let d = run(&s, &overrides, DiscoveryOptions::default())
        .await
        .unwrap();
    assert_eq!(d.issuer.as_deref(), Some(other.as_str()));
    assert!(
        s.lines()
            .contains(&"GET /.well-known/oauth-authorization-server/other".to_string())
    );
    assert!(!s.lines().contains(&format!("GET {AS_ROOT}")));
    assert_eq!(
        d.authorization_endpoint.as_str(),
        format!("{}/o/authorize", s.base)
    );
    assert_eq!(d.token_endpoint.as_str(), "https://tokens.example/t");
    assert_eq!(
        d.registration_endpoint.unwrap().as_str(),
        "https://reg.example/r"
    );
    assert_eq!(
        d.revocation_endpoint.unwrap().as_str(),
        format!("{}/o/revoke", s.base)
    );
    assert_eq!(d.resource.as_deref(), Some("https://api.example"));
    assert!(d.steps.iter().any(|l| l == "token_endpoint: override"));

    let omit = Overrides {
        omit_resource: true,
        ..Overrides::default()
    };
    assert_eq!(
        run(&s, &omit, DiscoveryOptions::default())
            .await
            .unwrap()
            .resource,
        None
    );

    let bad = Overrides {
        token_endpoint: Some("not a url".into()),
        ..Overrides::default()
    };
    let err = run(&s, &bad, DiscoveryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind,
        DiscoveryErrorKind::InvalidOverride {
            field: "token_endpoint",
            ..
        }
    ));
}

/// Both endpoints overridden and no metadata anywhere: usable only with the PKCE relaxation,
/// which the result states.
#[tokio::test]
async fn pinned_endpoints_without_metadata_need_the_relaxation() {
    let s = FakeServer::start().await;
    s.route("POST /mcp", Canned::status(401));
    let overrides = Overrides {
        authorization_endpoint: Some("https://as.example/authorize".into()),
        token_endpoint: Some("https://as.example/token".into()),
        ..Overrides::default()
    };
    let err = run(&s, &overrides, DiscoveryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        DiscoveryErrorKind::PkceMetadataMissing {
            state: "unknown: no metadata"
        }
    );
    let d = run(
        &s,
        &overrides,
        DiscoveryOptions {
            allow_missing_pkce_metadata: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(d.pkce, PkceSupport::AssumedByRelaxation);
    assert_eq!(d.issuer, None);
    assert!(!d.iss_parameter_supported);
    assert_eq!(
        d.resource.as_deref(),
        Some(format!("{}/mcp", s.base).as_str())
    );
}

#[tokio::test]
async fn no_metadata_at_all_is_a_clear_error() {
    let s = FakeServer::start().await;
    let err = run(&s, &Overrides::default(), DiscoveryOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, DiscoveryErrorKind::NoResourceMetadata);
    assert_eq!(
        err.steps,
        [
            format!("mcp POST {}/mcp → 404", s.base),
            format!("prm GET {}{PRM_SUFFIXED} → 404", s.base),
            format!("prm GET {}{PRM_ROOT} → 404", s.base),
        ]
    );
}

/// A redirect from a metadata location is recorded, not followed; the next location is tried.
#[tokio::test]
async fn metadata_redirect_is_not_followed() {
    let s = provider().await;
    let internal = format!("{}/internal", s.base);
    s.route(
        PRM_SUFFIXED,
        Canned::status(302).with_header("location", &internal),
    );
    s.route(PRM_ROOT, prm(&s, &s.base, &s.base));
    let d = ok(&s).await;
    assert!(!s.lines().iter().any(|l| l.contains("/internal")));
    assert!(
        d.steps
            .iter()
            .any(|l| l.contains("redirects are not followed"))
    );
}

#[tokio::test]
async fn steps_never_carry_query_strings() {
    let s = provider().await;
    let url = s.url("/mcp?key=S3CRET-Q");
    let d = discover(
        &client(),
        &url,
        &Overrides::default(),
        &DiscoveryOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        d.steps.iter().all(|l| !l.contains("S3CRET")),
        "{:?}",
        d.steps
    );
    assert!(d.steps[0].ends_with("/mcp?… → 401"), "{:?}", d.steps);
}
