//! The hot path: a `tools/call` POST on an established session is answered right here, as an
//! `application/json` response, instead of through rmcp's session worker.
//!
//! rmcp routes each request of a stateful session through its session task, the service task
//! and back, and answers with an SSE stream; for one call in flight those hand-offs cost more
//! than everything else the proxy does. The spec lets a server answer a POSTed request with a
//! single JSON object, and a `tools/call` needs nothing of the session but its owner, which
//! [`super::auth::door`] has already checked (S15). So: one JSON-RPC request (not a batch), method
//! `tools/call`, on a session rmcp knows → [`super::Proxy::call`] → JSON. Everything else —
//! `initialize`, `tools/list`, notifications, the GET stream, DELETE — goes to rmcp unchanged.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::common::server_side_http::SessionId;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{AgentIdentity, Proxy};
use crate::api::error::error_response;

/// What the door does with a request after looking at it.
pub enum Route {
    /// Answered here.
    Answered(Response),
    /// Not a direct call: the request (body restored) goes on to rmcp.
    Pass(Request),
}

fn json_response(body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON-RPC answer to request `id`, serialized straight from the result or error (no
/// intermediate `Value` tree).
fn answer_bytes(id: &Value, outcome: Result<&CallToolResult, &ErrorData>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Answered<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: &'a CallToolResult,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        error: &'a ErrorData,
    }
    let bytes = match outcome {
        Ok(result) => serde_json::to_vec(&Answered {
            jsonrpc: "2.0",
            id,
            result,
        }),
        Err(error) => serde_json::to_vec(&Failed {
            jsonrpc: "2.0",
            id,
            error,
        }),
    };
    bytes.unwrap_or_else(|_| {
        // Not reachable with these types (string keys only); answered as an error all the same.
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
            "message": "the answer could not be serialized"}})
        .to_string()
        .into_bytes()
    })
}

/// A JSON-RPC request as the door reads it: `params` is left unparsed until it is known to be
/// a single `tools/call`.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    id: Option<Value>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// The JSON-RPC `id` and params of a single `tools/call` request, if `body` is one. A client
/// that asked for progress is left to rmcp, whose SSE answer can carry
/// `notifications/progress` while a held call waits for a person.
fn as_tools_call(body: &[u8]) -> Option<(Value, Result<CallToolRequestParams, String>)> {
    // Cheap test first: most other traffic is not a call.
    memchr::memmem::find(body, b"tools/call")?;
    let incoming: Incoming<'_> = serde_json::from_slice(body).ok()?;
    if incoming.jsonrpc != "2.0" || incoming.method != "tools/call" {
        return None;
    }
    let id = incoming.id?;
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return None;
    }
    let raw = incoming.params.map_or("null", RawValue::get);
    let params = serde_json::from_str::<CallToolRequestParams>(raw).map_err(|e| e.to_string());
    if let Ok(p) = &params
        && p.meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .is_some()
    {
        return None;
    }
    Some((id, params))
}

/// Answers `req` here when it is a `tools/call` on live session `session` of `who`.
pub async fn route(proxy: &Proxy, who: &AgentIdentity, session: &str, req: Request) -> Route {
    let (parts, body) = req.into_parts();
    let request_id = crate::api::request_id::of(&parts.headers);
    let limit = proxy.config.max_request_bytes;
    let too_large = || {
        let mut answer = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("request bodies are limited to {limit} bytes"),
        );
        // The rest of the body is never read, so the connection cannot carry another request.
        answer.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        Route::Answered(answer)
    };
    // A declared length over the cap is refused before any of the body is read.
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let Some((id, params)) = as_tools_call(&bytes) else {
        return Route::Pass(Request::from_parts(parts, Body::from(bytes)));
    };
    let live = match proxy.rmcp_sessions.get() {
        Some(m) => m
            .has_session(&SessionId::from(session))
            .await
            .unwrap_or(false),
        None => false,
    };
    if !live {
        // Let rmcp answer (404 for an expired session), as for any other request.
        return Route::Pass(Request::from_parts(parts, Body::from(bytes)));
    }
    let answer = match params {
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602,
            "message": format!("invalid tools/call params: {e}")}})
        .to_string()
        .into_bytes(),
        Ok(params) => match proxy.call(who, params, None, request_id).await {
            Ok(result) => answer_bytes(&id, Ok(&result)),
            Err(error) => answer_bytes(&id, Err(&error)),
        },
    };
    Route::Answered(json_response(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_tools_call_requests_are_taken() {
        let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a__b"}}"#;
        let (id, params) = as_tools_call(call).expect("a call");
        assert_eq!(id, json!(7));
        assert_eq!(params.expect("valid params").name, "a__b");
        let (_, bad) = as_tools_call(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call"}"#)
            .expect("a call without params is still a call");
        assert!(bad.is_err(), "and answered as invalid params");
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#[..],
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}]"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"tools/call"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"notifications/cancelled","params":{"reason":"tools/call"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__b","_meta":{"progressToken":7}}}"#,
            b"tools/call not json",
        ] {
            assert!(as_tools_call(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
