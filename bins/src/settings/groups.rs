//! The groups of settings, one per part of the system (store, job queue,
//! Stripe, keys, HTTP API, operations, console, background passes,
//! completer, enqueuer, worker, reaper, simulator, fake-stripe), each under
//! its own `--help` heading, with the checks that need only the group.

use adapters::fake_stripe::{FakeStripeSettings, Faults};
use adapters::http::{DEFAULT_GATEWAY_RETRY_AFTER, ServerLimits};
use adapters::nats::NatsSettings;
use adapters::postgres::PoolSettings;
use adapters::stripe::StripeSettings;
use application::{AuthMode, Authenticate};
use clap::{Args, ValueEnum};
use domain::{CancelPolicy, CompleterPolicy, LockPolicy, ReviewPolicy};

use super::*;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Postgres to keep everything in; unset, an in-memory store inside this process.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<Secret>,
    /// Most Postgres connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = PoolSettings::DEFAULT.max_connections)]
    pub database_max_connections: u32,
    /// How long to wait for a free pooled connection before failing.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", value_parser = duration, default_value_t = Dur(PoolSettings::DEFAULT.acquire_timeout))]
    pub database_acquire_timeout: Dur,
    /// Postgres aborts any statement running longer than this.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", value_parser = duration, default_value_t = Dur(PoolSettings::DEFAULT.statement_timeout))]
    pub database_statement_timeout: Dur,
}

impl StoreArgs {
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_acquire_timeout.0,
            statement_timeout: self.database_statement_timeout.0,
        }
    }

    /// The in-memory store: it lives and dies with this process.
    pub fn embedded(&self) -> bool {
        self.database_url.is_none()
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Job queue")]
pub struct QueueArgs {
    /// NATS with JetStream for the job queue (a cluster's nodes
    /// comma-separated); unset, an in-memory queue inside this process.
    #[arg(long, env = "NATS_URL", hide_env_values = true, value_parser = secret)]
    pub nats_url: Option<Secret>,
    /// How long the queue (JetStream, or the in-memory one) remembers a job
    /// id to drop a repeated publish; longer than ENQUEUER_CLAIM_TIMEOUT
    /// plus a batch.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", value_parser = duration, default_value_t = Dur(NatsSettings::DEFAULT_DUPLICATE_WINDOW))]
    pub nats_duplicate_window: Dur,
    /// A job nobody acknowledged within this is delivered again.
    #[arg(long, env = "NATS_ACK_WAIT", value_parser = duration, default_value_t = Dur(NatsSettings::DEFAULT_ACK_WAIT))]
    pub nats_ack_wait: Dur,
    /// Deliveries before a job goes to the dead-letter stream.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = NatsSettings::DEFAULT_MAX_DELIVER)]
    pub nats_max_deliver: u32,
    /// Copies JetStream keeps of each stream: 3 on a three-node cluster
    /// (a node can die and nothing staged is lost), 1 on a single server.
    /// Applied when the streams are first created.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    /// NATS user, with NATS_PASSWORD (or in the URL: `nats://user:password@host`).
    #[arg(
        long,
        env = "NATS_USER",
        requires = "nats_password",
        conflicts_with = "nats_token"
    )]
    pub nats_user: Option<String>,
    /// NATS password, with NATS_USER.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, value_parser = secret, requires = "nats_user")]
    pub nats_password: Option<Secret>,
    /// NATS token (or in the URL: `nats://token@host`).
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub nats_token: Option<Secret>,
    /// A NATS credentials file (`.creds`: a user JWT and its NKEY seed, as
    /// `nsc` writes them) for a server in operator mode.
    #[arg(
        long,
        env = "NATS_CREDS",
        conflicts_with_all = ["nats_user", "nats_token"]
    )]
    pub nats_creds: Option<std::path::PathBuf>,
}

