//! Helpers of the black-box suites: `spawn_app` starts the real axum router
//! on a loopback port over the adapters a suite chooses, and returns a
//! handle with one method per endpoint.

pub mod bench;
pub mod compose;
pub mod nats;
pub mod plans;
pub mod postgres;
pub mod review;
pub mod soak;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapters::clock::SystemClock;
use adapters::http::{ApiState, ServerLimits};
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryStore};
use application::ports::{Clock, Keys, PaymentGateway, Probe, Store, Users};
use application::{
    AuthMode, Authenticate, PhaseMachine, PhaseSettings, SeedDemoUsers, SeededUser, ShowRide,
};
use domain::{LockPolicy, ReviewPolicy};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

pub const GOOD_USER: &str = "user@example.com";
pub const DECLINED_USER: &str = "user-bad-source@example.com";
pub const CARDLESS_USER: &str = "user-no-card@example.com";
/// Pays with `pm_card_authenticationRequired`: 402 `authentication-required`.
pub const THREE_DS_USER: &str = "user-3ds@example.com";
/// The endpoint secret every test app's `POST /webhooks/stripe` takes.
pub const WEBHOOK_SECRET: &str = "whsec_test_app";

/// The lock policy at its default.
pub const LOCK: LockPolicy = LockPolicy::DEFAULT;

/// The review rule at its default.
pub const REVIEW: ReviewPolicy = ReviewPolicy::DEFAULT;

/// The completer at its defaults.
pub const COMPLETER: domain::CompleterPolicy = domain::CompleterPolicy::DEFAULT;

/// The phase machine's settings at their defaults.
pub fn ride_settings() -> PhaseSettings {
    PhaseSettings {
        lock: LOCK,
        review: REVIEW,
        cancel: domain::CancelPolicy::DEFAULT,
    }
}

/// The seed's curl body.
pub const SEED_BODY: &str = "origin_lat=0.0&origin_lon=0.0&target_lat=0.0&target_lon=0.0";

/// The store a suite runs the API on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// A database of its own in the suite's Postgres container.
    Postgres,
}

/// Puts something between the API and the fake gateway (a gate, a panic).
pub type WrapGateway = Box<dyn FnOnce(Arc<FakeGateway>) -> Arc<dyn PaymentGateway> + Send>;

pub struct AppOptions {
    pub backend: Backend,
    pub auth_mode: AuthMode,
    pub faults: FakeGatewayFaults,
    pub wrap_gateway: Option<WrapGateway>,
    pub limits: ServerLimits,
}

impl AppOptions {
    pub fn on(backend: Backend) -> Self {
        Self {
            backend,
            auth_mode: AuthMode::Email,
            faults: FakeGatewayFaults::default(),
            wrap_gateway: None,
            limits: ServerLimits::DEFAULT,
        }
    }
}

/// A gateway that holds every charge until the test lets it through: a
/// test that needs a request in flight waits for `entered`, and never
/// races a sleep.
pub struct GatedGateway {
    inner: Arc<FakeGateway>,
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

impl GatedGateway {
    pub fn new(inner: Arc<FakeGateway>) -> Self {
        Self {
            inner,
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
        }
    }

    /// Returns when `n` more charges have reached the gateway.
    pub async fn entered(&self, n: u32) {
        tokio::time::timeout(Duration::from_secs(30), self.entered.acquire_many(n))
            .await
            .expect("a charge reached the gateway within 30 s")
            .expect("open")
            .forget();
    }

    /// Lets `n` charges through.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

#[async_trait::async_trait]
impl PaymentGateway for GatedGateway {
    async fn create_customer(
        &self,
        email: &str,
        card: domain::TestCard,
    ) -> Result<application::ports::SavedCustomer, application::ports::GatewayError> {
        self.inner.create_customer(email, card).await
    }

    async fn save_payment_method(
        &self,
        customer_id: &str,
        card: domain::TestCard,
    ) -> Result<Option<String>, application::ports::GatewayError> {
        self.inner.save_payment_method(customer_id, card).await
    }

    async fn payment_intent_state(
        &self,
        id: &str,
    ) -> Result<domain::PaymentIntentState, application::ports::GatewayError> {
        self.inner.payment_intent_state(id).await
    }

    async fn refund(&self, request: &domain::RefundRequest) -> domain::RefundOutcome {
        self.inner.refund(request).await
    }

    async fn find_refund(&self, request: &domain::RefundRequest) -> domain::ChargeSearch {
        self.inner.find_refund(request).await
    }

