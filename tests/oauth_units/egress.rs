//! The egress guard: classifier table and URL forms (no connection), refusals at the URL check
//! and at resolve time (nothing reaches the refused listener), redirects, caps, content types,
//! depth and timeouts.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agp::oauth::egress::{
    AddrClass, EgressClient, EgressError, EgressPolicy, EgressTimeouts, METADATA_CAP, Route,
    classify, get_json_capped,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::get;
use url::Url;

use crate::helpers::{Canned, FakeServer, client, client_with_names, counting_listener};

type Json = serde_json::Value;

#[test]
fn classifier_table_covers_every_class() {
    let cases = [
        ("93.184.216.34", AddrClass::Public),
        ("127.0.0.1", AddrClass::Loopback),
        ("::1", AddrClass::Loopback),
        ("10.1.2.3", AddrClass::Private),
        ("172.20.0.1", AddrClass::Private),
        ("192.168.0.1", AddrClass::Private),
        ("169.254.169.254", AddrClass::LinkLocal),
        ("fe80::1", AddrClass::LinkLocal),
        ("100.64.0.1", AddrClass::Cgnat),
        ("224.0.0.251", AddrClass::Multicast),
        ("ff02::1", AddrClass::Multicast),
        ("0.0.0.0", AddrClass::Unspecified),
        ("::", AddrClass::Unspecified),
        ("255.255.255.255", AddrClass::Broadcast),
        ("192.0.2.7", AddrClass::Documentation),
        ("2001:db8::1", AddrClass::Documentation),
        ("fd00::1", AddrClass::UniqueLocal),
        ("0.1.2.3", AddrClass::ThisNetwork),
        ("240.0.0.1", AddrClass::Reserved),
        ("::ffff:127.0.0.1", AddrClass::Loopback),
        ("::ffff:10.0.0.1", AddrClass::Private),
        ("::ffff:169.254.169.254", AddrClass::LinkLocal),
    ];
    for (ip, want) in cases {
        assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
    }
}

/// Literal hosts in every spelling `url` normalizes are judged before any connection.
#[test]
fn literal_url_forms_are_normalized_and_refused() {
    let default = EgressClient::new(EgressPolicy::default(), crate::helpers::timeouts()).unwrap();
    let cases = [
        ("https://0x7f000001/", AddrClass::Loopback),
        ("https://2130706433/", AddrClass::Loopback),
        ("https://017700000001/", AddrClass::Loopback),
        ("https://127.1/", AddrClass::Loopback),
        ("https://0x7f.1/", AddrClass::Loopback),
        ("https://127.0.0.1./", AddrClass::Loopback),
        ("https://[0:0:0:0:0:ffff:127.0.0.1]/", AddrClass::Loopback),
        ("https://[::1]/", AddrClass::Loopback),
        ("https://[::ffff:127.0.0.1]/", AddrClass::Loopback),
        ("https://[::ffff:7f00:1]/", AddrClass::Loopback),
        (
            "https://169.254.169.254/latest/meta-data",
            AddrClass::LinkLocal,
        ),
        ("https://10.0.0.1/", AddrClass::Private),
        ("https://100.64.1.1/", AddrClass::Cgnat),
        ("https://[fd00::1]/", AddrClass::UniqueLocal),
        ("https://[fe80::1]/", AddrClass::LinkLocal),
        ("https://0.0.0.0/", AddrClass::Unspecified),
    ];
    for (u, class) in cases {
        let url = Url::parse(u).unwrap();
        match default.check_url(&url) {
            Err(EgressError::AddressRefused { class: got, .. }) => assert_eq!(got, class, "{u}"),
            other => panic!("{u}: {other:?}"),
        }
    }
    assert_eq!(
        Url::parse("http://0x7f000001:8/").unwrap().host_str(),
        Some("127.0.0.1")
    );
    // With 127.0.0.1/32 allowlisted the same spellings pass, and over plain http.
    let allowed = client();
    for u in [
        "http://0x7f000001/",
        "http://2130706433/",
        "https://127.0.0.1/",
    ] {
        assert!(allowed.check_url(&Url::parse(u).unwrap()).is_ok(), "{u}");
    }
    assert_eq!(
        allowed.check_url(&Url::parse("http://[::ffff:127.0.0.1]/").unwrap()),
        Ok(Route::HttpAllowlisted)
    );
    // Public destinations: https yes, http no; other schemes no; credentials no.
    assert_eq!(
        allowed.check_url(&Url::parse("https://93.184.216.34/").unwrap()),
        Ok(Route::Https)
    );
    for u in [
        "http://93.184.216.34/",
        "ftp://example.com/",
        "https://u:p@example.com/",
    ] {
        assert!(allowed.check_url(&Url::parse(u).unwrap()).is_err(), "{u}");
    }
    // http to a name with an empty allowlist: refused before resolving.
    assert!(matches!(
        default.check_url(&Url::parse("http://example.com/").unwrap()),
        Err(EgressError::SchemeRefused { .. })
    ));
}

