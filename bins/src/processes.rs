//! The processes: each a loop over one use case, stopping between batches
//! when the shutdown token is cancelled.

use std::future::Future;
use std::time::Duration;

use adapters::http::ConsoleSlot;
use anyhow::{Context, bail};
use application::{AuthMode, KeyFinding, ReviewResolution, Settlement, WorkError};
use domain::{KeyId, Reconciliation, RecoveryPoint};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::settings::{
    DeadJobsArgs, FakeStripeArgs, FaultArg, FaultTimingArg, HealthcheckArgs, ResolveArgs,
    ReviewArgs, Settings, SimulatorArgs,
};
use crate::simulator;
use crate::wiring::{Needs, StoppedWhileWaiting, System};

/// A process that only makes sense beside a shared store refuses to run on
/// the in-memory one, rather than silently working on data nobody sees.
fn require_shared_store(system: &System, process: &str) -> anyhow::Result<()> {
    if system.embedded {
        bail!(
            "`{process}` on its own needs a shared store, and the in-memory store lives inside one process: run `rocket-rides start` for the embedded demo"
        );
    }
    Ok(())
}

/// The in-memory queue lives inside one process: an enqueuer publishing to
/// its own copy would delete staged jobs no worker ever sees.
fn require_shared_queue(system: &System, process: &str) -> anyhow::Result<()> {
    if system.queue_in_process {
        bail!(
            "`{process}` on its own needs a job queue shared between processes (NATS_URL), and the in-memory queue lives inside one process: set NATS_URL, or run `rocket-rides start`, which runs the enqueuer and the worker together"
        );
    }
    Ok(())
}

/// On the in-memory store the demo users must be created in-process: `up`
/// would create them in a store that dies with it.
async fn seed_if_embedded(system: &System) -> anyhow::Result<()> {
    if !system.embedded {
        // Only a hint for a person: a database not migrated yet is no
        // reason to stop (a deployment runs `migrate` beside the processes).
        match system
            .store
            .find_user_by_email(application::DEMO_USERS[0].0)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => warn!(
                "no demo users in the database yet: run `rocket-rides up` (the simulator's requests get 401 until then)"
            ),
            Err(error) => {
                warn!(%error, "could not look for the demo users (has `rocket-rides migrate` run?)")
            }
        }
        return Ok(());
    }
    let issue_keys = AuthMode::from(system.settings.auth_mode) == AuthMode::ApiKey;
    let mut generate = new_api_key;
    let seeded = system
        .seeder()
        .run(issue_keys.then_some(&mut generate as &mut (dyn FnMut() -> String + Send)))
        .await?;
    for seeded in seeded {
        match seeded.api_key {
            Some(key) => {
                // Shown once on the terminal, never in the log: a log line
                // travels to aggregators, and an API key is a credential.
                info!(email = %seeded.user.email, "demo user ready (API key printed to stderr once)");
                eprintln!("API key for {} (shown once): {key}", seeded.user.email);
            }
            None => info!(email = %seeded.user.email, "demo user ready"),
        }
    }
    Ok(())
}

