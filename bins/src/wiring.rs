//! The only place that picks adapters: from settings to ports to use cases.

use std::sync::Arc;
use std::time::Duration;

use adapters::clock::SystemClock;
use adapters::connect::{ConnectError, redact_url};
use adapters::http::console::{ConsoleAccess, FindingsCache, Sessions, SignInLimiter};
use adapters::http::{ApiState, CachedProbe, Console};
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryQueue, MemoryStore};
use adapters::nats::{NatsQueue, NatsSettings};
use adapters::postgres::{self, PostgresStore};
use adapters::receipts::LogReceiptSender;
use adapters::stripe::{StripeGateway, StripeSettings};
use anyhow::bail;
use application::ports::{
    Clock, DeadLetters, JobQueue, PaymentGateway, Probe, ReceiptSender, Retention, Store,
};
use application::telemetry::{Exporter, export_from_start};
use application::{
    AuthMode, Authenticate, CompleteStalledKeys, DrainStagedJobs, PhaseMachine, PhaseSettings,
    ReapKeys, ReceiveWebhook, ReconcileKeys, ReplayCache, SeedDemoUsers, ShowRide, SyncPayments,
    WorkJobs,
};
use domain::{CancelPolicy, CompleterPolicy, LockPolicy, ReconcilePolicy, ReviewPolicy};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::{
    BatchArgs, CompleterArgs, EnqueuerArgs, KeyArgs, OpsArgs, QueueArgs, ReaperArgs,
    ReplayCacheArgs, ServerArgs, ShutdownArgs, StoreArgs, StripeArgs, WebhookArgs,
};

/// How often the recorder folds the histogram samples recorded since into
/// its buckets (the exporter's own default).
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process) and returns what
/// renders it. `None` if another recorder is installed already.
///
/// A histogram keeps every sample recorded until an upkeep folds them into
/// its buckets, and `install_recorder` (unlike the exporter's own HTTP
/// listener) runs no upkeep: with nobody scraping, each request's samples
/// stayed in memory for good (tens of MB after a benchmark's load). A
/// thread of its own runs it every `METRICS_UPKEEP_EVERY`, whatever runtime
/// the process has.
pub fn metrics_renderer() -> Option<Arc<dyn Fn() -> String + Send + Sync>> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            // Durations as Prometheus histograms (buckets from 1 ms to
            // 30 s), so quantiles can be taken across processes.
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()?;
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                warn!(%error, "no metrics upkeep thread: histogram samples are kept until scraped");
            }
            metrics::describe_gauge!(
                "rocket_rides_build_info",
                "Always 1; the labels say which build of Rocket Rides this process runs."
            );
            metrics::gauge!("rocket_rides_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            metrics_process::Collector::default().describe();
            Some(handle)
        })
        .clone()?;
    // The process's own figures (CPU seconds, memory, open files, threads,
    // start time) as Prometheus's client libraries name them, read at each
    // scrape.
    let process = metrics_process::Collector::default();
    Some(Arc::new(move || {
        process.collect();
        handle.render()
    }))
}

/// The adapters one process runs on, and the use cases built over them.
pub struct System {
    pub store: Arc<dyn Store>,
    /// The store's readiness as `/readyz` reports it, on either port: one
    /// ping a second at most, however many probes ask.
    pub probe: Arc<dyn Probe>,
    pub queue: Arc<dyn JobQueue>,
    pub receipts: Arc<dyn ReceiptSender>,
    pub clock: Arc<dyn Clock>,
    /// The store lives in this process only: other processes cannot share it.
    pub embedded: bool,
    /// The job queue lives in this process only: the enqueuer and the
    /// worker must share it.
    pub queue_in_process: bool,
    /// The queue's dead letters, when `NATS_URL` chose NATS (the
    /// in-memory queue keeps none).
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    /// The queue's settings, for a connection made later (the console's).
    queue_settings: Option<QueueArgs>,
    /// The Postgres store, when `DATABASE_URL` chose it (to wait for it).
    postgres: Option<Arc<PostgresStore>>,
    /// The embedded store's rides, which the reaper has it forget.
    retained: Option<Arc<dyn Retention>>,
}

