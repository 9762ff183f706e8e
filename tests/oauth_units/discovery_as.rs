//! Discovery, authorization-server side: the `issuer` check, PKCE S256, the probe order for an
//! issuer with a path, and admin overrides.

use agp::domain::connector::Overrides;
use agp::oauth::discovery::{DiscoveryErrorKind, DiscoveryOptions, PkceSupport};
use serde_json::json;

use crate::fixtures::*;
use crate::helpers::{Canned, FakeServer};

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
    s.route(PRM_SUFFIXED, prm(&format!("{}/mcp", s.base), &issuer));
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

/// `userinfo_endpoint` is read for the connector's account only: absent or unusable, it is
/// `None` and discovery goes on.
#[tokio::test]
async fn the_userinfo_endpoint_is_kept_when_usable() {
    let s = provider().await;
    assert_eq!(ok(&s).await.userinfo_endpoint, None, "absent");
    for (advertised, want) in [
        (
            json!(format!("{}/me", s.base)),
            Some(format!("{}/me", s.base)),
        ),
        (json!("not a url"), None),
        (json!("ftp://as.example/me"), None),
        (json!(42), None),
    ] {
        let mut doc = as_metadata(&s.base, &s.base);
        doc["userinfo_endpoint"] = advertised.clone();
        s.route(AS_ROOT, Canned::json(200, doc));
        let d = ok(&s).await;
        assert_eq!(
            d.userinfo_endpoint.map(|u| u.to_string()),
            want,
            "{advertised}"
        );
    }
}

/// `client_id_metadata_document_supported` (draft-ietf-oauth-client-id-metadata-document §5):
/// only a JSON `true` counts; absent, `false` or a malformed value is "not offered", and a
/// malformed value costs nothing else of the metadata.
#[tokio::test]
async fn client_id_metadata_document_support_is_read_from_the_metadata() {
    for (value, offered) in [
        (None, false),
        (Some(json!(true)), true),
        (Some(json!(false)), false),
        (Some(json!("true")), false),
        (Some(json!({"yes": 1})), false),
    ] {
        let s = FakeServer::start().await;
        let mcp = format!("{}/mcp", s.base);
        s.route("POST /mcp", Canned::status(401));
        s.route(PRM_SUFFIXED, prm(&mcp, &s.base));
        let mut md = as_metadata(&s.base, &s.base);
        if let Some(v) = value.clone() {
            md["client_id_metadata_document_supported"] = v;
        }
        s.route(AS_ROOT, Canned::json(200, md));
        let d = ok(&s).await;
        assert_eq!(
            d.client_id_metadata_document_supported, offered,
            "{value:?}"
        );
        assert!(
            d.iss_parameter_supported,
            "the rest of the metadata is used"
        );
    }
}