fn new_api_key() -> String {
    format!(
        "rr_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

async fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    let address = format!("{}:{}", settings.api_host, settings.api_port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding the API to {address}"))?;
    info!(%address, "API listening");
    Ok(listener)
}

async fn serve_api(
    system: &System,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    adapters::http::serve(listener, system.api_state(), shutdown.cancelled_owned())
        .await
        .context("serving the API")?;
    info!("API stopped");
    Ok(())
}

/// Runs `batch` now and then every `interval`, until shutdown. A batch in
/// hand is finished first; errors are logged and the loop goes on.
async fn every<F, Fut>(
    name: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    mut batch: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    info!(process = name, ?interval, "started");
    while !shutdown.is_cancelled() {
        // A full batch means there is likely more: the next one starts at
        // once, so a backlog drains at the batch's pace, not the interval's.
        let more = batch().await.unwrap_or_else(|error| {
            error!(process = name, "{error:#}");
            false
        });
        if more {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
    info!(process = name, "stopped");
    Ok(())
}

/// Gauges of the keys not yet finished, by recovery point, and of those
/// awaiting review: read by the completer after each batch.
async fn sample_keys(system: &System) {
    let cutoff = system.review_policy().attempted_before(system.clock.now());
    match system.store.unfinished_counts(cutoff).await {
        Ok(counts) => {
            for point in [
                RecoveryPoint::Started,
                RecoveryPoint::RideCreated,
                RecoveryPoint::ChargeCreated,
            ] {
                let count = counts
                    .by_recovery_point
                    .iter()
                    .find(|(p, _)| *p == point)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("rocket_rides_unfinished_keys", "recovery_point" => point.as_str())
                    .set(count as f64);
            }
            metrics::gauge!("rocket_rides_keys_awaiting_review").set(counts.awaiting_review as f64);
        }
        Err(error) => warn!(process = "completer", %error, "could not count unfinished keys"),
    }
}

/// Gauges of the staged-job backlog and its oldest job's age: read by the
/// enqueuer after each batch.
async fn sample_backlog(system: &System) {
    match system.store.backlog(system.clock.now()).await {
        Ok(backlog) => {
            metrics::gauge!("rocket_rides_staged_jobs").set(backlog.jobs as f64);
            metrics::gauge!("rocket_rides_oldest_staged_job_age_seconds")
                .set(backlog.oldest_age.as_secs_f64());
        }
        Err(error) => warn!(process = "enqueuer", %error, "could not measure the backlog"),
    }
}

async fn completer_loop(system: &System, shutdown: CancellationToken) -> anyhow::Result<()> {
    let completer = system.completer();
    let batch_size = system.settings.batch_size;
    let deadline = system.settings.shutdown_deadline;
    every(
        "completer",
        system.settings.poll_interval,
        shutdown.clone(),
        || async {
            // On SIGTERM no new key starts; those in flight get until the
            // deadline to reach a recovery point (past it, their locks
            // time out and the next completer takes them).
            let out_of_time = async {
                shutdown.cancelled().await;
                tokio::time::sleep(deadline).await;
            };
            tokio::select! {
                report = completer.run_batch_until(shutdown.cancelled()) => {
                    let report = report?;
                    sample_keys(system).await;
                    Ok(report.picked >= batch_size && report.failed < report.picked)
                }
                () = out_of_time => {
                    warn!(process = "completer", ?deadline, "shutdown deadline passed with keys in flight; their locks will time out");
                    Ok(false)
                }
            }
        },
    )
    .await
}

async fn enqueuer_loop(system: &System, shutdown: CancellationToken) -> anyhow::Result<()> {
    let enqueuer = system.enqueuer();
    let batch_size = system.settings.batch_size;
    every(
        "enqueuer",
        system.settings.poll_interval,
        shutdown,
        || async {
            let moved = enqueuer.run_batch().await;
            sample_backlog(system).await;
            Ok(moved? >= batch_size)
        },
    )
    .await
}

async fn reaper_loop(system: &System, shutdown: CancellationToken) -> anyhow::Result<()> {
    let reaper = system.reaper();
    let batch_size = system.settings.batch_size;
    every(
        "reaper",
        system.settings.poll_interval,
        shutdown,
        || async { Ok(reaper.run_batch().await? >= batch_size) },
    )
    .await
}

/// Works jobs one after another. When the store fails under a job, the job
/// is given back and the worker takes no other until the store answers
/// again: an outage costs each job at most one delivery, so it cannot burn
/// through `NATS_MAX_DELIVER` and end in the dead letters. When the queue
/// fails, it pauses with backoff (the client reconnects by itself).
async fn worker_loop(system: &System, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = system.worker();
    info!(process = "worker", "started");
    let mut queue_backoff = Duration::from_millis(100);
    let batch = system.settings.worker_batch;
    while !shutdown.is_cancelled() {
        // Waiting for jobs stops at SIGTERM; jobs in hand are worked to the
        // end, so no receipt is cut off between its send and its mark.
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = worker.receive(batch, Duration::from_secs(1)) => received,
        };
        let worked = match received {
            Ok(deliveries) => worker.work_all(deliveries).await,
            Err(error) => Err(error),
        };
        match worked {
            Ok(_) => queue_backoff = Duration::from_millis(100),
            Err(WorkError::Store(error)) => {
                warn!(process = "worker", %error, "store unavailable; waiting for it before taking more jobs");
                if system.wait_for_store(&shutdown).await.is_err() {
                    break;
                }
            }
            Err(WorkError::Queue(error)) => {
                warn!(process = "worker", %error, pause = ?queue_backoff, "job queue unavailable; pausing");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(queue_backoff) => {}
                }
                queue_backoff = queue_backoff.saturating_mul(2).min(Duration::from_secs(5));
            }
        }
    }
    info!(process = "worker", "stopped");
    Ok(())
}

pub async fn start(
    settings: &Settings,
    simulator: &SimulatorArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (ops, console) = serve_ops_with_console(settings, &shutdown, true).await?;
    let system =
        std::sync::Arc::new(System::build(settings, Needs::STORE_AND_QUEUE, &shutdown).await?);
    seed_if_embedded(&system).await?;
    let _ = ops.set(system.store.clone());
    open_console(&system, console.as_ref(), &shutdown).await;
    system.spawn_resource_gauges(&shutdown, true);
    let listener = bind(settings).await?;
    let mut tasks = JoinSet::new();
    {
        let (system, shutdown) = (system.clone(), shutdown.clone());
        tasks.spawn(async move { serve_api(&system, listener, shutdown).await });
    }
    let (s, t) = (system.clone(), shutdown.clone());
    tasks.spawn(async move { completer_loop(&s, t).await });
    let (s, t) = (system.clone(), shutdown.clone());
    tasks.spawn(async move { enqueuer_loop(&s, t).await });
    let (s, t) = (system.clone(), shutdown.clone());
    tasks.spawn(async move { worker_loop(&s, t).await });
    let (s, t) = (system.clone(), shutdown.clone());
    tasks.spawn(async move { reaper_loop(&s, t).await });
    {
        let (settings, simulator) = (settings.clone(), simulator.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move { simulator::run(&settings, &simulator, shutdown).await });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("a process panicked").and_then(|r| r);
        if let Err(error) = outcome {
            error!("{error:#}");
            shutdown.cancel();
            result = Err(error);
        }
    }
    result
}

/// The API serves at once, while it waits for Postgres: `/healthz` answers,
/// `/readyz` and ride requests answer 503 until the store does.
pub async fn api(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (ops, console) = serve_ops_with_console(settings, &shutdown, true).await?;
    let system = System::build(settings, Needs::API, &shutdown).await?;
    let listener = bind(settings).await?;
    let ready = async {
        let ready = async {
            system.wait_for_store(&shutdown).await?;
            seed_if_embedded(&system).await?;
            let _ = ops.set(system.store.clone());
            system.spawn_resource_gauges(&shutdown, false);
            open_console(&system, console.as_ref(), &shutdown).await;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match ready {
            Err(error) if !error.is::<StoppedWhileWaiting>() => {
                shutdown.cancel();
                Err(error)
            }
            _ => Ok(()),
        }
    };
    let (served, ready) = tokio::join!(serve_api(&system, listener, shutdown.clone()), ready);
    ready.and(served)
}

pub async fn completer(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ready = serve_ops(settings, &shutdown).await?;
    let system = System::build(settings, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "completer")?;
    let _ = ready.set(system.store.clone());
    system.spawn_resource_gauges(&shutdown, false);
    completer_loop(&system, shutdown).await
}

pub async fn enqueuer(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ready = serve_ops(settings, &shutdown).await?;
    let system = System::build(settings, Needs::STORE_AND_QUEUE, &shutdown).await?;
    require_shared_store(&system, "enqueuer")?;
    require_shared_queue(&system, "enqueuer")?;
    let _ = ready.set(system.store.clone());
    system.spawn_resource_gauges(&shutdown, false);
    enqueuer_loop(&system, shutdown).await
}

pub async fn worker(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ready = serve_ops(settings, &shutdown).await?;
    let system = System::build(settings, Needs::STORE_AND_QUEUE, &shutdown).await?;
    require_shared_store(&system, "worker")?;
    require_shared_queue(&system, "worker")?;
    let _ = ready.set(system.store.clone());
    system.spawn_resource_gauges(&shutdown, true);
    worker_loop(&system, shutdown).await
}

pub async fn reaper(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ready = serve_ops(settings, &shutdown).await?;
    let system = System::build(settings, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "reaper")?;
    let _ = ready.set(system.store.clone());
    system.spawn_resource_gauges(&shutdown, false);
    reaper_loop(&system, shutdown).await
}

/// With `METRICS_ADDR` (or `HEALTH_PORT`), serves `/metrics`, `/healthz`
/// and `/readyz` from before the process connects (not ready while it
/// waits) to shutdown.
async fn serve_ops(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<adapters::http::ReadyStore> {
    Ok(serve_ops_with_console(settings, shutdown, false).await?.0)
}

/// `serve_ops`, with the operator's console when `CONSOLE_TOKEN` is set and
/// `console` says this process serves it: the slot to fill once connected.
async fn serve_ops_with_console(
    settings: &Settings,
    shutdown: &CancellationToken,
    console: bool,
) -> anyhow::Result<(adapters::http::ReadyStore, Option<ConsoleSlot>)> {
    let ready = adapters::http::ReadyStore::default();
    let console = (console && settings.console_token.is_some()).then(ConsoleSlot::default);
    if console.is_some() && settings.ops_address().is_none() {
        warn!(
            "CONSOLE_TOKEN is set but METRICS_ADDR is not: the console is served on METRICS_ADDR only"
        );
    }
    if let Some(address) = settings.ops_address() {
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding the metrics endpoint to {address}"))?;
        info!(%address, "metrics and health endpoint listening");
        let router = adapters::http::ops_router(
            ready.clone(),
            crate::wiring::metrics_renderer(),
            console.clone(),
        );
        if console.is_some() {
            info!(%address, "operator console at /console");
        }
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                warn!(%error, "the metrics endpoint stopped");
            }
        });
    }
    Ok((ready, console))
}

/// Fills the console's slot from the connected system; its dead letters
/// come from the system's NATS queue, or, for the API (which does not
/// need NATS to serve), from a connection made in the background.
async fn open_console(system: &System, slot: Option<&ConsoleSlot>, shutdown: &CancellationToken) {
    let (Some(slot), Some(token)) = (slot, &system.settings.console_token) else {
        return;
    };
    let nats = std::sync::Arc::new(tokio::sync::OnceCell::new());
    if let Some(queue) = &system.nats {
        let _ = nats.set(queue.clone());
    }
    let _ = slot.set(std::sync::Arc::new(
        system.console(token.expose(), nats.clone()),
    ));
    if let (None, Some(url)) = (&system.nats, &system.settings.nats_url) {
        match system.connect_nats(url.expose(), shutdown).await {
            Ok(queue) => {
                let _ = nats.set(std::sync::Arc::new(queue));
            }
            Err(error) => warn!("the console has no dead letters: {error:#}"),
        }
    }
}

/// Exits 0 when this process's health endpoint answers `/readyz` with 200.
pub async fn healthcheck(settings: &Settings, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let address = settings
                .ops_address()
                .context("no METRICS_ADDR (or HEALTH_PORT) to ask; pass --url")?;
            let port = address
                .rsplit(':')
                .next()
                .and_then(|port| port.parse::<u16>().ok())
                .with_context(|| format!("METRICS_ADDR {address} has no port"))?;
            format!("http://127.0.0.1:{port}/readyz")
        }
    };
    let answer = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = answer.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

