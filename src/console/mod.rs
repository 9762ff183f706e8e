//! The admin console: a third door beside `api/` and `proxy/`, served by `agp serve` at
//! `/console` (and `/` redirects there). Server-rendered HTML (maud: compile-time templates,
//! every value escaped) with one small script; its assets are compiled into the binary.
//!
//! It owns no rule: every action calls the same services and parsers as the REST API
//! (`ConnectorService`, the command buses, `api::connectors::parse_add`, …), so a refusal reads
//! the same in the console, the CLI and the API.
//!
//! - [`session`] — sign-in (admin token or a one-time link), the session cookie, CSRF;
//! - [`layout`] — the page shell, security headers (strict CSP, no framing), assets;
//! - [`connectors`] — the connectors pages: cards, add, details, lifecycle;
//! - [`servers_page`] — servers with a static credential: add, rotate the credential;
//! - [`tools_page`] — "Discover tools" → register → grant;
//! - [`approvals_page`] — the approvals inbox: held calls with their arguments, approve/deny;
//! - [`governance`] — tools (approve, unregister), profiles (policy, suspend/resume), agents
//!   (create, rotate, revoke), audit (filters, verify, replay).

pub mod approvals_page;
pub mod connectors;
pub mod governance;
pub mod layout;
pub mod pager;
pub mod servers_page;
pub mod session;
pub mod tools_page;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;

use crate::api::SharedState;
pub use session::{Sessions, Signed};

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/connectors") }),
        )
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-in/{code}", get(sign_in_with_link))
        .route("/console/sign-out", post(sign_out))
        .route("/console/assets/console.css", get(layout::css))
        .route("/console/assets/console.js", get(layout::js))
        .merge(connectors::routes())
        .merge(servers_page::routes())
        .merge(approvals_page::routes())
        .merge(governance::routes())
        .layer(axum::middleware::from_fn(layout::headers))
}

fn secure(state: &SharedState) -> bool {
    state.public_url.starts_with("https://")
}

/// Signs `actor` in: a new session, its cookie, and on to `to`.
fn signed_in(state: &SharedState, to: &str) -> Response {
    match state.console.open(state.admin.actor()) {
        Some(id) => (
            [(
                header::SET_COOKIE,
                session::set_cookie(Some(&id), secure(state)),
            )],
            Redirect::to(to),
        )
            .into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no randomness available").into_response(),
    }
}

fn sign_in_form(error: Option<&str>) -> Response {
    let body = html! {
        div.signin {
            h1 { "Sign in to AGP" }
            p.lead { "Paste the admin token (it is in the data directory's " code { "admin.token" }
                     "), or open the link " code { "agp console-link" } " prints." }
            form.panel method="post" action="/console/sign-in" {
                @if let Some(e) = error { div.form-error role="alert" { (e) } }
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                p { button.primary type="submit" { "Sign in" } }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, layout::bare("Sign in", body)).into_response()
}

async fn sign_in_page() -> Response {
    sign_in_form(None)
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !session::same_origin(&headers, &state.public_url) {
        return (StatusCode::FORBIDDEN, "cross-origin sign-in refused").into_response();
    }
    if !state.admin.verify(form.token.trim()) {
        return sign_in_form(Some("That is not the admin token."));
    }
    signed_in(&state, "/console/connectors")
}

async fn sign_in_with_link(State(state): State<SharedState>, Path(code): Path<String>) -> Response {
    if !state.console.redeem(&code) {
        return sign_in_form(Some(
            "That sign-in link is unknown, used or expired: run agp console-link again.",
        ));
    }
    signed_in(&state, "/console/connectors")
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

async fn sign_out(
    State(state): State<SharedState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = guard(&state, &signed, &headers, &f.csrf) {
        return refused;
    }
    if let Some(id) = session::cookie(&headers) {
        state.console.close(&id);
    }
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(None, secure(&state)),
        )],
        Redirect::to("/console/sign-in"),
    )
        .into_response()
}

/// A state-changing console form: the signed-in admin and the form's fields, extracted only
/// once [`guard`] passed. A handler that takes one cannot skip the CSRF and origin checks.
pub struct CheckedForm {
    pub signed: Signed,
    pub fields: Vec<(String, String)>,
}

impl axum::extract::FromRequest<SharedState> for CheckedForm {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let body =
            axum::body::Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
                .await
                .map_err(IntoResponse::into_response)?;
        let fields = connectors::fields(&body);
        if let Some(refused) = guard(state, &signed, &headers, connectors::field(&fields, "csrf")) {
            return Err(refused);
        }
        Ok(Self { signed, fields })
    }
}

/// The checks of every state-changing console request: the session's CSRF token and, when the
/// browser says, the console's own origin. `Some(refusal)`: 403, and nothing changes.
pub fn guard(
    state: &SharedState,
    signed: &Signed,
    headers: &HeaderMap,
    csrf: &str,
) -> Option<Response> {
    let presented = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(csrf);
    if !signed.csrf_ok(presented) {
        return Some(layout::error(
            signed,
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from the console (CSRF check failed); reload the page and try again.",
        ));
    }
    if !session::same_origin(headers, &state.public_url) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return Some(layout::error(
            signed,
            StatusCode::FORBIDDEN,
            &format!(
                "Cross-origin request refused: it came from {origin:?}, the console is {:?}.",
                state.public_url
            ),
        ));
    }
    None
}
