//! Discovery, protected-resource side: the three PRM routes (challenge, path-suffixed, root),
//! the `resource` check, redirects, and steps without query strings.

use agp::domain::connector::{DiscoveredMetadata, Overrides};
use agp::oauth::discovery::{DiscoveryErrorKind, DiscoveryOptions, PkceSupport, discover};

use crate::fixtures::*;
use crate::helpers::{Canned, FakeServer, client};

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
    s.route("/custom/prm", prm(&format!("{}/mcp", s.base), &s.base));
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
        d.token_endpoint_auth_methods_supported.as_deref(),
        Some(&["client_secret_basic".to_string(), "none".to_string()][..])
    );
    assert_eq!(d.revocation_endpoint_auth_methods_supported, None);
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
    s.route(PRM_ROOT, prm(&s.base, &s.base));
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
    s.route(PRM_SUFFIXED, prm("https://evil.example/mcp", &s.base));
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
    s.route(PRM_ROOT, prm(&s.base, &s.base));
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