pub async fn up(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let system = System::build(settings, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "up")?;
    let mut generate = new_api_key;
    let seeded = system
        .seeder()
        .run(Some(&mut generate as &mut (dyn FnMut() -> String + Send)))
        .await?;
    for seeded in seeded {
        println!(
            "{}\tcustomer {}\tapi key {} (shown once; stored hashed)",
            seeded.user.email,
            seeded.user.stripe_customer_id,
            seeded.api_key.unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn migrate(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(url) = &settings.database_url else {
        bail!("`migrate` needs DATABASE_URL: the in-memory store has no schema to apply");
    };
    let pool = adapters::postgres::connect(url.expose(), &crate::wiring::pool_settings(settings))?;
    crate::wiring::wait_for("Postgres", &shutdown, || adapters::postgres::probe(&pool)).await?;
    adapters::postgres::migrate(&pool).await?;
    info!("schema.sql applied");
    println!("schema.sql applied");
    Ok(())
}

pub async fn fake_stripe(args: &FakeStripeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, FaultKind, FaultTiming, Faults};
    let kinds = args
        .faults
        .iter()
        .map(|fault| match fault {
            FaultArg::Latency => FaultKind::Latency,
            FaultArg::Hang => FaultKind::Hang,
            FaultArg::ServerError => FaultKind::ServerError,
            FaultArg::RateLimit => FaultKind::RateLimit,
            FaultArg::Drop => FaultKind::Drop,
        })
        .collect();
    let timing = match args.fault_timing {
        FaultTimingArg::Before => FaultTiming::Before,
        FaultTimingArg::After => FaultTiming::After,
        FaultTimingArg::Either => FaultTiming::Either,
    };
    let stripe = FakeStripe::new(FakeStripeSettings {
        idempotency_window: args.idempotency_window,
        search_delay: args.search_delay,
        faults: Faults {
            rate: args.fault_rate,
            kinds,
            timing,
            latency: args.latency,
            hang: args.hang,
            paths: args.fault_paths.clone(),
        },
    });
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding fake-stripe to {address}"))?;
    info!(%address, fault_rate = args.fault_rate, faults = ?args.faults, timing = ?args.fault_timing, "fake-stripe listening");
    axum::serve(listener, stripe.router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving fake-stripe")?;
    info!("fake-stripe stopped");
    Ok(())
}

pub async fn dead_jobs(
    settings: &Settings,
    args: &DeadJobsArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let system = System::build(settings, Needs::STORE_AND_QUEUE, &shutdown).await?;
    let Some(nats) = &system.nats else {
        bail!("`dead-jobs` needs NATS_URL: the in-memory queue keeps no dead letters");
    };
    let dead = match args.requeue {
        true => nats.requeue_dead_jobs(args.limit).await?,
        false => nats.dead_jobs(args.limit).await?,
    };
    if dead.is_empty() {
        println!("no dead jobs");
    }
    let verb = if args.requeue { "requeued " } else { "" };
    for job in dead {
        println!(
            "{verb}sequence={} job_id={} ride_id={} user_id={} reason={}",
            job.sequence, job.job.id, job.job.job.ride_id, job.job.job.user_id, job.reason
        );
    }
    Ok(())
}

pub async fn resolve(
    settings: &Settings,
    args: &ResolveArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let resolution = match (&args.charge_id, args.not_charged) {
        (Some(charge_id), _) => {
            let charge_id = charge_id.trim();
            if charge_id.is_empty() || charge_id.contains(char::is_whitespace) {
                bail!("--charge-id must be a Stripe charge id such as ch_123");
            }
            Some(ReviewResolution::Charged {
                charge_id: charge_id.to_owned(),
            })
        }
        (None, true) => Some(ReviewResolution::NotCharged),
        (None, false) => None,
    };
    let system = System::build(settings, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "resolve")?;
    let not_awaiting = |key_id: KeyId| {
        anyhow::anyhow!(
            "key {key_id} does not await review: it is finished, gone, never charged, inside the gateway's idempotency window, or held by a request right now (see `rocket-rides review`)"
        )
    };
    let Some(resolution) = resolution else {
        return resolve_from_stripe(&system, args, not_awaiting).await;
    };
    let key_id = KeyId(args.key_id.context("a key id is required")?);
    let Some(answer) = system
        .create_ride()
        .resolve_review(key_id, resolution)
        .await?
    else {
        return Err(not_awaiting(key_id));
    };
    println!(
        "key_id={key_id} resolved: status={} body={}",
        answer.response.status, answer.response.body
    );
    Ok(())
}

/// `resolve --from-stripe`: one line per key; fails when a named key was
/// not settled or any listed key was left for a person.
async fn resolve_from_stripe(
    system: &System,
    args: &ResolveArgs,
    not_awaiting: impl Fn(KeyId) -> anyhow::Error,
) -> anyhow::Result<()> {
    let reconcile = system.reconcile();
    let settled = match args.key_id {
        Some(id) => match reconcile.settle(KeyId(id)).await? {
            Settlement::Skipped => return Err(not_awaiting(KeyId(id))),
            settlement => vec![(KeyId(id), settlement)],
        },
        None => reconcile
            .settle_all(args.limit)
            .await?
            .into_iter()
            .map(|(finding, settlement)| (finding.record.id, settlement))
            .collect(),
    };
    if settled.is_empty() {
        println!("no keys need review");
    }
    let mut left = 0;
    for (key_id, settlement) in &settled {
        match settlement {
            Settlement::Settled { status } => {
                println!("key_id={key_id} settled from Stripe: status={status}");
            }
            Settlement::Left { reason } => {
                left += 1;
                println!("key_id={key_id} left for review: {reason}");
            }
            Settlement::Skipped => {
                println!(
                    "key_id={key_id} skipped: a request holds it, or it was finished meanwhile"
                );
            }
        }
    }
    if left > 0 {
        bail!("{left} key(s) left for review: Stripe gave no definitive answer for them");
    }
    Ok(())
}

pub async fn review(
    settings: &Settings,
    args: &ReviewArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let system = System::build(settings, Needs::STORE, &shutdown).await?;
    require_shared_store(&system, "review")?;
    let findings = system.reconcile().examine(args.limit).await?;
    if findings.is_empty() {
        println!("no keys need review");
    }
    for KeyFinding {
        record: key,
        search,
        verdict,
    } in findings
    {
        println!(
            "key_id={} user_id={} idempotency_key={} ride_id={} downstream_key={} first_charge_attempt={} stripe={} verdict={}",
            key.id,
            key.user_id,
            key.key,
            key.progress
                .ride_id()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            key.downstream_key,
            key.unrecorded_charge_attempt()
                .map(|at| humantime::format_rfc3339_seconds(at).to_string())
                .unwrap_or_default(),
            search,
            describe_verdict(&verdict),
        );
    }
    Ok(())
}

pub fn describe_verdict(verdict: &Reconciliation) -> String {
    match verdict {
        Reconciliation::Charged { charge_id } => format!("charged({charge_id})"),
        Reconciliation::NotCharged => "not-charged".to_owned(),
        Reconciliation::Undecided { reason } => format!("undecided({reason})"),
    }
}
