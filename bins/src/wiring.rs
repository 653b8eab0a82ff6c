//! The only place that picks adapters: from settings to ports to use cases.

use std::sync::Arc;
use std::time::Duration;

use adapters::clock::SystemClock;
use adapters::connect::{ConnectError, redact_url};
use adapters::http::console::FindingsCache;
use adapters::http::{ApiState, Console, ServerLimits};
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryQueue, MemoryStore};
use adapters::nats::{NatsQueue, NatsSettings};
use adapters::postgres::{self, PoolSettings, PostgresStore};
use adapters::receipts::LogReceiptSender;
use adapters::stripe::{StripeGateway, StripeSettings};
use anyhow::bail;
use application::ports::{Clock, Dashboard, JobQueue, PaymentGateway, ReceiptSender, Store};
use application::{
    AuthMode, Authenticate, CompleteStalledKeys, CreateRide, CreateRideSettings, DrainStagedJobs,
    ReapKeys, ReconcileKeys, SeedDemoUsers, WorkJobs,
};
use domain::{CompleterPolicy, LockPolicy, ReconcilePolicy, ReviewPolicy};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::Settings;

/// Installs the Prometheus recorder (once per process) and returns what
/// renders it. `None` if another recorder is installed already.
pub fn metrics_renderer() -> Option<Arc<dyn Fn() -> String + Send + Sync>> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            // Durations as Prometheus histograms (buckets from 1 ms to
            // 30 s), so quantiles can be taken across processes.
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()?;
    Some(Arc::new(move || handle.render()))
}

pub fn pool_settings(settings: &Settings) -> PoolSettings {
    PoolSettings {
        max_connections: settings.database_max_connections,
        acquire_timeout: settings.database_acquire_timeout,
        statement_timeout: settings.database_statement_timeout,
    }
}

/// The adapters one process runs on, and the use cases built over them.
pub struct System {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// The same store's read-only views for the console.
    pub dashboard: Arc<dyn Dashboard>,
    pub gateway: Arc<dyn PaymentGateway>,
    pub queue: Arc<dyn JobQueue>,
    pub receipts: Arc<dyn ReceiptSender>,
    pub clock: Arc<dyn Clock>,
    /// The store lives in this process only: other processes cannot share it.
    pub embedded: bool,
    /// The job queue lives in this process only: the enqueuer and the
    /// worker must share it.
    pub queue_in_process: bool,
    /// The NATS queue, when `NATS_URL` chose it (for `dead-jobs`).
    pub nats: Option<Arc<NatsQueue>>,
    /// The Postgres store, when `DATABASE_URL` chose it (to wait for it).
    postgres: Option<Arc<PostgresStore>>,
}

/// The payment gateway. The in-process fake of a process that shares its
/// store with others (Postgres) cannot vouch that a charge does not exist.
fn gateway(settings: &Settings, embedded: bool) -> anyhow::Result<Arc<dyn PaymentGateway>> {
    Ok(match &settings.stripe_api_key {
        Some(api_key) => {
            info!(api_base = %settings.stripe_api_base, "payment gateway: Stripe over HTTP");
            Arc::new(StripeGateway::new(StripeSettings {
                connect_timeout: settings.stripe_connect_timeout,
                timeout: settings.stripe_timeout,
                max_retries: settings.stripe_max_retries,
                ..StripeSettings::new(api_key.expose(), settings.stripe_api_base.clone())
            })?)
        }
        None => {
            info!(
                unknown_rate = settings.fake_gateway_unknown_rate,
                latency = ?settings.fake_gateway_latency,
                "payment gateway: in-process fake"
            );
            let fake = FakeGateway::with_faults(FakeGatewayFaults {
                unknown_rate: settings.fake_gateway_unknown_rate,
                latency: settings.fake_gateway_latency,
            });
            Arc::new(if embedded {
                fake
            } else {
                fake.one_of_several()
            })
        }
    })
}

/// What a process needs beyond the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The job queue (enqueuer, worker, `start`, `dead-jobs`). Other
    /// processes never connect to NATS, so a NATS outage cannot stop them.
    pub queue: bool,
    /// Wait until Postgres answers before returning. The API does not: it
    /// serves `/healthz` (and `/readyz` as not ready) while it waits.
    pub store_reachable: bool,
}

impl Needs {
    pub const STORE: Self = Self {
        queue: false,
        store_reachable: true,
    };
    pub const STORE_AND_QUEUE: Self = Self {
        queue: true,
        store_reachable: true,
    };
    pub const API: Self = Self {
        queue: false,
        store_reachable: false,
    };
}

/// SIGINT or SIGTERM came while a process was still waiting for a
/// dependency: it stops cleanly, having done nothing.
#[derive(Debug)]
pub struct StoppedWhileWaiting(pub String);

impl std::fmt::Display for StoppedWhileWaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped while waiting for {}", self.0)
    }
}

