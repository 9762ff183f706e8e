//! The OpenAPI document beyond the admin API's own handlers: the responses every admin route
//! can give (401 without a valid token; 400, 413 and 415 for what a request carries), and the
//! routes without the admin token — operations (`/healthz`, `/readyz`, `/metrics`, this document
//! and its explorer at `/api/v1/docs`), the browser side of consent (`/connect/*`) and the
//! agents' MCP endpoint (`/mcp`) — so that a client, or a fuzzer, learns every answer AGP can
//! give from the document alone. Only the console (`/console/*`, HTML for a signed-in browser)
//! is left out.

use utoipa::OpenApi;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use super::error::ErrorBody;

/// The routes outside `/api/v1`, none under the admin token.
#[derive(OpenApi)]
#[openapi(
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi_json,
        super::explorer::page,
        super::explorer::asset,
        connect_start,
        connect_callback,
        connect_result,
        client_metadata_document,
        mcp_post,
        mcp_get,
        mcp_delete,
    ),
    components(schemas(super::ops::Health, super::ops::Readiness)),
    tags(
        (name = "operations", description = "Liveness, readiness and metrics (no token)"),
        (name = "consent", description = "The admin's browser during a connector's consent (no token: the flow's signed state and a browser-bound cookie are the checks)"),
        (name = "mcp", description = "The agents' MCP endpoint (streamable HTTP, an agent key as bearer token)"),
    )
)]
pub struct OutsideDoc;

/// The whole document: the admin API's (paths already under `/api/v1`) with the common
/// responses added, then the routes outside it.
pub fn complete(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in openapi.paths.paths.values_mut() {
        for op in operations(item) {
            let has_body = op.request_body.is_some();
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error_response(description));
            };
            add(
                "400",
                "The request is malformed: a path or query parameter, or the body; the message names what",
            );
            add("401", "No valid admin token");
            if has_body {
                add("413", "The body is over the size limit");
                add(
                    "415",
                    "The body is not sent as application/json (Content-Type)",
                );
            }
        }
    }
    let outside = OutsideDoc::openapi();
    openapi.paths.paths.extend(outside.paths.paths);
    let components = openapi.components.get_or_insert_with(Default::default);
    if let Some(theirs) = outside.components {
        components.schemas.extend(theirs.schemas);
    }
    components.add_security_scheme(
        "agent_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An agent's key (`agp agents create` prints it once)"))
                .build(),
        ),
    );
    if let Some(tags) = outside.tags {
        openapi.tags.get_or_insert_with(Vec::new).extend(tags);
    }
    // Every answer carries its request id (`super::request_id`).
    let header = request_id_header();
    for item in openapi.paths.paths.values_mut() {
        for op in operations(item) {
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    r.headers
                        .insert(super::request_id::HEADER.to_string(), header.clone());
                }
            }
        }
    }
    openapi
}

/// The `x-request-id` response header.
fn request_id_header() -> RefOr<Header> {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    RefOr::T(
        HeaderBuilder::new()
            .schema(Some(schema))
            .description(Some(
                "The request's id: the caller's `x-request-id` when it is a UUID, else a fresh \
                 UUID v7. Every log line of the request and every event it causes carry it \
                 (as `correlation_id`).",
            ))
            .build(),
    )
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Keeps [`ErrorBody`] named here, where the document refers to it by name.
#[allow(dead_code)]
fn _error_body(_: ErrorBody) {}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", operation_id = "openapi_document", security(()),
    responses((status = 200, description = "The OpenAPI document of every route", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

// ---- consent (handlers in `super::connect`) ---------------------------------------------------

/// Binds a consent flow to this browser (a cookie) and sends it to the provider's authorization
/// page. Opened from the link `connectors add` prints; from the console, only in the console
/// session that started it.
#[utoipa::path(get, path = "/connect/start/{flow}", tag = "consent", security(()),
    params(("flow" = String, Path, description = "The flow id from the authorize URL")),
    responses(
        (status = 302, description = "To the provider's authorization page, with the flow's browser cookie set"),
        (status = 403, description = "The flow was started from another console session", content_type = "text/html"),
        (status = 404, description = "No such flow", content_type = "text/html"),
        (status = 409, description = "The flow is already bound to another browser", content_type = "text/html"),
        (status = 410, description = "The flow expired", content_type = "text/html")))]
#[allow(dead_code)]
fn connect_start() {}

/// The one redirect URI of every connector: the provider sends the browser back here with
/// `code`, `state` and `iss` (or `error`). Always answers with a redirect to a clean result URL,
/// so the code leaves the address bar and history.
#[utoipa::path(get, path = "/connect/callback", tag = "consent", security(()),
    params(
        ("state" = Option<String>, Query, description = "The flow's signed state"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("iss" = Option<String>, Query, description = "The issuer (RFC 9207)"),
        ("error" = Option<String>, Query, description = "The provider's error code"),
        ("error_description" = Option<String>, Query, description = "The provider's error text"),
    ),
    responses((status = 303, description = "To /connect/result/{id}, which shows the outcome")))]
