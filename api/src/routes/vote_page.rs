//! `GET /vote`: the volunteers' page. One self-contained HTML file (no build
//! step), served from the binary.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../static/vote.html");

pub async fn vote_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
