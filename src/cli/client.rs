//! The CLI's REST client: base URL and admin token resolution, and API errors turned into
//! one clear line. Request bodies are the API's own request types (`crate::api::…Body`), so
//! the CLI and the server cannot disagree on a field; endpoints that take no body get none
//! ([`Client::post_empty`]).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

use super::Global;
use crate::app::data_dir::{admin_token_path, read_admin_token};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Server from `--server`/`AGP_URL` (default `http://127.0.0.1:8080`); token from
    /// `AGP_ADMIN_TOKEN`, else `<data-dir>/admin.token`.
    pub fn new(global: &Global) -> anyhow::Result<Self> {
        let base = global
            .server
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = match std::env::var("AGP_ADMIN_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => read_admin_token(&global.data_dir).map_err(|e| {
                anyhow!(
                    "no admin token: set AGP_ADMIN_TOKEN or point --data-dir at the server's data directory ({}: {e})",
                    admin_token_path(&global.data_dir).display()
                )
            })?,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base, token })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let req = self.http.get(self.url(path)).bearer_auth(&self.token);
        self.send(req).await
    }

    /// A GET that also answers the response header `header` (e.g. a paging cursor).
    pub async fn get_with_header(
        &self,
        path: &str,
        header: &str,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let (value, mut headers) = self.get_with_headers(path, &[header]).await?;
        Ok((value, headers.pop().flatten()))
    }

    /// GET `path`, and the values of `headers` (in that order) when the answer has them.
    pub async fn get_with_headers(
        &self,
        path: &str,
        headers: &[&str],
    ) -> anyhow::Result<(Value, Vec<Option<String>>)> {
        let req = self.http.get(self.url(path)).bearer_auth(&self.token);
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let values = headers
            .iter()
            .map(|header| {
                resp.headers()
                    .get(*header)
                    .map(|v| {
                        v.to_str().map(str::to_string).with_context(|| {
                            format!(
                                "AGP at {} sent a {header} header that is not text",
                                self.base
                            )
                        })
                    })
                    .transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((self.body(resp).await?, values))
    }

    /// A POST whose JSON body is `body`, one of the API's request types.
    pub async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body);
        self.send(req).await
    }

    /// A POST to an endpoint that reads no body (rotate, refresh, replay, …).
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<Value> {
        let req = self.http.post(self.url(path)).bearer_auth(&self.token);
        self.send(req).await
    }

    pub async fn put<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        let req = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(body);
        self.send(req).await
    }

    /// A streaming GET (NDJSON); the caller reads chunks.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let req = self.http.get(self.url(path)).bearer_auth(&self.token);
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            bail!(api_error(status, &body));
        }
        Ok(resp)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.body(resp).await
    }

    /// The JSON body of a successful response, or the API error as one line.
    async fn body(&self, resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the response from {}", self.base))?;
        if !status.is_success() {
            bail!(api_error(status, &body));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("AGP at {} sent a response that is not JSON", self.base))
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow!(
                "cannot reach AGP at {}: is `agp serve` running there? (set --server or AGP_URL)",
                self.base
            )
        } else {
            anyhow!("request to AGP at {} failed: {e}", self.base)
        }
    }
}

/// One line from an API error body: `<message> (HTTP <status> <code>)`.
fn api_error(status: reqwest::StatusCode, body: &[u8]) -> String {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
            ))
        });
    match parsed {
        Some((code, message)) => format!("{message} (HTTP {} {code})", status.as_u16()),
        None => format!("AGP answered HTTP {}", status.as_u16()),
    }
}
