//! The agents' MCP endpoint, `<public-url>/mcp`: MCP streamable HTTP (rmcp) where agents list
//! and call the tools their behavior profile grants, with AGP's credential injected upstream.
//!
//! Pieces:
//! - [`auth`] — the HTTP door: the agent key (`Authorization: Bearer agp_…`, stored hashed),
//!   the binding of MCP sessions to the agent that opened them (S15), and the headers that never
//!   go further (S14);
//! - [`handler`] — the rmcp `ServerHandler`: `tools/list` and `tools/call`;
//! - [`direct`] — the hot path: a `tools/call` on an established session answered as JSON by
//!   the door itself, without rmcp's session hand-offs;
//! - [`sessions`] — connected sessions, told `notifications/tools/list_changed` when what their
//!   agent sees changes;
//! - [`pool`] — upstream sessions per (connector, agent), reused;
//! - [`scrub`] — the credential is removed from upstream output (S18);
//! - [`record`] — call records (`call.*`) on the agent's fact stream;
//! - [`govern`] — the profile's policy enforced: deny, the per-agent rate limit, and holding a
//!   call for a person's approval (with MCP progress while it waits).
//!
//! A call, in order ([`Proxy::call`]): resolve the tool by exact name in the catalog (S16),
//! check the profile (not suspended, grants it), the entry (not quarantined) and the connector
//! (`active`), apply the profile's policy (deny, rate limit, or hold until a person approves;
//! an approved held call is resolved again, so a kill switch fired while it waited still
//! holds), take one of the agent's concurrency permits (S19) — a refusal at any step is
//! recorded as `call.denied` and answered with an MCP error naming the reason (and, for a
//! connector, only its state). Then `call.started` is appended — for a `write` tool durably
//! *before* the request goes upstream, for a `read` tool concurrently with it; either way before
//! the agent sees a result — the pooled upstream session is used (a 401 refreshes the credential
//! once and retries; a failed session is replaced and a `read` retried once), the result is
//! scrubbed and capped, `call.completed` is queued (it is written with the agent's next record,
//! or within 10 ms) and the result returned.
//!
//! On replicas (PostgreSQL), this replica's view may lag a change another one committed a
//! moment ago, and a kill switch must still hold on the very next call (S23) without a database
//! read before every call. So every call's `call.started` takes its place in the log before
//! upstream, and the call is judged again on the view that brought up to date: its insert took
//! the log's lock, so every commit acknowledged anywhere before it was folded first. (A
//! write's record is then durable before upstream; a read's is flushed while upstream works,
//! and the result waits for it, as on one process.) A call refused then never reaches
//! upstream and ends with `call.completed`, outcome `refused`, and the reason. A refusal (or
//! a hold) by the possibly stale view, and an agent key it does not know, are judged again on
//! a caught-up view before they are answered.
//!
//! Every record a call writes has the id of the HTTP request that made it (`x-request-id`,
//! [`crate::api::request_id`]) as correlation id; the call's own id is `call_id` in the data.
//! The steps run in `debug` spans — `policy`, `credential`, `upstream`, `record` — that exist
//! only when a subscriber wants them (the OTLP exporter; decision 0022).
//!
//! Everything a call reads is in memory (projections, the pool): its only disk write is the
//! call record; a disconnect is visible to the very next call because the admin API answers
//! only after the projections folded it.

pub mod auth;
pub mod direct;
pub mod govern;
pub mod handler;
pub mod pool;
pub mod record;
pub mod refusals;
pub mod scrub;
pub mod sessions;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ErrorData, JsonObject, Tool, ToolAnnotations,
};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use uuid::Uuid;

use crate::connectors::service::ConnectorService;
use crate::connectors::service::credential::{CredentialError, needs_refresh};
use crate::domain::ToolName;
use crate::domain::call::{CallEvent, CallOutcome, Decision, DenyReason};
use crate::domain::connector::Operation;
use crate::domain::profile::Rule;
use crate::projections::catalog::{EntryRef, ToolStatus};
use crate::projections::connectors::ConnectorView;
use crate::projections::{LiveProjections, ProjectionSet};
use crate::store::{Appended, EventLog, StoreError};

use pool::{OpenError, Pooled, UpstreamLimits, UpstreamPool};
use record::{CallRecorder, arguments_digest};
use upstream::UpstreamError;

/// MCP error codes the proxy answers with (JSON-RPC server-defined range), besides `-32602`
/// (invalid params: an unknown tool, bad arguments).
pub mod codes {
    /// The tool's connector is not active; `data.connector_status` says which state.
    pub const CONNECTOR_NOT_ACTIVE: i32 = -32001;
    /// The tool is quarantined (its upstream definition changed; S17).
    pub const QUARANTINED: i32 = -32002;
    /// The agent's behavior profile is suspended.
    pub const PROFILE_SUSPENDED: i32 = -32003;
    /// The agent has too many calls in flight.
    pub const TOO_MANY_CALLS: i32 = -32004;
    /// Upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: i32 = -32005;
    /// Upstream could not be reached, refused the credential, or answered something unusable.
    pub const UPSTREAM_UNAVAILABLE: i32 = -32006;
    /// The call could not be recorded; nothing is returned without a record.
    pub const NOT_RECORDED: i32 = -32007;
    /// Upstream's answer is over the size cap.
    pub const RESULT_TOO_LARGE: i32 = -32008;
    /// The profile's policy denies the call.
    pub const POLICY_DENIED: i32 = -32009;
    /// The agent is over its profile's calls-per-minute limit.
    pub const RATE_LIMITED: i32 = -32010;
    /// The call was held and a person denied it; the message carries their reason.
    pub const APPROVAL_DENIED: i32 = -32011;
    /// The call was held and is still waiting for a decision; `data.approval_id` names it.
    pub const APPROVAL_PENDING: i32 = -32012;
    /// The agent was revoked, or its key rotated out, as the call was made (replicas).
    pub const AGENT_REVOKED: i32 = -32013;
}