impl std::error::Error for StoppedWhileWaiting {}

/// Calls `attempt` until it succeeds, waiting out transient failures with
/// backoff (200 ms doubling to 5 s, with jitter so a fleet restarted
/// together does not knock in step). Logs once when it starts waiting and
/// once when the dependency answers. A configuration error stops at once.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ConnectError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut waiting_since = None;
    loop {
        match attempt().await {
            Ok(value) => {
                if let Some(since) = waiting_since {
                    info!(waited = ?std::time::Instant::now().duration_since(since), "{what} answers; going on");
                }
                return Ok(value);
            }
            Err(ConnectError::Configuration(error)) => {
                bail!("{what}: {error:#} (a configuration error: no wait can fix it)")
            }
            Err(ConnectError::Transient(error)) => {
                if waiting_since.is_none() {
                    warn!(error = %format!("{error:#}"), "waiting for {what}");
                    waiting_since = Some(std::time::Instant::now());
                }
                let pause = delay.mul_f64(0.5 + fastrand::f64());
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        return Err(StoppedWhileWaiting(what.to_owned()).into());
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
                delay = delay.saturating_mul(2).min(Duration::from_secs(5));
            }
        }
    }
}

impl System {
    pub async fn build(
        settings: &Settings,
        needs: Needs,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        settings.check().map_err(anyhow::Error::msg)?;
        type Stores = (
            Arc<dyn Store>,
            Arc<dyn Dashboard>,
            Option<Arc<PostgresStore>>,
            bool,
        );
        let (store, dashboard, postgres, embedded): Stores = match &settings.database_url {
            Some(url) => {
                let pool = postgres::connect(url.expose(), &pool_settings(settings))?;
                info!(
                    url = %redact_url(url.expose()),
                    max_connections = settings.database_max_connections,
                    "store: Postgres"
                );
                let store = Arc::new(PostgresStore::new(pool));
                (store.clone(), store.clone(), Some(store), false)
            }
            None => {
                info!("store: in-memory (embedded default; nothing persists across restarts)");
                let store = Arc::new(MemoryStore::new());
                (store.clone(), store, None, true)
            }
        };
        let mut system = Self {
            settings: settings.clone(),
            store,
            dashboard,
            postgres,
            gateway: gateway(settings, embedded)?,
            queue: Arc::new(MemoryQueue::default()),
            receipts: Arc::new(LogReceiptSender),
            clock: Arc::new(SystemClock),
            embedded,
            queue_in_process: true,
            nats: None,
        };
        if needs.store_reachable {
            system.wait_for_store(shutdown).await?;
        }
        match (&settings.nats_url, needs.queue) {
            (Some(url), true) => {
                let nats = Arc::new(system.connect_nats(url.expose(), shutdown).await?);
                system.queue = nats.clone();
                system.nats = Some(nats);
                system.queue_in_process = false;
            }
            _ => info!("job queue: in-memory"),
        }
        Ok(system)
    }

    /// Waits until Postgres answers (at once on the in-memory store).
    pub async fn wait_for_store(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        match &self.postgres {
            Some(store) => wait_for("Postgres", shutdown, || store.probe()).await,
            None => Ok(()),
        }
    }

