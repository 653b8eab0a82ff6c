//! The operations endpoint every long-running process can serve on an
//! address of its own (`METRICS_ADDR`), off the public API port:
//! `GET /metrics` (Prometheus text); `GET /healthz` answers while the
//! process runs; `GET /readyz` answers 200 only once the process has its
//! dependencies and its store answers now, 503 while it waits for them.

use std::sync::Arc;

use application::ports::Probe;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use tokio::sync::OnceCell;

use super::{ApiError, json_status, readiness};

/// Set once the process is connected; until then it is not ready.
pub type ReadyStore = Arc<OnceCell<Arc<dyn Probe>>>;

/// Renders the process's metrics in Prometheus' text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

pub fn health_router(ready: ReadyStore) -> Router {
    ops_router(ready, None, None)
}

/// `/healthz`, `/readyz`, given a renderer `/metrics`, and given a slot
/// the operator's console under `/console`.
pub fn ops_router(
    ready: ReadyStore,
    metrics: Option<RenderMetrics>,
    console: Option<super::ConsoleSlot>,
) -> Router {
    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { json_status(StatusCode::OK, "ok") }),
        )
        .route("/readyz", get(readyz));
    if let Some(render) = metrics {
        router = router.route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { super::prometheus_text(render()) }
            }),
        );
    }
    let mut router = router.with_state(ready);
    if let Some(slot) = console {
        router = router.merge(super::console::console_router(slot));
    }
    router.fallback(|| async { ApiError::RouteNotFound })
}

async fn readyz(State(ready): State<ReadyStore>) -> Response {
    match ready.get() {
        Some(store) => readiness(store.as_ref()).await,
        None => ApiError::StoreUnreachable.into_response(),
    }
}
