//! The console's files, embedded in the binary (nothing to install beside it, no build step):
//! one HTML shell, one script, one style sheet, and the API's OpenAPI document.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");
pub const OPENAPI: &str = include_str!("console/openapi.json");

/// Pages may only load what this server serves (no inline script: a stored cross-site script
/// would have nowhere to run), and may not be framed by another site.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn page(ctype: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "style.css" => page("text/css; charset=utf-8", STYLE),
        _ => super::http::error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

pub async fn openapi() -> Response {
    page("application/json", OPENAPI)
}
