//! Settings: every one a flag with an environment fallback; `--help` lists them.

use std::time::Duration;

use application::AuthMode;
use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write durations like 90s, 5m, 72h)"))
}

fn console_token(text: &str) -> Result<Secret, String> {
    if text.chars().count() < 16 || text.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("CONSOLE_TOKEN must be at least 16 visible ASCII characters".to_owned());
    }
    Ok(Secret(text.to_owned()))
}

fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret(text.to_owned()))
}

/// A setting that holds a credential (a key, a URL with a password): its
/// `Debug` never shows it, so neither can a log line that prints settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not between 0 and 1"))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "rocket-rides",
    version,
    about = "Book rides, charge cards, never twice."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: api, completer, enqueuer, worker, reaper, simulator.
    Start(SimulatorArgs),
    /// The HTTP API.
    Api,
    /// Finishes requests left unfinished.
    Completer,
    /// Moves staged jobs into the job queue.
    Enqueuer,
    /// Works queued jobs (sends ride receipts).
    Worker,
    /// Deletes old idempotency keys.
    Reaper,
    /// Sends traffic to the API.
    Simulator(SimulatorArgs),
    /// Creates the demo users and their Stripe customers (safe to re-run).
    Up,
    /// Lists keys the completer will not charge again: a person must decide.
    Review(ReviewArgs),
    /// Finishes a key awaiting review with what a person found at Stripe.
    Resolve(ResolveArgs),
    /// Applies schema.sql to DATABASE_URL (safe to re-run).
    Migrate,
    /// A local stand-in for Stripe's API, with fault injection.
    FakeStripe(FakeStripeArgs),
    /// Lists jobs in the dead-letter stream (NATS only), or puts them back
    /// in the job queue with --requeue.
    DeadJobs(DeadJobsArgs),
    /// Asks this process's own health endpoint (METRICS_ADDR, or --url)
    /// whether it is ready; exits 0 when it is. For container healthchecks,
    /// where no curl is installed.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to ask; by default /readyz on METRICS_ADDR's port at 127.0.0.1.
    #[arg(long)]
    pub url: Option<String>,
}

