//! The HTTP server: the router on hyper, with the limits a public endpoint needs.
//!
//! In: a bound listener, the router, [`ServerLimits`] and a shutdown signal. Out: connections
//! served until the signal, then in-flight requests finished (up to 30 s).
//!
//! `/l/{token}` is public, so the server must not let a client hold a connection for free (a
//! slowloris attack: a request line and one header, then nothing):
//! - HTTP_HEADER_TIMEOUT bounds the time to receive a request's headers. hyper starts that timer
//!   whenever a connection waits for a request, so it is also how long a keep-alive connection
//!   may sit idle. A connection past it is closed.
//! - HTTP_BODY_TIMEOUT bounds the time to receive a request body (a 408 after it).
//! - HTTP_MAX_CONNECTIONS bounds the connections served at once. At the cap the server stops
//!   accepting; new clients wait in the kernel's backlog until a connection closes, which the
//!   timeouts above guarantee.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long in-flight requests may take after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// The server's protections against clients that hold connections.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// HTTP_HEADER_TIMEOUT: to receive a request's headers, and to sit idle between requests.
    pub header_timeout: Duration,
    /// HTTP_BODY_TIMEOUT: to receive a request's body.
    pub body_timeout: Duration,
    /// HTTP_MAX_CONNECTIONS: connections served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, wait for a slot before accepting: clients queue in the backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // The peer's address, for the audit log ([`crate::audit::Client`]).
        let with_peer = tower::util::MapRequest::new(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        );
        let service = TowerToHyperService::new(with_peer);
        let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            // A timed-out or reset connection is the client's business, not an error of ours.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}
