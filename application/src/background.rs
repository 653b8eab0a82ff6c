//! The background use cases: the completer, the enqueuer, the worker and the
//! reaper. Each runs one batch (or one job) per call; `bins` decides how
//! often, and stops between batches on shutdown.

use std::sync::Arc;
use std::time::Duration;

use domain::{CompleterPolicy, ReceiptFor};
use futures_util::{StreamExt as _, stream};
use tracing::{error, info, warn};

use crate::phases::PhaseMachine;
use crate::ports::{
    ClaimToken, Clock, Delivery, JobQueue, KeyScans, Outbox, QueueError, ReceiptClaim,
    ReceiptSender, Receipts, Retention, StoreError,
};
use crate::reconcile::{ReconcileKeys, Settlement};

/// What one completer batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompleterReport {
    pub picked: usize,
    pub finished: usize,
    /// Taken by another process between the query and the lock.
    pub skipped: usize,
    pub failed: usize,
    /// Keys found past the gateway's idempotency window in this batch,
    /// reported (logged) now and left for `rocket-rides review`.
    pub needs_review: usize,
    /// Keys for review (reported in this batch or earlier) whose check was
    /// due and made (reconciling completers only).
    pub checked: usize,
    /// Of those, settled from the payment gateway's records.
    pub reconciled: usize,
    /// Picked but not started: the completer was told to stop.
    pub left: usize,
}

/// Finishes requests their clients gave up on, by running the same phase
/// machine as the API, in-process.
pub struct CompleteStalledKeys {
    keys: Arc<dyn KeyScans>,
    create_ride: Arc<PhaseMachine>,
    clock: Arc<dyn Clock>,
    policy: CompleterPolicy,
    batch_size: usize,
    concurrency: usize,
    reconcile: Option<ReconcileKeys>,
}

impl CompleteStalledKeys {
    pub fn new(
        keys: Arc<dyn KeyScans>,
        create_ride: Arc<PhaseMachine>,
        clock: Arc<dyn Clock>,
        policy: CompleterPolicy,
        batch_size: usize,
    ) -> Self {
        Self {
            keys,
            create_ride,
            clock,
            policy,
            batch_size,
            concurrency: 1,
            reconcile: None,
        }
    }

    /// Settles each key it reports for review from the gateway's records
    /// at once (`ReconcileKeys`: only on a definitive answer); the rest
    /// stay for a person.
    pub fn reconciling(mut self, reconcile: ReconcileKeys) -> Self {
        self.reconcile = Some(reconcile);
        self
    }