/// The proxy's knobs (`agp serve` flags).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// An upstream `tools/call` must answer within this.
    pub call_timeout: Duration,
    /// Most calls one agent may have in flight (S19).
    pub agent_concurrency: usize,
    /// Most MCP sessions one agent may hold open.
    pub sessions_per_agent: usize,
    /// Largest request body an agent may send (S19).
    pub max_request_bytes: usize,
    /// Largest upstream answer passed on (S19).
    pub max_result_bytes: usize,
    /// Deepest JSON nesting accepted in arguments (S19).
    pub max_argument_depth: usize,
    /// Upstream sessions idle this long are closed.
    pub upstream_idle: Duration,
    /// Agent MCP sessions with no request for this long (and none in progress) are closed.
    pub session_idle: Duration,
    /// At most one refresh per connector is forced by upstream refusals (401) in this long.
    pub refresh_window: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(60),
            agent_concurrency: 64,
            sessions_per_agent: 64,
            max_request_bytes: 1024 * 1024,
            max_result_bytes: 8 * 1024 * 1024,
            max_argument_depth: 64,
            upstream_idle: Duration::from_secs(300),
            session_idle: Duration::from_secs(300),
            refresh_window: Duration::from_secs(30),
        }
    }
}

/// The authenticated agent of a request (put into the request's extensions by [`auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub agent: String,
    pub profile_id: String,
    /// Hex SHA-256 of the key the agent presented: on replicas, a call is judged again once
    /// its record is durable, and the key must still be the agent's current one.
    pub key_sha256: String,
}

/// Everything the MCP endpoint needs.
pub struct Proxy {
    pub(crate) projections: Arc<LiveProjections>,
    pub(crate) connectors: Arc<ConnectorService>,
    pub(crate) recorder: CallRecorder,
    /// Held calls wait for a person through this.
    pub approvals: Arc<crate::approvals::ApprovalService>,
    rate_limits: govern::RateLimits,
    pub pool: UpstreamPool,
    pub sessions: sessions::Sessions,
    pub config: ProxyConfig,
    pub metrics: crate::api::metrics::CallMetrics,
    /// rmcp's session manager, once mounted (the direct path asks it whether a session lives).
    pub(crate) rmcp_sessions: std::sync::OnceLock<
        Arc<rmcp::transport::streamable_http_server::session::local::LocalSessionManager>,
    >,
    permits: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Forced refreshes by connector, bounding what upstream refusals cost the provider.
    refusals: refusals::Refusals,
    /// Paces the catch-ups unknown agent keys cause on replicas.
    unknown_keys: auth::UnknownKeys,
}

/// A call's two ids: its own (`call_id` in its records' data) and the id of the HTTP request
/// that made it (`x-request-id`; the records' correlation id, decision 0022).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallIds {
    pub call: Uuid,
    pub correlation: Uuid,
}

/// A call refused after its `call.started`: its ids and when it arrived.
#[derive(Clone, Copy)]
struct Refused {
    ids: CallIds,
    arrived: Instant,
}

/// Why a call was refused before upstream, with what the record and the agent learn.
struct Denial {
    reason: DenyReason,
    tool: Option<ToolName>,
    entry: Option<(String, String, Operation)>,
    connector_status: Option<String>,
    profile: String,
    /// For a held call: its approval.
    approval_id: Option<String>,
    /// The approver's reason (denied), or when the approval expires (pending).
    detail: Option<String>,
}

/// What a call that passed the checks goes to, and what the policy says of it.
struct Target {
    tool: ToolName,
    upstream_name: String,
    operation: Operation,
    /// Shared with the projection (no copy per call).
    connector: Arc<ConnectorView>,
    profile: String,
    rule: Rule,
    max_calls_per_minute: u32,
}

/// How an upstream attempt failed.
enum Failure {
    Credential(CredentialError),
    Open(OpenError),
    Upstream(ErrorData),
    Timeout,
    Unavailable(String),
    TooLarge(usize),
    Unsupported,
}

/// Depth of a JSON value (a scalar is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// The MCP tool an agent is shown for a catalog entry: the catalog name, upstream's title,
/// description, schema and annotations.
pub fn tool_for(entry: EntryRef<'_>) -> Tool {
    // Built from the catalog's interned nodes: no schema text is parsed.
    let schema: JsonObject = entry.input_schema_object();
    let mut tool = Tool::new(
        entry.name().to_string(),
        entry.description().to_string(),
        schema,
    );
    tool.title = entry.title().map(str::to_string);
    tool.annotations = entry
        .annotations_value()
        .and_then(|a| serde_json::from_value::<ToolAnnotations>(a).ok());
    tool
}

/// The catalog entries an agent of `profile_id` is served: granted, active (not quarantined,
/// connector active), in name order. None while the profile is suspended.
pub fn visible_entries<'a>(p: &'a ProjectionSet, profile_id: &str) -> Vec<EntryRef<'a>> {
    let Some(profile) = p.grants.profile_by_id(profile_id) else {
        return Vec::new();
    };
    if profile.suspended {
        return Vec::new();
    }
    profile
        .grants
        .keys()
        .filter_map(|name| p.catalog.lookup(name))
        .filter(|e| e.status() == ToolStatus::Active)
        .collect()
}

fn mcp_error(code: i32, message: String, data: Value) -> ErrorData {
    ErrorData::new(ErrorCode(code), message, Some(data))
}

