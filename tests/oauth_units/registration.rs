//! Dynamic client registration: the exact request body, response validation, and clean
//! provider errors.

use agp::domain::connector::TokenAuthMethod;
use agp::oauth::registration::{RegistrationError, RegistrationRequest, register};
use secrecy::ExposeSecret;
use serde_json::json;
use url::Url;

use crate::helpers::{Canned, FakeServer, client};

const CALLBACK: &str = "https://agp.example.com/connect/callback";

fn request(scope: Option<&str>) -> RegistrationRequest {
    RegistrationRequest {
        client_name: "AGP notion".into(),
        redirect_uri: Url::parse(CALLBACK).unwrap(),
        scope: scope.map(str::to_string),
        token_endpoint_auth_method: TokenAuthMethod::ClientSecretBasic,
    }
}

#[tokio::test]
async fn the_request_asks_for_the_chosen_method() {
    let s = FakeServer::start().await;
    s.route(
        "POST /register",
        issued(json!({"token_endpoint_auth_method": "client_secret_post"})),
    );
    let req = RegistrationRequest {
        token_endpoint_auth_method: TokenAuthMethod::ClientSecretPost,
        ..request(None)
    };
    let reg = register(&client(), &s.url("/register"), &req)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&s.log()[0].body).unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(
        reg.token_endpoint_auth_method,
        TokenAuthMethod::ClientSecretPost
    );
}

async fn answer(
    canned: Canned,
    scope: Option<&str>,
) -> (
    FakeServer,
    Result<agp::oauth::registration::ClientRegistration, RegistrationError>,
) {
    let s = FakeServer::start().await;
    s.route("POST /register", canned);
    let r = register(&client(), &s.url("/register"), &request(scope)).await;
    (s, r)
}

fn issued(extra: serde_json::Value) -> Canned {
    let mut body = json!({
        "client_id": "cid-123",
        "client_secret": "CANARY-SECRET",
        "client_secret_expires_at": 0,
        "registration_access_token": "CANARY-RAT",
        "registration_client_uri": "https://as.example/register/cid-123",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    Canned::json(201, body)
}

#[tokio::test]
async fn request_body_is_exactly_as_specified() {
    let (s, r) = answer(issued(json!({})), Some("files:read files:write")).await;
    let reg = r.unwrap();
    let log = s.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(log[0].authorization, None);
    let body: serde_json::Value = serde_json::from_str(&log[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "client_name": "AGP notion",
            "redirect_uris": [CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "application_type": "web",
            "scope": "files:read files:write",
        })
    );
    assert_eq!(reg.client_id, "cid-123");
    assert_eq!(
        reg.client_secret.as_ref().unwrap().expose_secret(),
        "CANARY-SECRET"
    );
    assert_eq!(
        reg.registration_access_token
            .as_ref()
            .unwrap()
            .expose_secret(),
        "CANARY-RAT"
    );
    assert_eq!(
        reg.registration_client_uri.as_ref().unwrap().as_str(),
        "https://as.example/register/cid-123"
    );
    assert_eq!(
        reg.token_endpoint_auth_method,
        TokenAuthMethod::ClientSecretBasic
    );
    assert_eq!(reg.client_secret_expires_at, Some(0));
    let debug = format!("{reg:?}");
    assert!(!debug.contains("CANARY"), "{debug}");

    // Without a scope, no `scope` member at all.
    let (s, r) = answer(issued(json!({})), None).await;
    r.unwrap();
    let body: serde_json::Value = serde_json::from_str(&s.log()[0].body).unwrap();
    assert!(body.get("scope").is_none());
}

#[tokio::test]
async fn the_providers_choice_of_auth_method_is_recorded_or_refused() {
    let (_, r) = answer(
        issued(json!({"token_endpoint_auth_method": "client_secret_post"})),
        None,
    )
    .await;
    assert_eq!(
        r.unwrap().token_endpoint_auth_method,
        TokenAuthMethod::ClientSecretPost
    );

    // `none`: a public client; any secret is not kept.
    let (_, r) = answer(issued(json!({"token_endpoint_auth_method": "none"})), None).await;
    let reg = r.unwrap();
    assert_eq!(reg.token_endpoint_auth_method, TokenAuthMethod::None);
    assert!(reg.client_secret.is_none());

    // Absent: RFC 7591's default, client_secret_basic. 200 is accepted like 201.
    let mut c = issued(json!({"token_endpoint_auth_method": null}));
    c.status = 200;
    let (_, r) = answer(c, None).await;
    assert_eq!(
        r.unwrap().token_endpoint_auth_method,
        TokenAuthMethod::ClientSecretBasic
    );

    let (_, r) = answer(
        issued(json!({"token_endpoint_auth_method": "private_key_jwt"})),
        None,
    )
    .await;
    assert!(
        matches!(r, Err(RegistrationError::InvalidResponse { ref reason }) if reason.contains("private_key_jwt")),
        "{r:?}"
    );
}

#[tokio::test]
async fn unusable_responses_are_refused_without_secrets() {
    let cases = [
        (json!({"client_id": null}), "no client_id"),
        (json!({"client_id": "  "}), "no client_id"),
        (json!({"client_secret": null}), "no client_secret"),
        (json!({"client_secret": ""}), "no client_secret"),
        (
            json!({"token_endpoint_auth_method": "client_secret_post", "client_secret": null}),
            "no client_secret",
        ),
        (
            json!({"redirect_uris": ["https://evil.example/cb"]}),
            "redirect_uris",
        ),
        (
            json!({"grant_types": ["client_credentials"]}),
            "grant_types",
        ),
        (
            json!({"registration_client_uri": "not a url"}),
            "registration_client_uri",
        ),
    ];
    for (extra, want) in cases {
        let (_, r) = answer(issued(extra.clone()), None).await;
        let err = r.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, RegistrationError::InvalidResponse { .. }),
            "{extra}: {msg}"
        );
        assert!(msg.contains(want), "{extra}: {msg}");
        assert!(
            !msg.contains("CANARY") && !format!("{err:?}").contains("CANARY"),
            "{msg}"
        );
    }
    // Not JSON at all.
    let (_, r) = answer(
        Canned {
            status: 201,
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<p>ok</p>".into(),
        },
        None,
    )
    .await;
    assert!(matches!(r, Err(RegistrationError::Egress(_))), "{r:?}");
}

