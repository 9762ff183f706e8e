//! A scriptable fake provider (canned responses by path, a request log) and guarded clients
//! that allowlist only 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agp::oauth::egress::{EgressClient, EgressPolicy, EgressTimeouts, Lookup};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// Short timeouts so failure tests finish fast.
pub fn timeouts() -> EgressTimeouts {
    EgressTimeouts {
        connect: Duration::from_secs(2),
        total: Duration::from_secs(5),
    }
}

pub fn allow_loopback_one() -> EgressPolicy {
    EgressPolicy::parse(&["127.0.0.1/32"]).unwrap()
}

/// The guarded client every test uses: 127.0.0.1/32 allowlisted, nothing else.
pub fn client() -> EgressClient {
    EgressClient::new(allow_loopback_one(), timeouts()).unwrap()
}

/// A resolver with fixed answers, for names that must resolve to chosen loopback addresses.
pub struct StaticLookup(pub HashMap<String, Vec<IpAddr>>);

impl Lookup for StaticLookup {
    fn lookup(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let found = self.0.get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown test name"))
        })
    }
}

pub fn client_with_names(names: &[(&str, &[&str])]) -> EgressClient {
    let map = names
        .iter()
        .map(|(n, ips)| {
            (
                n.to_string(),
                ips.iter().map(|i| i.parse().unwrap()).collect(),
            )
        })
        .collect();
    EgressClient::with_lookup(
        allow_loopback_one(),
        timeouts(),
        Arc::new(StaticLookup(map)),
    )
    .unwrap()
}

/// A canned answer.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// One received request.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct FakeState {
    routes: Mutex<HashMap<String, Canned>>,
    log: Mutex<Vec<Received>>,
}

/// An HTTP server on 127.0.0.1 answering canned responses by `"METHOD /path"` or `"/path"`
/// (any method); anything else is 404.
#[derive(Clone)]
pub struct FakeServer {
    pub base: String,
    state: Arc<FakeState>,
}

impl FakeServer {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("{}{path}", self.base)).unwrap()
    }

    pub fn route(&self, key: &str, canned: Canned) -> &Self {
        self.state.routes.lock().insert(key.to_string(), canned);
        self
    }

    pub fn log(&self) -> Vec<Received> {
        self.state.log.lock().clone()
    }

    /// `"METHOD /path"` for every request so far.
    pub fn lines(&self) -> Vec<String> {
        self.log()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

async fn answer(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (content_type, authorization) = {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (header("content-type"), header("authorization"))
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    state.log.lock().push(Received {
        method: method.clone(),
        path: path.clone(),
        content_type,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let canned = {
        let routes = state.routes.lock();
        routes
            .get(&format!("{method} {path}"))
            .or_else(|| routes.get(&path))
            .cloned()
    };
    let Some(canned) = canned else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut resp = Response::new(Body::from(canned.body));
    *resp.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (n, v) in canned.headers {
        resp.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

/// A raw TCP listener that only counts accepted connections: proof that nothing connected.
pub async fn counting_listener(addr: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((_sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}