impl Denial {
    /// A refusal of tool `name` for `reason` with nothing else known.
    fn bare(reason: DenyReason, name: &str) -> Self {
        Self {
            reason,
            tool: ToolName::parse(name).ok(),
            entry: None,
            connector_status: None,
            profile: String::new(),
            approval_id: None,
            detail: None,
        }
    }

    /// The MCP error the agent gets: the reason, and for a connector only its state.
    fn to_error(&self, limit: usize) -> ErrorData {
        let name = self
            .tool
            .as_ref()
            .map_or_else(|| "(invalid name)".to_string(), |t| t.to_string());
        let data = json!({"reason": self.reason.as_str()});
        if let Some(e) = govern::policy_error(self, &name) {
            return e;
        }
        match self.reason {
            // Unknown and not granted read the same: an agent learns nothing of tools it was
            // not given.
            DenyReason::UnknownTool | DenyReason::NotGranted => ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                Some(json!({"reason": "unknown_tool"})),
            ),
            DenyReason::ProfileSuspended => mcp_error(
                codes::PROFILE_SUSPENDED,
                "this agent's behavior profile is suspended; no tool can be called".into(),
                data,
            ),
            DenyReason::Quarantined => mcp_error(
                codes::QUARANTINED,
                format!(
                    "tool {name} is quarantined: its upstream definition changed and waits for an administrator's approval"
                ),
                data,
            ),
            DenyReason::ConnectorNotActive => {
                let status = self.connector_status.as_deref().unwrap_or("unavailable");
                mcp_error(
                    codes::CONNECTOR_NOT_ACTIVE,
                    format!("tool {name} is unavailable: its connector is {status}"),
                    json!({"reason": "connector_not_active", "connector_status": status}),
                )
            }
            DenyReason::ConcurrencyLimit => mcp_error(
                codes::TOO_MANY_CALLS,
                format!("too many calls in flight for this agent (limit {limit}); retry later"),
                data,
            ),
            DenyReason::InvalidArguments => ErrorData::invalid_params(
                "arguments must be a JSON object within the proxy's limits".to_string(),
                Some(data),
            ),
            DenyReason::AgentRevoked => mcp_error(
                codes::AGENT_REVOKED,
                "this agent was revoked, or its key rotated out, as the call was made; the call \
                 was not made"
                    .into(),
                data,
            ),
            // Answered by `govern::policy_error` above.
            DenyReason::PolicyDenied
            | DenyReason::RateLimited
            | DenyReason::ApprovalDenied
            | DenyReason::ApprovalPending => ErrorData::internal_error("unreachable", None),
        }
    }
}

impl Proxy {
    pub fn new(
        projections: Arc<LiveProjections>,
        connectors: Arc<ConnectorService>,
        log: Arc<dyn EventLog>,
        upstream_egress: crate::oauth::egress::EgressClient,
        config: ProxyConfig,
        metrics: crate::api::metrics::CallMetrics,
        approvals: Arc<crate::approvals::ApprovalService>,
    ) -> Self {
        let limits = UpstreamLimits {
            max_response_bytes: config.max_result_bytes,
            connect_timeout: config.call_timeout.min(Duration::from_secs(30)),
        };
        let refusals = refusals::Refusals::new(config.refresh_window);
        Self {
            projections,
            connectors,
            recorder: CallRecorder::new(log),
            approvals,
            rate_limits: govern::RateLimits::default(),
            pool: UpstreamPool::new(upstream_egress, limits),
            sessions: sessions::Sessions::default(),
            config,
            metrics,
            rmcp_sessions: std::sync::OnceLock::new(),
            permits: parking_lot::Mutex::new(HashMap::new()),
            refusals,
            unknown_keys: auth::UnknownKeys::default(),
        }
    }

    /// The tools `who` is served now.
    pub fn list_tools(&self, who: &AgentIdentity) -> Vec<Tool> {
        self.projections.read(|p| {
            visible_entries(p, &who.profile_id)
                .into_iter()
                .map(tool_for)
                .collect()
        })
    }

