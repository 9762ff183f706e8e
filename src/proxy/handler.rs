//! The rmcp `ServerHandler` agents talk to: `tools/list` and `tools/call` for the agent the
//! request authenticated as (put into the request's extensions by [`super::auth::door`]).

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use tracing::Instrument;

use super::sessions::visibility_fingerprint;
use super::{AgentIdentity, Proxy};

/// One per MCP session (rmcp's factory makes them); they share the [`Proxy`].
#[derive(Clone)]
pub struct McpHandler {
    pub proxy: Arc<Proxy>,
}

fn parts(ext: &rmcp::model::Extensions) -> Option<&axum::http::request::Parts> {
    ext.get::<axum::http::request::Parts>()
}

fn identity(ext: &rmcp::model::Extensions) -> Result<AgentIdentity, McpError> {
    parts(ext)
        .and_then(|p| p.extensions.get::<AgentIdentity>())
        .cloned()
        // The door authenticates every request; this is only reached if it was bypassed.
        .ok_or_else(|| McpError::invalid_request("not authenticated", None))
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("agp", env!("CARGO_PKG_VERSION")).with_title("AGP"))
        .with_instructions(
            "The tools this agent's AGP behavior profile grants. Every call is checked, \
             recorded and made with a credential AGP holds; the list changes when grants do.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let who = identity(&context.extensions)?;
        Ok(ListToolsResult::with_all_items(self.proxy.list_tools(&who)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let who = identity(&context.extensions)?;
        let request_id = parts(&context.extensions).map_or_else(uuid::Uuid::now_v7, |p| {
            crate::api::request_id::of(&p.headers)
        });
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| super::govern::Progress {
                peer: context.peer.clone(),
                token,
            });
        // rmcp runs this in its session's task, outside the HTTP request's span: the call gets
        // a span of its own naming the request (the direct path, `super::direct`, runs inside
        // the request's span).
        let span = tracing::info_span!("tools_call", request_id = %request_id);
        self.proxy
            .call(&who, request, progress.as_ref(), request_id)
            .instrument(span)
            .await
            .map(CallToolResponse::Complete)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Some(p) = parts(&context.extensions) else {
            return;
        };
        let (Some(who), Some(id)) = (
            p.extensions.get::<AgentIdentity>(),
            p.headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok()),
        ) else {
            return;
        };
        let seen = self
            .proxy
            .projections
            .read(|s| visibility_fingerprint(s, &who.profile_id));
        self.proxy
            .sessions
            .attach(id, &who.agent_id, context.peer.clone(), seen);
    }
}