    /// Works up to `concurrency` keys of a batch at once, each under its own
    /// lease, so one slow charge never holds up the rest.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub async fn run_batch(&self) -> Result<CompleterReport, StoreError> {
        self.run_batch_until(std::future::pending()).await
    }

    /// A batch that starts no new key once `stop` resolves: the keys in
    /// flight run on to a recovery point (the caller bounds how long), the
    /// rest are left untouched for the next completer.
    #[tracing::instrument(name = "completer_batch", skip_all)]
    pub async fn run_batch_until(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<CompleterReport, StoreError> {
        let now = self.clock.now();
        let for_review = self
            .keys
            .report_keys_for_review(
                self.policy.review.attempted_before(now),
                now,
                self.batch_size,
            )
            .await?;
        for key in &for_review {
            warn!(
                key_id = %key.id,
                user_id = %key.user_id,
                downstream_key = %key.downstream_key,
                "key needs review: its charge was first attempted beyond the gateway's idempotency window, so it is not charged again; see `rocket-rides review`"
            );
        }
        let ids = self
            .keys
            .find_completable(now, self.policy, self.batch_size)
            .await?;
        let mut report = CompleterReport {
            picked: ids.len(),
            needs_review: for_review.len(),
            ..CompleterReport::default()
        };
        if let Some(reconcile) = &self.reconcile {
            // The keys just reported and those whose next check is due:
            // one answer "too recent" (a call made shortly before the
            // report) is asked again once it can be proof, a few times.
            let due = self
                .keys
                .claim_review_checks(now, reconcile.checks(), self.batch_size)
                .await?;
            let mut settled = std::pin::pin!(
                stream::iter(due)
                    .map(|key_id| async move { (key_id, reconcile.settle(key_id).await) })
                    .buffer_unordered(self.concurrency)
            );
            while let Some((key_id, settlement)) = settled.next().await {
                report.checked += 1;
                match settlement {
                    Ok(Settlement::Settled { status }) => {
                        report.reconciled += 1;
                        info!(%key_id, status, "key for review settled from the payment gateway's records");
                    }
                    Ok(Settlement::Left { .. } | Settlement::Skipped) => {}
                    Err(error) => {
                        warn!(%key_id, %error, "reconciling a key for review failed; it is checked again later, or left for a person");
                    }
                }
            }
        }
        let mut outcomes = std::pin::pin!(
            stream::iter(ids)
                .take_until(stop)
                .map(|key_id| async move {
                    (key_id, self.create_ride.resume(key_id, self.policy).await)
                })
                .buffer_unordered(self.concurrency)
        );
        while let Some((key_id, outcome)) = outcomes.next().await {
            match outcome {
                Ok(Some(answer)) => {
                    info!(%key_id, status = answer.response.status, "completer finished key");
                    report.finished += 1;
                }
                Ok(None) => report.skipped += 1,
                Err(error) => {
                    warn!(%key_id, %error, "completer could not finish key; will retry");
                    report.failed += 1;
                }
            }
        }
        report.left = report.picked - report.finished - report.skipped - report.failed;
        if report.picked > 0 || report.needs_review > 0 || report.checked > 0 {
            info!(?report, "completer batch done");
        }
        for (result, count) in [
            ("finished", report.finished),
            ("skipped", report.skipped),
            ("failed", report.failed),
            ("left", report.left),
            ("needs_review", report.needs_review),
            ("checked", report.checked),
            ("reconciled", report.reconciled),
        ] {
            metrics::counter!("rocket_rides_completer_keys_total", "result" => result)
                .increment(count as u64);
        }
        metrics::gauge!("rocket_rides_completer_last_batch_picked").set(report.picked as f64);
        Ok(report)
    }
}

/// Moves staged jobs into the job queue. A job leaves the store only after
/// the queue accepted it; a crash in between publishes it again, which the
/// queue (dedup by job id) and the worker (one receipt per ride) absorb.
pub struct DrainStagedJobs {
    outbox: Arc<dyn Outbox>,
    queue: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
    batch_size: usize,
    claim_for: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl DrainStagedJobs {
    /// `claim_for` bounds how long a crashed enqueuer's batch waits before
    /// another enqueuer takes it: longer than a batch takes to publish.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        queue: Arc<dyn JobQueue>,
        clock: Arc<dyn Clock>,
        batch_size: usize,
        claim_for: Duration,
    ) -> Self {
        Self {
            outbox,
            queue,
            clock,
            batch_size,
            claim_for,
        }
    }

    /// Returns how many jobs were moved.
    #[tracing::instrument(name = "enqueuer_batch", skip_all)]
    pub async fn run_batch(&self) -> Result<usize, DrainError> {
        let jobs = self
            .outbox
            .claim_staged_jobs(self.batch_size, self.clock.now(), self.claim_for)
            .await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let results = self.queue.publish_batch(&jobs).await;
        let mut accepted = Vec::with_capacity(jobs.len());
        let mut refused_ids = Vec::new();
        let mut refused = None;
        for (job, result) in jobs.iter().zip(results) {
            match result {
                Ok(()) => accepted.push(job.id),
                // Stays staged, its claim given up: published again on
                // the next pass (a queue node failing over refuses for a
                // few seconds, not for a claim's length).
                Err(error) => {
                    refused_ids.push(job.id);
                    refused = refused.or(Some(error));
                }
            }
        }
        if !accepted.is_empty() {
            self.outbox.delete_staged_jobs(&accepted).await?;
        }
        if !refused_ids.is_empty()
            && let Err(error) = self.outbox.release_staged_jobs(&refused_ids).await
        {
            // The claims run out by themselves.
            warn!(%error, "could not give up the refused jobs' claims");
        }
        let moved = accepted.len();
        metrics::counter!("rocket_rides_jobs_enqueued_total").increment(moved as u64);
        info!(moved, left = jobs.len() - moved, "enqueuer batch done");
        match refused {
            Some(error) => Err(error.into()),
            None => Ok(moved),
        }
    }
}

