//! `spawn_app()`: a real AGP on 127.0.0.1:0 with a temp data directory.

use std::path::PathBuf;

use agp::api::SharedState;
use agp::app::{Application, Config};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
    /// The server's state, for tests that run commands no endpoint offers yet (e.g. tool
    /// registration, which arrives with discovery).
    pub state: SharedState,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().expect("tempdir")).await
}

pub async fn spawn_app_in(dir: TempDir) -> TestApp {
    spawn_app_with(dir, |_| {}).await
}

/// A test app whose configuration `adjust` may change first.
pub async fn spawn_app_with(dir: TempDir, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::new(dir.path().to_path_buf(), "127.0.0.1:0", None).expect("config");
    // Tests reach only loopback peers (S3): allowlist 127.0.0.1 alone.
    config.egress_allow = vec!["127.0.0.1/32".to_string()];
    adjust(&mut config);
    let app = Application::build(config).await.expect("build");
    let port = app.port();
    let state = app.state();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("admin token")
        .trim()
        .to_string();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        token,
        http: reqwest::Client::new(),
        dir,
        state,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// GET `/api/v1{path}` with the admin token: (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON to `/api/v1{path}` with the admin token: (status, JSON body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// PUT JSON to `/api/v1{path}` with the admin token: (status, JSON body).
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The log head, read through the API.
    pub async fn head(&self) -> u64 {
        let (_, v) = self.http_json("/readyz").await;
        v["log_head"].as_u64().expect("log_head")
    }

    pub async fn http_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        // Let go of the state (it holds the log) so a restart can open the data directory.
        drop(self.state);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("server stopped cleanly");
        }
        self.dir
    }
}

/// Asserts the standard error shape and returns the message.
pub fn error_message(body: &Value, code: &str) -> String {
    assert_eq!(body["error"]["code"], code, "error body: {body}");
    body["error"]["message"]
        .as_str()
        .expect("message")
        .to_string()
}
