//! Request ids: every HTTP request AGP answers — admin API, console, consent routes, `/mcp` —
//! carries one UUID in `x-request-id`, returned on its response, recorded on the request's
//! span (so every log line logged while serving it names it) and used as the correlation id of
//! every event the request causes (decision 0022).
//!
//! - A caller's `x-request-id` that is a UUID is kept (rewritten in its hyphenated form, so the
//!   response, the logs and the events show the same text).
//! - Anything else in that header — absent, not UTF-8, not a UUID — is replaced by a fresh
//!   UUID v7. The caller's value is dropped, never logged: a header is caller-controlled text,
//!   and only a parsed UUID goes into a log line, a span or an event.
//!
//! The stack ([`apply`]): [`normalize`] (the rule above, for a present header), tower-http's
//! `SetRequestIdLayer` (a v7 when absent), `TraceLayer` (the `request` span: method, route
//! template, request id — never the URI, whose query may carry an OAuth code, S6) and
//! `PropagateRequestIdLayer` (the id on the response).

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

/// The header.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of a request that went through [`apply`]: its `x-request-id` parsed. A
/// request that did not (a handler called directly) gets a fresh id.
pub fn of(headers: &HeaderMap) -> Uuid {
    parse(headers).unwrap_or_else(Uuid::now_v7)
}

/// `id` as a header value, hyphenated lower case (formatted on the stack).
fn header_value(id: Uuid) -> Option<HeaderValue> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)).ok()
}

fn parse(headers: &HeaderMap) -> Option<Uuid> {
    headers
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
}

/// Makes the ids of requests that come without one: UUID v7 (time-ordered, like every other id
/// AGP makes).
#[derive(Clone, Copy, Default)]
pub struct MakeV7;

impl MakeRequestId for MakeV7 {
    fn make_request_id<B>(
        &mut self,
        _request: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        header_value(Uuid::now_v7()).map(tower_http::request_id::RequestId::new)
    }
}

/// Middleware: a present `x-request-id` is kept only as a canonical UUID; any other value is
/// removed (so [`MakeV7`] replaces it).
pub async fn normalize(mut request: Request, next: Next) -> Response {
    if request.headers().contains_key(&HEADER) {
        let canonical = parse(request.headers()).and_then(header_value);
        match canonical {
            // `insert` also drops any further `x-request-id` values.
            Some(v) => {
                request.headers_mut().insert(HEADER, v);
            }
            None => {
                request.headers_mut().remove(&HEADER);
            }
        }
    }
    next.run(request).await
}

/// The `request` span: method (a fixed label), route template (`unmatched` otherwise) and
/// request id — never the URI, the query string or a header's raw text.
pub fn span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let id = parse(request.headers()).unwrap_or_default();
    tracing::info_span!(
        "request",
        method = super::metrics::method_label(request.method()),
        route,
        request_id = %id,
    )
}

/// `router` behind the request-id and trace layers.
pub fn apply(router: axum::Router) -> axum::Router {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(normalize))
            .layer(SetRequestIdLayer::new(HEADER, MakeV7))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(span::<axum::body::Body>)
                    // The one line per request is `metrics::track`'s, inside this span.
                    .on_request(())
                    .on_response(())
                    .on_body_chunk(())
                    .on_eos(())
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(HEADER)),
    )
}
