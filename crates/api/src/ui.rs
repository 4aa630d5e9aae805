//! `/ui/`: the web UI, plain HTML, CSS and JavaScript compiled into the
//! binary (`include_str!`), so every node serves it with nothing fetched at
//! run time. The page reads the same JSON APIs as any client and follows
//! `/v2/events`; it holds no server-side state. `/` redirects here.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Assets change only with the binary; revalidating is cheap on loopback
    // and keeps a node upgrade from serving yesterday's script.
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /`: to the UI.
pub async fn root() -> Redirect {
    Redirect::temporary("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`: its script and style sheet.
pub async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => asset("text/css; charset=utf-8", STYLE),
        "" | "index.html" => asset("text/html; charset=utf-8", INDEX),
        _ => crate::error::HttpError(marathon::ApiError::not_found(format!("No UI file '{name}'"))).into_response(),
    }
}