#[tokio::test]
async fn provider_errors_are_clean_and_truncated() {
    let description = format!(
        "<script>alert(1)</script>\u{1b}[31m bad\r\nredirect\u{0}\u{202e} {}",
        "x".repeat(1000)
    );
    let (_, r) = answer(
        Canned::json(400, json!({"error": "invalid_redirect_uri", "error_description": description, "client_secret": "CANARY-SECRET"})),
        None,
    )
    .await;
    let err = r.unwrap_err();
    let RegistrationError::Rejected {
        status,
        error,
        description,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(error.as_deref(), Some("invalid_redirect_uri"));
    let d = description.as_deref().unwrap();
    assert!(d.chars().count() <= 301, "{}", d.chars().count());
    assert!(d.ends_with('…'));
    assert!(
        !d.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{d:?}"
    );
    assert!(
        d.starts_with("<script>alert(1)</script>[31m bad redirect x"),
        "{d:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("client registration refused (HTTP 400): invalid_redirect_uri: "),
        "{msg}"
    );
    assert!(!msg.contains("CANARY"));

    // An HTML error page: the status only, the body is not read into the message.
    let (_, r) = answer(
        Canned {
            status: 500,
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<h1>oops</h1>".into(),
        },
        None,
    )
    .await;
    assert_eq!(
        r.unwrap_err(),
        RegistrationError::Rejected {
            status: 500,
            error: None,
            description: None
        }
    );
}

#[tokio::test]
async fn registration_endpoint_goes_through_the_guard() {
    let (port, accepted) = crate::helpers::counting_listener("127.0.0.2:0").await;
    let url = Url::parse(&format!("http://127.0.0.2:{port}/register")).unwrap();
    let err = register(&client(), &url, &request(None)).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistrationError::Egress(agp::oauth::egress::EgressError::AddressRefused { .. })
        ),
        "{err}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}
