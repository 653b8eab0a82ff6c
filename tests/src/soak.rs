//! The fault soak: the production shape on one machine, attacked while it
//! works, then audited from the outside.
//!
//! It starts Postgres and NATS JetStream (testcontainers, fixed host ports so
//! a restarted server is found again) and `fake-stripe` with every fault kind
//! at both timings; runs two `api` processes, two completers, two enqueuers,
//! two workers and a reaper as real child processes with short lock, claim,
//! ack and completer timeouts; drives them with a retrying client (fresh
//! keys, a share of duplicate sends, of mid-request disconnects, of
//! simulated failures, of declined and card-less riders, and of riders
//! whose card asks for 3-D Secure, who then authenticate at fake-stripe as
//! a rider would; fake-stripe delivers its events to the API's webhook,
//! losing, repeating and reordering deliveries); SIGKILLs and
//! restarts a random process every few seconds, restarts Postgres once and
//! NATS once. Then it stops the load, lets the system drain, and checks what
//! "never charges twice, loses nothing" means, from fake-stripe's ledger,
//! the database, the workers' logs and every answer the client got.
//!
//! Traffic stays on loopback and in the containers it started; it stops by
//! itself (at `duration`, then at most `drain` more).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::nats::start_nats_on;
use crate::postgres::{free_port, start_dedicated};

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The `rocket-rides` binary to run.
    pub binary: PathBuf,
    /// Rides the client sends, spread evenly over `duration`.
    pub rides: usize,
    pub duration: Duration,
    /// Rides in flight at once.
    pub concurrency: usize,
    /// A random process is SIGKILLed (and restarted) this often.
    pub kill_every: Duration,
    /// fake-stripe's fault rate (every kind, before and after the charge).
    pub fault_rate: f64,
    /// After the load, how long the system may take to settle.
    pub drain: Duration,
}

impl SoakConfig {
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            rides: 10_000,
            duration: Duration::from_secs(600),
            concurrency: 32,
            kill_every: Duration::from_secs(3),
            fault_rate: 0.2,
            drain: Duration::from_secs(180),
        }
    }
}

/// The figures of one run; `violations` is empty when every invariant held.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub rides: usize,
    pub requests: usize,
    pub answers: BTreeMap<String, usize>,
    pub final_statuses: BTreeMap<String, usize>,
    pub gave_up: usize,
    pub faults: BTreeMap<String, u64>,
    pub kills: usize,
    pub unexpected_exits: usize,
    pub postgres_restarts: usize,
    pub nats_restarts: usize,
    pub charges: usize,
    pub double_charges: usize,
    pub orphan_charges: usize,
    pub booked_rides: usize,
    /// Rides booked once their rider authenticated (a webhook or the sync pass).
    pub booked_after_authentication: usize,
    /// Every ride's status at the end.
    pub ride_statuses: BTreeMap<String, usize>,
    pub lost_receipts: usize,
    pub doubled_receipts: usize,
    /// Rides the clients cancelled (one or two keys each, racing).
    pub cancelled_rides: usize,
    /// Refunds at fake-stripe.
    pub refunds: usize,
    /// Refunds beyond the first of one charge.
    pub double_refunds: usize,
    /// Refunds of no cancelled ride.
    pub orphan_refunds: usize,
    pub stranded_keys: usize,
    /// Log lines of every process (fake-stripe's too) searched for the
    /// run's secrets, and how many held one.
    pub log_lines_searched: usize,
    pub log_lines_with_a_secret: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub drained_in: Duration,
    pub logs: PathBuf,
    pub violations: Vec<String>,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("rides".into(), self.rides.to_string()),
            ("requests (with retries)".into(), self.requests.to_string()),
        ];
        for (status, n) in &self.answers {
            rows.push((format!("  answers {status}"), n.to_string()));
        }
        for (status, n) in &self.final_statuses {
            rows.push((format!("  final {status}"), n.to_string()));
        }
        rows.push((
            "rides the client gave up on (left to the completer)".into(),
            self.gave_up.to_string(),
        ));
        for (kind, n) in &self.faults {
            rows.push((format!("  faults {kind}"), n.to_string()));
        }
        for (status, n) in &self.ride_statuses {
            rows.push((format!("  rides {status}"), n.to_string()));
        }
        rows.extend([
            ("process kills (SIGKILL)".into(), self.kills.to_string()),
            (
                "unexpected process exits".into(),
                self.unexpected_exits.to_string(),
            ),
            (
                "Postgres restarts".into(),
                self.postgres_restarts.to_string(),
            ),
            ("NATS restarts".into(), self.nats_restarts.to_string()),
            ("charges at fake-stripe".into(), self.charges.to_string()),
            (
                "booked rides (charged)".into(),
                self.booked_rides.to_string(),
            ),
            (
                "  of them booked after 3-D Secure".into(),
                self.booked_after_authentication.to_string(),
            ),
            ("double charges".into(), self.double_charges.to_string()),
            ("orphan charges".into(), self.orphan_charges.to_string()),
            ("cancelled rides".into(), self.cancelled_rides.to_string()),
            ("refunds at fake-stripe".into(), self.refunds.to_string()),
            ("double refunds".into(), self.double_refunds.to_string()),
            ("orphan refunds".into(), self.orphan_refunds.to_string()),
            ("lost receipts".into(), self.lost_receipts.to_string()),
            ("doubled receipts".into(), self.doubled_receipts.to_string()),
            ("stranded keys".into(), self.stranded_keys.to_string()),
            (
                "log lines searched for secrets / holding one".into(),
                format!(
                    "{} / {}",
                    self.log_lines_searched, self.log_lines_with_a_secret
                ),
            ),
            ("request p50 ms".into(), format!("{:.1}", self.p50_ms)),
            ("request p99 ms".into(), format!("{:.1}", self.p99_ms)),
            (
                "drained in".into(),
                format!("{:.1} s", self.drained_in.as_secs_f64()),
            ),
            (
                "invariant violations".into(),
                self.violations.len().to_string(),
            ),
        ]);
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (name, value) in rows {
            table.push_str(&format!("{name:<width$}  {value:>10}\n"));
        }
        for violation in &self.violations {
            table.push_str(&format!("VIOLATION: {violation}\n"));
        }
        table.push_str(&format!("process logs: {}\n", self.logs.display()));
        table
    }
}