impl QueueArgs {
    /// The credentials the settings name, over those of the URL.
    pub fn auth(&self) -> Option<adapters::nats::NatsAuth> {
        if let Some(path) = &self.nats_creds {
            return Some(adapters::nats::NatsAuth::CredentialsFile(path.clone()));
        }
        match (&self.nats_user, &self.nats_password, &self.nats_token) {
            (Some(user), Some(password), _) => Some(adapters::nats::NatsAuth::UserPassword {
                user: user.clone(),
                password: password.expose().to_owned(),
            }),
            (_, _, Some(token)) => Some(adapters::nats::NatsAuth::Token(token.expose().to_owned())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Stripe")]
pub struct StripeArgs {
    /// Stripe secret key; set, charges go to Stripe over HTTP at STRIPE_API_BASE,
    /// unset, to an in-process fake.
    #[arg(long, env = "STRIPE_API_KEY", hide_env_values = true, value_parser = secret)]
    pub stripe_api_key: Option<Secret>,
    /// Where Stripe's API is (point it at `rocket-rides fake-stripe`).
    #[arg(long, env = "STRIPE_API_BASE", default_value = adapters::stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,
    /// Connect timeout of each call to Stripe.
    #[arg(long, env = "STRIPE_CONNECT_TIMEOUT", value_parser = duration, default_value_t = Dur(StripeSettings::DEFAULT_CONNECT_TIMEOUT))]
    pub stripe_connect_timeout: Dur,
    /// Total timeout of each call to Stripe; with its retries, shorter than LOCK_TIMEOUT.
    #[arg(long, env = "STRIPE_TIMEOUT", value_parser = duration, default_value_t = Dur(StripeSettings::DEFAULT_TIMEOUT))]
    pub stripe_timeout: Dur,
    /// Retries of a call whose answer was unknown (same idempotency key, with backoff).
    #[arg(long, env = "STRIPE_MAX_RETRIES", default_value_t = StripeSettings::DEFAULT_MAX_RETRIES)]
    pub stripe_max_retries: u32,
    /// Which of Stripe's APIs takes the money: payment_intents (saved
    /// PaymentMethods confirmed off-session) or charges (the seed's flow;
    /// closed to new Stripe accounts).
    #[arg(long, env = "STRIPE_PAYMENTS", value_parser = payments_api, default_value = "payment_intents")]
    pub stripe_payments: domain::PaymentsApi,
    /// In-process fake gateway only: probability that a charge's answer is lost.
    #[arg(long, env = "FAKE_GATEWAY_UNKNOWN_RATE", value_parser = rate, default_value_t = 0.0)]
    pub fake_gateway_unknown_rate: f64,
    /// In-process fake gateway only: delay added to every charge.
    #[arg(long, env = "FAKE_GATEWAY_LATENCY", value_parser = duration, default_value_t = Dur(Duration::ZERO))]
    pub fake_gateway_latency: Dur,
}

impl StripeArgs {
    /// The longest one charge can take: every call to the gateway with its
    /// retries and their backoff (or the in-process fake's latency).
    pub fn worst_case(&self) -> Duration {
        if self.stripe_api_key.is_none() {
            return self.fake_gateway_latency.0;
        }
        let calls = self.stripe_max_retries.saturating_add(1);
        let backoff = StripeSettings::DEFAULT_RETRY_BACKOFF.saturating_mul(
            2u32.saturating_pow(self.stripe_max_retries)
                .saturating_sub(1),
        );
        self.stripe_timeout
            .0
            .saturating_mul(calls)
            .saturating_add(backoff)
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Replay cache")]
pub struct ReplayCacheArgs {
    /// Finished answers each API process keeps to answer replays without a
    /// statement (0: none kept).
    #[arg(long, env = "REPLAY_CACHE_ENTRIES", default_value_t = application::ReplayCacheLimits::DEFAULT.max_entries)]
    pub replay_cache_entries: usize,
    /// Bytes of those answers kept at most (keys, fingerprints, bodies).
    #[arg(long, env = "REPLAY_CACHE_BYTES", default_value_t = application::ReplayCacheLimits::DEFAULT.max_bytes)]
    pub replay_cache_bytes: usize,
    /// How long an answer is kept; at most 1h, far below REAPER_MAX_AGE.
    #[arg(long, env = "REPLAY_CACHE_TTL", value_parser = replay_ttl, default_value_t = Dur(application::ReplayCacheLimits::DEFAULT.ttl))]
    pub replay_cache_ttl: Dur,
}

impl ReplayCacheArgs {
    pub fn limits(&self) -> application::ReplayCacheLimits {
        application::ReplayCacheLimits {
            ttl: self.replay_cache_ttl.0,
            max_entries: self.replay_cache_entries,
            max_bytes: self.replay_cache_bytes,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Stripe webhooks")]
pub struct WebhookArgs {
    /// Endpoint secrets (whsec_…, comma-separated during a rotation);
    /// set, `POST /webhooks/stripe` takes Stripe's signed events.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = webhook_secrets)]
    pub stripe_webhook_secret: Option<domain::WebhookSecrets>,
    /// How far a signature's timestamp may be from now.
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE", value_parser = duration, default_value_t = Dur(domain::webhook::DEFAULT_TOLERANCE))]
    pub stripe_webhook_tolerance: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Idempotency keys")]
pub struct KeyArgs {
    /// A locked key whose lock is older than this may be taken over.
    #[arg(long, env = "LOCK_TIMEOUT", value_parser = duration, default_value_t = Dur(LockPolicy::DEFAULT.lock_timeout))]
    pub lock_timeout: Dur,
    /// How long the payment processor remembers an idempotency key (Stripe: 24h).
    #[arg(long, env = "GATEWAY_IDEMPOTENCY_WINDOW", value_parser = duration, default_value = "24h")]
    pub gateway_idempotency_window: Dur,
    /// A charge first attempted longer ago goes to review instead of being
    /// retried; shorter than GATEWAY_IDEMPOTENCY_WINDOW by at least one
    /// gateway call with its retries.
    #[arg(long, env = "REVIEW_AFTER", value_parser = duration, default_value_t = Dur(ReviewPolicy::DEFAULT.review_after))]
    pub review_after: Dur,
    /// How long after a charge is made the processor's search may still
    /// miss it (Stripe: "under normal operating conditions, less than a
    /// minute"). `resolve --from-stripe` takes "nothing found" as "no
    /// charge" only for a key whose last possible charge is older. At
    /// least 1m against Stripe itself.
    #[arg(long, env = "STRIPE_SEARCH_LAG", value_parser = duration, default_value = "5m")]
    pub stripe_search_lag: Dur,
    /// A booked ride cancelled within this long of its booking is refunded
    /// in full (`POST /rides/{id}/cancel`).
    #[arg(long, env = "FREE_CANCEL_WINDOW", value_parser = duration, default_value_t = Dur(CancelPolicy::DEFAULT.free_window), help_heading = "Cancelling")]
    pub free_cancel_window: Dur,
    /// Cents kept from the fare of a ride cancelled later (the refund is
    /// never below zero).
    #[arg(long, env = "CANCEL_FEE", default_value_t = CancelPolicy::DEFAULT.fee_cents, value_parser = clap::value_parser!(i64).range(0..), help_heading = "Cancelling")]
    pub cancel_fee: i64,
}

impl KeyArgs {
    /// Refuses settings that contradict each other, naming both, before any
    /// process starts: with them the promise itself would not hold.
    pub fn check(&self, stripe: &StripeArgs) -> Result<(), String> {
        let call = stripe.worst_case();
        let (lock_timeout, review_after) = (self.lock_timeout.0, self.review_after.0);
        if call >= lock_timeout {
            return Err(format!(
                "a charge can take {} (STRIPE_TIMEOUT {} x {} calls with STRIPE_MAX_RETRIES {}, plus backoff; or FAKE_GATEWAY_LATENCY), which is not shorter than LOCK_TIMEOUT {}: another request could take the key over while the charge is in flight. Raise LOCK_TIMEOUT or lower STRIPE_TIMEOUT / STRIPE_MAX_RETRIES",
                human(call),
                stripe.stripe_timeout,
                stripe.stripe_max_retries.saturating_add(1),
                stripe.stripe_max_retries,
                self.lock_timeout,
            ));
        }
        if review_after.saturating_add(call) >= self.gateway_idempotency_window.0 {
            return Err(format!(
                "REVIEW_AFTER {} plus one charge with its retries ({}) is not shorter than GATEWAY_IDEMPOTENCY_WINDOW {}: a retried charge could reach the gateway after it forgot the key, and charge twice. Lower REVIEW_AFTER",
                self.review_after,
                human(call),
                self.gateway_idempotency_window,
            ));
        }
        if lock_timeout >= review_after {
            return Err(format!(
                "LOCK_TIMEOUT {} is not shorter than REVIEW_AFTER {}: a stalled key would go to review before anyone could retry it",
                self.lock_timeout, self.review_after,
            ));
        }
        let at_stripe = stripe.stripe_api_key.is_some()
            && stripe.stripe_api_base.trim_end_matches('/') == adapters::stripe::DEFAULT_API_BASE;
        if at_stripe && self.stripe_search_lag.0 < Self::MIN_STRIPE_SEARCH_LAG {
            return Err(format!(
                "STRIPE_SEARCH_LAG {} is below {} against Stripe itself, whose search \"under normal operating conditions\" catches up within a minute and can lag more: `resolve --from-stripe` could take a charge it cannot see yet for no charge, and end a paid ride unbooked. Raise STRIPE_SEARCH_LAG",
                self.stripe_search_lag,
                human(Self::MIN_STRIPE_SEARCH_LAG),
            ));
        }
        Ok(())
    }

    /// The least `STRIPE_SEARCH_LAG` taken against Stripe itself: its
    /// documented "less than a minute" under normal conditions. (A stand-in
    /// such as fake-stripe lags as its own `--search-delay` says.)
    pub const MIN_STRIPE_SEARCH_LAG: Duration = Duration::from_secs(60);
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuthModeArg {
    Email,
    ApiKey,
}

impl From<AuthModeArg> for AuthMode {
    fn from(mode: AuthModeArg) -> Self {
        match mode {
            AuthModeArg::Email => AuthMode::Email,
            AuthModeArg::ApiKey => AuthMode::ApiKey,
        }
    }
}

/// Where the API listens when API_PORT is not set (the seed's curl lines).
pub const DEFAULT_API_PORT: u16 = 5000;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub struct ServerArgs {
    /// Port the API listens on.
    #[arg(long, env = "API_PORT", default_value_t = DEFAULT_API_PORT)]
    pub api_port: u16,
    /// How `Authorization` names the user: the demo's email, or `Bearer <api key>`.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value = "email")]
    pub auth_mode: AuthModeArg,
    /// The API remembers a user it authenticated for this long, so requests
    /// cost no lookup; a removed API key (or user) still works for up to
    /// this long. 0s looks every request up.
    #[arg(long, env = "AUTH_CACHE_TTL", value_parser = duration, default_value_t = Dur(Authenticate::DEFAULT_CACHE_TTL))]
    pub auth_cache_ttl: Dur,
    /// `Retry-After` on a 503 when the payment processor's answer was unknown.
    #[arg(long, env = "GATEWAY_RETRY_AFTER", value_parser = duration, default_value_t = Dur(DEFAULT_GATEWAY_RETRY_AFTER))]
    pub gateway_retry_after: Dur,
    /// A client must send a request's headers within this.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", value_parser = duration, default_value_t = Dur(ServerLimits::DEFAULT.header_read_timeout))]
    pub http_header_timeout: Dur,
    /// … and its body within this.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", value_parser = duration, default_value_t = Dur(ServerLimits::DEFAULT.body_read_timeout))]
    pub http_body_timeout: Dur,
    /// Open connections the API accepts at most.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = ServerLimits::DEFAULT.max_connections, value_parser = at_least_one)]
    pub http_max_connections: usize,
    /// Ride requests in progress at most; more are answered 503 + Retry-After.
    #[arg(long, env = "HTTP_MAX_CONCURRENT_REQUESTS", default_value_t = ServerLimits::DEFAULT.max_concurrent_requests, value_parser = at_least_one)]
    pub http_max_concurrent_requests: usize,
}

pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("{text} is not a whole number")),
    }
}

impl ServerArgs {
    pub fn limits(&self, shutdown: &ShutdownArgs) -> ServerLimits {
        ServerLimits {
            header_read_timeout: self.http_header_timeout.0,
            body_read_timeout: self.http_body_timeout.0,
            max_connections: self.http_max_connections,
            max_concurrent_requests: self.http_max_concurrent_requests,
            shutdown_deadline: shutdown.shutdown_deadline.0,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct OpsArgs {
    /// Address the API binds to (and HEALTH_PORT's endpoint).
    #[arg(long, env = "API_HOST", default_value = "0.0.0.0")]
    pub api_host: String,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address, e.g. `0.0.0.0:9100`, off the API's port. Unset: the API
    /// serves `/metrics` on its own port, the others none.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The same endpoint on `API_HOST:HEALTH_PORT`, for background
    /// processes (the older name; `METRICS_ADDR` wins when both are set).
    #[arg(long, env = "HEALTH_PORT")]
    pub health_port: Option<u16>,
}

impl OpsArgs {
    /// Where the process serves its metrics and probes, if anywhere.
    pub fn address(&self) -> Option<String> {
        self.metrics_addr.clone().or_else(|| {
            self.health_port
                .map(|port| format!("{}:{port}", self.api_host))
        })
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct ShutdownArgs {
    /// On SIGTERM, how long requests and keys in hand may take to finish
    /// (past it, connections close and the keys' locks time out).
    #[arg(long, env = "SHUTDOWN_DEADLINE", value_parser = duration, default_value_t = Dur(ServerLimits::DEFAULT.shutdown_deadline))]
    pub shutdown_deadline: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Console")]
pub struct ConsoleArgs {
    /// Serve the operator's console at `/console` on METRICS_ADDR, for
    /// whoever signs in with this token (16 characters at least). Unset: no console.
    #[arg(long, env = "CONSOLE_TOKEN", hide_env_values = true, value_parser = console_token)]
    pub console_token: Option<Secret>,
    /// A console sign-in lasts this long (then the token is asked again);
    /// signing out ends it sooner.
    #[arg(long, env = "CONSOLE_SESSION_TTL", value_parser = session_ttl, default_value = "8h")]
    pub console_session_ttl: Dur,
    /// Send the console's session cookie over HTTPS only: set it when the
    /// console is reached through TLS (a proxy in front of METRICS_ADDR).
    #[arg(long, env = "CONSOLE_SECURE_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub console_secure_cookie: bool,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Background passes")]
pub struct PollArgs {
    /// Pause between batches of the completer, enqueuer and reaper, and
    /// between samples of the process's gauges (pool, dead letters).
    #[arg(long, env = "POLL_INTERVAL", value_parser = duration, default_value = "5s")]
    pub poll_interval: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Background passes")]
pub struct BatchArgs {
    /// Most keys or jobs one batch takes.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000, value_parser = at_least_one)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Completer")]
pub struct CompleterArgs {
    /// The completer leaves keys younger than this to their client.
    #[arg(long, env = "COMPLETER_MIN_AGE", value_parser = duration, default_value_t = Dur(CompleterPolicy::DEFAULT.min_age))]
    pub completer_min_age: Dur,
    /// The completer leaves keys run more recently than this.
    #[arg(long, env = "COMPLETER_MIN_IDLE", value_parser = duration, default_value_t = Dur(CompleterPolicy::DEFAULT.min_idle))]
    pub completer_min_idle: Dur,
    /// How many keys of a batch one completer works at once, each under its
    /// own lock: sized for a gateway answering in a few hundred milliseconds.
    #[arg(long, env = "COMPLETER_CONCURRENCY", default_value_t = 64)]
    pub completer_concurrency: usize,
    /// When the completer reports a key for review, it asks the payment
    /// processor and settles the key if the answer is definitive (as
    /// `resolve --from-stripe`), asking again later (six times at most,
    /// backing off) while it is not; the rest stay for a person.
    #[arg(long, env = "COMPLETER_RECONCILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub completer_reconcile: bool,
    /// A ride awaiting authentication or pending longer than this has its
    /// PaymentIntent retrieved by the completer and is settled as a webhook
    /// would (and checked again this much later while it still waits).
    #[arg(long, env = "PAYMENT_SYNC_AFTER", value_parser = duration, default_value_t = Dur(application::SyncPayments::DEFAULT_SYNC_AFTER))]
    pub payment_sync_after: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Enqueuer")]
pub struct EnqueuerArgs {
    /// How long an enqueuer holds the batch it claimed; a crashed enqueuer's
    /// jobs are claimed again after this.
    #[arg(long, env = "ENQUEUER_CLAIM_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub enqueuer_claim_timeout: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Worker")]
pub struct WorkerArgs {
    /// Most jobs one worker takes from the queue and works at once.
    #[arg(long, env = "WORKER_BATCH", default_value_t = 64, value_parser = at_least_one)]
    pub worker_batch: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Reaper")]
pub struct ReaperArgs {
    /// The reaper deletes keys older than this.
    #[arg(long, env = "REAPER_MAX_AGE", value_parser = duration, default_value = "72h")]
    pub reaper_max_age: Dur,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Simulator")]
pub struct SimulatorArgs {
    /// The API to send rides to; defaults to this machine's API_PORT.
    #[arg(long, env = "SIMULATOR_API_URL")]
    pub api_url: Option<String>,
    /// Longest pause between two requests (each pause is random up to this).
    #[arg(long, env = "SIMULATOR_MAX_PAUSE", value_parser = duration, default_value = "2s")]
    pub max_pause: Dur,
    /// Share of requests sent with raise_error=true.
    #[arg(long, env = "SIMULATOR_ERROR_RATE", value_parser = rate, default_value_t = 0.5)]
    pub error_rate: f64,
    /// The Authorization header to send (an email, or `Bearer <key>`).
    #[arg(long, env = "SIMULATOR_AUTHORIZATION", default_value = application::DEMO_USERS[0].0)]
    pub authorization: String,
    /// Read the Authorization header from this file instead (its first
    /// line, e.g. one `up --api-keys-dir` wrote), at start.
    #[arg(long, env = "SIMULATOR_AUTHORIZATION_FILE")]
    pub authorization_file: Option<std::path::PathBuf>,
    /// Stop after this many rides (each with its retries) and log a summary;
    /// unset, the simulator runs until stopped.
    #[arg(long, env = "SIMULATOR_RIDES")]
    pub rides: Option<u64>,
    /// Retry a ride that got no final answer (409, 5xx, or none at all) up to
    /// this many times with the same key, after its Retry-After or a backoff,
    /// as a careful client would. Retries never ask for a simulated failure.
    /// 0 (the seed's behaviour) leaves failed rides to the completer.
    #[arg(long, env = "SIMULATOR_RETRIES", default_value_t = 0)]
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FaultArg {
    Latency,
    Hang,
    #[value(name = "500")]
    ServerError,
    #[value(name = "429")]
    RateLimit,
    Drop,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FaultTimingArg {
    Before,
    After,
    Either,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "fake-stripe")]
pub struct FakeStripeArgs {
    /// Port to listen on.
    #[arg(long, env = "FAKE_STRIPE_PORT", default_value_t = adapters::fake_stripe::DEFAULT_PORT)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "FAKE_STRIPE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Probability that a request meets one fault.
    #[arg(long, env = "FAKE_STRIPE_FAULT_RATE", value_parser = rate, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Faults to pick from.
    #[arg(
        long,
        env = "FAKE_STRIPE_FAULTS",
        value_enum,
        value_delimiter = ',',
        default_value = "latency,hang,500,429,drop"
    )]
    pub faults: Vec<FaultArg>,
    /// The POST routes faults land on, e.g. `/v1/charges` to lose charge
    /// answers while customers are created cleanly. Unset: every route.
    #[arg(long, env = "FAKE_STRIPE_FAULT_PATHS", value_delimiter = ',')]
    pub fault_paths: Vec<String>,
    /// Whether a fault lands before the request is processed (nothing
    /// recorded) or after (the charge exists, the answer is lost).
    #[arg(
        long,
        env = "FAKE_STRIPE_FAULT_TIMING",
        value_enum,
        default_value = "either"
    )]
    pub fault_timing: FaultTimingArg,
    /// Delay of a `latency` fault.
    #[arg(long, env = "FAKE_STRIPE_LATENCY", value_parser = duration, default_value_t = Dur(Faults::DEFAULT_LATENCY))]
    pub latency: Dur,
    /// How long a `hang` fault holds the answer (past the client's timeout).
    #[arg(long, env = "FAKE_STRIPE_HANG", value_parser = duration, default_value_t = Dur(Faults::DEFAULT_HANG))]
    pub hang: Dur,
    /// How long an idempotency key is remembered.
    #[arg(long, env = "FAKE_STRIPE_IDEMPOTENCY_WINDOW", value_parser = duration, default_value_t = Dur(FakeStripeSettings::DEFAULT_IDEMPOTENCY_WINDOW))]
    pub idempotency_window: Dur,
    /// How long a new charge stays out of `GET /v1/charges/search`, as
    /// Stripe's search index lags.
    #[arg(long, env = "FAKE_STRIPE_SEARCH_DELAY", value_parser = duration, default_value_t = Dur(FakeStripeSettings::DEFAULT_SEARCH_DELAY))]
    pub search_delay: Dur,
    /// How long a PaymentIntent paid with fake-stripe's own
    /// `pm_fake_processing` stays `processing` before it succeeds.
    #[arg(long, env = "FAKE_STRIPE_PROCESSING_DELAY", value_parser = duration, default_value_t = Dur(FakeStripeSettings::DEFAULT_PROCESSING_DELAY))]
    pub processing_delay: Dur,
    /// Deliver every event to this URL (e.g. the API's
    /// `/webhooks/stripe`), signed with --webhook-secret, retried until it
    /// answers 2xx. Unset: events are only listed (`GET /v1/events`).
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_URL", requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret (`whsec_…`), as the service's
    /// STRIPE_WEBHOOK_SECRET names it.
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    pub webhook_secret: Option<Secret>,
    /// Probability that a delivery attempt is lost (it is retried later).
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_DROP_RATE", value_parser = rate, default_value_t = 0.0)]
    pub webhook_drop_rate: f64,
    /// Probability that an event is delivered twice.
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_DUPLICATE_RATE", value_parser = rate, default_value_t = 0.0)]
    pub webhook_duplicate_rate: f64,
    /// Added before every delivery attempt.
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_DELAY", value_parser = duration, default_value_t = Dur(Duration::ZERO))]
    pub webhook_delay: Dur,
    /// Deliver the events waiting at once in a random order.
    #[arg(long, env = "FAKE_STRIPE_WEBHOOK_REORDER")]
    pub webhook_reorder: bool,
}
