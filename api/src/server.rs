//! The HTTP server: accepts connections up to `--max-connections`, serves
//! each with hyper under the header timeout, and drains on shutdown.
//!
//! `axum::serve` has neither a header-read timeout nor a connection cap, so
//! the accept loop is ours; the connections are hyper's (`http1::Builder`
//! with its `header_read_timeout`), watched by hyper-util's
//! `GracefulShutdown`. Body deadlines and size limits are per request, in
//! `routes::guards`.

mod automatic_errors;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::{ErrorBody, ErrorResponse};
use crate::settings::HttpLimits;
use automatic_errors::AutomaticErrors;

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets the requests in flight finish for up to `grace`
/// (long-lived ones, event streams, are cut then).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connection = http1::Builder::new();
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: not a reason to stop serving.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(AutomaticErrors::new(stream));
        let served = connection.serve_connection(io, TowerToHyperService::new(router.clone()));
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                // Timeouts and clients that go away: routine, not errors.
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still open after the {grace:?} grace period; closing them");
        }
    }
    Ok(())
}

/// How long a refused connection may take to receive its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers a connection over the cap with a 503 in the API's JSON shape and
/// closes it: the client learns why, and how long to wait.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = serde_json::to_string(&ErrorResponse {
        error: ErrorBody {
            code: "too_many_connections".into(),
            message: format!(
                "the server already serves its {max} connections; retry after the Retry-After delay"
            ),
        },
    })
    .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing: closing a socket with
        // unread data resets it, and the client might lose the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}