    /// Looks the call up in the projections: the target, or why it is refused.
    fn resolve(&self, who: &AgentIdentity, name: &str) -> Result<Target, Box<Denial>> {
        self.projections.read(|p| {
            let profile = p.grants.profile_by_id(&who.profile_id);
            let profile_name = profile.map(|p| p.name.clone()).unwrap_or_default();
            let tool = ToolName::parse(name).ok();
            let deny = |reason, entry: Option<EntryRef<'_>>, status: Option<String>| {
                Box::new(Denial {
                    reason,
                    tool: tool.clone(),
                    entry: entry.map(|e| {
                        (
                            e.connector_id().to_string(),
                            e.connector().to_string(),
                            e.operation(),
                        )
                    }),
                    connector_status: status,
                    profile: profile_name.clone(),
                    approval_id: None,
                    detail: None,
                })
            };
            let Some(profile) = profile.filter(|p| !p.suspended) else {
                return Err(deny(DenyReason::ProfileSuspended, None, None));
            };
            // Exact lookup (S16): the name is never split.
            let Some((name, entry)) = tool
                .as_ref()
                .and_then(|t| p.catalog.lookup(t.as_str()).map(|e| (t.clone(), e)))
            else {
                return Err(deny(DenyReason::UnknownTool, None, None));
            };
            if !profile.grants.contains_key(entry.name()) {
                return Err(deny(DenyReason::NotGranted, Some(entry), None));
            }
            let connector = p.connectors.by_id(entry.connector_id());
            let status = connector.map_or("disconnected", |c| c.status.as_str());
            let (Some(connector), true) = (connector, status == "active") else {
                return Err(deny(
                    DenyReason::ConnectorNotActive,
                    Some(entry),
                    Some(status.to_string()),
                ));
            };
            // With its connector active, an entry that is not active is quarantined (S17).
            if entry.status() != ToolStatus::Active {
                return Err(deny(DenyReason::Quarantined, Some(entry), None));
            }
            let verdict = profile.policy.decide(&name, entry.operation());
            Ok(Target {
                tool: name,
                upstream_name: entry.upstream_name().to_string(),
                operation: entry.operation(),
                connector: p
                    .connectors
                    .for_call(entry.connector_id())
                    .unwrap_or_else(|| Arc::new(connector.clone())),
                profile: profile_name.clone(),
                rule: verdict.rule,
                max_calls_per_minute: profile.policy.max_calls_per_minute,
            })
        })
    }

    fn permit(&self, agent_id: &str) -> Option<OwnedSemaphorePermit> {
        let sem = self
            .permits
            .lock()
            .entry(agent_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.agent_concurrency)))
            .clone();
        sem.try_acquire_owned().ok()
    }

    /// Records a refusal (durably) and turns it into the agent's error.
    async fn refuse(
        &self,
        who: &AgentIdentity,
        ids: CallIds,
        denial: Denial,
        arguments_sha256: String,
    ) -> ErrorData {
        let (connector_id, connector, operation) = match &denial.entry {
            Some((i, n, o)) => (Some(i.clone()), Some(n.clone()), Some(*o)),
            None => (None, None, None),
        };
        let event = CallEvent::Denied {
            call_id: ids.call.to_string(),
            agent_id: who.agent_id.clone(),
            agent: who.agent.clone(),
            profile_id: who.profile_id.clone(),
            profile: denial.profile.clone(),
            tool: denial.tool.clone(),
            connector_id,
            connector,
            operation,
            decision: Decision::Deny,
            reason: denial.reason,
            connector_status: denial.connector_status.clone(),
            arguments_sha256,
            approval_id: denial.approval_id.clone(),
        };
        self.metrics.count("deny", denial.reason.as_str());
        let recorded = self
            .recorder
            .append(ids.correlation, &event)
            .instrument(tracing::debug_span!("record"));
        if let Err(e) = recorded.await {
            tracing::error!(call_id = %ids.call, error = %e, "a call denial could not be recorded");
        }
        denial.to_error(self.config.agent_concurrency)
    }

    /// `tools/call` for `who`, made by request `request_id` (see the module doc for the order
    /// of things).
    pub async fn call(
        &self,
        who: &AgentIdentity,
        params: CallToolRequestParams,
        progress: Option<&govern::Progress>,
        request_id: Uuid,
    ) -> Result<CallToolResult, ErrorData> {
        let arrived = Instant::now();
        let call_id = Uuid::now_v7();
        let ids = CallIds {
            call: call_id,
            correlation: request_id,
        };
        // Replicas: this replica's view may lag a change another replica committed a moment
        // ago. A call the view lets through is judged again once its record is durable (see
        // `judge_again`); a call it would refuse or hold is judged on the caught-up view, so a
        // grant made elsewhere a moment ago is not refused.
        let shared = self.connectors.cluster.is_shared();
        let (arguments_sha256, arguments_bytes) = arguments_digest(params.arguments.as_ref());
        let mut judged = self.resolve(who, &params.name);
        if shared && !matches!(&judged, Ok(t) if t.rule == Rule::Allow) {
            self.catch_up(call_id).await?;
            judged = self.resolve(who, &params.name);
        }
        let target = match judged {
            Ok(t) => t,
            Err(denial) => return Err(self.refuse(who, ids, *denial, arguments_sha256).await),
        };
        let too_deep = params.arguments.as_ref().is_some_and(|a| {
            a.values().map(depth).max().unwrap_or(0) >= self.config.max_argument_depth
        });
        let entry = Some((
            target.connector.connector_id.clone(),
            target.connector.name.clone(),
            target.operation,
        ));
        if too_deep {
            let denial = Denial {
                reason: DenyReason::InvalidArguments,
                tool: Some(target.tool.clone()),
                entry,
                connector_status: None,
                profile: target.profile.clone(),
                approval_id: None,
                detail: None,
            };
            return Err(self.refuse(who, ids, denial, arguments_sha256).await);
        }
        // Policy: deny, rate limit, or hold for a person (no permit is held while waiting).
        let held = crate::approvals::HeldArguments {
            values: params.arguments.as_ref(),
            sha256: &arguments_sha256,
        };
        let approval_id = match self
            .govern(who, &target, ids, held, progress)
            .instrument(tracing::debug_span!("policy"))
            .await
        {
            Ok(a) => a,
            Err(denial) => return Err(self.refuse(who, ids, *denial, arguments_sha256).await),
        };
        // A held call was let through: it must still be servable now (a kill switch may have
        // fired while it waited).
        let target = match (&approval_id, self.resolve(who, &params.name)) {
            (None, _) => target,
            (Some(id), Ok(now)) if now.rule == Rule::Deny => {
                let mut denial = Denial {
                    reason: DenyReason::PolicyDenied,
                    tool: Some(now.tool.clone()),
                    entry: entry.clone(),
                    connector_status: None,
                    profile: now.profile.clone(),
                    approval_id: Some(id.clone()),
                    detail: None,
                };
                denial.approval_id = Some(id.clone());
                return Err(self.refuse(who, ids, denial, arguments_sha256).await);
            }
            (Some(_), Ok(now)) => now,
            (Some(id), Err(mut denial)) => {
                denial.approval_id = Some(id.clone());
                return Err(self.refuse(who, ids, *denial, arguments_sha256).await);
            }
        };
        if let Some(id) = &approval_id {
            self.observe_approval_to_upstream(id);
        }
        let Some(_permit) = self.permit(&who.agent_id) else {
            let denial = Denial {
                reason: DenyReason::ConcurrencyLimit,
                tool: Some(target.tool.clone()),
                entry,
                connector_status: None,
                profile: target.profile.clone(),
                approval_id,
                detail: None,
            };
            return Err(self.refuse(who, ids, denial, arguments_sha256).await);
        };

        let started = CallEvent::Started {
            call_id: call_id.to_string(),
            agent_id: who.agent_id.clone(),
            agent: who.agent.clone(),
            profile_id: who.profile_id.clone(),
            profile: target.profile.clone(),
            tool: target.tool.clone(),
            connector_id: target.connector.connector_id.clone(),
            connector: target.connector.name.clone(),
            operation: target.operation,
            decision: Decision::Allow,
            arguments_sha256,
            arguments_bytes,
            approval_id: approval_id.clone(),
        };
        let written_as = target.operation;
        let (record, target) = if shared {
            // Replicas: the record takes its place in the log before upstream, and the call is
            // judged again on a view that holds every commit before it — whichever replica
            // made it. A read's record is then flushed while upstream works.
            let placed = self.recorder.submit_placed(request_id, &started);
            let placed = placed
                .instrument(tracing::debug_span!("record"))
                .await
                .map_err(|_| not_recorded(call_id))?;
            self.folded_before(call_id, &placed.appended).await?;
            let now = match self.judge_again(who, &params.name, approval_id.as_deref()) {
                Ok(now) => now,
                Err(denial) => {
                    let refused = Refused { ids, arrived };
                    return Err(self.refuse_started(who, refused, &target, *denial, approval_id));
                }
            };
            (placed.durable, now)
        } else {
            (self.recorder.submit(request_id, &started), target)
        };
        // A write is on the record before it reaches upstream; a read's record is written
        // while upstream works and awaited after. Recorded as a read and judged again as a
        // write (or the other way round): the stricter holds.
        let record = if target.operation == Operation::Write || written_as == Operation::Write {
            self.recorded(call_id, record)
                .instrument(tracing::debug_span!("record"))
                .await?;
            None
        } else {
            Some(record)
        };

        let mut upstream = params;
        upstream.name = target.upstream_name.clone().into();
        let sent = Instant::now();
        let (result, attempts, refreshed) = self.forward(who, &target, upstream).await;
        self.metrics.upstream.observe(sent.elapsed().as_secs_f64());

        // Nothing reaches the agent unless the call is on the record.
        if let Some(record) = record {
            self.recorded(call_id, record)
                .instrument(tracing::debug_span!("record"))
                .await?;
        }
        let latency_us = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (answer, outcome, result_bytes, redactions) = match result {
            Ok((result, bytes, redactions)) => {
                let outcome = if result.is_error == Some(true) {
                    CallOutcome::ToolError
                } else {
                    CallOutcome::Ok
                };
                (Ok(result), outcome, bytes, redactions)
            }
            Err((failure, redactions)) => {
                let (outcome, error) = failure_answer(&target, failure);
                (Err(error), outcome, 0, redactions)
            }
        };
        self.metrics.count("allow", outcome.as_str());
        self.metrics
            .latency
            .observe(arrived.elapsed().as_secs_f64());
        self.recorder.complete(
            request_id,
            &CallEvent::Completed {
                call_id: call_id.to_string(),
                agent_id: who.agent_id.clone(),
                tool: target.tool.clone(),
                connector_id: target.connector.connector_id.clone(),
                outcome,
                latency_us,
                result_bytes,
                attempts,
                refreshed,
                redactions,
                approval_id,
                reason: None,
            },
        );
        answer
    }

    /// Folds what other replicas committed; without the database, no judgement.
    async fn catch_up(&self, call_id: Uuid) -> Result<(), ErrorData> {
        let caught = self
            .recorder
            .log()
            .catch_up()
            .instrument(tracing::debug_span!("catch_up"))
            .await;
        caught.map(drop).map_err(|e| {
            tracing::error!(%call_id, error = %e, "cannot reach the database to judge a call");
            ErrorData::internal_error(
                "AGP cannot reach its database right now; the call was not made. Try again.",
                None,
            )
        })
    }

    /// Replicas: waits until this replica's view holds every record before `appended` (at
    /// once in practice: the writer folds what it delivers before it answers the append).
    async fn folded_before(&self, call_id: Uuid, appended: &Appended) -> Result<(), ErrorData> {
        let before = appended.first_seq.saturating_sub(1);
        if self.projections.checkpoint() >= before {
            return Ok(());
        }
        let waited = self.projections.wait_for(before, Duration::from_secs(5));
        waited.await.map_err(|e| {
            tracing::error!(%call_id, error = %e, "the view did not reach a call's own record");
            ErrorData::internal_error(
                "AGP could not judge this call against its current state; the call was not made. \
                 Try again.",
                None,
            )
        })
    }

    /// Replicas: judges a call again once its `call.started` has its place in the log. Its
    /// insert took the log's lock, so every commit acknowledged anywhere before the call
    /// arrived has a lower seq, and was folded into this view before the place was told (the
    /// writer delivers other replicas' records ahead of its own group; see
    /// [`Self::folded_before`]).
    /// The key must still be the agent's, the tool still servable, and the policy no stricter
    /// than when the call was let through.
    fn judge_again(
        &self,
        who: &AgentIdentity,
        name: &str,
        approval_id: Option<&str>,
    ) -> Result<Target, Box<Denial>> {
        let key_current = self.projections.read(|p| {
            p.grants
                .agent_by_key_hash(&who.key_sha256)
                .is_some_and(|(agent, _)| agent.agent_id == who.agent_id)
        });
        if !key_current {
            return Err(Box::new(Denial::bare(DenyReason::AgentRevoked, name)));
        }
        let now = self.resolve(who, name)?;
        let reason = match now.rule {
            Rule::Allow => return Ok(now),
            Rule::Hold if approval_id.is_some() => return Ok(now),
            // Held since: the agent calls again and is held (no approval is asked for here:
            // the record already says the call was let through).
            Rule::Hold => DenyReason::ApprovalPending,
            Rule::Deny => DenyReason::PolicyDenied,
        };
        let mut denial = Denial::bare(reason, name);
        denial.profile = now.profile;
        Err(Box::new(denial))
    }

    /// A call refused after its `call.started` (see [`Self::judge_again`]): completed as
    /// `refused` with the reason, and answered with the refusal.
    fn refuse_started(
        &self,
        who: &AgentIdentity,
        call: Refused,
        target: &Target,
        denial: Denial,
        approval_id: Option<String>,
    ) -> ErrorData {
        let reason = denial.reason;
        self.metrics.count("deny", reason.as_str());
        tracing::info!(call_id = %call.ids.call, reason = reason.as_str(), "a call was refused when judged again after its record");
        let latency = call.arrived.elapsed().as_micros();
        self.recorder.complete(
            call.ids.correlation,
            &CallEvent::Completed {
                call_id: call.ids.call.to_string(),
                agent_id: who.agent_id.clone(),
                tool: target.tool.clone(),
                connector_id: target.connector.connector_id.clone(),
                outcome: CallOutcome::Refused,
                latency_us: u64::try_from(latency).unwrap_or(u64::MAX),
                result_bytes: 0,
                attempts: 0,
                refreshed: false,
                redactions: 0,
                approval_id,
                reason: Some(reason),
            },
        );
        denial.to_error(self.config.agent_concurrency)
    }

    /// Observes how long after its approval a held call goes upstream.
    fn observe_approval_to_upstream(&self, approval_id: &str) {
        let decided = self
            .projections
            .read(|p| p.approvals.get(approval_id).and_then(|a| a.decided_at));
        if let Some(at) = decided
            && let Ok(d) = (chrono::Utc::now() - at).to_std()
        {
            self.metrics.approval_to_upstream.observe(d.as_secs_f64());
        }
    }

    /// Waits for call `call_id`'s durable record and times the wait; if the record failed, the
    /// error the agent gets instead of the result.
    async fn recorded(
        &self,
        call_id: Uuid,
        record: impl Future<Output = Result<Appended, StoreError>>,
    ) -> Result<Appended, ErrorData> {
        let waiting = Instant::now();
        let appended = record.await.map_err(|_| not_recorded(call_id))?;
        self.metrics
            .record_wait
            .observe(waiting.elapsed().as_secs_f64());
        Ok(appended)
    }

    /// An upstream session for `who` on the target's connector: the pooled one if it still
    /// fits, else a fresh one with the current (possibly refreshed) credential.
    /// On failure, also the view whose credential was tried.
    async fn session(
        &self,
        who: &AgentIdentity,
        view: &ConnectorView,
    ) -> Result<Arc<Pooled>, (Failure, ConnectorView)> {
        if !needs_refresh(view)
            && let Some(p) = self.pool.reusable(view, &who.agent_id)
        {
            return Ok(p);
        }
        let (credential, current) = self
            .connectors
            .upstream_credential_with_view(&view.name)
            .await
            .map_err(|e| (Failure::Credential(e), view.clone()))?;
        match self.pool.open(&current, &who.agent_id, credential).await {
            Ok(p) => Ok(p),
            Err(e) => Err((Failure::Open(e), current)),
        }
    }

    /// Calls upstream with one refresh-and-retry on a refused credential and one retry of a
    /// failed session (reads only: a write may have reached upstream). Returns the scrubbed
    /// result with its size and redaction count, the attempts made and whether a refresh
    /// happened.
    async fn forward(
        &self,
        who: &AgentIdentity,
        target: &Target,
        params: CallToolRequestParams,
    ) -> (
        Result<(CallToolResult, u64, u32), (Failure, u32)>,
        u32,
        bool,
    ) {
        let mut view = target.connector.clone();
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            let session = self
                .session(who, &view)
                .instrument(tracing::debug_span!("credential"));
            let pooled = match session.await {
                Ok(p) => p,
                Err((Failure::Open(OpenError::Unauthorized), tried)) if !refreshed => {
                    refreshed = true;
                    let refreshed_view = self
                        .refresh(&tried)
                        .instrument(tracing::debug_span!("credential"));
                    match refreshed_view.await {
                        Ok(v) => {
                            view = Arc::new(v);
                            continue;
                        }
                        Err(f) => return (Err((f, 0)), attempts, refreshed),
                    }
                }
                Err((f, _)) => return (Err((f, 0)), attempts, refreshed),
            };
            attempts += 1;
            let sent = pooled.service.call_tool(&params);
            let answer = tokio::time::timeout(self.config.call_timeout, sent)
                .instrument(tracing::debug_span!("upstream"))
                .await;
            let error = match answer {
                Err(_) => return (Err((Failure::Timeout, 0)), attempts, refreshed),
                Ok(Ok(result)) => return (self.finish(&pooled, result), attempts, refreshed),
                Ok(Err(UpstreamError::Rpc(mut e))) => {
                    let n = scrub_error(&pooled, &mut e);
                    return (Err((Failure::Upstream(e), n)), attempts, refreshed);
                }
                Ok(Err(UpstreamError::TooLarge(max))) => {
                    return (Err((Failure::TooLarge(max), 0)), attempts, refreshed);
                }
                Ok(Err(e)) => e,
            };
            self.pool.evict(&view.connector_id, &who.agent_id, &pooled);
            // The credential that was refused is the one the session was opened with.
            let mut tried = ConnectorView::clone(&view);
            tried.generation = pooled.generation;
            tried.token_fingerprint = pooled.fingerprint.clone();
            // Upstream's text (S27): scrubbed before it is logged.
            let detail = pooled.scrubber.scrubbed(&error.to_string());
            drop(pooled);
            match error {
                UpstreamError::Unauthorized if !refreshed && attempts < 2 => {
                    refreshed = true;
                    let refreshed_view = self
                        .refresh(&tried)
                        .instrument(tracing::debug_span!("credential"));
                    match refreshed_view.await {
                        Ok(v) => view = Arc::new(v),
                        Err(f) => return (Err((f, 0)), attempts, refreshed),
                    }
                }
                UpstreamError::Unauthorized => {
                    let f = Failure::Open(OpenError::Unauthorized);
                    return (Err((f, 0)), attempts, refreshed);
                }
                UpstreamError::Forbidden => {
                    let f = Failure::Open(OpenError::Forbidden);
                    return (Err((f, 0)), attempts, refreshed);
                }
                // A failed session is replaced; a read is sent again once (a write may have
                // reached upstream: not retried).
                _ if target.operation == Operation::Read && attempts < 2 => {
                    tracing::debug!(error = %detail, "upstream session failed; retrying once");
                }
                _ => {
                    return (Err((Failure::Unavailable(detail), 0)), attempts, refreshed);
                }
            }
        }
    }

    /// After upstream refused the credential of `view`: unless the credential already changed
    /// since, forces a refresh (single-flight, at most one per connector per
    /// [`ProxyConfig::refresh_window`]; see [`refusals`]) and returns the connector's current
    /// view. Upstream refusing fresh token after fresh token moves the connector to
    /// `reauth_required`.
    async fn refresh(&self, view: &ConnectorView) -> Result<ConnectorView, Failure> {
        let current = || {
            self.connectors
                .view(&view.name)
                .map_err(|_| Failure::Credential(CredentialError::NotFound(view.name.clone())))
        };
        let now = current()?;
        if now.generation != view.generation || now.token_fingerprint != view.token_fingerprint {
            return Ok(now);
        }
        if now.is_static() {
            // Nothing to refresh: upstream refused the static credential the admin gave.
            return Err(Failure::Open(OpenError::Unauthorized));
        }
        if !now.has_refresh_token && now.status == "active" {
            // No refresh token (GitHub OAuth apps, or `offline_access` not granted): a refused
            // token cannot be replaced, and retrying it only repeats the refusal. A person has
            // to authorize again; say so at once (issue 17, item 3).
            tracing::warn!(connector = %view.name, "upstream refused the access token and there is no refresh token; the connector needs reauthorization");
            let cmd = crate::domain::connector::ConnectorCommand::RequireReauth {
                generation: view.generation,
                reason: "the MCP server refused the access token and the provider issued no \
                         refresh token to get another; reconnect to authorize AGP again"
                    .into(),
            };
            let _ = self
                .connectors
                .run(
                    &view.connector_id,
                    &view.name,
                    cmd,
                    &crate::store::aggregate_store::CommandMeta::system(),
                )
                .await;
            return Err(Failure::Credential(CredentialError::NotActive {
                name: view.name.clone(),
                status: "reauth_required".into(),
            }));
        }
        let refused = view.token_fingerprint.as_deref().unwrap_or_default();
        match self
            .refusals
            .decide(&view.connector_id, refused, Instant::now())
        {
            refusals::Decision::PassOn => Err(Failure::Open(OpenError::Unauthorized)),
            refusals::Decision::Reauthorize => {
                tracing::warn!(connector = %view.name, "upstream keeps refusing freshly refreshed tokens; the connector needs reauthorization");
                let cmd = crate::domain::connector::ConnectorCommand::RequireReauth {
                    generation: view.generation,
                    reason: format!(
                        "the MCP server refused {} freshly refreshed access tokens in a row; reconnect to authorize AGP again",
                        refusals::CHAIN_LIMIT
                    ),
                };
                let _ = self
                    .connectors
                    .run(
                        &view.connector_id,
                        &view.name,
                        cmd,
                        &crate::store::aggregate_store::CommandMeta::system(),
                    )
                    .await;
                self.refusals.forget(&view.connector_id);
                Err(Failure::Credential(CredentialError::NotActive {
                    name: view.name.clone(),
                    status: "reauth_required".into(),
                }))
            }
            refusals::Decision::Refresh { chain } => {
                self.connectors
                    .refresh_refused(view)
                    .await
                    .map_err(Failure::Credential)?;
                let after = current()?;
                if let Some(fresh) = after.token_fingerprint.as_deref() {
                    self.refusals
                        .refreshed(&view.connector_id, fresh, chain, Instant::now());
                }
                Ok(after)
            }
        }
    }

    /// Caps and scrubs an upstream result.
    fn finish(
        &self,
        pooled: &Pooled,
        result: CallToolResult,
    ) -> Result<(CallToolResult, u64, u32), (Failure, u32)> {
        let bytes = serde_json::to_vec(&result).map_err(|_| (Failure::Unsupported, 0))?;
        if bytes.len() > self.config.max_result_bytes {
            return Err((Failure::TooLarge(bytes.len()), 0));
        }
        if !pooled.scrubber.finds(&bytes) {
            return Ok((result, bytes.len() as u64, 0));
        }
        let mut value = serde_json::to_value(&result).map_err(|_| (Failure::Unsupported, 0))?;
        let redactions = pooled.scrubber.scrub_value(&mut value);
        let size = serde_json::to_vec(&value).map_or(0, |b| b.len() as u64);
        let scrubbed: CallToolResult =
            serde_json::from_value(value).map_err(|_| (Failure::Unsupported, redactions))?;
        tracing::warn!(
            redactions,
            "upstream output carried the injected credential; removed"
        );
        Ok((scrubbed, size, redactions))
    }
}

