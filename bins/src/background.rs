//! The background loops: each runs one use case batch after batch, stopping
//! between batches when the shutdown token is cancelled, and samples the
//! gauges a person watches for it.

use std::future::Future;
use std::time::Duration;

use application::telemetry::{Exporter, export_from_start};
use application::{DrainStagedJobs, ReapKeys, WorkError};
use domain::RecoveryPoint;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::wiring::{Completer, Payments, System};

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
async fn sample_keys(system: &System, payments: &Payments) {
    let cutoff = payments
        .review_policy()
        .attempted_before(system.clock.now());
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

/// The completer's loop: on SIGTERM no new key starts, and those in flight
/// get `deadline` to reach a recovery point (past it, their locks time out
/// and the next completer takes them).
pub async fn completer_loop(
    system: &System,
    payments: &Payments,
    completer: Completer,
    pace: Pace,
    deadline: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Completer {
        keys: completer,
        payments: sync,
    } = completer;
    export_from_start(Exporter::Completer);
    every("completer", pace.interval, shutdown.clone(), || async {
        let out_of_time = async {
            shutdown.cancelled().await;
            tokio::time::sleep(deadline).await;
        };
        tokio::select! {
            report = completer.run_batch_until(shutdown.cancelled()) => {
                let report = report?;
                let synced = sync.run(pace.batch_size).await?;
                if synced.checked + synced.unknown > 0 {
                    info!(process = "completer", checked = synced.checked, settled = synced.settled, unknown = synced.unknown, "payment sync pass");
                }
                sample_keys(system, payments).await;
                Ok((report.picked >= pace.batch_size && report.failed < report.picked)
                    || synced.checked >= pace.batch_size)
            }
            () = out_of_time => {
                warn!(process = "completer", ?deadline, "shutdown deadline passed with keys in flight; their locks will time out");
                Ok(false)
            }
        }
    })
    .await
}

/// How often a background pass runs and how much it takes at once.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub interval: Duration,
    pub batch_size: usize,
}

pub async fn enqueuer_loop(
    system: &System,
    enqueuer: DrainStagedJobs,
    pace: Pace,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    export_from_start(Exporter::Enqueuer);
    every("enqueuer", pace.interval, shutdown, || async {
        let moved = enqueuer.run_batch().await;
        sample_backlog(system).await;
        Ok(moved? >= pace.batch_size)
    })
    .await
}

pub async fn reaper_loop(
    reaper: ReapKeys,
    pace: Pace,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    export_from_start(Exporter::Reaper);
    every("reaper", pace.interval, shutdown, || async {
        Ok(reaper.run_batch().await? >= pace.batch_size)
    })
    .await
}

/// Works jobs one after another. When the store fails under a job, the job
/// is given back and the worker takes no other until the store answers
/// again: an outage costs each job at most one delivery, so it cannot burn
/// through `NATS_MAX_DELIVER` and end in the dead letters. When the queue
/// fails, it pauses with backoff (the client reconnects by itself).
pub async fn worker_loop(
    system: &System,
    batch: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker = system.worker();
    export_from_start(Exporter::Worker);
    info!(process = "worker", "started");
    let mut queue_backoff = Duration::from_millis(100);
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