/// What the worker did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkOutcome {
    Sent {
        job_id: i64,
    },
    /// Delivered again after it took effect: acknowledged, nothing sent.
    AlreadySent {
        job_id: i64,
    },
    /// Another worker is sending this receipt right now; asked again later.
    InProgressElsewhere {
        job_id: i64,
    },
    /// The job names no ride: dead-lettered alone, the rest of its batch
    /// worked as usual.
    DeadLettered {
        job_id: i64,
    },
    /// Sending failed; the queue delivers it again after `delay`.
    Retrying {
        job_id: i64,
        delay: Duration,
    },
}

/// Works `send_ride_receipt` jobs: at most one receipt per ride, however many
/// times the queue delivers the job.
pub struct WorkJobs {
    receipts: Arc<dyn Receipts>,
    queue: Arc<dyn JobQueue>,
    sender: Arc<dyn ReceiptSender>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl WorkJobs {
    pub fn new(
        receipts: Arc<dyn Receipts>,
        queue: Arc<dyn JobQueue>,
        sender: Arc<dyn ReceiptSender>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            receipts,
            queue,
            sender,
            clock,
        }
    }

    /// A claim on a receipt not marked sent within this long belongs to a
    /// worker that died while sending; another may take it.
    pub const CLAIM_STALE_AFTER: Duration = Duration::from_secs(60);

    /// How often a worker renews the claims of the receipts it is sending:
    /// well inside `CLAIM_STALE_AFTER`, so a slow store can miss a few.
    pub const CLAIM_EXTEND_EVERY: Duration = Duration::from_secs(15);

