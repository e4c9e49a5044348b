//! The ByteEdit HTTP API: accepts uploads, records jobs in Postgres, queues
//! them on Redis, streams their progress, and serves their outputs.
//!
//! Handlers live in [`routes`], one file per resource; [`validation`] turns a
//! raw multipart form into a checked job; [`views`] holds what they answer;
//! [`error::ApiError`] is the only way an error reaches a client. The
//! process is assembled here: flags ([`ApiArgs`]) become [`Settings`] once,
//! the state is built from them, and [`serve`] runs the router with the
//! [`Background`] loops, behind [`server`]'s connection limits.

pub mod auth;
pub mod background;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod retention;
pub mod routes;
pub mod server;
pub mod settings;
pub mod state;
pub mod validation;
pub mod views;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use byteedit_jobs::Backends;
use tokio::net::TcpListener;

pub use background::Background;
pub use config::ApiArgs;
pub use error::ApiError;
pub use settings::Settings;
pub use state::AppState;

/// Builds the state for a connected service from its flags (starts nothing).
pub fn app_state(args: &ApiArgs, backends: Backends) -> AppState {
    AppState::new(args.settings(), backends)
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves, with the [`Background`] loops, until `shutdown` resolves, then
/// finishes the requests in flight (for up to 30 s).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_draining(listener, state, shutdown, Duration::from_secs(30)).await
}

/// Serves until `shutdown` resolves, then stops accepting connections and
/// lets the requests in flight finish, for up to `grace`: long-lived ones
/// (event streams) are cut then. The [`Background`] loops run for as long as
/// it serves (the event streams being drained still need the relay).
pub async fn serve_draining(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    tracing::info!("API listening on http://{}", listener.local_addr()?);
    let background = Background::start(&state);
    let limits = state.settings.http;
    let served = server::serve(listener, router(state), limits, shutdown, grace).await;
    background.stop().await;
    served
}
