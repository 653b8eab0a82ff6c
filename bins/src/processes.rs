//! The long-running processes: each builds what its settings select, serves
//! its operations endpoint, and runs its loop (or, for `start`, all of them)
//! until SIGINT or SIGTERM.

use std::sync::Arc;

use adapters::http::ConsoleSlot;
use adapters::http::console::ConsoleAccess;
use anyhow::{Context, bail};
use application::AuthMode;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::background::{Pace, completer_loop, enqueuer_loop, reaper_loop, worker_loop};
use crate::settings::{
    ApiCommand, BatchArgs, CompleterCommand, ConsoleArgs, EnqueuerCommand, OpsArgs, PollArgs,
    QueueArgs, ReaperCommand, ServerArgs, StartCommand, StoreArgs, WorkerCommand,
};
use crate::simulator;
use crate::wiring::{Needs, Payments, StoppedWhileWaiting, System};

/// A process that only makes sense beside a shared store refuses to run on
/// the in-memory one, rather than silently working on data nobody sees.
pub fn require_shared_store(system: &System, process: &str) -> anyhow::Result<()> {
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
async fn seed_if_embedded(
    system: &System,
    payments: &Payments,
    auth_mode: AuthMode,
) -> anyhow::Result<()> {
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
    let issue_keys = auth_mode == AuthMode::ApiKey;
    let mut generate = new_api_key;
    let seeded = system
        .seeder(payments.gateway.clone())
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

pub fn new_api_key() -> String {
    format!(
        "rr_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

async fn bind(ops: &OpsArgs, server: &ServerArgs) -> anyhow::Result<TcpListener> {
    let address = format!("{}:{}", ops.api_host, server.api_port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding the API to {address}"))?;
    info!(%address, "API listening");
    Ok(listener)
}

async fn serve_api(
    state: adapters::http::ApiState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    adapters::http::serve(listener, state, shutdown.cancelled_owned())
        .await
        .context("serving the API")?;
    info!("API stopped");
    Ok(())
}

fn pace(poll: &PollArgs, batch: &BatchArgs) -> Pace {
    Pace {
        interval: poll.poll_interval.0,
        batch_size: batch.batch_size,
    }
}

pub async fn start(args: StartCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let payments = Payments::new(&args.stripe, &args.keys, args.store.embedded())?;
    let (ops, console) = serve_ops(&args.ops, Some(&args.console), &shutdown).await?;
    let system = Arc::new(
        System::build(
            &args.store,
            Some(&args.queue),
            Needs::STORE_AND_QUEUE,
            &shutdown,
        )
        .await?,
    );
    seed_if_embedded(&system, &payments, args.server.auth_mode.into()).await?;
    let _ = ops.set(system.probe.clone());
    open_console(&system, &payments, console, &shutdown).await;
    system.spawn_resource_gauges(&shutdown, args.poll.poll_interval.0, true);
    let listener = bind(&args.ops, &args.server).await?;
    let pace = pace(&args.poll, &args.batch);
    let state = system.api_state(
        &payments,
        &args.server,
        &args.webhooks,
        &args.replay_cache,
        &args.shutdown,
        &args.ops,
    );
    let completer = system.completer(&payments, &args.completer, &args.batch);
    let enqueuer = system.enqueuer(&args.enqueuer, &args.batch);
    let reaper = system
        .reaper(&args.reaper, &args.batch)
        .forgetting(payments.retained.clone());
    let payments = Arc::new(payments);
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_api(state, listener, shutdown.clone()));
    let (s, p, t) = (system.clone(), payments.clone(), shutdown.clone());
    let deadline = args.shutdown.shutdown_deadline.0;
    tasks.spawn(async move { completer_loop(&s, &p, completer, pace, deadline, t).await });
    let (s, t) = (system.clone(), shutdown.clone());
    tasks.spawn(async move { enqueuer_loop(&s, enqueuer, pace, t).await });
    let (s, t) = (system.clone(), shutdown.clone());
    let worker_batch = args.worker.worker_batch;
    tasks.spawn(async move { worker_loop(&s, worker_batch, t).await });
    tasks.spawn(reaper_loop(reaper, pace, shutdown.clone()));
    let (simulator, api_port, t) = (args.simulator, args.server.api_port, shutdown.clone());
    tasks.spawn(async move { simulator::run(&simulator, api_port, t).await });
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
pub async fn api(args: ApiCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let payments = Payments::new(&args.stripe, &args.keys, args.store.embedded())?;
    let (ops, console) = serve_ops(&args.ops, Some(&args.console), &shutdown).await?;
    let system = System::build(&args.store, Some(&args.queue), Needs::API, &shutdown).await?;
    let listener = bind(&args.ops, &args.server).await?;
    let state = system.api_state(
        &payments,
        &args.server,
        &args.webhooks,
        &args.replay_cache,
        &args.shutdown,
        &args.ops,
    );
    let ready = async {
        let ready = async {
            system.wait_for_store(&shutdown).await?;
            seed_if_embedded(&system, &payments, args.server.auth_mode.into()).await?;
            let _ = ops.set(system.probe.clone());
            system.spawn_resource_gauges(&shutdown, args.poll.poll_interval.0, false);
            open_console(&system, &payments, console, &shutdown).await;
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
    let (served, ready) = tokio::join!(serve_api(state, listener, shutdown.clone()), ready);
    ready.and(served)
}

/// How a background process starts: its operations endpoint first (not
/// ready while it waits), then the system it works on, refusing an
/// in-memory store (or, given `queue`, queue) that no other process could
/// share; ready once connected, its gauges sampled every `poll` (with the
/// dead-letter count when `counts_dead_letters`: the process that
/// dead-letters jobs, the worker).
async fn start_background(
    process: &'static str,
    counts_dead_letters: bool,
    store: &StoreArgs,
    queue: Option<&QueueArgs>,
    ops: &OpsArgs,
    poll: &PollArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<System> {
    let (ready, _) = serve_ops(ops, None, shutdown).await?;
    let needs = match queue {
        Some(_) => Needs::STORE_AND_QUEUE,
        None => Needs::STORE,
    };
    let system = System::build(store, queue, needs, shutdown).await?;
    require_shared_store(&system, process)?;
    if queue.is_some() {
        require_shared_queue(&system, process)?;
    }
    let _ = ready.set(system.probe.clone());
    system.spawn_resource_gauges(shutdown, poll.poll_interval.0, counts_dead_letters);
    Ok(system)
}

pub async fn completer(args: CompleterCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let payments = Payments::new(&args.stripe, &args.keys, args.store.embedded())?;
    let system = start_background(
        "completer",
        false,
        &args.store,
        None,
        &args.ops,
        &args.poll,
        &shutdown,
    )
    .await?;
    let completer = system.completer(&payments, &args.completer, &args.batch);
    let pace = pace(&args.poll, &args.batch);
    let deadline = args.shutdown.shutdown_deadline.0;
    completer_loop(&system, &payments, completer, pace, deadline, shutdown).await
}

pub async fn enqueuer(args: EnqueuerCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let queue = Some(&args.queue);
    let system = start_background(
        "enqueuer",
        false,
        &args.store,
        queue,
        &args.ops,
        &args.poll,
        &shutdown,
    )
    .await?;
    let enqueuer = system.enqueuer(&args.enqueuer, &args.batch);
    enqueuer_loop(&system, enqueuer, pace(&args.poll, &args.batch), shutdown).await
}

pub async fn worker(args: WorkerCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let queue = Some(&args.queue);
    let system = start_background(
        "worker",
        true,
        &args.store,
        queue,
        &args.ops,
        &args.poll,
        &shutdown,
    )
    .await?;
    worker_loop(&system, args.worker.worker_batch, shutdown).await
}

pub async fn reaper(args: ReaperCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let system = start_background(
        "reaper",
        false,
        &args.store,
        None,
        &args.ops,
        &args.poll,
        &shutdown,
    )
    .await?;
    let reaper = system.reaper(&args.reaper, &args.batch);
    reaper_loop(reaper, pace(&args.poll, &args.batch), shutdown).await
}

/// With `METRICS_ADDR` (or `HEALTH_PORT`), serves `/metrics`, `/healthz`
/// and `/readyz` from before the process connects (not ready while it
/// waits) to shutdown, and the operator's console when `console` carries a
/// token: the slot to fill once connected.
async fn serve_ops(
    ops: &OpsArgs,
    console: Option<&ConsoleArgs>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(
    adapters::http::ReadyStore,
    Option<(ConsoleSlot, ConsoleAccess)>,
)> {
    let ready = adapters::http::ReadyStore::default();
    let console = console.and_then(|console| {
        let token = console.console_token.as_ref()?;
        Some((
            ConsoleSlot::default(),
            ConsoleAccess {
                token: token.expose().to_owned(),
                session_ttl: console.console_session_ttl.0,
                secure_cookie: console.console_secure_cookie,
            },
        ))
    });
    let address = ops.address();
    if console.is_some() && address.is_none() {
        warn!(
            "CONSOLE_TOKEN is set but METRICS_ADDR is not: the console is served on METRICS_ADDR only"
        );
    }
    if let Some(address) = address {
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding the metrics endpoint to {address}"))?;
        info!(%address, "metrics and health endpoint listening");
        let router = adapters::http::ops_router(
            ready.clone(),
            crate::wiring::metrics_renderer(),
            console.as_ref().map(|(slot, _)| slot.clone()),
        );
        if console.is_some() {
            info!(%address, "operator console at /console");
        }
        let shutdown = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            let limits = adapters::http::ServerLimits::OPS;
            let served =
                adapters::http::serve_router(listener, router, limits, "operations", shutdown)
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
async fn open_console(
    system: &System,
    payments: &Payments,
    console: Option<(ConsoleSlot, ConsoleAccess)>,
    shutdown: &CancellationToken,
) {
    let Some((slot, access)) = console else {
        return;
    };
    let dead_letters = Arc::new(tokio::sync::OnceCell::new());
    if let Some(connected) = &system.dead_letters {
        let _ = dead_letters.set(connected.clone());
    }
    let _ = slot.set(Arc::new(system.console(
        payments,
        access,
        dead_letters.clone(),
    )));
    if system.dead_letters.is_none()
        && let Some(connected) = system.connect_nats_later(shutdown).await
    {
        match connected {
            Ok(connected) => {
                let _ = dead_letters.set(connected);
            }
            Err(error) => warn!("the console has no dead letters: {error:#}"),
        }
    }
}