    /// Samples, every `POLL_INTERVAL` until shutdown, the gauges of what this
    /// process holds: its Postgres connections (in use and idle) and, for the
    /// process that dead-letters jobs (the worker), the dead-letter stream.
    pub fn spawn_resource_gauges(&self, shutdown: &CancellationToken, dead_letters: bool) {
        let postgres = self.postgres.clone();
        let nats = self.nats.clone().filter(|_| dead_letters);
        if postgres.is_none() && nats.is_none() {
            return;
        }
        let (shutdown, interval) = (shutdown.clone(), self.settings.poll_interval);
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Some(store) = &postgres {
                    let pool = store.pool();
                    let idle = pool.num_idle() as f64;
                    let open = f64::from(pool.size());
                    metrics::gauge!("rocket_rides_db_connections", "state" => "in_use")
                        .set((open - idle).max(0.0));
                    metrics::gauge!("rocket_rides_db_connections", "state" => "idle").set(idle);
                }
                if let Some(nats) = &nats {
                    match nats.dead_job_count().await {
                        Ok(count) => {
                            metrics::gauge!("rocket_rides_dead_letter_jobs").set(count as f64)
                        }
                        Err(error) => warn!(%error, "could not count the dead-letter jobs"),
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// The NATS queue of this store's deployment: the database's id (once
    /// `migrate` has stored it), or a fresh one for an in-memory store,
    /// which is new with every process.
    pub async fn connect_nats(
        &self,
        url: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<NatsQueue> {
        let deployment = match &self.postgres {
            Some(store) => {
                wait_for("the deployment id (`migrate`)", shutdown, || {
                    store.deployment_id()
                })
                .await?
            }
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let settings = NatsSettings {
            duplicate_window: self.settings.nats_duplicate_window,
            ack_wait: self.settings.nats_ack_wait,
            max_deliver: self.settings.nats_max_deliver,
            ..NatsSettings::new(url, &deployment)
        };
        wait_for("NATS", shutdown, || NatsQueue::connect(settings.clone())).await
    }

    fn lock_policy(&self) -> LockPolicy {
        LockPolicy {
            lock_timeout: self.settings.lock_timeout,
        }
    }

    pub fn review_policy(&self) -> ReviewPolicy {
        ReviewPolicy {
            review_after: self.settings.review_after,
        }
    }

    pub fn completer_policy(&self) -> CompleterPolicy {
        CompleterPolicy {
            min_age: self.settings.completer_min_age,
            min_idle: self.settings.completer_min_idle,
            lock: self.lock_policy(),
            review: self.review_policy(),
        }
    }

    fn create_ride_settings(&self) -> CreateRideSettings {
        CreateRideSettings {
            lock: self.lock_policy(),
            review: self.review_policy(),
        }
    }

    pub fn create_ride(&self) -> Arc<CreateRide> {
        Arc::new(CreateRide::new(
            self.store.clone(),
            self.store.clone(),
            self.gateway.clone(),
            self.clock.clone(),
            self.create_ride_settings(),
        ))
    }

    pub fn api_state(&self) -> ApiState {
        let mut state = ApiState::new(
            self.store.clone(),
            self.store.clone(),
            self.gateway.clone(),
            self.clock.clone(),
            self.settings.auth_mode.into(),
            self.create_ride_settings(),
            self.settings.gateway_retry_after,
        );
        let auth_mode = self.settings.auth_mode.into();
        if auth_mode == AuthMode::Email {
            tracing::warn!(
                "AUTH_MODE=email trusts the Authorization header as the user's email: for demos only"
            );
        }
        state.authenticate = Arc::new(
            Authenticate::new(self.store.clone(), auth_mode)
                .cached(self.clock.clone(), self.settings.auth_cache_ttl),
        );
        // With an address of their own, metrics stay off the public port.
        state.metrics = if self.settings.metrics_addr.is_some() {
            None
        } else {
            metrics_renderer()
        };
        state.limits = ServerLimits {
            header_read_timeout: self.settings.http_header_timeout,
            body_read_timeout: self.settings.http_body_timeout,
            max_connections: self.settings.http_max_connections,
            max_concurrent_requests: self.settings.http_max_concurrent_requests,
            shutdown_deadline: self.settings.shutdown_deadline,
        };
        state
    }

    pub fn completer(&self) -> CompleteStalledKeys {
        let completer = CompleteStalledKeys::new(
            self.store.clone(),
            self.create_ride(),
            self.clock.clone(),
            self.completer_policy(),
            self.settings.batch_size,
        );
        let completer = completer.with_concurrency(self.settings.completer_concurrency);
        match self.settings.completer_reconcile {
            true => completer.reconciling(self.reconcile()),
            false => completer,
        }
    }

    pub fn enqueuer(&self) -> DrainStagedJobs {
        DrainStagedJobs::new(
            self.store.clone(),
            self.queue.clone(),
            self.clock.clone(),
            self.settings.batch_size,
            self.settings.enqueuer_claim_timeout,
        )
    }

    pub fn worker(&self) -> WorkJobs {
        WorkJobs::new(
            self.store.clone(),
            self.queue.clone(),
            self.receipts.clone(),
            self.clock.clone(),
        )
    }

    pub fn reaper(&self) -> ReapKeys {
        ReapKeys::new(
            self.store.clone(),
            self.clock.clone(),
            self.settings.reaper_max_age,
            self.settings.batch_size,
        )
    }

    pub fn seeder(&self) -> SeedDemoUsers {
        SeedDemoUsers::new(self.store.clone(), self.gateway.clone())
    }

    /// The operator's console over this process's store and gateway; its
    /// dead letters come from `nats` once that is connected.
    pub fn console(
        &self,
        token: &str,
        nats: Arc<tokio::sync::OnceCell<Arc<NatsQueue>>>,
    ) -> Console {
        Console {
            token: token.to_owned(),
            reconcile: self.reconcile(),
            keys: self.store.clone(),
            outbox: self.store.clone(),
            dashboard: self.dashboard.clone(),
            nats,
            nats_configured: self.settings.nats_url.is_some(),
            clock: self.clock.clone(),
            review: self.review_policy(),
            refresh: Duration::from_secs(5),
            findings: FindingsCache::default(),
        }
    }

    pub fn reconcile(&self) -> ReconcileKeys {
        ReconcileKeys::new(
            self.store.clone(),
            self.store.clone(),
            self.gateway.clone(),
            self.clock.clone(),
            self.create_ride(),
            self.review_policy(),
            ReconcilePolicy {
                lock: self.lock_policy(),
                search_lag: self.settings.stripe_search_lag,
            },
        )
    }
}
