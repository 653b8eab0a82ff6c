//! The operations endpoint every long-running process can serve on an
//! address of its own (`METRICS_ADDR`), off the public API port:
//! `GET /metrics` (Prometheus text); `GET /healthz` answers while the
//! process runs; `GET /readyz` answers 200 only once the process has its
//! dependencies and its store answers now, 503 while it waits for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use application::ports::{Probe, StoreError};
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use tokio::sync::OnceCell;

use super::{ApiError, json_status, readiness};

/// Readiness as the probes see it: the store pinged at most once per
/// `every`, however many probes ask; those that ask while a ping is out
/// wait for it and share its answer. A flood of `/readyz` costs the store
/// one ping a second, not a pooled connection per request.
pub struct CachedProbe {
    inner: Arc<dyn Probe>,
    every: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl CachedProbe {
    /// How often the probes' answer is taken afresh.
    pub const EVERY: Duration = Duration::from_secs(1);

    pub fn new(inner: Arc<dyn Probe>, every: Duration) -> Self {
        Self {
            inner,
            every,
            last: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl Probe for CachedProbe {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut last = self.last.lock().await;
        let fresh = match &*last {
            Some((at, answer)) if at.elapsed() < self.every => answer.clone(),
            _ => {
                let answer = self.inner.ping().await.map_err(|error| error.to_string());
                *last = Some((Instant::now(), answer.clone()));
                answer
            }
        };
        fresh.map_err(|error| StoreError::Unavailable(anyhow::anyhow!(error)))
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(AtomicUsize);

    #[async_trait]
    impl Probe for Counting {
        async fn ping(&self) -> Result<(), StoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_flood_of_probes_costs_the_store_one_ping_per_interval() {
        let store = Arc::new(Counting(AtomicUsize::new(0)));
        let probe = Arc::new(CachedProbe::new(store.clone(), Duration::from_millis(300)));
        let probes: Vec<_> = (0..100)
            .map(|_| {
                let probe = probe.clone();
                tokio::spawn(async move { probe.ping().await })
            })
            .collect();
        for answer in probes {
            answer.await.expect("joined").expect("ready");
        }
        assert_eq!(store.0.load(Ordering::SeqCst), 1);
        // Deliberately let the interval pass: the next probe asks afresh.
        tokio::time::sleep(Duration::from_millis(350)).await;
        probe.ping().await.expect("ready");
        assert_eq!(store.0.load(Ordering::SeqCst), 2);
    }
}
