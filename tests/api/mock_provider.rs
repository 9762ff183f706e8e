//! An in-process mock provider: one axum app on loopback playing both the MCP server (401 with
//! a `resource_metadata` challenge) and its authorization server (metadata, DCR, an
//! `/authorize` that redirects straight back, a scripted `/token` and `/revoke`). It does on
//! demand what a real provider will not: malformed, slow, huge or failing answers.
//!
//! Every token it issues contains `canary`, so a test can search events and answers for leaks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// What `/authorize` puts in `iss` (RFC 9207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iss {
    Correct,
    Wrong,
    Omit,
}

/// One scripted answer of `/token`. When the script is empty it answers `Tokens` with a
/// refresh token and `expires_in: 3600`.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A valid Bearer response with fresh canary tokens.
    Tokens { refresh: bool, expires_in: i64 },
    /// Any JSON body with this status.
    Json(u16, Value),
    /// `200 text/html`.
    Html,
    /// This status, empty body.
    Status(u16),
    /// A streamed (no `Content-Length`) body of 1.25 MiB.
    Huge,
    /// Valid tokens after this pause.
    Slow(Duration),
    /// Valid tokens once the test calls [`Mock::release`].
    Held,
}

/// The knobs a test turns (read on every request).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub iss_supported: bool,
    pub iss: Iss,
    pub revocation_endpoint: bool,
    /// The authorization server the PRM names; `None` = this mock.
    pub authorization_server: Option<String>,
    /// `/userinfo`'s answer (status, JSON body); `None`: no `userinfo_endpoint` advertised.
    pub userinfo: Option<(u16, Value)>,
    /// A hostile MCP server: a request with a credential is answered with a JSON-RPC error
    /// whose message echoes the `Authorization` header it received.
    pub mcp_echo: bool,
}

#[derive(Default)]
pub struct Recorded {
    hits: HashMap<&'static str, usize>,
    token_script: VecDeque<Reply>,
    revoke_script: VecDeque<u16>,
    /// (access, refresh) of every token response with tokens, in order.
    issued: Vec<(String, Option<String>)>,
    /// Every token presented at `/revoke`.
    revoked: Vec<String>,
    /// Every `Authorization` header presented at `/userinfo`.
    userinfo_auth: Vec<String>,
}

pub struct MockState {
    base: String,
    knobs: Mutex<Knobs>,
    rec: Mutex<Recorded>,
    release: tokio::sync::Notify,
}

/// A running mock; stops when dropped.
pub struct Mock {
    pub base: String,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    /// A mock on 127.0.0.1 that advertises RFC 9207 and sends the right `iss`.
    pub async fn start() -> Mock {
        Mock::start_on("127.0.0.1").await
    }

    pub async fn start_on(ip: &str) -> Mock {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(MockState {
            base: base.clone(),
            knobs: Mutex::new(Knobs {
                iss_supported: true,
                iss: Iss::Correct,
                revocation_endpoint: true,
                authorization_server: None,
                userinfo: None,
                mcp_echo: false,
            }),
            rec: Mutex::new(Recorded::default()),
            release: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/mcp", post(mcp).get(mcp))
            .route("/.well-known/oauth-protected-resource/mcp", get(prm))
            .route("/.well-known/oauth-authorization-server", get(as_metadata))
            .route("/register", post(register))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/userinfo", get(userinfo))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { base, state, task }
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub fn knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.state.knobs.lock());
    }

    /// Appends answers to the `/token` script.
    pub fn token(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.rec.lock().token_script.extend(replies);
    }

    /// Appends statuses to the `/revoke` script (default 200).
    pub fn revoke(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state.rec.lock().revoke_script.extend(statuses);
    }

    /// Lets one [`Reply::Held`] answer.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Requests seen by `endpoint` (`mcp`, `prm`, `metadata`, `register`, `authorize`,
    /// `token`, `revoke`, `userinfo`).
    pub fn hits(&self, endpoint: &str) -> usize {
        self.state
            .rec
            .lock()
            .hits
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.state.rec.lock().hits.values().sum()
    }

    pub fn issued(&self) -> Vec<(String, Option<String>)> {
        self.state.rec.lock().issued.clone()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.rec.lock().revoked.clone()
    }

    /// The `Authorization` headers `/userinfo` saw.
    pub fn userinfo_auth(&self) -> Vec<String> {
        self.state.rec.lock().userinfo_auth.clone()
    }
}

fn hit(s: &MockState, endpoint: &'static str) {
    *s.rec.lock().hits.entry(endpoint).or_default() += 1;
}

async fn mcp(
    State(s): State<Arc<MockState>>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    hit(&s, "mcp");
    let echo = s.knobs.lock().mcp_echo;
    if let (true, Some(auth)) = (echo, headers.get(header::AUTHORIZATION)) {
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        let message = format!("refused {}", auth.to_str().unwrap_or_default());
        return Json(json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32000, "message": message, "data": {"seen": message}}}))
        .into_response();
    }
    let challenge = format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        s.base
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
    )
        .into_response()
}

