//! One upstream MCP session as the proxy uses it: `initialize` once, then `tools/call` after
//! `tools/call`, each a single POST whose answer (JSON, or the first matching message of an SSE
//! stream) is read in the calling task.
//!
//! Why not rmcp's client here: it routes every request through its service task and transport
//! worker and reads each SSE answer in yet another task; with one call in flight those hand-offs
//! cost more than the rest of the proxy. Discovery (`connectors::upstream`) still uses rmcp's
//! client; the messages here are rmcp's model types.
//!
//! Caps and rules: the answer is read incrementally and refused past `max_bytes` (S19); requests
//! carry only the injected credential, the session id upstream gave and the protocol version —
//! nothing from the agent (S14); a 404 on a live session means upstream forgot it (a restart):
//! the session is initialized again and the request sent once more; 401/403 are reported with
//! their challenge for the caller to refresh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorData};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// The protocol version AGP asks upstream for (it answers with the one it speaks).
pub const PROTOCOL_VERSION: &str = "2025-06-18";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// How an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 401: upstream refused the credential.
    #[error("upstream refused the credential")]
    Unauthorized,
    /// 403: upstream refused the credential's scope.
    #[error("upstream refused the credential's scope")]
    Forbidden,
    /// The request was answered with a JSON-RPC error.
    #[error("upstream answered with an error")]
    Rpc(ErrorData),
    /// 404 on a live session: upstream no longer knows it (a restart).
    #[error("upstream no longer knows the session")]
    Expired,
    /// Over the size cap.
    #[error("upstream's answer is over {0} bytes")]
    TooLarge(usize),
    /// Anything else: connection, HTTP status, malformed answer.
    #[error("{0}")]
    Failed(String),
}

struct State {
    session_id: Option<HeaderValue>,
    protocol_version: HeaderValue,
}

/// One session. Requests may run concurrently on it.
pub struct UpstreamSession {
    http: reqwest::Client,
    url: url::Url,
    /// The credential, wiped when the session goes (issue 14, item 11). The header value is
    /// built per request ([`UpstreamSession::authorization`]): a `HeaderValue` cannot be
    /// wiped, and one kept for the session's lifetime would outlive every use.
    auth: SecretString,
    state: parking_lot::RwLock<State>,
    /// Serializes re-initialization after upstream forgot the session.
    reinit: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    max_bytes: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSession")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Reads `response`'s body up to `max` bytes.
async fn body_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::Failed(format!("reading the answer: {e}")))?
    {
        if out.len() + chunk.len() > max {
            return Err(UpstreamError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The JSON-RPC response with `id` among the `data:` payloads of one SSE event, if any.
fn sse_event_response(event: &[u8], id: u64) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    if data.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(&data).ok()?;
    (v.get("id").and_then(Value::as_u64) == Some(id)).then_some(v)
}

/// Position and length of the first event separator (a blank line) in `buf`.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Reads an SSE answer until the response to `id` arrives (other messages are skipped).
async fn sse_response(
    mut response: reqwest::Response,
    id: u64,
    max: usize,
) -> Result<Value, UpstreamError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0usize;
    loop {
        while let Some((end, sep)) = event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end + sep).collect();
            if let Some(v) = sse_event_response(&event[..end], id) {
                return Ok(v);
            }
        }
        let chunk = response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Failed(format!("reading the answer stream: {e}")))?;
        let Some(chunk) = chunk else {
            // The stream ended: a last event without its blank line still counts.
            return sse_event_response(&buf, id).ok_or_else(|| {
                UpstreamError::Failed("the answer stream ended without a response".into())
            });
        };
        read += chunk.len();
        if read > max {
            return Err(UpstreamError::TooLarge(max));
        }
        buf.extend_from_slice(&chunk);
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// `Authorization: Bearer <token>`, marked sensitive (never printed by `http`'s `Debug`); the
/// formatted text is wiped once copied into the header.
fn bearer(token: &SecretString) -> Result<HeaderValue, UpstreamError> {
    let text = zeroize::Zeroizing::new(format!("Bearer {}", token.expose_secret()));
    let mut auth = HeaderValue::from_str(&text)
        .map_err(|_| UpstreamError::Failed("the credential is not a valid header value".into()))?;
    auth.set_sensitive(true);
    Ok(auth)
}

