//! Prometheus metrics (one registry per server instance, so tests can run many servers in one
//! process) and the per-request access log. Labels carry route templates, never raw paths or
//! query strings (the OAuth callback's query must never reach a log, S6).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::SharedState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// A standard method's name, or `other`: a label never takes arbitrary input, so requests
    /// with made-up methods cannot grow the families without bound.
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// The latency histogram's label: the matched route template (`/api/v1/profiles/{name}`), or
/// `unmatched` — never a raw path, so its series are bounded by the routes AGP declares.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// The buckets of the HTTP latency histogram: 100 µs to ~3.3 s, doubling.
fn http_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// HTTP latency by route.
pub type RouteHistograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// A proxied `tools/call`: `allow` with its outcome, or `deny` with its reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub decision: &'static str,
    pub outcome: &'static str,
}

/// The proxy's metrics; it holds a clone (families share their values).
#[derive(Clone)]
pub struct CallMetrics {
    pub calls: Family<CallLabels, Counter>,
    /// Seconds from a call's arrival to upstream's answer (allowed calls).
    pub latency: Histogram,
    /// Seconds upstream took to answer (allowed calls, retries and refreshes included). What
    /// `latency` adds to this is AGP's own share.
    pub upstream: Histogram,
    /// Seconds an allowed call waited for its durable record: a write before going upstream, a
    /// read after upstream answered (its record is written meanwhile).
    pub record_wait: Histogram,
    /// Seconds from a person's approval of a held call to the call going upstream.
    pub approval_to_upstream: Histogram,
}

/// 100 µs to ~13 s, doubling.
fn call_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 18)
}

impl Default for CallMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            // The same buckets for both, so AGP's share can be read off the difference.
            latency: Histogram::new(call_buckets()),
            upstream: Histogram::new(call_buckets()),
            record_wait: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            approval_to_upstream: Histogram::new(call_buckets()),
        }
    }
}

impl CallMetrics {
    pub fn count(&self, decision: &'static str, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels { decision, outcome })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub aggregate: &'static str,
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: RouteHistograms,
    pub commands: Family<CommandLabels, Counter>,
    pub log_head: Gauge<u64, AtomicU64>,
    pub projection_checkpoint: Gauge<u64, AtomicU64>,
    pub tool_calls: CallMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agp");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        let http_duration = RouteHistograms::new_with_constructor(http_buckets);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_duration.clone(),
        );
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register("commands", "Domain commands by outcome", commands.clone());
        let log_head = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "log_head_seq",
            "Sequence of the last durable event",
            log_head.clone(),
        );
        let projection_checkpoint = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "projection_checkpoint_seq",
            "Sequence of the last event folded into the projections",
            projection_checkpoint.clone(),
        );
        let tool_calls = CallMetrics::default();
        registry.register(
            "tool_calls",
            "Proxied tools/call requests by decision and outcome (or denial reason)",
            tool_calls.calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Proxied tools/call latency, arrival to upstream's answer",
            tool_calls.latency.clone(),
        );
        registry.register(
            "tool_call_upstream_seconds",
            "Proxied tools/call: upstream's answer time, retries and refreshes included",
            tool_calls.upstream.clone(),
        );
        registry.register(
            "tool_call_record_wait_seconds",
            "Proxied tools/call: time waited for the durable call record (writes before going \
             upstream, reads after upstream answered)",
            tool_calls.record_wait.clone(),
        );
        registry.register(
            "tool_call_approval_to_upstream_seconds",
            "Held tools/call: time from a person's approval to the call going upstream",
            tool_calls.approval_to_upstream.clone(),
        );
        Self {
            registry,
            tool_calls,
            http_requests,
            http_duration,
            commands,
            log_head,
            projection_checkpoint,
        }
    }

    pub fn command(&self, aggregate: &'static str, ok: bool) {
        self.commands
            .get_or_create(&CommandLabels {
                aggregate,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The label of `method`: its name when it is one of HTTP's own, else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware: counts and times every request and logs one line per request (method, route
/// template, status, latency — no query string, no headers, no body).
pub async fn track(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(%method, %route, status, latency_us = elapsed.as_micros() as u64, "request");
    let route = RouteLabels { route };
    state
        .metrics
        .http_duration
        .get_or_create(&route)
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route: route.route,
            status,
        })
        .inc();
    response
}