#[tokio::test]
async fn non_allowlisted_loopback_literal_is_never_connected() {
    let (port, accepted) = counting_listener("127.0.0.2:0").await;
    let c = client();
    for scheme in ["http", "https"] {
        let url = Url::parse(&format!("{scheme}://127.0.0.2:{port}/x")).unwrap();
        let err = get_json_capped::<Json>(&c, &url, METADATA_CAP)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::AddressRefused {
                    class: AddrClass::Loopback,
                    ..
                }
            ),
            "{err}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

/// A name resolving to a refused address fails at resolve time (DNS rebinding).
#[tokio::test]
async fn name_resolving_to_refused_address_is_refused_at_resolve() {
    let (port, accepted) = counting_listener("127.0.0.2:0").await;
    let c = client_with_names(&[("rebind.test", &["127.0.0.2"])]);
    for scheme in ["https", "http"] {
        let url = Url::parse(&format!("{scheme}://rebind.test:{port}/")).unwrap();
        let err = get_json_capped::<Json>(&c, &url, METADATA_CAP)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            EgressError::AddressRefused {
                host: "rebind.test".into(),
                class: AddrClass::Loopback
            }
        );
        assert!(err.to_string().contains("rebind.test") && err.to_string().contains("loopback"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn localhost_is_refused_without_an_allowlist() {
    let (port, accepted) = counting_listener("127.0.0.1:0").await;
    let c = EgressClient::new(EgressPolicy::default(), crate::helpers::timeouts()).unwrap();
    let url = Url::parse(&format!("https://localhost:{port}/")).unwrap();
    let err = get_json_capped::<Json>(&c, &url, METADATA_CAP)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EgressError::AddressRefused { host, class: AddrClass::Loopback } if host == "localhost"),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

/// A name answering both a refused and an allowed address reaches only the allowed one.
#[tokio::test]
async fn mixed_answers_reach_only_the_permitted_address() {
    let server = FakeServer::start().await;
    server.route("/doc", Canned::json(200, serde_json::json!({"ok": true})));
    let port = server.url("/").port().unwrap();
    let (_, accepted) = counting_listener(&format!("127.0.0.2:{port}")).await;
    let c = client_with_names(&[("mixed.test", &["127.0.0.2", "127.0.0.1"])]);
    let url = Url::parse(&format!("http://mixed.test:{port}/doc")).unwrap();
    let doc: Json = get_json_capped(&c, &url, METADATA_CAP).await.unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = FakeServer::start().await;
    let internal = server.url("/internal");
    server.route(
        "/meta",
        Canned::status(302).with_header("location", internal.as_str()),
    );
    server.route("/internal", Canned::json(200, serde_json::json!({})));
    let err = get_json_capped::<Json>(&client(), &server.url("/meta"), METADATA_CAP)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EgressError::Redirect { status: 302, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("redirects are not followed"));
    assert_eq!(server.lines(), ["GET /meta"]);
}

/// A server that streams a 50 MB body, counting what it produced.
async fn streaming_server(declare_length: bool) -> (Url, Arc<AtomicUsize>) {
    const TOTAL: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let produced = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&produced);
    let app = Router::new().route(
        "/big",
        get(move || {
            let p = Arc::clone(&p);
            async move {
                let stream = futures::stream::unfold(0usize, move |sent| {
                    let p = Arc::clone(&p);
                    async move {
                        (sent < TOTAL).then(|| {
                            p.fetch_add(CHUNK, Ordering::SeqCst);
                            (
                                Ok::<_, Infallible>(Bytes::from(vec![b' '; CHUNK])),
                                sent + CHUNK,
                            )
                        })
                    }
                });
                let mut b = Response::builder().header("content-type", "application/json");
                if declare_length {
                    b = b.header("content-length", TOTAL.to_string());
                }
                b.body(Body::from_stream(stream)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/big", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, produced)
}

#[tokio::test]
async fn fifty_megabytes_are_refused_within_the_cap() {
    for declare in [false, true] {
        let (url, produced) = streaming_server(declare).await;
        let err = get_json_capped::<Json>(&client(), &url, METADATA_CAP)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::TooLarge {
                    cap: METADATA_CAP,
                    ..
                }
            ),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = produced.load(Ordering::SeqCst);
        assert!(sent < 16 * 1024 * 1024, "server produced {sent} bytes");
    }
}

#[tokio::test]
async fn deep_json_and_html_are_refused() {
    let server = FakeServer::start().await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    server.route(
        "/deep",
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: deep,
        },
    );
    server.route(
        "/html",
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: "<html>{}</html>".into(),
        },
    );
    server.route(
        "/untyped",
        Canned {
            status: 200,
            headers: vec![],
            body: "{}".into(),
        },
    );
    server.route(
        "/problem",
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: "{\"a\":1}".into(),
        },
    );
    let c = client();
    let err = get_json_capped::<Json>(&c, &server.url("/deep"), METADATA_CAP)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EgressError::Json { detail, .. } if detail.contains("deeper")),
        "{err}"
    );
    for path in ["/html", "/untyped"] {
        let err = get_json_capped::<Json>(&c, &server.url(path), METADATA_CAP)
            .await
            .unwrap_err();
        assert!(
            matches!(err, EgressError::ContentType { .. }),
            "{path}: {err}"
        );
    }
    let ok: Json = get_json_capped(&c, &server.url("/problem"), METADATA_CAP)
        .await
        .unwrap();
    assert_eq!(ok["a"], 1);
}

#[tokio::test]
async fn trickling_server_times_out() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b" ")), ()))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/slow", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = EgressClient::new(
        crate::helpers::allow_loopback_one(),
        EgressTimeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_millis(800),
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = get_json_capped::<Json>(&c, &url, METADATA_CAP)
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Error messages name the host, never the query string.
#[tokio::test]
async fn errors_never_show_the_query() {
    let server = FakeServer::start().await;
    let c = client();
    let url = server.url("/missing?token=S3CRET-Q");
    let err = get_json_capped::<Json>(&c, &url, METADATA_CAP)
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::Status { status: 404, .. }));
    // A closed port: the connect error comes from reqwest, whose message would carry the URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{closed}/x?token=S3CRET-Q")).unwrap();
    let err2 = get_json_capped::<Json>(&c, &url, METADATA_CAP)
        .await
        .unwrap_err();
    assert!(matches!(err2, EgressError::Connect { .. }), "{err2}");
    for e in [err, err2] {
        assert!(!e.to_string().contains("S3CRET"), "{e}");
        assert!(!format!("{e:?}").contains("S3CRET"), "{e:?}");
    }
}
