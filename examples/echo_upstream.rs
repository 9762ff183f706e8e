//! A near-free upstream for the proxy benchmark (issue 15): an OAuth-protected MCP server on
//! rmcp's streamable HTTP server — stateless, answering `application/json`, one `echo` tool,
//! one tokio thread — so that what a benchmark measures through AGP is AGP's own cost, not the
//! upstream's (the node test server spends more per call than AGP does, and its garbage
//! collector lands in the tail).
//!
//! It is a real resource server of a real authorization server: it serves its RFC 9728 metadata
//! naming `--issuer`, answers 401 with a `resource_metadata` challenge without a token, and
//! validates each bearer token by RFC 7662 introspection at the issuer (authenticated as
//! `--introspection-client ID:SECRET`), caching an active result for
//! `--introspection-cache-ms` (keyed by the token's SHA-256; the token itself is never kept).
//!
//! ```sh
//! cargo run --release --example echo_upstream -- --issuer http://127.0.0.1:AS_PORT [--port 0]
//! ```
//!
//! Prints one JSON line when ready: `{"ready": true, "url": ".../mcp", "issuer": ...}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Args {
    port: u16,
    issuer: String,
    client_id: String,
    client_secret: String,
    cache: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut port = 0;
    let mut issuer = None;
    let mut client = "mcp-resource-server:secret".to_string();
    let mut cache_ms = 5000u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = value()?.parse().context("--port")?,
            "--issuer" => issuer = Some(value()?.trim_end_matches('/').to_string()),
            "--introspection-client" => client = value()?,
            "--introspection-cache-ms" => {
                cache_ms = value()?.parse().context("--introspection-cache-ms")?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let (client_id, client_secret) = client
        .split_once(':')
        .context("--introspection-client is ID:SECRET")?;
    Ok(Args {
        port,
        issuer: issuer.context("--issuer is required")?,
        client_id: client_id.to_string(),
        client_secret: client_secret.to_string(),
        cache: Duration::from_millis(cache_ms),
    })
}

/// The one tool.
#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("echo-upstream", "1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        });
        let Value::Object(schema) = schema else {
            return Err(McpError::internal_error("schema", None));
        };
        let tool = Tool::new("echo", "Returns the text it is given.", schema)
            .with_annotations(ToolAnnotations::new().read_only(true));
        Ok(ListToolsResult::with_all_items(vec![tool]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params("echo needs a text argument", None))?;
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

/// Bearer validation by introspection, with a cache of active results.
struct Gate {
    http: reqwest::Client,
    introspection_endpoint: String,
    client_id: String,
    client_secret: String,
    resource: String,
    challenge: HeaderValue,
    cache_for: Duration,
    cache: parking_lot::Mutex<HashMap<[u8; 32], Instant>>,
}

impl Gate {
    async fn active(&self, token: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self
            .cache
            .lock()
            .get(&key)
            .is_some_and(|until| *until > Instant::now())
        {
            return true;
        }
        let answer = self
            .http
            .post(&self.introspection_endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await;
        let Ok(answer) = answer else { return false };
        let Ok(v) = answer.json::<Value>().await else {
            return false;
        };
        let audience = match &v["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let ok = v["active"] == true && audience.contains(&self.resource.as_str());
        if ok {
            let mut cache = self.cache.lock();
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(key, Instant::now() + self.cache_for);
        }
        ok
    }
}

async fn bearer(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if gate.active(t).await => next.run(req).await,
        _ => {
            let mut r = (StatusCode::UNAUTHORIZED, "").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, gate.challenge.clone());
            r
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let meta: Value = http
        .get(format!("{}/.well-known/openid-configuration", args.issuer))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let introspection_endpoint = meta["introspection_endpoint"]
        .as_str()
        .context("the authorization server has no introspection_endpoint")?
        .to_string();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let resource = format!("{base}/mcp");
    let prm_url = format!("{base}/.well-known/oauth-protected-resource/mcp");
    let prm = json!({
        "resource": resource,
        "authorization_servers": [args.issuer],
        "scopes_supported": ["mcp:read", "mcp:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "AGP bench echo upstream (rmcp)",
    });
    let gate = Arc::new(Gate {
        http,
        introspection_endpoint,
        client_id: args.client_id,
        client_secret: args.client_secret,
        resource: resource.clone(),
        challenge: HeaderValue::from_str(&format!("Bearer resource_metadata=\"{prm_url}\""))?,
        cache_for: args.cache,
        cache: parking_lot::Mutex::new(HashMap::new()),
    });
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = false;
    config.json_response = true;
    let mcp = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let prm_doc = prm.clone();
    let app = axum::Router::new()
        .route_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(gate, bearer))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            axum::routing::get(move || {
                let doc = prm_doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            axum::routing::get(move || {
                let doc = prm.clone();
                async move { axum::Json(doc) }
            }),
        );
    println!(
        "{}",
        json!({"ready": true, "url": resource, "resource_metadata": prm_url, "issuer": args.issuer})
    );
    axum::serve(listener, app).await?;
    Ok(())
}