/// What charging needs: the gateway and the rules of keys. Built (and its
/// settings checked against each other) before anything connects.
pub struct Payments {
    pub gateway: Arc<dyn PaymentGateway>,
    /// The in-process fake of the embedded default, which the reaper has
    /// forget what it made (Stripe keeps its own).
    pub retained: Option<Arc<dyn Retention>>,
    keys: KeyArgs,
}

/// The completer's two passes: stalled keys, and rides waiting on a
/// payment no webhook settled.
pub struct Completer {
    pub keys: CompleteStalledKeys,
    pub payments: SyncPayments,
}

/// The payment gateway `stripe` selects. The in-process fake of a process
/// that shares its store with others (Postgres) cannot vouch that a charge
/// does not exist.
pub fn gateway(stripe: &StripeArgs, embedded: bool) -> anyhow::Result<Arc<dyn PaymentGateway>> {
    Ok(gateway_retained(stripe, embedded, None)?.0)
}

/// A gateway, and what of it lives in this process's memory for the reaper
/// to prune.
type GatewayRetained = (Arc<dyn PaymentGateway>, Option<Arc<dyn Retention>>);

/// The gateway, and what of it lives in this process's memory for the
/// reaper to prune: the embedded default's in-process fake. An in-process
/// fake in a process that shares its store (no reaper prunes it) forgets
/// by itself what is older than `window`, when given one.
fn gateway_retained(
    stripe: &StripeArgs,
    embedded: bool,
    window: Option<Duration>,
) -> anyhow::Result<GatewayRetained> {
    Ok(match &stripe.stripe_api_key {
        Some(api_key) => {
            info!(api_base = %stripe.stripe_api_base, payments = stripe.stripe_payments.as_str(), "payment gateway: Stripe over HTTP");
            let stripe = StripeGateway::new(StripeSettings {
                connect_timeout: stripe.stripe_connect_timeout.0,
                timeout: stripe.stripe_timeout.0,
                max_retries: stripe.stripe_max_retries,
                payments: stripe.stripe_payments,
                ..StripeSettings::new(api_key.expose(), stripe.stripe_api_base.clone())
            })?;
            (Arc::new(stripe), None)
        }
        None => {
            info!(
                unknown_rate = stripe.fake_gateway_unknown_rate,
                latency = %stripe.fake_gateway_latency,
                payments = stripe.stripe_payments.as_str(),
                "payment gateway: in-process fake"
            );
            let fake = FakeGateway::with_faults(FakeGatewayFaults {
                unknown_rate: stripe.fake_gateway_unknown_rate,
                latency: stripe.fake_gateway_latency.0,
            })
            .on(stripe.stripe_payments);
            if embedded {
                let fake = Arc::new(fake);
                (fake.clone(), Some(fake))
            } else {
                let fake = fake.one_of_several();
                let fake = match window {
                    Some(window) => fake.forgetting_after(window),
                    None => fake,
                };
                (Arc::new(fake), None)
            }
        }
    })
}

impl Payments {
    /// Refuses key rules that contradict the gateway's timing (naming both)
    /// before anything connects, then builds the gateway.
    pub fn new(stripe: &StripeArgs, keys: &KeyArgs, embedded: bool) -> anyhow::Result<Self> {
        keys.check(stripe).map_err(anyhow::Error::msg)?;
        let window = keys.gateway_idempotency_window.0;
        let (gateway, retained) = gateway_retained(stripe, embedded, Some(window))?;
        Ok(Self {
            gateway,
            retained,
            keys: keys.clone(),
        })
    }

    fn lock_policy(&self) -> LockPolicy {
        LockPolicy {
            lock_timeout: self.keys.lock_timeout.0,
        }
    }

    pub fn review_policy(&self) -> ReviewPolicy {
        ReviewPolicy {
            review_after: self.keys.review_after.0,
        }
    }

