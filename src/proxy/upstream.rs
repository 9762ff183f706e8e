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

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorData};
use serde_json::{Value, json};

use crate::connectors::injected::UpstreamCredential;

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
    /// The credential, wiped when the session goes (issue 14, item 11). The header values are
    /// built per request ([`UpstreamSession::credential_headers`]): a `HeaderValue` cannot be
    /// wiped, and one kept for the session's lifetime would outlive every use.
    auth: UpstreamCredential,
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

/// Splits an SSE byte stream into events (separated by a blank line: `\n\n`, `\r\n\r\n` or a
/// mix), looking at each byte once however the stream is chunked: a long answer arriving in
/// many small chunks costs time in proportion to its length.
#[derive(Default)]
struct SseEvents {
    buf: Vec<u8>,
    /// Where the event being read starts in `buf`.
    start: usize,
    /// Bytes of `buf` already looked at.
    scanned: usize,
    /// Bytes looked at in all (for the test that the scan is linear).
    #[cfg(test)]
    examined: usize,
}

impl SseEvents {
    fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            // Only the unfinished event moves: at most what arrived since the last separator.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event (without its blank line), if one has arrived.
    fn next_event(&mut self) -> Option<&[u8]> {
        while self.scanned < self.buf.len() {
            let i = self.scanned;
            self.scanned += 1;
            #[cfg(test)]
            {
                self.examined += 1;
            }
            if self.buf[i] != b'\n' {
                continue;
            }
            // A line ends at `i`; the event ends if the line was empty (only an optional `\r`
            // between the previous line's `\n` and this one).
            let line_start = if i > self.start && self.buf[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            if line_start > self.start && self.buf[line_start - 1] == b'\n' {
                let mut end = line_start - 1;
                if end > self.start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                let event = self.start..end;
                self.start = i + 1;
                return Some(&self.buf[event]);
            }
        }
        None
    }

    /// What is left after the stream ended (a last event without its blank line).
    fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Reads an SSE answer until the response to `id` arrives (other messages are skipped).
async fn sse_response(
    mut response: reqwest::Response,
    id: u64,
    max: usize,
) -> Result<Value, UpstreamError> {
    let mut events = SseEvents::default();
    let mut read = 0usize;
    loop {
        while let Some(event) = events.next_event() {
            if let Some(v) = sse_event_response(event, id) {
                return Ok(v);
            }
        }
        let chunk = response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Failed(format!("reading the answer stream: {e}")))?;
        let Some(chunk) = chunk else {
            // The stream ended: a last event without its blank line still counts.
            return sse_event_response(events.rest(), id).ok_or_else(|| {
                UpstreamError::Failed("the answer stream ended without a response".into())
            });
        };
        read += chunk.len();
        if read > max {
            return Err(UpstreamError::TooLarge(max));
        }
        events.push(&chunk);
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

impl UpstreamSession {
    /// The credential's headers (`Authorization: Bearer <token>`, or a static server's), each
    /// marked sensitive (never printed by `http`'s `Debug`).
    fn credential_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, UpstreamError> {
        self.auth
            .header_values()
            .map_err(|e| UpstreamError::Failed(e.to_string()))
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    pub async fn open(
        http: reqwest::Client,
        url: url::Url,
        credential: UpstreamCredential,
        max_bytes: usize,
    ) -> Result<Self, UpstreamError> {
        credential
            .header_values()
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let session = Self {
            http,
            url,
            auth: credential,
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
        let mut request = self.http.post(self.url.clone());
        for (name, value) in self.credential_headers()? {
            request = request.header(name, value);
        }
        request = request
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
        let Ok(credential) = self.credential_headers() else {
            return;
        };
        let mut request = self.http.delete(self.url.clone());
        for (name, value) in credential {
            request = request.header(name, value);
        }
        let request = request.header(SESSION_HEADER, sid);
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

    /// Every event of `stream` fed in chunks of `size` bytes.
    fn split(stream: &[u8], size: usize) -> (Vec<Vec<u8>>, Vec<u8>, usize) {
        let mut events = SseEvents::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(size) {
            events.push(chunk);
            while let Some(e) = events.next_event() {
                out.push(e.to_vec());
            }
        }
        (out, events.rest().to_vec(), events.examined)
    }

    #[test]
    fn sse_events_are_split_and_matched_by_id() {
        let stream = b"id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\r\n\r\n: tail";
        for size in [1, 2, 3, 7, stream.len()] {
            let (events, rest, _) = split(stream, size);
            assert_eq!(events.len(), 2, "chunks of {size}");
            assert!(sse_event_response(&events[0], 7).is_none());
            let v = sse_event_response(&events[1], 7).expect("the response");
            assert_eq!(v["id"], 7);
            assert_eq!(rest, b": tail");
        }
        // Multi-line data is joined with newlines (JSON allows them between tokens).
        let multi = b"data: {\"jsonrpc\":\"2.0\",\ndata: \"id\":3,\"result\":{}}";
        assert_eq!(sse_event_response(multi, 3).expect("joined")["id"], 3);
        assert!(sse_event_response(b": keep-alive", 3).is_none());
    }

    #[test]
    fn mixed_line_endings_end_an_event_and_blank_lines_alone_make_empty_events() {
        let (events, _, _) = split(b"data: a\n\r\ndata: b\r\n\n\n\n", 1);
        assert_eq!(
            events,
            vec![b"data: a".to_vec(), b"data: b".to_vec(), Vec::new()]
        );
    }

    /// Issue 14 (12): a long answer in small chunks is looked at once, not once per chunk.
    #[test]
    fn a_long_answer_in_small_chunks_is_scanned_once() {
        let mut stream = b"event: message\ndata: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 1 << 20));
        stream.extend_from_slice(b"\n\n");
        let (events, rest, examined) = split(&stream, 64);
        assert_eq!(events.len(), 1);
        assert!(rest.is_empty());
        assert_eq!(examined, stream.len());
    }
}
