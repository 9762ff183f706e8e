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
//! - On replicas, a well-formed key this replica's view does not know may belong to an agent
//!   created (or a key rotated) on another replica a moment ago: the view catches up before the
//!   key is refused. Those catch-ups are paced ([`UnknownKeys`]: at most one start every
//!   [`UNKNOWN_KEY_PACE`], shared by every request that waits for it), so a flood of made-up keys
//!   costs the database a few queries a second, not one per request. A missing or malformed
//!   header is refused at once.
//! - `Authorization`, `Cookie` and `Proxy-Authorization` are removed before the request reaches
//!   the MCP layer. Upstream requests are built by the pool from scratch, so none of the agent's
//!   headers (these, `Forwarded`/`X-Forwarded-*`, its session id) can reach upstream (S14).

use std::sync::Arc;
use std::time::Duration;

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

/// Most often a catch-up for keys this replica does not know starts.
pub const UNKNOWN_KEY_PACE: Duration = Duration::from_millis(50);

/// Paces the catch-ups that unknown agent keys cause on replicas: a request that finds the
/// last one started less than [`UNKNOWN_KEY_PACE`] ago waits until then, with every other
/// request that arrived meanwhile, and they share what the log's coalesced catch-up reads.
#[derive(Debug, Default)]
pub(crate) struct UnknownKeys {
    /// When the next catch-up may start.
    next: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl UnknownKeys {
    /// When this request's catch-up may start: now if none started within the pace, else
    /// the moment the pace allows (which later arrivals share).
    fn slot(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock();
        match *next {
            Some(at) if at > now => at,
            _ => {
                *next = Some(now + UNKNOWN_KEY_PACE);
                now
            }
        }
    }

    /// Waits for this request's turn.
    async fn wait(&self) {
        tokio::time::sleep_until(self.slot()).await;
    }
}

/// Why a request names no agent.
enum NoAgent {
    /// No key, or not one in the expected form.
    Malformed(&'static str),
    /// A well-formed key no active agent of this replica's view holds.
    Unknown,
}

/// 401, saying why.
fn unauthorized(no: NoAgent) -> Response {
    let why = match no {
        NoAgent::Malformed(why) => why,
        NoAgent::Unknown => "the agent key is not valid (unknown, rotated or revoked)",
    };
    refusal(StatusCode::UNAUTHORIZED, "unauthorized", why)
}

/// The agent the request's key belongs to, or why there is none.
fn authenticate(proxy: &Proxy, headers: &HeaderMap) -> Result<AgentIdentity, NoAgent> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(NoAgent::Malformed(
            "an agent key is required (Authorization: Bearer agp_…)",
        ))?;
    let key = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or(NoAgent::Malformed(
            "the Authorization header must be: Bearer <agent key>",
        ))?;
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
        .ok_or(NoAgent::Unknown)
}

/// The middleware in front of the MCP service.
pub async fn door(State(proxy): State<Arc<Proxy>>, mut req: Request, next: Next) -> Response {
    let who = match authenticate(&proxy, req.headers()) {
        Ok(who) => who,
        // Replicas: an agent created (or a key rotated) on another replica a moment ago may not
        // have reached this one's view yet; the refusal is judged on the caught-up view. (A
        // key this view accepts is checked again when the call's record is placed.)
        Err(NoAgent::Unknown) if proxy.connectors.cluster.is_shared() => {
            proxy.unknown_keys.wait().await;
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
                Err(no) => return unauthorized(no),
            }
        }
        Err(no) => return unauthorized(no),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unknown_keys_start_a_catch_up_at_most_once_per_pace_and_share_it() {
        let keys = UnknownKeys::default();
        let start = tokio::time::Instant::now();
        // The first goes at once; everyone within the pace shares the next slot.
        assert_eq!(keys.slot(), start);
        tokio::time::advance(Duration::from_millis(10)).await;
        let shared = keys.slot();
        assert_eq!(shared, start + UNKNOWN_KEY_PACE);
        for _ in 0..1000 {
            assert_eq!(
                keys.slot(),
                shared,
                "a flood waits for the same slot, not a queue"
            );
        }
        tokio::time::advance(Duration::from_millis(40)).await;
        // Past the slot: the next arrival goes at once and opens a new window.
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = tokio::time::Instant::now();
        assert_eq!(keys.slot(), now);
        assert_eq!(keys.slot(), now + UNKNOWN_KEY_PACE);
        let waited = tokio::time::Instant::now();
        keys.wait().await;
        assert_eq!(tokio::time::Instant::now() - waited, UNKNOWN_KEY_PACE);
    }
}