    async fn charge(&self, request: &domain::ChargeRequest) -> domain::ChargeOutcome {
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("open").forget();
        self.inner.charge(request).await
    }
}

/// Runs each named test body (an `async fn(Backend)`) once per backend, as
/// `memory::name` and `postgres::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Memory).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// What a suite reads back from a store, whichever store it is.
#[async_trait::async_trait]
pub trait Inspect: Send + Sync {
    async fn key_count(&self) -> usize;
    async fn ride_count(&self) -> usize;
    /// Each key's string and recovery point.
    async fn recovery_points(&self) -> Vec<(String, domain::RecoveryPoint)>;
    /// The request id recorded on the key with this string, if any.
    async fn request_id(&self, key: &str) -> Option<String>;
    /// Replaces the stored answer's body of the finished key with this
    /// string: the bytes an earlier version of the service stored.
    async fn store_earlier_answer(&self, key: &str, body: &str);
}

/// Leaves keys where an earlier version of the service, which committed
/// every phase on its own, could leave them: `started` with no ride, and
/// `charge_created`. Today's phases never stop there, but a store upgraded
/// in place must still resume such keys.
#[async_trait::async_trait]
pub trait Legacy: Send + Sync {
    async fn leave_at_started(&self, key: domain::KeyId);
    async fn leave_at_charge_created(&self, key: domain::KeyId, charge_id: &str);
}

#[async_trait::async_trait]
impl Legacy for MemoryStore {
    async fn leave_at_started(&self, key: domain::KeyId) {
        MemoryStore::leave_at_started(self, key);
    }

    async fn leave_at_charge_created(&self, key: domain::KeyId, charge_id: &str) {
        MemoryStore::leave_at_charge_created(self, key, charge_id);
    }
}

#[async_trait::async_trait]
impl Inspect for MemoryStore {
    async fn key_count(&self) -> usize {
        self.keys().len()
    }

    async fn ride_count(&self) -> usize {
        self.rides().len()
    }

    async fn recovery_points(&self) -> Vec<(String, domain::RecoveryPoint)> {
        self.keys()
            .into_iter()
            .map(|k| (k.key.to_string(), k.recovery_point()))
            .collect()
    }

    async fn request_id(&self, key: &str) -> Option<String> {
        self.keys()
            .into_iter()
            .find(|k| k.key.as_str() == key)
            .and_then(|k| k.request_id)
    }