impl Command {
    /// One-shot commands whose standard output is what they report.
    pub fn prints_a_report(&self) -> bool {
        matches!(
            self,
            Command::Up
                | Command::Review(_)
                | Command::Resolve(_)
                | Command::Migrate
                | Command::DeadJobs(_)
                | Command::Healthcheck(_)
        )
    }
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

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Stripe secret key; set, charges go to Stripe over HTTP at STRIPE_API_BASE,
    /// unset, to an in-process fake.
    #[arg(long, env = "STRIPE_API_KEY", global = true, hide_env_values = true, value_parser = secret)]
    pub stripe_api_key: Option<Secret>,
    /// Where Stripe's API is (point it at `rocket-rides fake-stripe`).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,
    /// Connect timeout of each call to Stripe.
    #[arg(long, env = "STRIPE_CONNECT_TIMEOUT", value_parser = duration, default_value = "5s", global = true)]
    pub stripe_connect_timeout: Duration,
    /// Total timeout of each call to Stripe; with its retries, shorter than LOCK_TIMEOUT.
    #[arg(long, env = "STRIPE_TIMEOUT", value_parser = duration, default_value = "20s", global = true)]
    pub stripe_timeout: Duration,
    /// Retries of a call whose answer was unknown (same idempotency key, with backoff).
    #[arg(long, env = "STRIPE_MAX_RETRIES", default_value_t = 2, global = true)]
    pub stripe_max_retries: u32,
    /// NATS with JetStream for the job queue; unset, an in-memory queue inside this process.
    #[arg(long, env = "NATS_URL", global = true, hide_env_values = true, value_parser = secret)]
    pub nats_url: Option<Secret>,
    /// How long JetStream remembers a job id to drop a repeated publish;
    /// longer than ENQUEUER_CLAIM_TIMEOUT plus a batch.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", value_parser = duration, default_value = "2h", global = true)]
    pub nats_duplicate_window: Duration,
    /// A job nobody acknowledged within this is delivered again.
    #[arg(long, env = "NATS_ACK_WAIT", value_parser = duration, default_value = "30s", global = true)]
    pub nats_ack_wait: Duration,
    /// Deliveries before a job goes to the dead-letter stream.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = 8, global = true)]
    pub nats_max_deliver: u32,
    /// Postgres to keep everything in; unset, an in-memory store inside this process.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true, value_parser = secret)]
    pub database_url: Option<Secret>,
    /// Most Postgres connections this process opens.
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub database_max_connections: u32,
    /// How long to wait for a free pooled connection before failing.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", value_parser = duration, default_value = "5s", global = true)]
    pub database_acquire_timeout: Duration,
    /// Postgres aborts any statement running longer than this.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", value_parser = duration, default_value = "10s", global = true)]
    pub database_statement_timeout: Duration,
    /// Port the API listens on.
    #[arg(long, env = "API_PORT", default_value_t = 5000, global = true)]
    pub api_port: u16,
    /// Address the API binds to.
    #[arg(long, env = "API_HOST", default_value = "0.0.0.0", global = true)]
    pub api_host: String,
    /// How `Authorization` names the user: the demo's email, or `Bearer <api key>`.
    #[arg(
        long,
        env = "AUTH_MODE",
        value_enum,
        default_value = "email",
        global = true
    )]
    pub auth_mode: AuthModeArg,
    /// The API remembers a user it authenticated for this long, so requests
    /// cost no lookup; a removed API key (or user) still works for up to
    /// this long. 0s looks every request up.
    #[arg(long, env = "AUTH_CACHE_TTL", value_parser = duration, default_value = "5s", global = true)]
    pub auth_cache_ttl: Duration,
    /// A locked key whose lock is older than this may be taken over.
    #[arg(long, env = "LOCK_TIMEOUT", value_parser = duration, default_value = "90s", global = true)]
    pub lock_timeout: Duration,
    /// The completer leaves keys younger than this to their client.
    #[arg(long, env = "COMPLETER_MIN_AGE", value_parser = duration, default_value = "300s", global = true)]
    pub completer_min_age: Duration,
    /// How many keys of a batch one completer works at once, each under its
    /// own lock: sized for a gateway answering in a few hundred milliseconds.
    #[arg(
        long,
        env = "COMPLETER_CONCURRENCY",
        default_value_t = 64,
        global = true
    )]
    pub completer_concurrency: usize,
    /// When the completer reports a key for review, it first asks the
    /// payment processor and settles the key if the answer is definitive
    /// (as `resolve --from-stripe`); the rest stay for a person.
    #[arg(long, env = "COMPLETER_RECONCILE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub completer_reconcile: bool,
    /// The completer leaves keys run more recently than this.
    #[arg(long, env = "COMPLETER_MIN_IDLE", value_parser = duration, default_value = "60s", global = true)]
    pub completer_min_idle: Duration,
    /// The reaper deletes keys older than this.
    #[arg(long, env = "REAPER_MAX_AGE", value_parser = duration, default_value = "72h", global = true)]
    pub reaper_max_age: Duration,
    /// How long the payment processor remembers an idempotency key (Stripe: 24h).
    #[arg(long, env = "GATEWAY_IDEMPOTENCY_WINDOW", value_parser = duration, default_value = "24h", global = true)]
    pub gateway_idempotency_window: Duration,
    /// A charge first attempted longer ago goes to review instead of being
    /// retried; shorter than GATEWAY_IDEMPOTENCY_WINDOW by at least one
    /// gateway call with its retries.
    #[arg(long, env = "REVIEW_AFTER", value_parser = duration, default_value = "23h", global = true)]
    pub review_after: Duration,
    /// How long after a charge is made the processor's search may still
    /// miss it (Stripe: "under normal operating conditions, less than a
    /// minute"). `resolve --from-stripe` takes "nothing found" as "no
    /// charge" only for a key whose last possible charge is older.
    #[arg(long, env = "STRIPE_SEARCH_LAG", value_parser = duration, default_value = "5m", global = true)]
    pub stripe_search_lag: Duration,
    /// Pause between batches of the completer, enqueuer and reaper.
    #[arg(long, env = "POLL_INTERVAL", value_parser = duration, default_value = "5s", global = true)]
    pub poll_interval: Duration,
    /// How long an enqueuer holds the batch it claimed; a crashed enqueuer's
    /// jobs are claimed again after this.
    #[arg(long, env = "ENQUEUER_CLAIM_TIMEOUT", value_parser = duration, default_value = "60s", global = true)]
    pub enqueuer_claim_timeout: Duration,
    /// Most jobs one worker takes from the queue and works at once.
    #[arg(long, env = "WORKER_BATCH", default_value_t = 64, global = true)]
    pub worker_batch: usize,
    /// Most keys or jobs one batch takes.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000, global = true)]
    pub batch_size: usize,
    /// `Retry-After` on a 503 when the payment processor's answer was unknown.
    #[arg(long, env = "GATEWAY_RETRY_AFTER", value_parser = duration, default_value = "2s", global = true)]
    pub gateway_retry_after: Duration,
    /// Every long-running process (api, start, completer, enqueuer,
    /// worker, reaper): serve `/metrics` (Prometheus), `/healthz` and
    /// `/readyz` on this address, e.g. `0.0.0.0:9100`, off the API's port.
    /// Unset: the API serves `/metrics` on its own port, the others none.
    #[arg(long, env = "METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,
    /// Serve the operator's console at `/console` on METRICS_ADDR (`api`
    /// and `start`), for whoever signs in with this token (16 characters
    /// at least). Unset: no console.
    #[arg(long, env = "CONSOLE_TOKEN", global = true, hide_env_values = true, value_parser = console_token)]
    pub console_token: Option<Secret>,
    /// The same endpoint on `API_HOST:HEALTH_PORT`, for background
    /// processes (the older name; `METRICS_ADDR` wins when both are set).
    #[arg(long, env = "HEALTH_PORT", global = true)]
    pub health_port: Option<u16>,
    /// A client must send a request's headers within this.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", value_parser = duration, default_value = "10s", global = true)]
    pub http_header_timeout: Duration,
    /// … and its body within this.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", value_parser = duration, default_value = "10s", global = true)]
    pub http_body_timeout: Duration,
    /// Open connections the API accepts at most.
    #[arg(
        long,
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 1024,
        global = true
    )]
    pub http_max_connections: usize,
    /// Ride requests in progress at most; more are answered 503 + Retry-After.
    #[arg(
        long,
        env = "HTTP_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256,
        global = true
    )]
    pub http_max_concurrent_requests: usize,
    /// On SIGTERM, how long requests and batches in hand may take to finish.
    #[arg(long, env = "SHUTDOWN_DEADLINE", value_parser = duration, default_value = "30s", global = true)]
    pub shutdown_deadline: Duration,
    /// In-process fake gateway only: probability that a charge's answer is lost.
    #[arg(long, env = "FAKE_GATEWAY_UNKNOWN_RATE", value_parser = rate, default_value = "0", global = true)]
    pub fake_gateway_unknown_rate: f64,
    /// In-process fake gateway only: delay added to every charge.
    #[arg(long, env = "FAKE_GATEWAY_LATENCY", value_parser = duration, default_value = "0s", global = true)]
    pub fake_gateway_latency: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// The API to send rides to; defaults to this machine's API_PORT.
    #[arg(long, env = "SIMULATOR_API_URL")]
    pub api_url: Option<String>,
    /// Longest pause between two requests (each pause is random up to this).
    #[arg(long, env = "SIMULATOR_MAX_PAUSE", value_parser = duration, default_value = "2s")]
    pub max_pause: Duration,
    /// Share of requests sent with raise_error=true.
    #[arg(long, env = "SIMULATOR_ERROR_RATE", value_parser = rate, default_value = "0.5")]
    pub error_rate: f64,
    /// The Authorization header to send (an email, or `Bearer <key>`).
    #[arg(
        long,
        env = "SIMULATOR_AUTHORIZATION",
        default_value = "user@example.com"
    )]
    pub authorization: String,
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
pub struct FakeStripeArgs {
    /// Port to listen on.
    #[arg(long, env = "FAKE_STRIPE_PORT", default_value_t = 12111)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "FAKE_STRIPE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Probability that a request meets one fault.
    #[arg(long, env = "FAKE_STRIPE_FAULT_RATE", value_parser = rate, default_value = "0")]
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
    #[arg(long, env = "FAKE_STRIPE_LATENCY", value_parser = duration, default_value = "500ms")]
    pub latency: Duration,
    /// How long a `hang` fault holds the answer (past the client's timeout).
    #[arg(long, env = "FAKE_STRIPE_HANG", value_parser = duration, default_value = "60s")]
    pub hang: Duration,
    /// How long an idempotency key is remembered.
    #[arg(long, env = "FAKE_STRIPE_IDEMPOTENCY_WINDOW", value_parser = duration, default_value = "24h")]
    pub idempotency_window: Duration,
    /// How long a new charge stays out of `GET /v1/charges/search`, as
    /// Stripe's search index lags.
    #[arg(long, env = "FAKE_STRIPE_SEARCH_DELAY", value_parser = duration, default_value = "1s")]
    pub search_delay: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("finding").required(true).args(["charge_id", "not_charged", "from_stripe"])))]