const STRIPE_KEY: &str = "sk_test_soak";
/// The soak's Postgres password: distinctive, so the log search below
/// cannot mistake another word for it.
const POSTGRES_PASSWORD: &str = "pg-soak-password-5b1e";
const GOOD: &str = "user@example.com";
const DECLINED: &str = "user-bad-source@example.com";
const CARDLESS: &str = "user-no-card@example.com";
const THREE_DS: &str = "user-3ds@example.com";
/// The endpoint secret fake-stripe signs its deliveries with.
const WEBHOOK_SECRET: &str = "whsec_soak";
const BODY: &str = "origin_lat=1.5&origin_lon=2.5&target_lat=3.5&target_lon=4.5";

/// One kind of child process, and the one running now.
struct Managed {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
}

/// The processes under attack, with their shared settings.
struct Fleet {
    binary: PathBuf,
    env: Vec<(String, String)>,
    logs: PathBuf,
    processes: Vec<Managed>,
    kills: usize,
    unexpected_exits: usize,
}

impl Fleet {
    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }

    fn start(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = self.spawn(name, &args)?;
        self.processes.push(Managed {
            name: name.to_owned(),
            args,
            child: Some(child),
        });
        Ok(())
    }

    /// Restarts any process that exited on its own: counted, since no
    /// process should exit while its dependencies come and go.
    fn revive(&mut self) -> anyhow::Result<()> {
        for index in 0..self.processes.len() {
            let exited = match self.processes[index].child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                self.unexpected_exits += 1;
                let (name, args) = (
                    self.processes[index].name.clone(),
                    self.processes[index].args.clone(),
                );
                eprintln!("soak: {name} exited on its own; restarting it (see its log)");
                self.processes[index].child = Some(self.spawn(&name, &args)?);
            }
        }
        Ok(())
    }

    /// SIGKILLs one process at random and starts it again.
    async fn kill_one(&mut self) -> anyhow::Result<()> {
        let index = fastrand::usize(..self.processes.len());
        if let Some(mut child) = self.processes[index].child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        self.kills += 1;
        let (name, args) = (
            self.processes[index].name.clone(),
            self.processes[index].args.clone(),
        );
        self.processes[index].child = Some(self.spawn(&name, &args)?);
        Ok(())
    }

    /// SIGTERM to all; each must stop cleanly within 30 s.
    async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for managed in &mut self.processes {
            if let Some(child) = &managed.child
                && let Some(pid) = child.id()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for managed in &mut self.processes {
            if let Some(mut child) = managed.child.take() {
                match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => {
                        problems.push(format!("{} exited with {status} on SIGTERM", managed.name))
                    }
                    _ => {
                        problems.push(format!(
                            "{} did not stop within 30 s of SIGTERM",
                            managed.name
                        ));
                        let _ = child.kill().await;
                    }
                }
            }
        }
        problems
    }
}

/// What the client saw of one ride.
#[derive(Debug, Clone)]
struct RideRecord {
    user: &'static str,
    /// The ride's `Idempotency-Key`.
    key: String,
    /// Every definitive answer (201, 402, 502) for the key, in order.
    definitive: Vec<(u16, String)>,
    /// The PaymentIntent the rider authenticated at fake-stripe.
    authenticated: Option<String>,
    /// For a booked ride the client then cancelled: every definitive
    /// answer of each cancel key (one key, or two racing).
    cancels: Vec<Vec<(u16, String)>>,
}