    async fn store_earlier_answer(&self, key: &str, body: &str) {
        let record = self
            .keys()
            .into_iter()
            .find(|k| k.key.as_str() == key)
            .expect("the key");
        self.update_key(record.id, |record| match &mut record.progress {
            domain::KeyProgress::Finished { response, .. } => response.body = body.to_owned(),
            other => panic!("the key is not finished: {other:?}"),
        });
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub inspect: Arc<dyn Inspect>,
    pub gateway: Arc<FakeGateway>,
    pub users: Vec<SeededUser>,
    stop: Option<oneshot::Sender<()>>,
    /// The server task: ends after `shutdown`.
    pub served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A fresh key: 36 characters, unique per call.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn spawn_app(options: AppOptions) -> TestApp {
    match options.backend {
        Backend::Memory => {
            let store = Arc::new(MemoryStore::new());
            spawn_app_on(store.clone(), store, options).await
        }
        Backend::Postgres => {
            let store = postgres::fresh_store().await;
            spawn_app_on(store.clone(), store, options).await
        }
    }
}

/// The app over a gateway the test holds (every charge waits for
/// `release`), and the gate.
pub async fn spawn_gated_app(
    backend: Backend,
    limits: ServerLimits,
) -> (TestApp, Arc<GatedGateway>) {
    let slot: Arc<std::sync::Mutex<Option<Arc<GatedGateway>>>> = Arc::default();
    let keep = slot.clone();
    let app = spawn_app(AppOptions {
        wrap_gateway: Some(Box::new(move |inner: Arc<FakeGateway>| {
            let gated = Arc::new(GatedGateway::new(inner));
            *keep.lock().expect("slot") = Some(gated.clone());
            gated as Arc<dyn PaymentGateway>
        })),
        limits,
        ..AppOptions::on(backend)
    })
    .await;
    let gate = slot.lock().expect("slot").clone().expect("wrapped");
    (app, gate)
}

/// The `rocket-rides` binary at `path`, started as a user would on a clean
/// machine: none of the settings a developer may have exported (the
/// environment is cleared but for `PATH`), logging at `info`. Every suite
/// that runs the binary starts from this.
pub fn rocket_rides(path: &str) -> std::process::Command {
    let mut command = std::process::Command::new(path);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("RUST_LOG", "info");
    command
}

/// The API's state as `bins` wires it: the use cases built here, over the
/// given ports, and handed to the HTTP adapter.
pub fn api_state(
    keys: Arc<dyn Keys>,
    users: Arc<dyn Users>,
    probe: Arc<dyn Probe>,
    gateway: Arc<dyn PaymentGateway>,
    auth_mode: AuthMode,
) -> ApiState {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    ApiState::new(
        Arc::new(PhaseMachine::new(
            keys.clone(),
            users.clone(),
            gateway,
            clock.clone(),
            ride_settings(),
        )),
        Arc::new(
            Authenticate::new(users, auth_mode).cached(clock, Authenticate::DEFAULT_CACHE_TTL),
        ),
        Arc::new(ShowRide::new(keys)),
        probe,
    )
}

/// Starts the API over `store` with an in-process fake gateway, the demo
/// users seeded (with API keys when `auth_mode` is `ApiKey`).
pub async fn spawn_app_on(
    store: Arc<dyn Store>,
    inspect: Arc<dyn Inspect>,
    options: AppOptions,
) -> TestApp {
    let gateway = Arc::new(FakeGateway::with_faults(options.faults));
    let api_gateway: Arc<dyn PaymentGateway> = match options.wrap_gateway {
        Some(wrap) => wrap(gateway.clone()),
        None => gateway.clone(),
    };
    let mut n = 0;
    let mut generate = move || {
        n += 1;
        format!("rr_test_key_{n}_{}", uuid::Uuid::new_v4().simple())
    };
    let issue = options.auth_mode == AuthMode::ApiKey;
    let users = SeedDemoUsers::new(store.clone(), gateway.clone())
        .run(issue.then_some(&mut generate as &mut (dyn FnMut() -> String + Send)))
        .await
        .expect("seeding the demo users");
    let mut state = api_state(
        store.clone(),
        store.clone(),
        store.clone(),
        api_gateway,
        options.auth_mode,
    );
    state.limits = options.limits;
    state.webhook = Some(Arc::new(application::ReceiveWebhook::new(
        store.clone(),
        Arc::new(SystemClock),
        domain::WebhookSecrets::parse(WEBHOOK_SECRET).expect("a secret"),
        domain::webhook::DEFAULT_TOLERANCE,
    )));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address: SocketAddr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(adapters::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://{address}"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
        store,
        inspect,
        gateway,
        users,
        stop: Some(stop),
        served: Some(served),
    }
}

impl TestApp {
    /// Starts the server's shutdown (as SIGTERM does in the binary).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The seed's ride for `GOOD_USER` under `key`, sent from a task on a
    /// connection of its own (aborting the task hangs up, as a phone losing
    /// signal would). `None` when no answer came.
    pub fn post_ride_in_background(&self, key: &str) -> tokio::task::JoinHandle<Option<Answer>> {
        let (url, key) = (format!("{}/rides", self.base), key.to_owned());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Authorization", GOOD_USER)
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(SEED_BODY)
                .send()
                .await
                .ok()?;
            Some(Answer::of(response).await)
        })
    }

    pub fn address(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// `POST /rides` with a form body, as the seed's curl sends it.
    pub async fn post_ride(
        &self,
        authorization: Option<&str>,
        key: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        self.post_ride_typed(
            authorization,
            key,
            "application/x-www-form-urlencoded",
            body,
        )
        .await
    }

    pub async fn post_ride_typed(
        &self,
        authorization: Option<&str>,
        key: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/rides", self.base))
            .header("Content-Type", content_type)
            .body(body.to_owned());
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("the API answers")
    }

    /// `POST /rides/{id}/cancel` with a JSON body (empty: no reason).
    pub async fn cancel_ride(
        &self,
        authorization: &str,
        key: &str,
        id: &str,
        body: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/rides/{id}/cancel", self.base))
            .header("Authorization", authorization)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the API answers")
    }

    pub async fn get_ride(&self, authorization: &str, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/rides/{id}", self.base))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("the API answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the API answers")
    }

    pub fn api_key_of(&self, email: &str) -> String {
        let user = self
            .users
            .iter()
            .find(|u| u.user.email == email)
            .expect("a demo user");
        format!("Bearer {}", user.api_key.clone().expect("issued a key"))
    }
}

/// Status, headers and body of a response, read once.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("a body"),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// For problem+json answers: the `detail`, checked to equal `error`.
    pub fn detail(&self) -> String {
        let json = self.json();
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(json["status"], self.status, "{}", self.body);
        assert!(
            json["type"].is_string() && json["title"].is_string(),
            "{}",
            self.body
        );
        assert_eq!(json["detail"], json["error"], "{}", self.body);
        json["detail"].as_str().expect("detail").to_owned()
    }
}