impl UpstreamSession {
    fn authorization(&self) -> Result<HeaderValue, UpstreamError> {
        bearer(&self.auth)
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    pub async fn open(
        http: reqwest::Client,
        url: url::Url,
        token: &SecretString,
        max_bytes: usize,
    ) -> Result<Self, UpstreamError> {
        bearer(token)?;
        let session = Self {
            http,
            url,
            auth: token.clone(),
            state: parking_lot::RwLock::new(State {
                session_id: None,
                protocol_version: HeaderValue::from_static(PROTOCOL_VERSION),
            }),
            reinit: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            max_bytes,
            closed: AtomicBool::new(false),
        };
        session.initialize().await?;
        Ok(session)
    }

    async fn initialize(&self) -> Result<(), UpstreamError> {
        {
            let mut state = self.state.write();
            state.session_id = None;
            state.protocol_version = HeaderValue::from_static(PROTOCOL_VERSION);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "agp", "version": env!("CARGO_PKG_VERSION")},
        }});
        let (answer, session_id) = self.exchange(&request, Some(id)).await?;
        let answer =
            answer.ok_or_else(|| UpstreamError::Failed("initialize got no answer".into()))?;
        if let Some(e) = answer.get("error") {
            return Err(UpstreamError::Failed(format!("initialize refused: {e}")));
        }
        let version = answer["result"]["protocolVersion"]
            .as_str()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or_else(|| HeaderValue::from_static(PROTOCOL_VERSION));
        {
            let mut state = self.state.write();
            state.session_id = session_id;
            state.protocol_version = version;
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.exchange(&initialized, None).await?;
        Ok(())
    }

    /// POSTs one message; returns the response to `expect` (if any) and the session id header.
    async fn exchange(
        &self,
        message: &Value,
        expect: Option<u64>,
    ) -> Result<(Option<Value>, Option<HeaderValue>), UpstreamError> {
        let (session_id, version) = {
            let state = self.state.read();
            (state.session_id.clone(), state.protocol_version.clone())
        };
        let mut request = self
            .http
            .post(self.url.clone())
            .header(header::AUTHORIZATION, self.authorization()?)
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .body(message.to_string());
        if let Some(sid) = &session_id {
            request = request
                .header(SESSION_HEADER, sid.clone())
                .header(VERSION_HEADER, version);
        }
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::Failed(format!("upstream unreachable: {e}")))?;
        let status = response.status();
        match status {
            StatusCode::UNAUTHORIZED => return Err(UpstreamError::Unauthorized),
            StatusCode::FORBIDDEN => return Err(UpstreamError::Forbidden),
            StatusCode::NOT_FOUND if session_id.is_some() => return Err(UpstreamError::Expired),
            s if !s.is_success() => {
                return Err(UpstreamError::Failed(format!(
                    "upstream answered HTTP {}",
                    s.as_u16()
                )));
            }
            _ => {}
        }
        let new_session = response.headers().get(SESSION_HEADER).cloned();
        let Some(id) = expect else {
            return Ok((None, new_session));
        };
        if status == StatusCode::ACCEPTED {
            return Err(UpstreamError::Failed(
                "upstream accepted a request without answering".into(),
            ));
        }
        let answer = if is_event_stream(response.headers()) {
            sse_response(response, id, self.max_bytes).await?
        } else {
            let body = body_capped(response, self.max_bytes).await?;
            serde_json::from_slice(&body)
                .map_err(|e| UpstreamError::Failed(format!("upstream's answer is not JSON: {e}")))?
        };
        Ok((Some(answer), new_session))
    }

    /// `tools/call`. A session upstream forgot is initialized again and the call sent once more.
    pub async fn call_tool(
        &self,
        params: &CallToolRequestParams,
    ) -> Result<CallToolResult, UpstreamError> {
        match self.call_once(params).await {
            Err(UpstreamError::Expired) => {
                let _one = self.reinit.lock().await;
                self.initialize().await?;
                self.call_once(params).await
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        params: &CallToolRequestParams,
    ) -> Result<CallToolResult, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let (answer, _) = self.exchange(&request, Some(id)).await?;
        let mut answer = answer.ok_or_else(|| UpstreamError::Failed("no answer".into()))?;
        if let Some(error) = answer.get_mut("error") {
            let error: ErrorData = serde_json::from_value(error.take())
                .map_err(|e| UpstreamError::Failed(format!("malformed error: {e}")))?;
            return Err(UpstreamError::Rpc(error));
        }
        let result = answer.get_mut("result").map(Value::take).ok_or_else(|| {
            UpstreamError::Failed("an answer with neither result nor error".into())
        })?;
        serde_json::from_value(result)
            .map_err(|e| UpstreamError::Failed(format!("malformed tools/call result: {e}")))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Ends the session upstream (HTTP DELETE), best effort, in the background.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(sid) = self.state.read().session_id.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(auth) = self.authorization() else {
            return;
        };
        let request = self
            .http
            .delete(self.url.clone())
            .header(header::AUTHORIZATION, auth)
            .header(SESSION_HEADER, sid);
        runtime.spawn(async move {
            let _ = request.send().await;
        });
    }
}

impl Drop for UpstreamSession {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_matched_by_id() {
        let stream = b"id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\r\n\r\n";
        let (end, sep) = event_end(stream).expect("first event");
        assert!(sse_event_response(&stream[..end], 7).is_none());
        let rest = &stream[end + sep..];
        let (end, _) = event_end(rest).expect("second event");
        let v = sse_event_response(&rest[..end], 7).expect("the response");
        assert_eq!(v["id"], 7);
        // Multi-line data is joined with newlines (JSON allows them between tokens).
        let multi = b"data: {\"jsonrpc\":\"2.0\",\ndata: \"id\":3,\"result\":{}}";
        assert_eq!(sse_event_response(multi, 3).expect("joined")["id"], 3);
        assert!(sse_event_response(b": keep-alive", 3).is_none());
    }
}