    /// Backoff for a failed job: 1 s, 2 s, 4 s … capped at 5 minutes.
    pub fn backoff(attempt: u32) -> Duration {
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(8)).min(Duration::from_secs(300))
    }

    /// How long a job waits after the store failed under it.
    pub const STORE_FAILURE_DELAY: Duration = Duration::from_secs(5);

    /// Works the next job, waiting up to `max_wait` for one. When the store
    /// or the queue fails under a job, the job is given back (postponed,
    /// not counted against it: it is not the job that failed) and the error
    /// returned, so the caller can wait for the store before taking more.
    #[tracing::instrument(name = "worker_job", skip_all)]
    pub async fn work_next(&self, max_wait: Duration) -> Result<Option<WorkOutcome>, WorkError> {
        let deliveries = self.receive(1, max_wait).await?;
        Ok(self.work_all(deliveries).await?.pop())
    }

    /// Up to `max` jobs: all those waiting now, or the first to arrive
    /// within `max_wait`. Safe to abandon while it waits.
    pub async fn receive(
        &self,
        max: usize,
        max_wait: Duration,
    ) -> Result<Vec<Delivery>, WorkError> {
        Ok(self.queue.receive_batch(max, max_wait).await?)
    }

    /// Works jobs in hand, all at once; run it to the end (a send cut off
    /// before it is marked could go out twice). The receipts are claimed in
    /// one write, sent concurrently, and those sent marked in one write
    /// before their jobs are acknowledged. When the store or the queue
    /// fails under a job, the job is given back as in `work_next`, and the
    /// first such error returned once every job is dealt with.
    #[tracing::instrument(name = "worker_batch", skip_all, fields(jobs = deliveries.len()))]
    pub async fn work_all(&self, deliveries: Vec<Delivery>) -> Result<Vec<WorkOutcome>, WorkError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<(i64, ReceiptFor)> = deliveries
            .iter()
            .map(|delivery| (delivery.job.id, delivery.job.job.receipt()))
            .collect();
        let claims = match self
            .receipts
            .claim_receipts(&wanted, self.clock.now(), Self::CLAIM_STALE_AFTER)
            .await
        {
            Ok(claims) => claims,
            Err(error) => return Err(self.give_back(&deliveries, error.into()).await),
        };
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut failed: Option<WorkError> = None;
        let mut to_send = Vec::new();
        for (delivery, claim) in deliveries.into_iter().zip(claims) {
            let job_id = delivery.job.id;
            let receipt = delivery.job.job.receipt();
            let ride_id = receipt.ride_id;
            let handled = match claim {
                ReceiptClaim::Claimed(token) => {
                    to_send.push((delivery, token));
                    continue;
                }
                ReceiptClaim::AlreadySent => self.queue.ack(&delivery).await.map(|()| {
                    info!(job_id, %receipt, "receipt already sent; duplicate delivery acknowledged");
                    WorkOutcome::AlreadySent { job_id }
                }),
                ReceiptClaim::NoSuchRide => self
                    .queue
                    .dead_letter(&delivery, &format!("ride {ride_id} does not exist"))
                    .await
                    .map(|()| {
                        warn!(job_id, %ride_id, "the job names no ride; dead-lettered");
                        WorkOutcome::DeadLettered { job_id }
                    }),
                ReceiptClaim::InProgress => self
                    .queue
                    .retry_later(&delivery, Self::CLAIM_STALE_AFTER)
                    .await
                    .map(|()| {
                        info!(job_id, %receipt, "another worker is sending this receipt; asking again later");
                        WorkOutcome::InProgressElsewhere { job_id }
                    }),
            };
            match handled {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => failed = failed.or(Some(error.into())),
            }
        }
        let concurrency = to_send.len().max(1);
        let held: Vec<(ReceiptFor, ClaimToken)> = to_send
            .iter()
            .map(|(delivery, token)| (delivery.job.job.receipt(), *token))
            .collect();
        let sending = stream::iter(to_send)
            .map(|(delivery, token)| async move {
                let sent = self.sender.send(delivery.job.id, &delivery.job.job).await;
                (delivery, token, sent)
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>();
        let sends = self.while_extending(&held, sending).await;
        let mut sent = Vec::with_capacity(sends.len());
        for (delivery, token, result) in sends {
            let Err(cause) = result else {
                sent.push((delivery, token));
                continue;
            };
            let (job_id, attempt) = (delivery.job.id, delivery.attempt);
            let delay = Self::backoff(attempt);
            error!(job_id, attempt, ?delay, error = %cause, "sending the receipt failed; retrying later");
            if let Err(error) = self
                .receipts
                .release_receipt(delivery.job.job.receipt(), token)
                .await
            {
                failed = failed.or(Some(self.give_back(&[delivery], error.into()).await));
                continue;
            }
            match self.queue.retry_later(&delivery, delay).await {
                Ok(()) => outcomes.push(WorkOutcome::Retrying { job_id, delay }),
                Err(error) => failed = failed.or(Some(error.into())),
            }
        }
        if !sent.is_empty() {
            let claims: Vec<(ReceiptFor, ClaimToken)> = sent
                .iter()
                .map(|(delivery, token)| (delivery.job.job.receipt(), *token))
                .collect();
            let sent: Vec<Delivery> = sent.into_iter().map(|(delivery, _)| delivery).collect();
            let marked = match self
                .receipts
                .mark_receipts_sent(&claims, self.clock.now())
                .await
            {
                Ok(marked) => marked,
                Err(error) => {
                    let error = self.give_back(&sent, error.into()).await;
                    return Err(failed.unwrap_or(error));
                }
            };
            for (receipt, _) in claims
                .iter()
                .filter(|(receipt, _)| !marked.contains(receipt))
            {
                // Only a worker that lost touch with the store for longer
                // than a claim lasts gets here: its claim was taken over.
                warn!(%receipt, "the receipt's claim was taken over while it was being sent; it may have gone out twice");
            }
            metrics::counter!("rocket_rides_receipts_sent_total").increment(sent.len() as u64);
            let acks: Vec<_> = stream::iter(sent)
                .map(|delivery| async move {
                    let acked = self.queue.ack(&delivery).await;
                    (delivery.job.id, acked)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            for (job_id, acked) in acks {
                match acked {
                    Ok(()) => outcomes.push(WorkOutcome::Sent { job_id }),
                    // Marked sent: a redelivery is acknowledged as a duplicate.
                    Err(error) => failed = failed.or(Some(error.into())),
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }

    /// Runs `work` while extending `claims` every `CLAIM_EXTEND_EVERY`, so a
    /// send slower than `CLAIM_STALE_AFTER` keeps its claims and no other
    /// worker takes them over and sends again. An extension that fails is
    /// logged; the next one tries again.
    async fn while_extending<T>(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let extending = async {
            loop {
                self.clock.sleep(Self::CLAIM_EXTEND_EVERY).await;
                if let Err(error) = self
                    .receipts
                    .extend_receipt_claims(claims, self.clock.now())
                    .await
                {
                    warn!(%error, "could not extend the receipt claims in hand");
                }
            }
        };
        futures_util::pin_mut!(work, extending);
        match futures_util::future::select(work, extending).await {
            futures_util::future::Either::Left((done, _)) => done,
            futures_util::future::Either::Right((never, _)) => never,
        }
    }

    /// Gives jobs back to the queue after the store or the queue failed
    /// under them (postponed: not the jobs' fault); returns the error.
    async fn give_back(&self, deliveries: &[Delivery], error: WorkError) -> WorkError {
        for delivery in deliveries {
            warn!(job_id = delivery.job.id, %error, "could not work the job; giving it back");
            if let Err(cause) = self
                .queue
                .postpone(delivery, Self::STORE_FAILURE_DELAY)
                .await
            {
                // It comes back after the queue's ack wait anyway.
                warn!(job_id = delivery.job.id, error = %cause, "could not give the job back");
            }
        }
        error
    }
}

/// Deletes keys so old that no client or completer will retry them, and
/// has what this process keeps in memory for them forget as much
/// (`Retention`: the embedded store's settled rides, the in-process
/// gateway's payments).
pub struct ReapKeys {
    keys: Arc<dyn KeyScans>,
    clock: Arc<dyn Clock>,
    max_age: Duration,
    batch_size: usize,
    retained: Vec<Arc<dyn Retention>>,
}

impl ReapKeys {
    pub fn new(
        keys: Arc<dyn KeyScans>,
        clock: Arc<dyn Clock>,
        max_age: Duration,
        batch_size: usize,
    ) -> Self {
        Self {
            keys,
            clock,
            max_age,
            batch_size,
            retained: Vec::new(),
        }
    }

    /// Also has `retained` forget what is older than the keys reaped.
    pub fn forgetting(mut self, retained: impl IntoIterator<Item = Arc<dyn Retention>>) -> Self {
        self.retained.extend(retained);
        self
    }

    /// One batch: keys reaped, then each retention's batch forgotten. The
    /// larger of the counts, so a caller that repeats a full batch at once
    /// keeps going while any of them has more.
    #[tracing::instrument(name = "reaper_batch", skip_all)]
    pub async fn run_batch(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let cutoff = now
            .checked_sub(self.max_age)
            .unwrap_or(std::time::UNIX_EPOCH);
        let reaped = self.keys.reap_keys(cutoff, self.batch_size).await?;
        if reaped > 0 {
            info!(reaped, "reaper deleted old idempotency keys");
        }
        metrics::counter!("rocket_rides_keys_reaped_total").increment(reaped as u64);
        let mut most = reaped;
        for retained in &self.retained {
            let forgotten = retained.forget_before(cutoff, self.batch_size);
            metrics::counter!("rocket_rides_memory_records_forgotten_total")
                .increment(forgotten as u64);
            most = most.max(forgotten);
        }
        Ok(most)
    }
}
