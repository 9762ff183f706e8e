//! The browser side of consent: `/connect/start/{flow}` (bind the flow to this browser, go to
//! the provider), `/connect/callback` (the one redirect URI of every connector) and
//! `/connect/result/{id}` (the clean URL showing the outcome, S6). No admin token: these are
//! opened by the admin's browser; the flow's signed state and browser cookie are the checks.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::SharedState;
use crate::connectors::flows::{COOKIE_PREFIX, FLOW_TTL, FlowError};
use crate::connectors::pages::{Outcome, render};
use crate::connectors::service::CallbackParams;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/connect/start/{flow}", get(start))
        .route("/connect/callback", get(callback))
        .route("/connect/result/{id}", get(result))
}

/// Headers every consent response carries.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn page(status: StatusCode, outcome: &Outcome) -> Response {
    private(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render(outcome),
        )
            .into_response(),
    )
}

fn cookie_attrs(state: &SharedState) -> &'static str {
    if state.public_url.starts_with("https://") {
        "; Path=/connect; HttpOnly; SameSite=Lax; Secure"
    } else {
        "; Path=/connect; HttpOnly; SameSite=Lax"
    }
}

async fn start(
    State(state): State<SharedState>,
    Path(flow): Path<String>,
    headers: HeaderMap,
) -> Response {
    let console_session =
        crate::console::session::cookie(&headers).map(|id| crate::console::session::digest(&id));
    match state
        .connector_service
        .flows
        .bind_browser(&flow, console_session)
        .await
    {
        Ok((cookie, provider_url)) => {
            let set_cookie = format!(
                "{COOKIE_PREFIX}{flow}={cookie}; Max-Age={}{}",
                FLOW_TTL.as_secs(),
                cookie_attrs(&state)
            );
            let mut response = StatusCode::FOUND.into_response();
            let h = response.headers_mut();
            if let (Ok(c), Ok(l)) = (
                HeaderValue::from_str(&set_cookie),
                HeaderValue::from_str(&provider_url),
            ) {
                h.insert(header::SET_COOKIE, c);
                h.insert(header::LOCATION, l);
            }
            private(response)
        }
        Err(e) => {
            let status = match e {
                FlowError::AlreadyBound => StatusCode::CONFLICT,
                FlowError::WrongSession => StatusCode::FORBIDDEN,
                FlowError::Expired => StatusCode::GONE,
                FlowError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                FlowError::Corrupt => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NOT_FOUND,
            };
            page(
                status,
                &Outcome::Failed {
                    connector: None,
                    reason: e.to_string(),
                },
            )
        }
    }
}

/// The named cookie from a request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

async fn callback(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // Parsed by hand: providers add parameters of their own (session_state, scope…).
    let mut params = CallbackParams {
        correlation_id: Some(super::request_id::of(&headers)),
        ..CallbackParams::default()
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "state" => params.state = v,
            "code" => params.code = v.map(secrecy::SecretString::from),
            "iss" => params.iss = v,
            "error" => params.error = v,
            "error_description" => params.error_description = v,
            _ => {}
        }
    }
    let flow_id = params
        .state
        .as_deref()
        .and_then(|s| s.split('.').nth(1))
        .map(str::to_string);
    let outcome = state
        .connector_service
        .callback(params, |name| cookie(&headers, name))
        .await;
    // The binding cookie goes once the flow is over. A callback refused before the flow was
    // consumed (missing or foreign `iss`, a stray request) must not clear it, or the genuine
    // callback that follows would be refused as coming from another browser (S5).
    // When the table cannot be read, the cookie stays: a retried callback still needs it.
    let flow_cookie = match flow_id {
        Some(f) => match state.connector_service.flows.is_live(&f).await {
            Ok(false) => Some(format!("{COOKIE_PREFIX}{f}")),
            Ok(true) | Err(_) => None,
        },
        None => None,
    };
    let id = state.connector_service.results.put(outcome).await;
    // 303 to a clean URL: the code and state leave the address bar and history (S6).
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let Ok(l) = HeaderValue::from_str(&format!("/connect/result/{id}")) {
        h.insert(header::LOCATION, l);
    }
    if let Some(name) = flow_cookie
        && let Ok(c) = HeaderValue::from_str(&format!("{name}=; Max-Age=0{}", cookie_attrs(&state)))
    {
        h.insert(header::SET_COOKIE, c);
    }
    private(response)
}

async fn result(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(outcome) = state.connector_service.results.get(&id).await else {
        return page(
            StatusCode::NOT_FOUND,
            &Outcome::Failed {
                connector: None,
                reason: "no such result (results are kept for 10 minutes)".into(),
            },
        );
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let body = match &outcome {
            Outcome::Authorized {
                connector,
                account,
                scopes,
            } => {
                serde_json::json!({"outcome": "authorized", "connector": connector, "account": account, "scopes": scopes})
            }
            Outcome::Failed { connector, reason } => {
                serde_json::json!({"outcome": "failed", "connector": connector, "reason": reason})
            }
        };
        return private(axum::Json(body).into_response());
    }
    let status = match outcome {
        Outcome::Authorized { .. } => StatusCode::OK,
        Outcome::Failed { .. } => StatusCode::BAD_REQUEST,
    };
    page(status, &outcome)
}