fn scrub_error(pooled: &Pooled, e: &mut ErrorData) -> u32 {
    let mut message = e.message.to_string();
    let mut n = pooled.scrubber.scrub_str(&mut message);
    e.message = message.into();
    if let Some(data) = e.data.as_mut() {
        n += pooled.scrubber.scrub_value(data);
    }
    n
}

fn not_recorded(call_id: Uuid) -> ErrorData {
    mcp_error(
        codes::NOT_RECORDED,
        "the call could not be recorded, so its result is withheld; retry later".into(),
        json!({"reason": "not_recorded", "call_id": call_id.to_string()}),
    )
}

/// The outcome to record and the error the agent gets for a failed upstream attempt. Upstream's
/// own JSON-RPC errors pass through (scrubbed); everything else is the proxy's own words.
fn failure_answer(target: &Target, failure: Failure) -> (CallOutcome, ErrorData) {
    let tool = &target.tool;
    match failure {
        Failure::Upstream(e) => (CallOutcome::UpstreamError, e),
        Failure::Timeout => (
            CallOutcome::Timeout,
            mcp_error(
                codes::UPSTREAM_TIMEOUT,
                format!("tool {tool}: the upstream server did not answer in time"),
                json!({"reason": "timeout"}),
            ),
        ),
        Failure::TooLarge(size) => (
            CallOutcome::TooLarge,
            mcp_error(
                codes::RESULT_TOO_LARGE,
                format!("tool {tool}: the upstream answer ({size} bytes) is over the proxy's cap"),
                json!({"reason": "too_large"}),
            ),
        ),
        Failure::Credential(CredentialError::NotActive { status, .. }) => (
            CallOutcome::CredentialUnavailable,
            mcp_error(
                codes::CONNECTOR_NOT_ACTIVE,
                format!("tool {tool} is unavailable: its connector is {status}"),
                json!({"reason": "connector_not_active", "connector_status": status}),
            ),
        ),
        Failure::Credential(_) => (
            CallOutcome::CredentialUnavailable,
            mcp_error(
                codes::UPSTREAM_UNAVAILABLE,
                format!("tool {tool} is temporarily unavailable; retry later"),
                json!({"reason": "credential_unavailable"}),
            ),
        ),
        Failure::Open(OpenError::Unauthorized | OpenError::Forbidden) => (
            CallOutcome::Unauthorized,
            mcp_error(
                codes::UPSTREAM_UNAVAILABLE,
                format!("tool {tool}: the upstream server refused AGP's credential"),
                json!({"reason": "unauthorized"}),
            ),
        ),
        Failure::Open(OpenError::Timeout(_)) => (
            CallOutcome::Timeout,
            mcp_error(
                codes::UPSTREAM_TIMEOUT,
                format!("tool {tool}: the upstream server did not answer in time"),
                json!({"reason": "timeout"}),
            ),
        ),
        Failure::Open(OpenError::Unavailable(detail)) | Failure::Unavailable(detail) => {
            tracing::warn!(%tool, %detail, "upstream call failed");
            (
                CallOutcome::Unavailable,
                mcp_error(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!("tool {tool}: the upstream server is unavailable; retry later"),
                    json!({"reason": "unavailable"}),
                ),
            )
        }
        Failure::Unsupported => (
            CallOutcome::UpstreamError,
            mcp_error(
                codes::UPSTREAM_UNAVAILABLE,
                format!(
                    "tool {tool}: the upstream server answered something the proxy cannot pass on"
                ),
                json!({"reason": "unsupported_result"}),
            ),
        ),
    }
}

