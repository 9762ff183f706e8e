//! The page shell every console page shares, the security headers on every console response,
//! and the static assets (compiled into the binary: no front-end build step).
//!
//! maud escapes every interpolated value; nothing here builds HTML from strings by hand.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Signed;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `default-src 'none'` and only what the pages use, all from AGP itself: no inline script or
/// style, no frames (clickjacking), forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The security headers of every page AGP serves (the console, the API explorer): [`CSP`], no
/// framing, no sniffing, no referrer.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Middleware: the security headers of every console response.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    security_headers(h);
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The navigation: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/console/connectors", "Connectors"),
    ("/console/tools", "Tools"),
    ("/console/profiles", "Profiles"),
    ("/console/agents", "Agents"),
    ("/console/approvals", "Approvals"),
    ("/console/audit", "Audit"),
];

/// A whole page for the signed-in admin, `here` naming the navigation entry.
pub fn page(signed: &Signed, here: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · AGP" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "AGP" }
                    nav aria-label="Console" {
                        @for (path, label) in NAV {
                            a href=(path) class=[(*path == here).then_some("here")] { (label) }
                        }
                    }
                    span.who { (signed.actor) }
                    form method="post" action="/console/sign-out" {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without the navigation (sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · AGP" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body { main { (body) } }
        }
    }
}

/// An error page with `status`, naming what went wrong.
pub fn error(signed: &Signed, status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { "Something went wrong" }
        p.form-error { (message) }
        p { a href="/console/connectors" { "Back to connectors" } }
    };
    (status, page(signed, "", "Error", body)).into_response()
}

/// The error page for a refusal of the REST API's (its status and its words).
pub fn api_error(signed: &Signed, e: &crate::api::ApiError) -> Response {
    let (status, message) = e.shown();
    error(signed, status, &message)
}

/// The CSRF field every state-changing form carries.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// A timestamp for people (UTC, to the minute), or an em dash.
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}