#[allow(dead_code)]
fn connect_callback() {}

/// The outcome of a consent, as a page (kept for 10 minutes).
#[utoipa::path(get, path = "/connect/result/{id}", tag = "consent", security(()),
    params(("id" = String, Path, description = "The result id the callback redirected to")),
    responses(
        (status = 200, description = "The connector is active", content_type = "text/html"),
        (status = 400, description = "The consent failed; the page says why", content_type = "text/html"),
        (status = 404, description = "No such result (or it expired)", content_type = "text/html")))]
#[allow(dead_code)]
fn connect_result() {}

/// The OAuth Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document) of a
/// connector registered by CIMD: its URL is the connector's `client_id`, and the authorization
/// server fetches it to learn the client name, the redirect URI and the token endpoint auth
/// method (`none`: no secret exists). Handler in `super::client_metadata`.
#[utoipa::path(get, path = "/.well-known/agp-client/{connector_id}", tag = "consent", security(()),
    params(("connector_id" = String, Path, description = "The connector's id")),
    responses(
        (status = 200, description = "The metadata document: client_id (this URL), client_name, redirect_uris, grant_types, response_types, token_endpoint_auth_method, application_type, client_uri when AGP's public URL is https", content_type = "application/json"),
        (status = 404, description = "No connector with that id uses a metadata document", content_type = "application/json")))]
#[allow(dead_code)]
fn client_metadata_document() {}

// ---- MCP (served by rmcp behind `crate::proxy::auth::door`) -----------------------------------

/// A JSON-RPC message of the MCP streamable HTTP transport (`initialize`, `tools/list`,
/// `tools/call`, notifications). Answers JSON, or an SSE stream (a held call's progress).
#[utoipa::path(post, path = "/mcp", tag = "mcp", security(("agent_key" = [])),
    request_body(content = Object, content_type = "application/json", description = "One JSON-RPC message"),
    params(("Mcp-Session-Id" = Option<String>, Header, description = "The session, after initialize")),
    responses(
        (status = 200, description = "The JSON-RPC answer (JSON or an SSE stream)"),
        (status = 202, description = "A notification or response was accepted"),
        (status = 400, description = "Not a valid JSON-RPC message, or a bad session id", body = ErrorBody),
        (status = 401, description = "No valid agent key", body = ErrorBody),
        (status = 404, description = "No such MCP session for this agent (initialize a new one)", body = ErrorBody),
        (status = 406, description = "The Accept header lacks application/json and text/event-stream"),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not application/json"),
        (status = 429, description = "Too many MCP sessions for this agent", body = ErrorBody)))]
#[allow(dead_code)]
fn mcp_post() {}

/// The session's notification stream (SSE): `notifications/tools/list_changed` when what the
/// agent may use changes.
#[utoipa::path(get, path = "/mcp", tag = "mcp", security(("agent_key" = [])),
    params(("Mcp-Session-Id" = String, Header, description = "The session")),
    responses(
        (status = 200, description = "An SSE stream", content_type = "text/event-stream"),
        (status = 400, description = "No or a bad session id", body = ErrorBody),
        (status = 401, description = "No valid agent key", body = ErrorBody),
        (status = 404, description = "No such MCP session for this agent", body = ErrorBody),
        (status = 406, description = "The Accept header lacks text/event-stream")))]
#[allow(dead_code)]
fn mcp_get() {}

/// Closes the session.
#[utoipa::path(delete, path = "/mcp", tag = "mcp", security(("agent_key" = [])),
    params(("Mcp-Session-Id" = String, Header, description = "The session")),
    responses(
        (status = 200, description = "Closed"),
        (status = 202, description = "Closed"),
        (status = 400, description = "No or a bad session id", body = ErrorBody),
        (status = 401, description = "No valid agent key", body = ErrorBody),
        (status = 404, description = "No such MCP session for this agent", body = ErrorBody)))]
#[allow(dead_code)]
fn mcp_delete() {}