/// One cancel key of a booked ride, retried like a booking until it gets a
/// definitive answer (200, a stored 409, 502) or 60 s pass; sometimes sent
/// twice at once. Every definitive answer, in order.
async fn cancel(
    http: &reqwest::Client,
    apis: &[String],
    number: usize,
    ride: i64,
    stats: &Mutex<ClientStats>,
) -> Vec<(u16, String)> {
    let key = uuid::Uuid::new_v4().to_string();
    let double_tap = fastrand::u32(..5) == 0;
    let started = Instant::now();
    let mut definitive = Vec::new();
    for attempt in 0.. {
        let copies = if double_tap && attempt == 0 { 2 } else { 1 };
        let sends = (0..copies).map(|copy| {
            let url = format!(
                "{}/rides/{ride}/cancel",
                apis[(number + attempt + copy) % apis.len()]
            );
            let request = http
                .post(url)
                .header("Authorization", GOOD)
                .header("Idempotency-Key", &key)
                .timeout(Duration::from_secs(20));
            async move {
                let response = request.send().await.ok()?;
                let status = response.status().as_u16();
                Some((status, response.text().await.ok()?))
            }
        });
        let mut answers = Vec::new();
        for send in sends {
            answers.push(send.await);
        }
        let mut done = false;
        {
            let mut stats = stats.lock().expect("stats");
            for answer in answers {
                let label = match &answer {
                    Some((status, _)) => format!("cancel {status}"),
                    None => "cancel no answer".to_owned(),
                };
                *stats.answers.entry(label).or_default() += 1;
                let Some((status, body)) = answer else {
                    continue;
                };
                let stored_409 = body.contains("ride-already-cancelled")
                    || body.contains("ride-not-cancellable");
                match status {
                    200 | 502 => {}
                    409 if stored_409 => {}
                    409 | 503 => continue,
                    _ => {
                        stats.violations.push(format!(
                            "cancel {key} of ride {ride}: unexpected {status}: {body}"
                        ));
                        continue;
                    }
                }
                definitive.push((status, body));
                done = true;
            }
        }
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            stats.lock().expect("stats").gave_up += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    definitive
}

/// What the clients saw.
#[derive(Default)]
pub struct ClientStats {
    answers: BTreeMap<String, usize>,
    latencies_ms: Vec<f64>,
    rides: Vec<RideRecord>,
    gave_up: usize,
    violations: Vec<String>,
}

/// The retrying client of one ride: sends until it gets a definitive answer
/// or 60 s pass, going round the API processes, waiting what `Retry-After`
/// asks.
async fn ride(
    http: reqwest::Client,
    apis: Arc<Vec<String>>,
    stripe: Option<String>,
    number: usize,
    stats: Arc<Mutex<ClientStats>>,
) {
    let user = match number % 20 {
        0 => DECLINED,
        1 => CARDLESS,
        2 if stripe.is_some() => THREE_DS,
        _ => GOOD,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let roll = fastrand::u32(..10);
    let (duplicate, disconnect, raise_error) = (roll == 0, roll == 1, roll == 2);
    let started = Instant::now();
    let mut attempt = 0usize;
    let mut definitive: Vec<(u16, String)> = Vec::new();
    let send = |attempt: usize, raise: bool, timeout: Duration| {
        let url = format!("{}/rides", apis[(number + attempt) % apis.len()]);
        let body = if raise {
            format!("{BODY}&raise_error=true")
        } else {
            BODY.to_owned()
        };
        let request = http
            .post(url)
            .header("Authorization", user)
            .header("Idempotency-Key", &key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .timeout(timeout)
            .body(body);
        async move {
            let sent = Instant::now();
            let result = request.send().await;
            let answer = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match response.text().await {
                        Ok(body) => Some((status, retry_after, body)),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            (answer, sent.elapsed())
        }
    };
    loop {
        let raise = raise_error && attempt == 0;
        let timeout = if disconnect && attempt == 0 {
            Duration::from_millis(fastrand::u64(5..200))
        } else {
            Duration::from_secs(20)
        };
        let mut results = vec![send(attempt, raise, timeout).await];
        if duplicate && attempt == 0 {
            // The same request twice at once, as a double-tapping client.
            let (a, b) = tokio::join!(
                send(attempt, false, timeout),
                send(attempt + 1, false, timeout)
            );
            results = vec![a, b];
        }
        attempt += 1;
        let mut wait = Duration::from_millis(200);
        let mut done = false;
        {
            let mut stats = stats.lock().expect("stats");
            for (answer, elapsed) in results {
                let label = match &answer {
                    Some((status, _, _)) => status.to_string(),
                    None => "no answer".to_owned(),
                };
                *stats.answers.entry(label).or_default() += 1;
                let Some((status, retry_after, body)) = answer else {
                    continue;
                };
                stats.latencies_ms.push(elapsed.as_secs_f64() * 1000.0);
                match status {
                    201 | 402 | 502 => {
                        definitive.push((status, body));
                        done = true;
                    }
                    409 | 503 => {
                        if retry_after.is_none() {
                            stats.violations.push(format!(
                                "key {key} ({user}): {status} without Retry-After: {body}"
                            ));
                        }
                        wait = Duration::from_secs(retry_after.unwrap_or(1).min(2));
                    }
                    500 if raise => {}
                    _ => {
                        stats
                            .violations
                            .push(format!("key {key} ({user}): unexpected {status}: {body}"));
                        if status < 500 {
                            done = true;
                        }
                    }
                }
            }
        }
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            stats.lock().expect("stats").gave_up += 1;
            break;
        }
        tokio::time::sleep(wait).await;
    }
    let authenticated = match (&stripe, definitive.first()) {
        (Some(stripe), Some((402, body))) if user == THREE_DS => {
            authenticate(&http, stripe, body, &stats).await
        }
        _ => None,
    };
    // A quarter of the booked rides are cancelled, a third of those by two
    // keys at once (a rider tapping cancel on two devices).
    let mut cancels = Vec::new();
    if let Some((201, body)) = definitive.first()
        && fastrand::u32(..4) == 0
    {
        let ride = serde_json::from_str::<Value>(body).unwrap_or_default()["ride"]["id"]
            .as_i64()
            .unwrap_or(-1);
        if fastrand::u32(..3) == 0 {
            let (a, b) = tokio::join!(
                cancel(&http, &apis, number, ride, &stats),
                cancel(&http, &apis, number + 1, ride, &stats)
            );
            cancels = vec![a, b];
        } else {
            cancels = vec![cancel(&http, &apis, number, ride, &stats).await];
        }
    }
    stats.lock().expect("stats").rides.push(RideRecord {
        user,
        key,
        definitive,
        authenticated,
        cancels,
    });
}

/// Completes, as the rider would on-session, the authentication a 402
/// `authentication-required` asks for; its PaymentIntent, once done.
async fn authenticate(
    http: &reqwest::Client,
    stripe: &str,
    body: &str,
    stats: &Mutex<ClientStats>,
) -> Option<String> {
    let json: Value = serde_json::from_str(body).unwrap_or_default();
    let Some(intent) = json["payment_intent"].as_str() else {
        stats.lock().expect("stats").violations.push(format!(
            "a 402 for {THREE_DS} without its PaymentIntent: {body}"
        ));
        return None;
    };
    for _ in 0..20 {
        let done = http
            .post(format!(
                "{stripe}/_fake/payment_intents/{intent}/authenticate"
            ))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|answer| answer.status().is_success());
        if done {
            return Some(intent.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stats
        .lock()
        .expect("stats")
        .violations
        .push(format!("could not authenticate {intent} at fake-stripe"));
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Every charge a (fake) Stripe at `stripe` holds, following its pages.
pub async fn all_charges(
    http: &reqwest::Client,
    stripe: &str,
    api_key: &str,
) -> anyhow::Result<Vec<Value>> {
    all_of(http, stripe, api_key, "charges").await
}

/// Every object of one of fake-stripe's lists (`charges`, `refunds`).
pub async fn all_of(
    http: &reqwest::Client,
    stripe: &str,
    api_key: &str,
    list: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut charges = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{stripe}/v1/{list}?limit=100");
        if let Some(after) = &after {
            url.push_str(&format!("&starting_after={after}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(api_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data
            .last()
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned);
        charges.extend(data);
        if page["has_more"] != Value::Bool(true) || after.is_none() {
            return Ok(charges);
        }
    }
}

async fn wait_until_exit(mut child: Child, what: &str) -> anyhow::Result<()> {
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .with_context(|| format!("{what} did not finish within 120 s"))??;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn docker_restart(container: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("docker")
        .args(["restart", "-t", "2", container])
        .stdout(Stdio::null())
        .status()
        .context("running docker restart")?;
    if !status.success() {
        bail!("docker restart {container} failed");
    }
    Ok(())
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .fetch_one(pool)
        .await
        .map(|(n,)| n)
        .unwrap_or(-1)
}

pub async fn run(config: SoakConfig) -> anyhow::Result<SoakReport> {
    let logs = std::env::temp_dir().join(format!(
        "rocket-rides-soak-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&logs)?;
    let (pg_port, nats_port, stripe_port) = (free_port(), free_port(), free_port());
    let api_ports = [free_port(), free_port()];
    eprintln!(
        "soak: starting Postgres and NATS; logs in {}",
        logs.display()
    );
    let postgres = start_dedicated(pg_port, POSTGRES_PASSWORD).await;
    let nats = start_nats_on(nats_port).await;
    let stripe = format!("http://127.0.0.1:{stripe_port}");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", postgres.url.clone()),
        ("NATS_URL", nats.url.clone()),
        ("STRIPE_API_KEY", STRIPE_KEY.to_owned()),
        ("STRIPE_API_BASE", stripe.clone()),
        ("STRIPE_TIMEOUT", "2s".to_owned()),
        ("STRIPE_MAX_RETRIES", "1".to_owned()),
        ("LOCK_TIMEOUT", "8s".to_owned()),
        ("COMPLETER_MIN_AGE", "4s".to_owned()),
        ("COMPLETER_MIN_IDLE", "2s".to_owned()),
        ("POLL_INTERVAL", "300ms".to_owned()),
        ("ENQUEUER_CLAIM_TIMEOUT", "5s".to_owned()),
        ("NATS_ACK_WAIT", "5s".to_owned()),
        ("REAPER_MAX_AGE", "5m".to_owned()),
        ("SHUTDOWN_DEADLINE", "5s".to_owned()),
        ("DATABASE_ACQUIRE_TIMEOUT", "2s".to_owned()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("PAYMENT_SYNC_AFTER", "15s".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("LOG_FORMAT", "text".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut fleet = Fleet {
        binary: config.binary.clone(),
        env,
        logs: logs.clone(),
        processes: Vec::new(),
        kills: 0,
        unexpected_exits: 0,
    };
    // fake-stripe is the world outside: it is attacked with faults, not killed.
    let fault_rate = config.fault_rate.to_string();
    let stripe_port_text = stripe_port.to_string();
    // Events go to one API; while it is down they wait for a retry, and
    // the completers' sync pass settles what no delivery did.
    let webhook_url = format!("http://127.0.0.1:{}/webhooks/stripe", api_ports[0]);
    let mut fake_stripe = fleet.spawn(
        "fake-stripe",
        &[
            "fake-stripe",
            "--port",
            &stripe_port_text,
            "--fault-rate",
            &fault_rate,
            "--faults",
            "latency,hang,500,429,drop",
            "--fault-timing",
            "either",
            "--latency",
            "300ms",
            "--hang",
            "3s",
            "--webhook-url",
            &webhook_url,
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--webhook-drop-rate",
            "0.2",
            "--webhook-duplicate-rate",
            "0.2",
            "--webhook-reorder",
        ]
        .map(str::to_owned),
    )?;
    wait_until_exit(fleet.spawn("migrate", &["migrate".to_owned()])?, "migrate").await?;
    // `up` creates customers at a faulty Stripe: repeat until it gets through.
    let mut seeded = false;
    for _ in 0..20 {
        if wait_until_exit(fleet.spawn("up", &["up".to_owned()])?, "up")
            .await
            .is_ok()
        {
            seeded = true;
            break;
        }
    }
    if !seeded {
        bail!("`up` never got through fake-stripe's faults");
    }
    for port in api_ports {
        let port = port.to_string();
        fleet.start(
            "api",
            &["api", "--api-port", &port, "--api-host", "127.0.0.1"],
        )?;
    }
    for name in [
        "completer",
        "completer",
        "enqueuer",
        "enqueuer",
        "worker",
        "worker",
        "reaper",
    ] {
        fleet.start(name, &[name])?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let apis = Arc::new(
        api_ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect::<Vec<_>>(),
    );
    // Wait for both APIs to be ready before the load starts.
    wait_ready(&http, &apis, Duration::from_secs(120)).await?;

    eprintln!(
        "soak: {} rides over {:?}, {} at once; a kill every {:?}",
        config.rides, config.duration, config.concurrency, config.kill_every
    );
    let mut load = Load::start(
        http.clone(),
        apis,
        Some(stripe.clone()),
        config.rides,
        config.concurrency,
        config.duration,
    );
    let started = load.started;
    let bar = indicatif::ProgressBar::new(config.rides as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "soak: {pos}/{len} rides [{bar:30}] {elapsed} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );

    // The attack: kills on a schedule, one Postgres and one NATS restart.
    let (mut postgres_restarts, mut nats_restarts) = (0, 0);
    let mut next_kill = Instant::now() + config.kill_every;
    while started.elapsed() < config.duration && load.running() {
        bar.set_position(load.rides_done() as u64);
        fleet.revive()?;
        let elapsed = started.elapsed();
        if postgres_restarts == 0 && elapsed > config.duration / 3 {
            eprintln!("soak: restarting Postgres at {elapsed:?}");
            docker_restart(postgres.container.id())?;
            postgres_restarts += 1;
        }
        if nats_restarts == 0 && elapsed > config.duration * 2 / 3 {
            eprintln!("soak: restarting NATS at {elapsed:?}");
            docker_restart(nats.container.id())?;
            nats_restarts += 1;
        }
        if Instant::now() >= next_kill {
            fleet.kill_one().await?;
            next_kill += config.kill_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = load.finish().await;
    bar.finish_and_clear();
    fleet.revive()?;
    eprintln!("soak: load stopped after {:?}; draining", started.elapsed());

    // Drain: the completer finishes what clients gave up on, the enqueuers
    // and workers send every receipt.
    let pool = PgPool::connect(&postgres.url).await?;
    let drained_in = drain(&pool, config.drain, || fleet.revive()).await?;
    let mut violations = fleet.stop().await;

    // The audit: fake-stripe's ledger first, then the database and logs.
    let charges = all_charges(&http, &stripe, STRIPE_KEY)
        .await
        .context("listing fake-stripe's charges")?;
    let refunds = all_of(&http, &stripe, STRIPE_KEY, "refunds")
        .await
        .context("listing fake-stripe's refunds")?;
    let faults = injected_faults(&http, &stripe).await?;
    let _ = fake_stripe.start_kill();
    let _ = fake_stripe.wait().await;
    let worker_log = std::fs::read_to_string(logs.join("worker.log")).unwrap_or_default();
    let mut report = SoakReport {
        faults,
        kills: fleet.kills,
        unexpected_exits: fleet.unexpected_exits,
        postgres_restarts,
        nats_restarts,
        drained_in,
        logs: logs.clone(),
        ..SoakReport::default()
    };
    audit(
        &pool,
        &charges,
        &refunds,
        &worker_log,
        client,
        &mut report,
        &mut violations,
    )
    .await?;
    if postgres_restarts == 0 || nats_restarts == 0 {
        violations.push("the run ended before Postgres and NATS were each restarted once".into());
    }
    search_logs_for_secrets(&logs, &mut report, &mut violations)?;
    report.violations = violations;
    Ok(report)
}

/// The clients of a load: `rides` rides, `concurrency` at once, started
/// evenly over 90% of `duration` (ride n no earlier than n/rate), each
/// retried until it gets a definitive answer.
pub struct Load {
    pub started: Instant,
    clients: JoinSet<()>,
    stats: Arc<Mutex<ClientStats>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// With `stripe` (fake-stripe's base URL), one rider in twenty pays
    /// with a card that asks for 3-D Secure and authenticates there.
    pub fn start(
        http: reqwest::Client,
        apis: Arc<Vec<String>>,
        stripe: Option<String>,
        rides: usize,
        concurrency: usize,
        duration: Duration,
    ) -> Self {
        let stats = Arc::new(Mutex::new(ClientStats::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let spacing = duration.mul_f64(0.9) / u32::try_from(rides.max(1)).unwrap_or(u32::MAX);
        let mut clients = JoinSet::new();
        for _ in 0..concurrency {
            let (http, apis, stripe, stats, next, stop) = (
                http.clone(),
                apis.clone(),
                stripe.clone(),
                stats.clone(),
                next.clone(),
                stop.clone(),
            );
            clients.spawn(async move {
                loop {
                    let number = next.fetch_add(1, Ordering::SeqCst);
                    if number >= rides || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let due = started + spacing * u32::try_from(number).unwrap_or(u32::MAX);
                    tokio::time::sleep_until(due.into()).await;
                    ride(
                        http.clone(),
                        apis.clone(),
                        stripe.clone(),
                        number,
                        stats.clone(),
                    )
                    .await;
                }
            });
        }
        Self {
            started,
            clients,
            stats,
            stop,
        }
    }

    /// Whether rides are still being sent.
    pub fn running(&mut self) -> bool {
        while self.clients.try_join_next().is_some() {}
        !self.clients.is_empty()
    }

    /// Rides the clients have finished so far.
    pub fn rides_done(&self) -> usize {
        self.stats.lock().expect("stats").rides.len()
    }

    /// Starts no new ride; rides in hand finish their retries (60 s at
    /// most). What the clients saw.
    pub async fn finish(mut self) -> ClientStats {
        self.stop.store(true, Ordering::SeqCst);
        while self.clients.join_next().await.is_some() {}
        std::mem::take(&mut *self.stats.lock().expect("stats"))
    }
}

/// Waits until no key is unfinished, no ride waits on its payment, no job
/// is staged and no booked ride is without its sent receipt, or `max`
/// passed; calls `tick` every half
/// second meanwhile. How long it took.
pub async fn drain(
    pool: &PgPool,
    max: Duration,
    mut tick: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let drain_started = Instant::now();
    let bar = crate::bench::spinner("drain:");
    loop {
        tick()?;
        let unfinished = count(
            pool,
            "SELECT count(*) FROM idempotency_keys WHERE recovery_point <> 'finished'",
        )
        .await;
        let staged = count(pool, "SELECT count(*) FROM staged_jobs").await;
        let unsent = count(
            pool,
            "SELECT count(*) FROM rides r WHERE r.stripe_charge_id IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM sent_receipts s WHERE s.ride_id = r.id AND s.sent_at IS NOT NULL)",
        )
        .await;
        let waiting = count(
            pool,
            "SELECT count(*) FROM rides \
             WHERE status IN ('awaiting_authentication', 'payment_pending')",
        )
        .await;
        bar.set_message(format!(
            "{unfinished} unfinished keys, {waiting} rides waiting on a payment, {staged} staged jobs, {unsent} unsent receipts"
        ));
        if unfinished == 0 && staged == 0 && unsent == 0 && waiting == 0 {
            bar.finish_and_clear();
            return Ok(drain_started.elapsed());
        }
        if drain_started.elapsed() > max {
            bar.finish_and_clear();
            eprintln!(
                "drain timed out: {unfinished} unfinished keys, {waiting} rides waiting on a payment, {staged} staged jobs, {unsent} unsent receipts"
            );
            return Ok(drain_started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks the promises from the outside, after the system drained: every
/// charge the (fake) Stripe ledger holds belongs to exactly one ride; every
/// 201 ride has exactly one charge and one sent receipt (the workers' log
/// shows it sent once); no ride without a 201; no key left unfinished; each
/// key answered the same way however often it was retried. Fills in
/// `report`'s figures and adds a line to `violations` for each break.
/// No secret the run handed its processes (the NATS and Postgres
/// passwords, the Stripe key, the webhook secret) appears in any line any
/// process logged.
fn search_logs_for_secrets(
    logs: &std::path::Path,
    report: &mut SoakReport,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let secrets = [
        ("the NATS password", crate::nats::PASSWORD),
        ("the Postgres password", POSTGRES_PASSWORD),
        ("the Stripe key", STRIPE_KEY),
        ("the webhook secret", WEBHOOK_SECRET),
    ];
    for entry in std::fs::read_dir(logs)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            report.log_lines_searched += 1;
            let found: Vec<&str> = secrets
                .iter()
                .filter(|(_, secret)| line.contains(secret))
                .map(|(what, _)| *what)
                .collect();
            if !found.is_empty() {
                report.log_lines_with_a_secret += 1;
                violations.push(format!(
                    "{} in a line of {}",
                    found.join(", "),
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

pub async fn audit(
    pool: &PgPool,
    charges: &[Value],
    refunds: &[Value],
    worker_log: &str,
    client: ClientStats,
    report: &mut SoakReport,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let rides: Vec<(i64, Option<String>, Option<i64>, String)> =
        sqlx::query_as("SELECT id, stripe_charge_id, idempotency_key_id, status FROM rides")
            .fetch_all(pool)
            .await?;
    let status_of: HashMap<i64, &str> = rides
        .iter()
        .map(|(id, _, _, status)| (*id, status.as_str()))
        .collect();
    for (_, _, _, status) in &rides {
        *report.ride_statuses.entry(status.clone()).or_default() += 1;
    }
    for (ride, charge, _, status) in &rides {
        match (status.as_str(), charge) {
            ("booked" | "cancelled", Some(_)) | ("payment_failed", None) => {}
            (status, charge) => violations.push(format!(
                "ride {ride} ended {status} with charge {charge:?}: every ride ends booked or cancelled (charged) or payment_failed (not)"
            )),
        }
    }
    let keys: HashMap<i64, (String, Option<i32>)> =
        sqlx::query_as::<_, (i64, String, Option<i32>)>(
            "SELECT id, recovery_point, response_code FROM idempotency_keys",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, point, code)| (id, (point, code)))
        .collect();
    let sent_of = |kind: &'static str| async move {
        anyhow::Ok(
            sqlx::query_as::<_, (i64,)>(
                "SELECT ride_id FROM sent_receipts WHERE sent_at IS NOT NULL AND kind = $1",
            )
            .bind(kind)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect::<HashSet<i64>>(),
        )
    };
    let sent = sent_of("ride").await?;
    let sent_cancellations = sent_of("cancellation").await?;
    report.charges = charges.len();
    let charged_rides: HashMap<&str, i64> = rides
        .iter()
        .filter_map(|(id, charge, _, _)| charge.as_deref().map(|c| (c, *id)))
        .collect();
    let charge_ids: HashSet<&str> = charges.iter().filter_map(|c| c["id"].as_str()).collect();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for charge in charges {
        let key = charge["metadata"]["rocket_rides_downstream_key"]
            .as_str()
            .unwrap_or("");
        *by_key.entry(key).or_default() += 1;
    }
    report.double_charges = by_key.values().map(|n| n.saturating_sub(1)).sum();
    report.orphan_charges = charge_ids
        .iter()
        .filter(|id| !charged_rides.contains_key(**id))
        .count();
    for (charge, ride) in &charged_rides {
        if !charge_ids.contains(charge) {
            violations.push(format!(
                "ride {ride} carries charge {charge}, which fake-stripe never made"
            ));
        }
    }
    report.booked_rides = charged_rides.len();
    report.lost_receipts = charged_rides
        .values()
        .filter(|ride| !sent.contains(ride))
        .count();
    // A charged ride's key stored a 201, or the 402 / 202 of a ride that
    // waited on its payment and was booked later.
    for (ride, charge, key, _) in &rides {
        if let Some(key) = key
            && let Some((point, code)) = keys.get(key)
            && charge.is_some()
            && (point != "finished" || !matches!(code, Some(201 | 202 | 402)))
        {
            violations.push(format!(
                "charged ride {ride} whose key {key} is {point} / {code:?}, not a stored 201, 202 or 402"
            ));
        }
    }
    report.stranded_keys = keys
        .values()
        .filter(|(point, _)| point != "finished")
        .count();
    // Receipts as the workers logged them: each receipt of a ride (its
    // booking's, its cancellation's) goes out once.
    let mut receipts: HashMap<String, usize> = HashMap::new();
    for line in worker_log.lines() {
        if let Some(rest) = line.split("receipt sent ride_id=").nth(1) {
            let mut words = rest.split_whitespace();
            let ride = words.next().unwrap_or("");
            let kind = words.next().unwrap_or("");
            *receipts.entry(format!("{ride} {kind}")).or_default() += 1;
        }
    }
    report.doubled_receipts = receipts.values().filter(|n| **n > 1).count();
    let unbooked_sent = sent
        .iter()
        .filter(|ride| !charged_rides.values().any(|r| r == *ride))
        .count();
    if unbooked_sent > 0 {
        violations.push(format!(
            "{unbooked_sent} receipts for rides that were never charged"
        ));
    }
    // What the client saw.
    report.rides = client.rides.len();
    report.refunds = refunds.len();
    report.requests = client.answers.values().sum();
    report.answers = client.answers;
    report.gave_up = client.gave_up;
    violations.extend(client.violations);
    let mut latencies = client.latencies_ms;
    latencies.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&latencies, 0.50);
    report.p99_ms = percentile(&latencies, 0.99);
    let client_rides = client.rides;
    for record in &client_rides {
        let Some((status, body)) = record.definitive.first() else {
            *report
                .final_statuses
                .entry("none (gave up)".into())
                .or_default() += 1;
            continue;
        };
        *report.final_statuses.entry(status.to_string()).or_default() += 1;
        if record
            .definitive
            .iter()
            .any(|other| other != &record.definitive[0])
        {
            violations.push(format!(
                "one key answered differently: {:?}",
                record.definitive
            ));
        }
        let expected = match record.user {
            DECLINED | THREE_DS => 402,
            CARDLESS => 502,
            _ => 201,
        };
        if record.user == THREE_DS {
            let json: Value = serde_json::from_str(body).unwrap_or_default();
            let ride = json["ride"]["id"].as_i64().unwrap_or(-1);
            if !body.contains("authentication-required") {
                violations.push(format!("{THREE_DS} got no authentication-required: {body}"));
            } else if record.authenticated.is_some() {
                if status_of.get(&ride) == Some(&"booked") {
                    report.booked_after_authentication += 1;
                } else {
                    violations.push(format!(
                        "ride {ride} was authenticated but ended {:?}",
                        status_of.get(&ride)
                    ));
                }
                if !sent.contains(&ride) {
                    violations.push(format!(
                        "ride {ride} was booked after authentication but its receipt was never sent"
                    ));
                }
            }
        }
        if *status != expected {
            violations.push(format!(
                "{} got {status}, expected {expected}: {body}",
                record.user
            ));
        }
        if *status == 201 {
            let json: Value = serde_json::from_str(body).unwrap_or_default();
            let charge = json["ride"]["stripe_charge_id"].as_str().unwrap_or("");
            let ride = json["ride"]["id"].as_i64().unwrap_or(-1);
            if charged_rides.get(charge) != Some(&ride) {
                violations.push(format!(
                    "a 201 for ride {ride} with charge {charge} that the database does not hold"
                ));
            }
            if !sent.contains(&ride) {
                violations.push(format!(
                    "ride {ride} answered 201 but its receipt was never sent"
                ));
            }
        }
    }
    audit_cancels(
        &client_rides,
        charges,
        refunds,
        &status_of,
        &sent_cancellations,
        report,
        violations,
    );
    for (figure, value) in [
        ("double charges", report.double_charges),
        ("double refunds", report.double_refunds),
        ("orphan refunds", report.orphan_refunds),
        ("orphan charges", report.orphan_charges),
        ("lost receipts", report.lost_receipts),
        ("doubled receipts", report.doubled_receipts),
        ("stranded keys", report.stranded_keys),
        ("unexpected process exits", report.unexpected_exits),
    ] {
        if value > 0 {
            violations.push(format!("{figure}: {value}"));
        }
    }
    Ok(())
}

/// The cancels the clients made against what fake-stripe and the
/// database hold: each cancel key answered one way; each cancelled ride
/// exactly one 200 (a second key racing got the stored 409), exactly one
/// refund at fake-stripe, of the charge it paid with, the amount the 200
/// named, its ride `cancelled` (or `refund_failed`) and its cancellation
/// receipt sent; no charge refunded twice or beyond its amount; no refund
/// of a ride nobody cancelled.
fn audit_cancels(
    rides: &[RideRecord],
    charges: &[Value],
    refunds: &[Value],
    status_of: &HashMap<i64, &str>,
    sent_cancellations: &HashSet<i64>,
    report: &mut SoakReport,
    violations: &mut Vec<String>,
) {
    let mut refunds_of: HashMap<&str, Vec<&Value>> = HashMap::new();
    for refund in refunds {
        refunds_of
            .entry(refund["charge"].as_str().unwrap_or(""))
            .or_default()
            .push(refund);
    }
    for charge in charges {
        let id = charge["id"].as_str().unwrap_or("");
        let of_charge = refunds_of.get(id).map(Vec::as_slice).unwrap_or_default();
        report.double_refunds += of_charge.len().saturating_sub(1);
        let refunded: i64 = of_charge.iter().filter_map(|r| r["amount"].as_i64()).sum();
        if refunded > charge["amount"].as_i64().unwrap_or(0) {
            violations.push(format!(
                "charge {id} refunded {refunded}, more than it charged"
            ));
        }
    }
    let mut cancelled_charges = HashSet::new();
    for record in rides.iter().filter(|r| !r.cancels.is_empty()) {
        let booked: Value = serde_json::from_str(&record.definitive[0].1).unwrap_or_default();
        let ride = booked["ride"]["id"].as_i64().unwrap_or(-1);
        let charge = booked["ride"]["stripe_charge_id"].as_str().unwrap_or("");
        cancelled_charges.insert(charge.to_owned());
        report.cancelled_rides += 1;
        let mut successes = Vec::new();
        for answers in &record.cancels {
            let Some(first) = answers.first() else {
                continue; // gave up: counted, left to the completer
            };
            if answers.iter().any(|a| a != first) {
                violations.push(format!(
                    "a cancel key of ride {ride} answered differently: {answers:?}"
                ));
            }
            match first.0 {
                200 => successes.push(first.1.clone()),
                409 if first.1.contains("ride-already-cancelled") => {}
                status => violations.push(format!(
                    "a cancel of booked ride {ride} got {status}: {}",
                    first.1
                )),
            }
        }
        let [success] = successes.as_slice() else {
            if record.cancels.iter().all(|a| !a.is_empty()) {
                violations.push(format!(
                    "ride {ride}: {} cancels succeeded, not one",
                    successes.len()
                ));
            }
            continue;
        };
        let body: Value = serde_json::from_str(success).unwrap_or_default();
        let at_stripe = refunds_of
            .get(charge)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match at_stripe {
            [refund]
                if refund["id"] == body["refund"]["id"]
                    && refund["amount"] == body["refund"]["amount"] => {}
            other => violations.push(format!(
                "ride {ride}'s cancel named refund {} of {}, fake-stripe holds {other:?}",
                body["refund"]["id"], body["refund"]["amount"]
            )),
        }
        if !matches!(status_of.get(&ride), Some(&("cancelled" | "refund_failed"))) {
            violations.push(format!(
                "ride {ride} was cancelled (200) but is {:?}",
                status_of.get(&ride)
            ));
        }
        if !sent_cancellations.contains(&ride) {
            violations.push(format!("ride {ride}'s cancellation receipt was never sent"));
        }
    }
    report.orphan_refunds = refunds
        .iter()
        .filter(|r| !cancelled_charges.contains(r["charge"].as_str().unwrap_or("")))
        .count();
}

/// Sends again, through `api`, up to `sample` of the rides the clients got
/// a definitive answer for (their first answer stored: 201, 402, 502),
/// each with its key and body, and compares: a replay must be the first
/// answer byte for byte. The replays made, and a line per difference.
pub async fn replay_sample(
    http: &reqwest::Client,
    api: &str,
    client: &ClientStats,
    sample: usize,
) -> (usize, Vec<String>) {
    let mut differences = Vec::new();
    let mut replayed = 0;
    let answered: Vec<&RideRecord> = client
        .rides
        .iter()
        .filter(|r| !r.definitive.is_empty())
        .collect();
    let step = (answered.len() / sample.max(1)).max(1);
    for record in answered.iter().step_by(step).take(sample) {
        let first = &record.definitive[0];
        let answer = http
            .post(format!("{api}/rides"))
            .header("Authorization", record.user)
            .header("Idempotency-Key", &record.key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(BODY)
            .send()
            .await;
        let Ok(answer) = answer else {
            differences.push(format!("key {}: no answer to the replay", record.key));
            continue;
        };
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        replayed += 1;
        if (status, &body) != (first.0, &first.1) {
            differences.push(format!(
                "key {} first answered {} {}, replayed {status} {body}",
                record.key, first.0, first.1
            ));
        }
    }
    (replayed, differences)
}

/// Waits until every API answers `/readyz` with a success, or `max` passed.
pub async fn wait_ready(
    http: &reqwest::Client,
    apis: &[String],
    max: Duration,
) -> anyhow::Result<()> {
    let ready_by = Instant::now() + max;
    for api in apis {
        while !http
            .get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > ready_by {
                bail!("{api} was not ready within {max:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The faults fake-stripe at `stripe` injected, by kind.
pub async fn injected_faults(
    http: &reqwest::Client,
    stripe: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(http
        .get(format!("{stripe}/_fake/faults"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
