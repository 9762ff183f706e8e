//! OAuth Client ID Metadata Documents end to end (issue 17, item 2): a real authorization
//! server (`oidc-provider` with its `clientIdMetadataDocument` feature) fetches AGP's metadata
//! document over https from AGP's public URL, validates it, and issues tokens to the URL client
//! id; and the refusals: forced CIMD at a server that does not advertise it, a public URL that
//! is not https outside development.
//!
//! AGP serves plain http; its public URL here is a TLS front on loopback (rustls, a throwaway
//! certificate made by `openssl`) that forwards bytes to it, as a reverse proxy would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::connectors_e2e::tokens;
use crate::helpers::{TestApp, error_message, spawn_app_with};
use crate::peers::{Provider, consent};

/// A TLS front on 127.0.0.1: accepts https and forwards the bytes to AGP's plain port.
struct TlsFront {
    port: u16,
    listener: Option<TcpListener>,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFront {
    async fn bind(dir: &Path) -> TlsFront {
        let (cert, key) = crate::pg_server::self_signed_certificate(dir).expect("a certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        TlsFront {
            port: listener.local_addr().unwrap().port(),
            listener: Some(listener),
            cert,
            key,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts forwarding to `127.0.0.1:<backend>` (AGP, once it listens).
    fn forward_to(&mut self, backend: u16) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = self.listener.take().expect("forwarding already");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", backend)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
    }

    /// A browser (cookie jar, no redirects) that trusts the front's certificate.
    fn browser(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.cert).unwrap();
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}

/// AGP whose public URL is `public_url` (loopback allowlisted for egress, as every test app).
async fn app_at(dir: tempfile::TempDir, public_url: String) -> TestApp {
    spawn_app_with(dir, move |c| c.public_url = public_url).await
}

/// Every metadata document fetch the authorization server made: `url`, `status`.
async fn cimd_fetches(provider: &Provider) -> Vec<Value> {
    reqwest::get(format!("{}/__test/cimd-fetches", provider.issuer()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_authorization_server_fetches_agp_s_metadata_document_and_issues_tokens_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut front = TlsFront::bind(dir.path()).await;
    let cert = front.cert.to_str().unwrap().to_string();
    // No DCR: the connector can only work through the metadata document.
    let provider = Provider::start(&["--cimd", "--cimd-ca", &cert, "--no-dcr"]);
    let app = app_at(tempfile::tempdir().unwrap(), front.url()).await;
    front.forward_to(app.base.rsplit(':').next().unwrap().parse().unwrap());

    // Not forced: the server advertises client_id_metadata_document_supported, so CIMD.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "docs", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["registration_mode"], "cimd", "{added}");
    let id = added["connector_id"].as_str().unwrap();
    let client_id = format!("{}/.well-known/agp-client/{id}", front.url());
    assert_eq!(added["client_id"], client_id);
    assert_eq!(added["sources"]["client_id"], "registration");
    assert_eq!(added["token_auth_method"], "none");
    assert_eq!(added["client_secret_stored"], false);
    assert!(
        added["registration_reason"]
            .as_str()
            .unwrap()
            .contains("client_id_metadata_document_supported"),
        "{added}"
    );
    assert!(
        added["token_auth_method_reason"]
            .as_str()
            .unwrap()
            .contains("no shared secret"),
        "{added}"
    );
    // Nothing was fetched yet: the server fetches the document when the consent arrives.
    assert!(cimd_fetches(&provider).await.is_empty());

    // The document, as anyone (the authorization server) fetches it through the public URL.
    let b = front.browser();
    let r = b.get(&client_id).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["client_id"], client_id, "{doc}");
    assert_eq!(doc["client_name"], "AGP docs");
    assert_eq!(
        doc["redirect_uris"],
        json!([format!("{}/connect/callback", front.url())])
    );
    assert_eq!(doc["token_endpoint_auth_method"], "none");
    assert_eq!(
        doc["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(doc["client_uri"], front.url());
    for forbidden in ["client_secret", "client_secret_expires_at", "jwks"] {
        assert!(doc.get(forbidden).is_none(), "{doc}");
    }
    // Another connector id, or no connector: nothing.
    let r = b
        .get(format!("{}/.well-known/agp-client/nope", front.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Consent through the provider's real pages: it fetches the document (client_id equal to
    // the URL, the redirect URI listed, no shared-secret method) before it shows them.
    let result = consent(&b, added["authorize_url"].as_str().unwrap(), "alice", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let fetches = cimd_fetches(&provider).await;
    assert!(
        fetches
            .iter()
            .any(|f| f["url"] == client_id.as_str() && f["status"] == 200),
        "the authorization server fetched AGP's document: {fetches:?}"
    );
    let (_, shown) = app.get("/connectors/docs").await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["has_refresh_token"], true, "{shown}");
    let (at, rt) = tokens(&app, "docs");
    let (at, rt) = (at.unwrap(), rt.unwrap());
    assert!(provider.introspect(&at, "access_token").await);

    // A refresh as a public client (client_id = the URL, no secret), and the old refresh
    // token is spent (rotation).
    app.state
        .connector_service
        .refresh("docs", true)
        .await
        .expect("refresh with the metadata document's client id");
    let (at2, rt2) = tokens(&app, "docs");
    assert_ne!(at2.as_deref(), Some(at.as_str()));
    assert_ne!(rt2.as_deref(), Some(rt.as_str()));
    let at2 = at2.unwrap();
    assert!(provider.introspect(&at2, "access_token").await);

    // Reconnect: discovery again (the server still offers CIMD), the same client id, a fresh
    // consent; the previous generation's tokens are revoked by the public client.
    let (s, r) = app.post("/connectors/docs/reconnect", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["client_id"], client_id);
    assert_eq!(r["registration_mode"], "cimd");
    assert!(
        !provider.introspect(&at2, "access_token").await,
        "the old generation was revoked"
    );
    let result = consent(&b, r["authorize_url"].as_str().unwrap(), "alice", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let (at3, _) = tokens(&app, "docs");
    assert!(provider.introspect(&at3.unwrap(), "access_token").await);

    // The event says which mode and why (schema v4); no secret or token in the log.
    let (_, events) = app.get("/events?limit=1000").await;
    let added_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "connector.added")
        .cloned()
        .unwrap();
    assert_eq!(added_event["schema_version"], 4, "{added_event}");
    assert_eq!(added_event["data"]["registration"]["mode"], "cimd");
    assert_eq!(added_event["data"]["registration"]["client_id"], client_id);
    assert!(added_event["data"]["registration_reason"].is_string());
    assert!(
        !events.to_string().contains(&rt),
        "a token leaked into the log"
    );

    // Removed: the document is gone, so the server can no longer fetch it.
    let (s, t) = app
        .post("/connectors/docs/remove", json!({"confirm": "docs"}))
        .await;
    assert_eq!(s, 200, "{t}");
    let r = b.get(&client_id).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn without_the_server_s_cimd_metadata_the_default_is_dcr_and_forcing_cimd_is_refused() {
    let provider = Provider::start(&[]);
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |_| {}).await;
    let head = app.head().await;

    // Forced: a clear error naming the missing metadata; nothing stored.
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "forced", "mcp_server_url": provider.mcp_url(), "registration": "cimd"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let msg = error_message(&body, "invalid_request");
    assert!(
        msg.contains("does not advertise client_id_metadata_document_supported"),
        "{msg}"
    );
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.get("/connectors").await.1, json!([]));

    // Not forced: DCR, and the view says why.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "auto", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["registration_mode"], "dcr");
    let why = added["registration_reason"].as_str().unwrap();
    assert!(
        why.contains("Dynamic Client Registration")
            && why.contains("does not advertise client_id_metadata_document_supported"),
        "{why}"
    );

    // The command line: `--registration cimd` gets the same refusal, `connectors show` the
    // mode and why.
    let out = crate::cli::cli(
        &app,
        &[
            "connectors",
            "add",
            "--name",
            "cli",
            "--mcp-server-url",
            &provider.mcp_url(),
            "--registration",
            "cimd",
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client_id_metadata_document_supported"),
        "{stderr}"
    );
    let out = crate::cli::cli(&app, &["connectors", "show", "--name", "auto"]).await;
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["registration_mode"], "dcr");
    assert_eq!(shown["registration_reason"], why);

    // Forced DCR and a registered client say so too; bad modes are refused.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "dcr", "mcp_server_url": provider.mcp_url(), "registration": "dcr"}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(
        added["registration_reason"],
        "forced by the admin (registration dcr)"
    );
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "bad", "mcp_server_url": provider.mcp_url(), "registration": "magic"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(error_message(&body, "invalid_request").contains("cimd, dcr or registered"));
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "bad", "mcp_server_url": provider.mcp_url(),
                   "registration": "cimd", "client_id": "x"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(error_message(&body, "invalid_request").contains("exclusive"));
}

#[tokio::test]
async fn a_metadata_document_url_that_is_not_https_outside_development_is_refused() {
    let provider = Provider::start(&["--cimd"]);
    // A public URL that is plain http on a name (not an allowlisted loopback address): not
    // development, so no Client Identifier URL can be made from it.
    let app = app_at(
        tempfile::tempdir().unwrap(),
        "http://agp.example.test:8080".into(),
    )
    .await;
    let head = app.head().await;
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "plain", "mcp_server_url": provider.mcp_url(), "registration": "cimd"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let msg = error_message(&body, "invalid_request");
    assert!(
        msg.contains("http://agp.example.test:8080/.well-known/agp-client/")
            && msg.contains("must use https"),
        "{msg}"
    );
    assert_eq!(app.head().await, head, "nothing was appended");
    assert_eq!(app.get("/connectors").await.1, json!([]));

    // Not forced, the same server gets DCR instead, and the reason says why not CIMD.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "plain", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["registration_mode"], "dcr");
    assert!(
        added["registration_reason"]
            .as_str()
            .unwrap()
            .contains("must use https"),
        "{added}"
    );
}