async fn prm(State(s): State<Arc<MockState>>) -> Json<Value> {
    hit(&s, "prm");
    let server = s
        .knobs
        .lock()
        .authorization_server
        .clone()
        .unwrap_or_else(|| s.base.clone());
    Json(json!({
        "resource": format!("{}/mcp", s.base),
        "authorization_servers": [server],
        "scopes_supported": ["read", "write"],
    }))
}

async fn as_metadata(State(s): State<Arc<MockState>>) -> Json<Value> {
    hit(&s, "metadata");
    let k = s.knobs.lock().clone();
    let b = &s.base;
    let mut doc = json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "registration_endpoint": format!("{b}/register"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_response_iss_parameter_supported": k.iss_supported,
    });
    if k.revocation_endpoint {
        doc["revocation_endpoint"] = json!(format!("{b}/revoke"));
    }
    if k.userinfo.is_some() {
        doc["userinfo_endpoint"] = json!(format!("{b}/userinfo"));
    }
    Json(doc)
}

async fn userinfo(State(s): State<Arc<MockState>>, headers: header::HeaderMap) -> Response {
    {
        let mut rec = s.rec.lock();
        *rec.hits.entry("userinfo").or_default() += 1;
        let auth = headers.get(header::AUTHORIZATION);
        rec.userinfo_auth
            .push(auth.and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
    }
    let (status, body) = s
        .knobs
        .lock()
        .userinfo
        .clone()
        .unwrap_or((404, Value::Null));
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

async fn register(State(s): State<Arc<MockState>>, Json(req): Json<Value>) -> Response {
    hit(&s, "register");
    let body = json!({
        "client_id": "mock-client",
        "client_secret": "cs-canary-client-secret",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": req["redirect_uris"],
        "grant_types": ["authorization_code", "refresh_token"],
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn authorize(
    State(s): State<Arc<MockState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let n = {
        let mut rec = s.rec.lock();
        *rec.hits.entry("authorize").or_default() += 1;
        rec.hits["authorize"]
    };
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &format!("code-{n}"))
        .append_pair("state", &q["state"]);
    match s.knobs.lock().iss {
        Iss::Correct => {
            back.query_pairs_mut().append_pair("iss", &s.base);
        }
        Iss::Wrong => {
            back.query_pairs_mut()
                .append_pair("iss", "http://127.0.0.1:1/other-issuer");
        }
        Iss::Omit => {}
    }
    Redirect::to(back.as_str()).into_response()
}

fn tokens(s: &MockState, refresh: bool, expires_in: i64) -> Response {
    let mut rec = s.rec.lock();
    let n = rec.issued.len() + 1;
    let access = format!("at-canary-{n}");
    let refresh = refresh.then(|| format!("rt-canary-{n}"));
    rec.issued.push((access.clone(), refresh.clone()));
    let mut body =
        json!({"access_token": access, "token_type": "Bearer", "expires_in": expires_in});
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    Json(body).into_response()
}

async fn token(State(s): State<Arc<MockState>>, _form: Form<HashMap<String, String>>) -> Response {
    let reply = {
        let mut rec = s.rec.lock();
        *rec.hits.entry("token").or_default() += 1;
        rec.token_script.pop_front()
    };
    match reply.unwrap_or(Reply::Tokens {
        refresh: true,
        expires_in: 3600,
    }) {
        Reply::Tokens {
            refresh,
            expires_in,
        } => tokens(&s, refresh, expires_in),
        Reply::Json(status, body) => {
            (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
        }
        Reply::Html => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Sign in <a href=\"https://evil.example\">here</a></body></html>",
        )
            .into_response(),
        Reply::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Reply::Huge => {
            let chunk = bytes_of(64 * 1024);
            let chunks = (0..20).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        Reply::Slow(pause) => {
            tokio::time::sleep(pause).await;
            tokens(&s, true, 3600)
        }
        Reply::Held => {
            s.release.notified().await;
            tokens(&s, true, 3600)
        }
    }
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; n])
}

/// Answers each revocation with the next scripted status (200 once the script is spent). A
/// scripted 400 answers `invalid_token`, a scripted 422 a 400 `unsupported_token_type`; both
/// echo the token in `error_description`, as a hostile provider might.
async fn revoke(
    State(s): State<Arc<MockState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").cloned().unwrap_or_default();
    let status = {
        let mut rec = s.rec.lock();
        *rec.hits.entry("revoke").or_default() += 1;
        rec.revoked.push(token.clone());
        rec.revoke_script.pop_front().unwrap_or(200)
    };
    let error = |code: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": code, "error_description": format!("bad token {token}")})),
        )
            .into_response()
    };
    match status {
        400 => error("invalid_token"),
        422 => error("unsupported_token_type"),
        s => StatusCode::from_u16(s).unwrap().into_response(),
    }
}
