//! Probes for the background processes (completer, enqueuer, worker,
//! reaper), which serve no API: `GET /healthz` answers while the process
//! runs; `GET /readyz` answers 200 only once the process has its
//! dependencies and its store answers now, 503 while it waits for them.

use std::sync::Arc;

use application::ports::Keys;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use tokio::sync::OnceCell;

use super::{ApiError, json_status, readiness};

/// Set once the process is connected; until then it is not ready.
pub type ReadyStore = Arc<OnceCell<Arc<dyn Keys>>>;

pub fn health_router(ready: ReadyStore) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { json_status(StatusCode::OK, "ok") }),
        )
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(ready)
}

async fn readyz(State(ready): State<ReadyStore>) -> Response {
    match ready.get() {
        Some(store) => readiness(store.as_ref()).await,
        None => ApiError::StoreUnreachable.into_response(),
    }
}