/// The `/mcp` endpoint, mounted: its router (behind [`auth::door`]), rmcp's session manager
/// and the token that ends every session at shutdown.
pub struct Mounted {
    pub router: axum::Router,
    pub sessions: Arc<rmcp::transport::streamable_http_server::session::local::LocalSessionManager>,
    pub cancel: tokio_util::sync::CancellationToken,
}

/// `Host` values the endpoint answers to (rmcp's DNS-rebinding guard): the public URL's host,
/// with and without its port, and loopback.
fn allowed_hosts(public_url: &str) -> Vec<String> {
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(u) = url::Url::parse(public_url)
        && let Some(host) = u.host_str()
    {
        hosts.push(host.to_string());
        if let Some(port) = u.port() {
            hosts.push(format!("{host}:{port}"));
        }
    }
    hosts
}

/// Mounts the MCP endpoint at `/mcp`.
pub fn mount(proxy: Arc<Proxy>, public_url: &str) -> Mounted {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut manager = LocalSessionManager::default();
    // Answers are kept for a client resuming a dropped response stream; a few seconds is plenty
    // (rmcp's default of 60 s holds every call's answer for a minute).
    manager.session_config.completed_cache_ttl = Duration::from_secs(5);
    // Idle sessions are closed by `sessions::spawn_watch`, which sees every request; rmcp's
    // keep-alive sees only those that pass through its worker (not direct `tools/call`s).
    manager.session_config.keep_alive = None;
    let sessions = Arc::new(manager);
    let _ = proxy.rmcp_sessions.set(sessions.clone());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(public_url))
        .with_max_request_body_bytes(proxy.config.max_request_bytes)
        .with_cancellation_token(cancel.clone());
    let for_sessions = proxy.clone();
    let service = StreamableHttpService::new(
        move || {
            Ok(handler::McpHandler {
                proxy: for_sessions.clone(),
            })
        },
        sessions.clone(),
        config,
    );
    let router = axum::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(proxy, auth::door));
    Mounted {
        router,
        sessions,
        cancel,
    }
}
