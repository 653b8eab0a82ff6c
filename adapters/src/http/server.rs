//! The HTTP server around the router: hyper's HTTP/1 connections with a
//! header read timeout, a cap on open connections, and a shutdown that
//! finishes requests in hand but never waits past a deadline.
//!
//! `axum::serve` sets none of these (its hyper builder has no timer, so no
//! header timeout), and one stalled client could then hold a connection
//! forever and keep SIGTERM from finishing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use axum::Router;

use super::{ApiState, router};

/// How long the server waits for a client, and how much it takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A client must send a request's headers within this (also closes an
    /// idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// … and its body within this.
    pub body_read_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// Ride requests in progress at most; more get 503 + `Retry-After`.
    pub max_concurrent_requests: usize,
    /// After shutdown starts, requests in hand get this long to finish;
    /// then the remaining connections are closed.
    pub shutdown_deadline: Duration,
}

impl ServerLimits {
    pub const DEFAULT: Self = Self {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(10),
        max_connections: 1024,
        max_concurrent_requests: 256,
        shutdown_deadline: Duration::from_secs(30),
    };

    /// The operations endpoint's: the API's timeouts, fewer connections
    /// (probes, a scraper and an operator need a handful), a short
    /// shutdown.
    pub const OPS: Self = Self {
        max_connections: 64,
        shutdown_deadline: Duration::from_secs(5),
        ..Self::DEFAULT
    };
}

/// Serves the API until `shutdown` resolves, then lets the requests in hand
/// finish, and the phases of requests whose clients hung up run to their
/// end, for at most `limits.shutdown_deadline` in all. Phases still running
/// then are dropped where they stand: their keys wait out the lock timeout
/// and a retry or the completer resumes them from their recovery point.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    let detached = state.detached.clone();
    serve_until(
        listener,
        router(state),
        limits,
        "API",
        shutdown,
        Some(detached),
    )
    .await
}

/// Serves `app` with `limits` (header timeout, connection cap, shutdown
/// deadline) until `shutdown` resolves: the API, and every process's
/// operations endpoint, so neither can be held open by slow or many clients.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_until(listener, app, limits, name, shutdown, None).await
}

/// `serve_router`, and at shutdown also waits for `detached` (within the
/// same deadline).
async fn serve_until(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    detached: Option<TaskTracker>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    info!(server = name, deadline = ?limits.shutdown_deadline, "stopping: finishing requests in hand");
    let deadline = tokio::time::Instant::now() + limits.shutdown_deadline;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep_until(deadline) => {
            warn!("shutdown deadline passed; closing the connections still open");
        }
    }
    if let Some(detached) = detached {
        detached.close();
        if tokio::time::timeout_at(deadline, detached.wait())
            .await
            .is_err()
        {
            warn!(
                server = name,
                left = detached.len(),
                "shutdown deadline passed with requests' phases still running; their keys wait out the lock timeout and resume from their recovery points"
            );
        }
    }
    Ok(())
}