pub struct ResolveArgs {
    /// The key's id, as `rocket-rides review` lists it (`key_id=`);
    /// with `--from-stripe` and no id, every key awaiting review.
    #[arg(required_unless_present = "from_stripe")]
    pub key_id: Option<i64>,
    /// Ask the payment processor (search by the key's metadata, then
    /// retrieve) and settle each key it answers definitively: the charge
    /// exists (booked, 201) or it confirms none (ended, 502). Keys it
    /// cannot answer for stay listed, with the reason.
    #[arg(long)]
    pub from_stripe: bool,
    /// Most keys to settle with `--from-stripe` and no key id.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The charge exists at Stripe (found by the key's downstream_key):
    /// record it on the ride and book it (201, receipt staged).
    #[arg(long)]
    pub charge_id: Option<String>,
    /// No charge exists at Stripe: end the request without one (502).
    #[arg(long)]
    pub not_charged: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DeadJobsArgs {
    /// Most jobs to list (or requeue).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Put the listed jobs back in the job queue and remove them from the
    /// dead-letter stream (after fixing what made them fail). A ride whose
    /// receipt went out meanwhile gets no second one.
    #[arg(long)]
    pub requeue: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReviewArgs {
    /// Most keys to list.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl Settings {
    /// The longest one charge can take: every call to the gateway with its
    /// retries and their backoff (or the in-process fake's latency).
    pub fn gateway_worst_case(&self) -> Duration {
        if self.stripe_api_key.is_none() {
            return self.fake_gateway_latency;
        }
        let calls = self.stripe_max_retries.saturating_add(1);
        let backoff = adapters::stripe::StripeSettings::DEFAULT_RETRY_BACKOFF.saturating_mul(
            2u32.saturating_pow(self.stripe_max_retries)
                .saturating_sub(1),
        );
        self.stripe_timeout
            .saturating_mul(calls)
            .saturating_add(backoff)
    }

    /// Refuses settings that contradict each other, naming both, before any
    /// process starts: with them the promise itself would not hold.
    /// Where the process serves its metrics and probes, if anywhere.
    pub fn ops_address(&self) -> Option<String> {
        self.metrics_addr.clone().or_else(|| {
            self.health_port
                .map(|port| format!("{}:{port}", self.api_host))
        })
    }

    pub fn check(&self) -> Result<(), String> {
        let call = self.gateway_worst_case();
        if call >= self.lock_timeout {
            return Err(format!(
                "a charge can take {} (STRIPE_TIMEOUT {} x {} calls with STRIPE_MAX_RETRIES {}, plus backoff; or FAKE_GATEWAY_LATENCY), which is not shorter than LOCK_TIMEOUT {}: another request could take the key over while the charge is in flight. Raise LOCK_TIMEOUT or lower STRIPE_TIMEOUT / STRIPE_MAX_RETRIES",
                human(call),
                human(self.stripe_timeout),
                self.stripe_max_retries.saturating_add(1),
                self.stripe_max_retries,
                human(self.lock_timeout),
            ));
        }
        if self.review_after.saturating_add(call) >= self.gateway_idempotency_window {
            return Err(format!(
                "REVIEW_AFTER {} plus one charge with its retries ({}) is not shorter than GATEWAY_IDEMPOTENCY_WINDOW {}: a retried charge could reach the gateway after it forgot the key, and charge twice. Lower REVIEW_AFTER",
                human(self.review_after),
                human(call),
                human(self.gateway_idempotency_window),
            ));
        }
        if self.lock_timeout >= self.review_after {
            return Err(format!(
                "LOCK_TIMEOUT {} is not shorter than REVIEW_AFTER {}: a stalled key would go to review before anyone could retry it",
                human(self.lock_timeout),
                human(self.review_after),
            ));
        }
        if self.batch_size == 0
            || self.http_max_concurrent_requests == 0
            || self.http_max_connections == 0
        {
            return Err("BATCH_SIZE, HTTP_MAX_CONNECTIONS and HTTP_MAX_CONCURRENT_REQUESTS must be at least 1".to_owned());
        }
        Ok(())
    }
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
