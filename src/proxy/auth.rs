//! The HTTP door of `/mcp`: who is calling, which sessions are theirs, and what never goes
//! further.
//!
//! - The agent key (`Authorization: Bearer agp_…`) is hashed (SHA-256) and looked up among the
//!   hashes of active agents' current keys. No key, and no comparison of key bytes, is ever
//!   held: the lookup's timing depends only on the hash of what was presented (S14). A bad,
//!   revoked or rotated-out key gets 401 with a `WWW-Authenticate` challenge.
//! - A request naming an `Mcp-Session-Id` must come from the agent that opened that session;
//!   anyone else gets the same 404 as for an unknown session (S15). New sessions are bound to
//!   their agent from the `initialize` response, and an agent may hold at most
//!   `sessions_per_agent` of them.
//! - `Authorization`, `Cookie` and `Proxy-Authorization` are removed before the request reaches
//!   the MCP layer. Upstream requests are built by the pool from scratch, so none of the agent's
//!   headers (these, `Forwarded`/`X-Forwarded-*`, its session id) can reach upstream (S14).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::sessions::{Activity, Sessions};
use super::{AgentIdentity, Proxy};
use crate::api::error::error_response;

/// Keys are `agp_` + 64 hex characters; anything much longer is not worth hashing.
const MAX_KEY_LEN: usize = 256;
const SESSION_HEADER: &str = "mcp-session-id";

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = error_response(status, code, message);
    if status == StatusCode::UNAUTHORIZED {
        let challenge = format!(
            "Bearer realm=\"agp\", error=\"invalid_token\", error_description=\"{message}\""
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    response
}

/// The agent the request's key belongs to, or why there is none.
fn authenticate(proxy: &Proxy, headers: &HeaderMap) -> Result<AgentIdentity, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("an agent key is required (Authorization: Bearer agp_…)")?;
    let key = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or("the Authorization header must be: Bearer <agent key>")?;
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    proxy
        .projections
        .read(|p| {
            p.grants
                .agent_by_key_hash(&hash)
                .map(|(agent, _profile)| AgentIdentity {
                    agent_id: agent.agent_id.clone(),
                    agent: agent.name.clone(),
                    profile_id: agent.profile_id.clone(),
                    key_sha256: hash.clone(),
                })
        })
        .ok_or("the agent key is not valid (unknown, rotated or revoked)")
}

/// The middleware in front of the MCP service.
pub async fn door(State(proxy): State<Arc<Proxy>>, mut req: Request, next: Next) -> Response {
    let who = match authenticate(&proxy, req.headers()) {
        Ok(who) => who,
        // Replicas: an agent created (or a key rotated) on another replica a moment ago may not
        // have reached this one's view yet; the refusal is judged on the caught-up view. (A
        // key this view accepts is checked again when the call's record is durable.)
        Err(_) if proxy.connectors.cluster.is_shared() => {
            if let Err(e) = proxy.recorder.log().catch_up().await {
                tracing::error!(error = %e, "cannot reach the database to check an agent key");
                return refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "AGP cannot reach its database right now; try again",
                );
            }
            match authenticate(&proxy, req.headers()) {
                Ok(who) => who,
                Err(why) => return refusal(StatusCode::UNAUTHORIZED, "unauthorized", why),
            }
        }
        Err(why) => return refusal(StatusCode::UNAUTHORIZED, "unauthorized", why),
    };
    let headers = req.headers_mut();
    for h in [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(h);
    }
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .map(|v| v.to_str().map(str::to_string));
    // A request on a session holds it active until its answer is done.
    let mut activity = None;
    match &session {
        Some(Ok(id)) => match Sessions::enter(&proxy, id, &who.agent_id) {
            Some(a) => activity = Some(a),
            None => {
                return refusal(
                    StatusCode::NOT_FOUND,
                    "session_not_found",
                    "no such MCP session for this agent; initialize a new one",
                );
            }
        },
        Some(Err(_)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_session_id",
                "the Mcp-Session-Id header is not visible ASCII",
            );
        }
        None if req.method() == Method::POST
            && proxy.sessions.count_for(&who.agent_id) >= proxy.config.sessions_per_agent =>
        {
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sessions",
                &format!(
                    "this agent already holds {} MCP sessions; close one (HTTP DELETE) or reuse it",
                    proxy.config.sessions_per_agent
                ),
            );
        }
        None => {}
    }
    let mut req = req;
    if req.method() == Method::POST
        && let Some(Ok(id)) = &session
    {
        req = match super::direct::route(&proxy, &who, id, req).await {
            super::direct::Route::Answered(response) => return response,
            super::direct::Route::Pass(req) => req,
        };
    }
    let agent_id = who.agent_id.clone();
    let closing = req.method() == Method::DELETE;
    req.extensions_mut().insert(who);
    let response = next.run(req).await;
    if session.is_none()
        && let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        proxy.sessions.bind(id, &agent_id);
    }
    if let Some(Ok(id)) = &session
        && (response.status() == StatusCode::NOT_FOUND
            || (closing && response.status().is_success()))
    {
        // Closed by the agent, or rmcp no longer knows it (expired): forget the binding.
        proxy.sessions.remove(id);
    }
    match activity {
        Some(activity) if is_stream(&response) => hold_while_streaming(response, activity),
        _ => response,
    }
}

fn is_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Keeps the session active until the streamed answer (a held call's progress, a listing on
/// rmcp's SSE) is fully sent or dropped.
fn hold_while_streaming(response: Response, activity: Activity) -> Response {
    use futures::StreamExt;
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &activity;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}
