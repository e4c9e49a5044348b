//! The browser pages, each one self-contained HTML file (no build step, no
//! CDN) served from the binary and built only on the public JSON API:
//! `GET /` and `/edit`, the editor; `GET /vote`, the volunteers' page.

use axum::http::header;
use axum::response::IntoResponse;

const EDITOR: &str = include_str!("../../static/editor.html");
const VOTE: &str = include_str!("../../static/vote.html");

fn html(page: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
}

pub async fn editor_page() -> impl IntoResponse {
    html(EDITOR)
}

pub async fn vote_page() -> impl IntoResponse {
    html(VOTE)
}
