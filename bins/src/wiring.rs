//! The only place that picks adapters: from settings to ports to use cases.

use std::sync::Arc;

use adapters::clock::SystemClock;
use adapters::http::ApiState;
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryQueue, MemoryStore};
use adapters::nats::{NatsQueue, NatsSettings};
use adapters::postgres::{self, PoolSettings, PostgresStore};
use adapters::receipts::LogReceiptSender;
use adapters::stripe::{StripeGateway, StripeSettings};
use application::ports::{Clock, JobQueue, PaymentGateway, ReceiptSender, Store};
use application::{
    CompleteStalledKeys, CreateRide, CreateRideSettings, DrainStagedJobs, ListKeysForReview,
    ReapKeys, SeedDemoUsers, WorkJobs,
};
use domain::{CompleterPolicy, LockPolicy, ReviewPolicy};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::info;

use crate::settings::Settings;

/// Installs the Prometheus recorder (once per process) and returns what
/// renders it. `None` if another recorder is installed already.
fn metrics_renderer() -> Option<Arc<dyn Fn() -> String + Send + Sync>> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
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
}

impl System {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The deployment id names the NATS queue: the database's own, or a
        // fresh one for an in-memory store, which is new with every process.
        let (store, embedded, deployment): (Arc<dyn Store>, bool, String) =
            match &settings.database_url {
                Some(url) => {
                    let pool = postgres::connect(url, &pool_settings(settings)).await?;
                    info!(
                        max_connections = settings.database_max_connections,
                        "store: Postgres"
                    );
                    let store = PostgresStore::new(pool);
                    let deployment = match settings.nats_url {
                        Some(_) => store.deployment_id().await?,
                        None => String::new(),
                    };
                    (Arc::new(store), false, deployment)
                }
                None => {
                    info!("store: in-memory (embedded default; nothing persists across restarts)");
                    let deployment = uuid::Uuid::new_v4().simple().to_string();
                    (Arc::new(MemoryStore::new()), true, deployment)
                }
            };
        let gateway: Arc<dyn PaymentGateway> = match &settings.stripe_api_key {
            Some(api_key) => {
                info!(api_base = %settings.stripe_api_base, "payment gateway: Stripe over HTTP");
                Arc::new(StripeGateway::new(StripeSettings {
                    connect_timeout: settings.stripe_connect_timeout,
                    timeout: settings.stripe_timeout,
                    max_retries: settings.stripe_max_retries,
                    ..StripeSettings::new(api_key.clone(), settings.stripe_api_base.clone())
                })?)
            }
            None => {
                info!(
                    unknown_rate = settings.fake_gateway_unknown_rate,
                    latency = ?settings.fake_gateway_latency,
                    "payment gateway: in-process fake"
                );
                Arc::new(FakeGateway::with_faults(FakeGatewayFaults {
                    unknown_rate: settings.fake_gateway_unknown_rate,
                    latency: settings.fake_gateway_latency,
                }))
            }
        };
        let (queue, nats): (Arc<dyn JobQueue>, Option<Arc<NatsQueue>>) = match &settings.nats_url {
            Some(url) => {
                let nats = Arc::new(
                    NatsQueue::connect(NatsSettings {
                        duplicate_window: settings.nats_duplicate_window,
                        ack_wait: settings.nats_ack_wait,
                        max_deliver: settings.nats_max_deliver,
                        ..NatsSettings::new(url.clone(), &deployment)
                    })
                    .await?,
                );
                (nats.clone(), Some(nats))
            }
            None => {
                info!("job queue: in-memory");
                (Arc::new(MemoryQueue::default()), None)
            }
        };
        Ok(Self {
            settings: settings.clone(),
            store,
            gateway,
            queue,
            receipts: Arc::new(LogReceiptSender),
            clock: Arc::new(SystemClock),
            embedded,
            queue_in_process: nats.is_none(),
            nats,
        })
    }

    fn lock_policy(&self) -> LockPolicy {
        LockPolicy {
            lock_timeout: self.settings.lock_timeout,
        }
    }

    fn review_policy(&self) -> ReviewPolicy {
        ReviewPolicy {
            gateway_idempotency_window: self.settings.gateway_idempotency_window,
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
            self.gateway.clone(),
            self.clock.clone(),
            self.create_ride_settings(),
        ))
    }

    pub fn api_state(&self) -> ApiState {
        let mut state = ApiState::new(
            self.store.clone(),
            self.gateway.clone(),
            self.clock.clone(),
            self.settings.auth_mode.into(),
            self.create_ride_settings(),
            self.settings.gateway_retry_after,
        );
        state.metrics = metrics_renderer();
        state
    }

    pub fn completer(&self) -> CompleteStalledKeys {
        CompleteStalledKeys::new(
            self.store.clone(),
            self.create_ride(),
            self.clock.clone(),
            self.completer_policy(),
            self.settings.batch_size,
        )
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

    pub fn review(&self) -> ListKeysForReview {
        ListKeysForReview::new(self.store.clone(), self.clock.clone(), self.review_policy())
    }
}
