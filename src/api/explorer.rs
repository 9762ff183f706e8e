//! The API explorer: Swagger UI for `/api/v1/openapi.json`, at `/api/v1/docs`.
//!
//! Every byte is inside the binary: Swagger UI's bundle and stylesheet are the unmodified files
//! of the npm package `swagger-ui-dist`, vendored under `assets/swagger-ui/` (version, integrity
//! and checksums in its README.md; `tools/vendor-swagger-ui` updates them), and the page and its
//! start-up script are AGP's own. Nothing is fetched from anywhere else, at build or run time.
//!
//! The explorer runs under the console's strict Content-Security-Policy (no inline script or
//! style element, everything from AGP itself, no framing): the start-up script is a file, and
//! Swagger UI's validator badge, which would send the document to a third party, is off. Like
//! the document it shows, the page needs no token; "Try it out" sends the admin token the user
//! enters under "Authorize", and only to this origin.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, html};

use super::SharedState;
use super::error::error_response;

/// Where the explorer lives (under `/api/v1`).
pub const PATH: &str = "/api/v1/docs";

/// The console's policy: `default-src 'none'` and only what the page uses, all from AGP itself.
pub use crate::console::layout::CSP;

/// The vendored Swagger UI release (see `assets/swagger-ui/README.md`).
pub const SWAGGER_UI_VERSION: &str = "5.36.0";

const BUNDLE: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");
const INIT: &[u8] = include_bytes!("assets/explorer.js");

/// The explorer's routes, relative to `/api/v1` (no admin token: the document is public too).
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/{asset}", get(asset))
        .layer(axum::middleware::from_fn(headers))
}

/// Middleware: the security headers of every explorer response.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    crate::console::layout::security_headers(response.headers_mut());
    response
}

/// The explorer page.
#[utoipa::path(get, path = "/api/v1/docs", tag = "operations", operation_id = "api_explorer", security(()),
    responses((status = 200, description = "Swagger UI for this document (HTML; its assets are in the binary)", content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "AGP API explorer" }
                link rel="stylesheet" href=(format!("{PATH}/swagger-ui.css"));
                script src=(format!("{PATH}/swagger-ui-bundle.js")) defer {}
                script src=(format!("{PATH}/explorer.js")) defer {}
            }
            body {
                div id="swagger-ui" {}
                noscript { "The API explorer needs JavaScript; the document itself is at "
                    a href="/api/v1/openapi.json" { "/api/v1/openapi.json" } "." }
            }
        }
    };
    ([(header::CACHE_CONTROL, "no-cache")], markup).into_response()
}

/// One of the explorer's assets.
#[utoipa::path(get, path = "/api/v1/docs/{asset}", tag = "operations", operation_id = "api_explorer_asset", security(()),
    params(("asset" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css` or `explorer.js`")),
    responses(
        (status = 200, description = "The asset (JavaScript or CSS)", content(("text/javascript"), ("text/css"))),
        (status = 404, description = "No such asset", body = super::error::ErrorBody)))]
pub(crate) async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    // A name that does not even decode is no asset either (a 404, as the document says).
    let name = name.map(|Path(n)| n).unwrap_or_default();
    let (body, content_type) = match name.as_str() {
        "swagger-ui-bundle.js" => (BUNDLE, "text/javascript; charset=utf-8"),
        "swagger-ui.css" => (CSS, "text/css; charset=utf-8"),
        "explorer.js" => (INIT, "text/javascript; charset=utf-8"),
        _ => return error_response(StatusCode::NOT_FOUND, "not_found", "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Changes only with AGP's version; an hour keeps reloads cheap.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