    fn create_ride_settings(&self) -> PhaseSettings {
        PhaseSettings {
            lock: self.lock_policy(),
            review: self.review_policy(),
            cancel: CancelPolicy {
                free_window: self.keys.free_cancel_window.0,
                fee_cents: self.keys.cancel_fee,
            },
        }
    }

    fn reconcile_policy(&self) -> ReconcilePolicy {
        ReconcilePolicy {
            lock: self.lock_policy(),
            search_lag: self.keys.stripe_search_lag.0,
        }
    }
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
    /// The store `store` selects, and the queue: NATS when `queue` names
    /// one and `needs.queue` asks for it now, else in-memory.
    pub async fn build(
        store: &StoreArgs,
        queue: Option<&QueueArgs>,
        needs: Needs,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        type Stores = (
            Arc<dyn Store>,
            Option<Arc<PostgresStore>>,
            Option<Arc<dyn Retention>>,
        );
        let (store, postgres, retained): Stores = match &store.database_url {
            Some(url) => {
                let pool = postgres::connect(url.expose(), &store.pool())?;
                info!(
                    url = %redact_url(url.expose()),
                    max_connections = store.database_max_connections,
                    "store: Postgres"
                );
                let store = Arc::new(PostgresStore::new(pool));
                (store.clone(), Some(store), None)
            }
            None => {
                info!("store: in-memory (embedded default; nothing persists across restarts)");
                let store = Arc::new(MemoryStore::new());
                (store.clone(), None, Some(store))
            }
        };
        let embedded = retained.is_some();
        let dedup_window = queue.map_or(NatsSettings::DEFAULT_DUPLICATE_WINDOW, |queue| {
            queue.nats_duplicate_window.0
        });
        let probe = Arc::new(CachedProbe::new(store.clone(), CachedProbe::EVERY));
        let mut system = Self {
            probe,
            store,
            postgres,
            queue: Arc::new(MemoryQueue::new(dedup_window)),
            receipts: Arc::new(LogReceiptSender),
            clock: Arc::new(SystemClock),
            embedded,
            queue_in_process: true,
            dead_letters: None,
            queue_settings: queue.cloned(),
            retained,
        };
        if needs.store_reachable {
            system.wait_for_store(shutdown).await?;
        }
        match queue.and_then(|queue| queue.nats_url.as_ref()) {
            Some(url) if needs.queue => {
                let nats = Arc::new(system.connect_nats(url.expose(), shutdown).await?);
                system.queue = nats.clone();
                system.dead_letters = Some(nats);
                system.queue_in_process = false;
            }
            _ => info!("job queue: in-memory"),
        }
        Ok(system)
    }

    /// Waits until Postgres answers (at once on the in-memory store).
    pub async fn wait_for_store(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(store) = &self.postgres else {
            return Ok(());
        };
        wait_for("Postgres", shutdown, || store.probe()).await?;
        // The promise assumes an acknowledged commit survives a failover
        // (ARCHITECTURE.md): say so when the server's settings do not.
        match postgres::replication(store.pool()).await {
            Ok(replication) => match replication.risk() {
                Some(why) => warn!(
                    synchronous_commit = %replication.synchronous_commit,
                    synchronous_standby_names = %replication.synchronous_standby_names,
                    standbys = replication.streaming_standbys,
                    "Postgres may lose acknowledged commits on failover: {why}; a stored answer lost that way would be answered again differently"
                ),
                None => info!(
                    synchronous_commit = %replication.synchronous_commit,
                    synchronous_standby_names = %replication.synchronous_standby_names,
                    standbys = replication.streaming_standbys,
                    "Postgres replication: no acknowledged commit is lost on failover"
                ),
            },
            Err(error) => {
                warn!(error = %format!("{error:#}"), "could not read Postgres's replication settings")
            }
        }
        Ok(())
    }

    /// Samples, every `POLL_INTERVAL` until shutdown, the gauges of what this
    /// process holds: its Postgres connections (in use and idle) and, for the
    /// process that dead-letters jobs (the worker), the dead-letter stream.
    pub fn spawn_resource_gauges(
        &self,
        shutdown: &CancellationToken,
        interval: Duration,
        dead_letters: bool,
    ) {
        let postgres = self.postgres.clone();
        let dead_letters = self.dead_letters.clone().filter(|_| dead_letters);
        if postgres.is_some() {
            export_from_start(Exporter::Postgres);
        }
        if postgres.is_none() && dead_letters.is_none() {
            return;
        }
        let shutdown = shutdown.clone();
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
                if let Some(dead_letters) = &dead_letters {
                    match dead_letters.dead_job_count().await {
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

    /// The NATS queue the settings name, connected now, for a process that
    /// does not otherwise need it (the API's console); `None` without
    /// `NATS_URL`.
    pub async fn connect_nats_later(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<anyhow::Result<Arc<dyn DeadLetters>>> {
        let url = self.queue_settings.as_ref()?.nats_url.clone()?;
        let connected = self.connect_nats(url.expose(), shutdown).await;
        Some(connected.map(|queue| Arc::new(queue) as Arc<dyn DeadLetters>))
    }

    /// The NATS queue of this store's deployment: the database's id (once
    /// `migrate` has stored it), or a fresh one for an in-memory store,
    /// which is new with every process.
    async fn connect_nats(
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
        let settings = match &self.queue_settings {
            Some(queue) => {
                let from_url = NatsSettings::new(url, &deployment);
                NatsSettings {
                    duplicate_window: queue.nats_duplicate_window.0,
                    ack_wait: queue.nats_ack_wait.0,
                    max_deliver: queue.nats_max_deliver,
                    replicas: usize::from(queue.nats_stream_replicas),
                    auth: queue.auth().unwrap_or(from_url.auth.clone()),
                    ..from_url
                }
            }
            None => NatsSettings::new(url, &deployment),
        };
        wait_for("NATS", shutdown, || NatsQueue::connect(settings.clone())).await
    }

    pub fn create_ride(&self, payments: &Payments) -> Arc<PhaseMachine> {
        Arc::new(PhaseMachine::new(
            self.store.clone(),
            self.store.clone(),
            payments.gateway.clone(),
            self.clock.clone(),
            payments.create_ride_settings(),
        ))
    }

    /// The API's use cases and limits. With an address of their own
    /// (`METRICS_ADDR`), metrics stay off the public port.
    pub fn api_state(
        &self,
        payments: &Payments,
        server: &ServerArgs,
        webhooks: &WebhookArgs,
        replays: &ReplayCacheArgs,
        shutdown: &ShutdownArgs,
        ops: &OpsArgs,
    ) -> ApiState {
        let limits = replays.limits();
        info!(entries = limits.max_entries, bytes = limits.max_bytes, ttl = %replays.replay_cache_ttl, "replay cache");
        let create_ride = Arc::new(
            PhaseMachine::new(
                self.store.clone(),
                self.store.clone(),
                payments.gateway.clone(),
                self.clock.clone(),
                payments.create_ride_settings(),
            )
            .with_replay_cache(Arc::new(ReplayCache::new(limits, self.clock.clone()))),
        );
        let webhook = match &webhooks.stripe_webhook_secret {
            Some(secrets) => {
                info!(tolerance = %webhooks.stripe_webhook_tolerance, "POST /webhooks/stripe takes Stripe's signed events");
                Some(Arc::new(ReceiveWebhook::new(
                    self.store.clone(),
                    self.clock.clone(),
                    secrets.clone(),
                    webhooks.stripe_webhook_tolerance.0,
                )))
            }
            None => {
                info!(
                    "STRIPE_WEBHOOK_SECRET is not set: no /webhooks/stripe route; rides waiting on a payment are settled by the completer's sync pass (PAYMENT_SYNC_AFTER)"
                );
                None
            }
        };
        // The recorder first (when the API serves /metrics itself), then
        // the API's series in it.
        let metrics = match ops.metrics_addr {
            Some(_) => None,
            None => metrics_renderer(),
        };
        export_from_start(Exporter::Api);
        let auth_mode: AuthMode = server.auth_mode.into();
        if auth_mode == AuthMode::Email {
            warn!(
                "AUTH_MODE=email trusts the Authorization header as the user's email: for demos only"
            );
        }
        ApiState {
            create_ride,
            authenticate: Arc::new(
                Authenticate::new(self.store.clone(), auth_mode)
                    .cached(self.clock.clone(), server.auth_cache_ttl.0),
            ),
            show_ride: Arc::new(ShowRide::new(self.store.clone())),
            probe: self.probe.clone(),
            gateway_retry_after: server.gateway_retry_after.0,
            metrics,
            limits: server.limits(shutdown),
            webhook,
            detached: Default::default(),
        }
    }

    pub fn completer(
        &self,
        payments: &Payments,
        args: &CompleterArgs,
        batch: &BatchArgs,
    ) -> Completer {
        let policy = CompleterPolicy {
            min_age: args.completer_min_age.0,
            min_idle: args.completer_min_idle.0,
            lock: payments.lock_policy(),
            review: payments.review_policy(),
        };
        let completer = CompleteStalledKeys::new(
            self.store.clone(),
            self.create_ride(payments),
            self.clock.clone(),
            policy,
            batch.batch_size,
        )
        .with_concurrency(args.completer_concurrency);
        let keys = match args.completer_reconcile {
            true => completer.reconciling(self.reconcile(payments)),
            false => completer,
        };
        Completer {
            keys,
            payments: SyncPayments::new(
                self.store.clone(),
                payments.gateway.clone(),
                self.clock.clone(),
                args.payment_sync_after.0,
            ),
        }
    }

    pub fn enqueuer(&self, args: &EnqueuerArgs, batch: &BatchArgs) -> DrainStagedJobs {
        DrainStagedJobs::new(
            self.store.clone(),
            self.queue.clone(),
            self.clock.clone(),
            batch.batch_size,
            args.enqueuer_claim_timeout.0,
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

    pub fn reaper(&self, args: &ReaperArgs, batch: &BatchArgs) -> ReapKeys {
        ReapKeys::new(
            self.store.clone(),
            self.clock.clone(),
            args.reaper_max_age.0,
            batch.batch_size,
        )
        .forgetting(self.retained.clone())
    }

    pub fn seeder(&self, gateway: Arc<dyn PaymentGateway>) -> SeedDemoUsers {
        SeedDemoUsers::new(self.store.clone(), gateway)
    }

    /// The operator's console over this process's store and gateway; its
    /// dead letters come from `dead_letters` once that is connected.
    pub fn console(
        &self,
        payments: &Payments,
        access: ConsoleAccess,
        dead_letters: Arc<tokio::sync::OnceCell<Arc<dyn DeadLetters>>>,
    ) -> Console {
        Console {
            access,
            sessions: Sessions::default(),
            reconcile: self.reconcile(payments),
            keys: self.store.clone(),
            outbox: self.store.clone(),
            dashboard: self.store.clone(),
            payments: self.store.clone(),
            dead_letters,
            keeps_dead_letters: self
                .queue_settings
                .as_ref()
                .is_some_and(|queue| queue.nats_url.is_some()),
            clock: self.clock.clone(),
            review: payments.review_policy(),
            refresh: Duration::from_secs(5),
            findings: FindingsCache::default(),
            sign_ins: SignInLimiter::default(),
        }
    }

    pub fn reconcile(&self, payments: &Payments) -> ReconcileKeys {
        ReconcileKeys::new(
            self.store.clone(),
            self.store.clone(),
            payments.gateway.clone(),
            self.clock.clone(),
            self.create_ride(payments),
            payments.review_policy(),
            payments.reconcile_policy(),
        )
    }
}
