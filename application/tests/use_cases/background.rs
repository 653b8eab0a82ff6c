//! The enqueuer, the worker and the reaper on the in-memory adapters.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use application::ports::{
    JobQueue, Keys, MockReceiptSender, Outbox, ReceiptSender, Retention, Users,
};
use application::{DrainStagedJobs, ReapKeys, WorkJobs, WorkOutcome};
use async_trait::async_trait;
use domain::RideStatus;
use domain::charge::ReceiptJob;
use support::{Harness, key};

/// Counts what it sends, per ride.
#[derive(Default)]
struct CountingSender {
    sent: std::sync::Mutex<Vec<i64>>,
}

#[async_trait]
impl ReceiptSender for CountingSender {
    async fn send(&self, _job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()> {
        self.sent.lock().expect("lock").push(receipt.ride_id.0);
        Ok(())
    }
}

#[tokio::test]
async fn staged_jobs_reach_the_worker_and_each_ride_gets_one_receipt() {
    let h = Harness::new().await;
    for n in 0..5 {
        h.book(&key(n)).await.expect("booked");
    }
    let enqueuer = h.enqueuer();
    assert_eq!(enqueuer.run_batch().await.expect("drained"), 5);
    assert_eq!(h.staged_job_count().await, 0, "jobs leave once queued");

    let sender = Arc::new(CountingSender::default());
    let worker = h.worker(sender.clone());
    for _ in 0..5 {
        let outcome = worker
            .work_next(Duration::from_millis(10))
            .await
            .expect("worked");
        assert!(
            matches!(outcome, Some(WorkOutcome::Sent { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(
        worker
            .work_next(Duration::from_millis(10))
            .await
            .expect("idle"),
        None
    );
    let mut sent = sender.sent.lock().expect("lock").clone();
    sent.sort();
    let mut rides: Vec<i64> = h.store.rides().iter().map(|r| r.id.0).collect();
    rides.sort();
    assert_eq!(sent, rides);
}

#[tokio::test]
async fn a_job_published_twice_still_sends_one_receipt() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    let job = h.store.staged_jobs(1).await.expect("jobs").remove(0);
    // The enqueuer crashed after publishing, before deleting: publishes again.
    h.queue.publish(&job).await.expect("published");
    h.queue.publish(&job).await.expect("published again");

    let sender = Arc::new(CountingSender::default());
    let worker = h.worker(sender.clone());
    while worker
        .work_next(Duration::from_millis(10))
        .await
        .expect("worked")
        .is_some()
    {}
    assert_eq!(sender.sent.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_redelivered_job_after_success_is_acknowledged_without_sending() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    let job = h.store.staged_jobs(1).await.expect("jobs").remove(0);
    let sender = Arc::new(CountingSender::default());
    let worker = h.worker(sender.clone());
    h.queue.publish(&job).await.expect("published");
    worker
        .work_next(Duration::from_millis(10))
        .await
        .expect("sent");
    // A second queue (a redelivery the first one does not know of).
    let other_queue = Arc::new(adapters::memory::MemoryQueue::default());
    other_queue.publish(&job).await.expect("published");
    let worker = WorkJobs::new(
        h.store.clone(),
        other_queue.clone(),
        sender.clone(),
        h.clock.clone(),
    );
    let outcome = worker
        .work_next(Duration::from_millis(10))
        .await
        .expect("worked");
    assert_eq!(outcome, Some(WorkOutcome::AlreadySent { job_id: job.id }));
    assert_eq!(sender.sent.lock().expect("lock").len(), 1);
    assert!(other_queue.is_empty(), "the duplicate was acknowledged");
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_is_retried_with_backoff() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    DrainStagedJobs::new(
        h.store.clone(),
        h.queue.clone(),
        h.clock.clone(),
        10,
        Duration::from_secs(60),
    )
    .run_batch()
    .await
    .expect("drained");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sender = MockReceiptSender::new();
    let counter = calls.clone();
    sender.expect_send().returning(move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(anyhow::anyhow!("mail server down"))
        } else {
            Ok(())
        }
    });
    let worker = h.worker(Arc::new(sender));
    let first = worker
        .work_next(Duration::from_millis(10))
        .await
        .expect("worked");
    assert!(
        matches!(first, Some(WorkOutcome::Retrying { delay, .. }) if delay == Duration::from_secs(1)),
        "{first:?}"
    );
    let second = worker
        .work_next(Duration::from_secs(5))
        .await
        .expect("worked");
    assert!(
        matches!(second, Some(WorkOutcome::Sent { .. })),
        "{second:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(h.queue.is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(WorkJobs::backoff(1), Duration::from_secs(1));
    assert_eq!(WorkJobs::backoff(2), Duration::from_secs(2));
    assert_eq!(WorkJobs::backoff(5), Duration::from_secs(16));
    assert_eq!(WorkJobs::backoff(50), Duration::from_secs(256));
}

#[tokio::test]
async fn the_reaper_removes_only_old_keys_and_keeps_their_rides() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    h.advance(Duration::from_secs(3600));
    h.book(&key(2)).await.expect("booked");
    let reaper = ReapKeys::new(
        h.store.clone(),
        h.clock.clone(),
        Duration::from_secs(72 * 3600),
        1000,
    );

    h.advance(Duration::from_secs(71 * 3600)); // key 1 is exactly 72 h old
    assert_eq!(reaper.run_batch().await.expect("nothing old enough"), 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(reaper.run_batch().await.expect("reaped"), 1);

    let keys = h.store.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key.as_str(), key(2));
    let rides = h.store.rides();
    assert_eq!(rides.len(), 2, "rides stay");
    assert_eq!(rides[0].idempotency_key_id, None);
    assert_eq!(rides[1].idempotency_key_id, Some(keys[0].id));

    // The reaped key is free again: a new request under it is new.
    let answer = h.book(&key(1)).await.expect("new request");
    assert!(!answer.replayed);
    assert_eq!(h.store.rides().len(), 3);
}

/// The embedded default's memory: once a key is reaped, the store forgets
/// its ride when nothing about it can change (receipt sent), with its
/// audit record, and the in-process gateway forgets the charge; a ride
/// whose receipt is not yet sent, or that waits on the rider, stays.
#[tokio::test]
async fn the_reaper_has_memory_forget_settled_rides_and_the_gateways_payments() {
    let h = Harness::new().await;
    let sent = h.book(&key(1)).await.expect("booked");
    assert_eq!(sent.response.status, 201);
    let sent_ride = h.store.rides()[0].id;
    h.enqueuer().run_batch().await.expect("enqueued");
    let worker = h.worker(Arc::new(CountingSender::default()));
    assert!(matches!(
        worker.work_next(Duration::ZERO).await.expect("worked"),
        Some(WorkOutcome::Sent { .. })
    ));
    h.book(&key(2))
        .await
        .expect("booked, its receipt not yet sent");
    let waiting = h
        .create_ride
        .run(h.request(&h.three_ds_user, &key(3)))
        .await
        .expect("answered");
    assert_eq!(
        waiting.response.status, 402,
        "3-D Secure: the ride waits on the rider"
    );
    assert_eq!(h.gateway.charges().len(), 2);
    assert_eq!(h.store.audit_records().len(), 3);

    let reaper = ReapKeys::new(
        h.store.clone(),
        h.clock.clone(),
        Duration::from_secs(72 * 3600),
        1000,
    )
    .forgetting([
        h.store.clone() as Arc<dyn Retention>,
        h.gateway.clone() as Arc<dyn Retention>,
    ]);
    // Nothing is forgotten before the keys' horizon.
    h.advance(Duration::from_secs(71 * 3600));
    assert_eq!(reaper.run_batch().await.expect("nothing old enough"), 0);
    assert_eq!(h.store.rides().len(), 3);

    h.advance(Duration::from_secs(2 * 3600));
    reaper.run_batch().await.expect("reaped");
    let rides: Vec<_> = h.store.rides().iter().map(|ride| ride.status).collect();
    assert_eq!(
        rides,
        [RideStatus::Booked, RideStatus::AwaitingAuthentication],
        "the ride whose receipt went out is forgotten; the unsent one and the waiting one stay"
    );
    assert!(
        h.gateway.charges().is_empty(),
        "the gateway forgot both charges"
    );
    assert!(h.store.audit_records().is_empty());
    let forgotten = h.store.find_ride(sent_ride).await.expect("read");
    assert_eq!(forgotten, None);

    // Once its receipt goes out, the second ride goes too.
    h.enqueuer().run_batch().await.expect("enqueued");
    assert!(matches!(
        worker.work_next(Duration::ZERO).await.expect("worked"),
        Some(WorkOutcome::Sent { .. })
    ));
    reaper.run_batch().await.expect("forgot");
    let rides: Vec<_> = h.store.rides().iter().map(|ride| ride.status).collect();
    assert_eq!(rides, [RideStatus::AwaitingAuthentication]);
}

#[tokio::test]
async fn the_reaper_takes_at_most_a_batch() {
    let h = Harness::new().await;
    for n in 0..5 {
        h.book(&key(n)).await.expect("booked");
    }
    h.advance(Duration::from_secs(73 * 3600));
    let reaper = ReapKeys::new(
        h.store.clone(),
        h.clock.clone(),
        Duration::from_secs(72 * 3600),
        2,
    );
    assert_eq!(reaper.run_batch().await.expect("reaped"), 2);
    assert_eq!(h.store.keys().len(), 3);
}

#[tokio::test]
async fn seeding_twice_keeps_the_users_and_their_customers() {
    let h = Harness::new().await;
    let seeder = application::SeedDemoUsers::new(h.store.clone(), h.gateway.clone());
    let again = seeder.run(None).await.expect("seeded again");
    assert_eq!(again[0].user, h.good_user);
    assert_eq!(again[1].user, h.declined_user);
    let mut n = 0;
    let mut generate = move || {
        n += 1;
        format!("api-key-{n}")
    };
    let with_keys = seeder.run(Some(&mut generate)).await.expect("keys issued");
    assert_eq!(with_keys[0].api_key.as_deref(), Some("api-key-1"));
    let found = h
        .store
        .find_user_by_api_key(&domain::ApiKeyHash::of("api-key-1"))
        .await
        .expect("lookup");
    assert_eq!(found, Some(h.good_user.clone()));
}

/// Postgres restarting under a worker: the job goes back to the queue
/// (postponed, never counted as the job failing, so an outage cannot push
/// it into the dead letters) and the worker reports the store error.
#[tokio::test]
async fn a_store_failure_under_a_job_postpones_it_and_never_fails_the_job() {
    use application::WorkError;
    use application::ports::{Delivery, MockJobQueue, MockReceipts, StoreError};
    use domain::{RideId, StagedJob, UserId};
    let delivery = Delivery {
        job: StagedJob {
            id: 7,
            job: ReceiptJob::for_ride(RideId(3), UserId(1)),
        },
        tag: 1,
        attempt: 1,
    };
    let mut queue = MockJobQueue::new();
    let handed = delivery.clone();
    queue
        .expect_receive_batch()
        .times(1)
        .returning(move |_, _| Ok(vec![handed.clone()]));
    queue
        .expect_postpone()
        .withf(|d, _| d.tag == 1)
        .times(1)
        .returning(|_, _| Ok(()));
    queue.expect_retry_later().never();
    queue.expect_ack().never();
    let mut store = MockReceipts::new();
    store
        .expect_claim_receipts()
        .returning(|_, _, _| Err(StoreError::Unavailable(anyhow::anyhow!("connection reset"))));
    let mut sender = MockReceiptSender::new();
    sender.expect_send().never();
    let worker = WorkJobs::new(
        Arc::new(store),
        Arc::new(queue),
        Arc::new(sender),
        Arc::new(adapters::clock::SystemClock),
    );
    let outcome = worker.work_next(Duration::from_millis(10)).await;
    assert!(matches!(outcome, Err(WorkError::Store(_))), "{outcome:?}");
}

/// A job leaves the store only once the queue accepted it; one refused
/// is published again on the next pass.
#[tokio::test]
async fn a_job_the_queue_refuses_stays_staged_and_is_published_on_the_next_pass() {
    use application::ports::{MockJobQueue, QueueError};
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    let mut refusing = MockJobQueue::new();
    refusing.expect_publish_batch().times(1).returning(|jobs| {
        jobs.iter()
            .map(|_| Err(QueueError(anyhow::anyhow!("no responders"))))
            .collect()
    });
    let enqueuer = |queue: Arc<dyn JobQueue>| {
        DrainStagedJobs::new(
            h.store.clone(),
            queue,
            h.clock.clone(),
            1000,
            Duration::from_secs(60),
        )
    };
    assert!(enqueuer(Arc::new(refusing)).run_batch().await.is_err());
    assert_eq!(h.staged_job_count().await, 1, "still staged");
    // Its claim was given up: the next pass moves it at once, not once
    // the claim would have run out.
    assert_eq!(
        enqueuer(h.queue.clone())
            .run_batch()
            .await
            .expect("drained"),
        1
    );
    assert_eq!(h.staged_job_count().await, 0);
    assert_eq!(h.queue.len(), 1);
}

/// The completer's report counts each key by what became of it.
#[tokio::test]
async fn the_completer_reports_what_became_of_each_key() {
    use application::ports::{MockKeyScans, MockKeys};
    use application::{CompleteStalledKeys, CompleterReport, PhaseMachine};
    use domain::KeyId;
    // Finished: two stalled keys on a healthy gateway.
    let h = Harness::new().await;
    for n in 0..2 {
        let mut request = h.request(&h.good_user, &key(n));
        request.raise_error = true;
        h.create_ride.run(request).await.unwrap_err();
    }
    h.advance(Duration::from_secs(301));
    let report = h.completer().run_batch().await.expect("batch");
    assert_eq!(
        report,
        CompleterReport {
            picked: 2,
            finished: 2,
            ..CompleterReport::default()
        }
    );
    // Failed: the gateway's answer is lost every time.
    let lost = Harness::losing_every_answer().await;
    let mut request = lost.request(&lost.good_user, &key(1));
    request.raise_error = true;
    lost.create_ride.run(request).await.unwrap_err();
    lost.advance(Duration::from_secs(301));
    let report = lost.completer().run_batch().await.expect("batch");
    assert_eq!(
        report,
        CompleterReport {
            picked: 1,
            failed: 1,
            ..CompleterReport::default()
        }
    );
    // Skipped: another completer locked it between the query and the lock.
    let mut scans = MockKeyScans::new();
    scans
        .expect_report_keys_for_review()
        .returning(|_, _, _| Ok(vec![]));
    scans
        .expect_find_completable()
        .returning(|_, _, _| Ok(vec![KeyId(1), KeyId(2)]));
    let mut keys = MockKeys::new();
    keys.expect_lock_for_completion()
        .returning(|_, _, _| Ok(None));
    let completer = CompleteStalledKeys::new(
        Arc::new(scans),
        Arc::new(PhaseMachine::new(
            Arc::new(keys),
            h.store.clone(),
            h.gateway.clone(),
            h.clock.clone(),
            support::settings(),
        )),
        h.clock.clone(),
        support::completer_policy(),
        1000,
    );
    let report = completer.run_batch().await.expect("batch");
    assert_eq!(
        report,
        CompleterReport {
            picked: 2,
            skipped: 2,
            ..CompleterReport::default()
        }
    );
}

/// Charges through the fake, each call held until `width` calls are in
/// flight together; counts the most seen at once.
struct Crowded {
    inner: Arc<adapters::memory::FakeGateway>,
    barrier: tokio::sync::Barrier,
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl application::ports::PaymentGateway for Crowded {
    async fn create_customer(
        &self,
        email: &str,
        card: domain::TestCard,
    ) -> Result<application::ports::SavedCustomer, application::ports::GatewayError> {
        self.inner.create_customer(email, card).await
    }

    async fn charge(&self, request: &domain::ChargeRequest) -> domain::ChargeOutcome {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.barrier.wait().await;
        let outcome = self.inner.charge(request).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

/// A completer with a concurrency of 4 works 4 keys at once (the gateway
/// lets no call through until 4 are waiting: one at a time would never
/// finish), and never more than 4.
#[tokio::test]
async fn the_completer_works_its_batch_with_bounded_concurrency() {
    use application::{CompleteStalledKeys, PhaseMachine};
    let fake = Arc::new(adapters::memory::FakeGateway::new());
    let crowded = Arc::new(Crowded {
        inner: fake.clone(),
        barrier: tokio::sync::Barrier::new(4),
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let h = Harness::with_gateway(fake.clone(), None).await;
    for n in 0..8 {
        let mut request = h.request(&h.good_user, &key(n));
        request.raise_error = true;
        h.create_ride.run(request).await.unwrap_err();
    }
    h.advance(Duration::from_secs(301));
    let create_ride = Arc::new(PhaseMachine::new(
        h.store.clone(),
        h.store.clone(),
        crowded.clone(),
        h.clock.clone(),
        support::settings(),
    ));
    let completer = CompleteStalledKeys::new(
        h.store.clone(),
        create_ride,
        h.clock.clone(),
        support::completer_policy(),
        1000,
    )
    .with_concurrency(4);
    let report = tokio::time::timeout(Duration::from_secs(10), completer.run_batch())
        .await
        .expect("four at a time get through")
        .expect("batch");
    assert_eq!((report.picked, report.finished), (8, 8), "{report:?}");
    assert_eq!(
        crowded.most.load(Ordering::SeqCst),
        4,
        "never more than the bound"
    );
    assert_eq!(fake.charges().len(), 8, "one charge per key");
}

/// Told to stop before it starts, a completer picks its batch but starts
/// no key: every one is left as it was (unlocked, not run), for the next.
#[tokio::test]
async fn a_stopped_completer_leaves_the_keys_it_did_not_start_untouched() {
    let h = Harness::new().await;
    for n in 0..3 {
        let mut request = h.request(&h.good_user, &key(n));
        request.raise_error = true;
        h.create_ride.run(request).await.unwrap_err();
    }
    h.advance(Duration::from_secs(301));
    let before = h.store.keys();
    let report = h
        .completer()
        .run_batch_until(std::future::ready(()))
        .await
        .expect("batch");
    assert_eq!(
        (report.picked, report.left, report.finished),
        (3, 3, 0),
        "{report:?}"
    );
    assert_eq!(h.store.keys(), before, "nothing touched");
    assert_eq!(h.gateway.charge_calls(), 0);
}

/// The queue takes the first and third jobs of a batch and refuses the
/// second: those two leave the store, the second stays staged.
#[tokio::test]
async fn only_the_jobs_the_queue_accepted_leave_the_store() {
    use application::ports::{MockJobQueue, QueueError};
    let h = Harness::new().await;
    for n in 0..3 {
        h.book(&key(n)).await.expect("booked");
    }
    let staged = h.store.staged_jobs(10).await.expect("jobs");
    let mut queue = MockJobQueue::new();
    queue.expect_publish_batch().times(1).returning(|jobs| {
        assert_eq!(jobs.len(), 3, "the whole claimed batch at once");
        vec![
            Ok(()),
            Err(QueueError(anyhow::anyhow!("no responders"))),
            Ok(()),
        ]
    });
    queue.expect_publish().never();
    let enqueuer = DrainStagedJobs::new(
        h.store.clone(),
        Arc::new(queue),
        h.clock.clone(),
        1000,
        Duration::from_secs(60),
    );
    assert!(
        enqueuer.run_batch().await.is_err(),
        "the refusal is reported"
    );
    assert_eq!(
        h.store.staged_jobs(10).await.expect("jobs"),
        vec![staged[1].clone()],
        "only the refused job is still staged"
    );
}

/// A worker takes every job waiting, up to its batch, and works them
/// together: one receipt each.
#[tokio::test]
async fn a_worker_takes_the_waiting_jobs_as_one_batch() {
    let h = Harness::new().await;
    for n in 0..5 {
        h.book(&key(n)).await.expect("booked");
    }
    h.enqueuer().run_batch().await.expect("drained");
    let sender = Arc::new(CountingSender::default());
    let worker = h.worker(sender.clone());
    let first = worker
        .receive(3, Duration::from_millis(10))
        .await
        .expect("received");
    assert_eq!(first.len(), 3, "at most the batch");
    let outcomes = worker.work_all(first).await.expect("worked");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, WorkOutcome::Sent { .. })),
        "{outcomes:?}"
    );
    let rest = worker
        .receive(10, Duration::from_millis(10))
        .await
        .expect("received");
    assert_eq!(rest.len(), 2, "the rest, without waiting for more");
    worker.work_all(rest).await.expect("worked");
    let mut sent = sender.sent.lock().expect("lock").clone();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 5, "one receipt per ride");
    assert!(h.queue.is_empty());
}

/// The one-ride forms of the receipt claim and mark, as the ports define
/// them over the batched ones.
#[tokio::test]
async fn a_receipt_claimed_then_marked_for_one_ride_is_sent() {
    use application::ports::{ReceiptClaim, Receipts};
    let h = Harness::new().await;
    h.book(&key(0)).await.expect("booked");
    let ride = h.store.rides()[0].id;
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let claim = h
        .store
        .claim_receipt(7, ride.into(), now, Duration::from_secs(60))
        .await
        .expect("claimed");
    let ReceiptClaim::Claimed(token) = claim else {
        panic!("claimed: {claim:?}");
    };
    assert!(!h.store.receipt_sent(ride.into()).await.expect("read"));
    assert!(
        h.store
            .mark_receipt_sent(ride.into(), token, now)
            .await
            .expect("marked")
    );
    assert!(
        h.store.receipt_sent(ride.into()).await.expect("read"),
        "marked sent"
    );
}

/// Sends once let through: a receipt that takes as long as the test says.
struct GatedSender {
    sent: std::sync::Mutex<Vec<i64>>,
    entered: tokio::sync::Semaphore,
    gate: tokio::sync::Semaphore,
}

impl Default for GatedSender {
    fn default() -> Self {
        Self {
            sent: std::sync::Mutex::default(),
            entered: tokio::sync::Semaphore::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait]
impl ReceiptSender for GatedSender {
    async fn send(&self, _job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()> {
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("open").forget();
        self.sent.lock().expect("lock").push(receipt.ride_id.0);
        Ok(())
    }
}

/// A send slower than a claim lasts keeps its claim: the worker extends it
/// while the send is in flight, so another worker handed the same job two
/// minutes later (the claim's stale age is one) finds it in progress and
/// sends nothing; the first send is then marked, and the receipt went out
/// once.
#[tokio::test]
async fn a_send_slower_than_a_claim_lasts_keeps_its_claim_and_sends_once() {
    use application::ports::{Clock, ReceiptClaim, Receipts};
    let h = Harness::new().await;
    h.book(&key(0)).await.expect("booked");
    let enqueuer = h.enqueuer();
    assert_eq!(enqueuer.run_batch().await.expect("drained"), 1);
    let sender = Arc::new(GatedSender::default());
    let worker = h.worker(sender.clone());
    let deliveries = worker
        .receive(1, Duration::from_millis(10))
        .await
        .expect("received");
    let (job_id, ride) = (deliveries[0].job.id, deliveries[0].job.job.ride_id);
    let working = tokio::spawn(async move { worker.work_all(deliveries).await });
    sender.entered.acquire().await.expect("open").forget();
    // Two minutes pass while the receipt is being sent, a quarter minute at
    // a time; the worker's extensions run in between.
    for _ in 0..8 {
        h.advance(WorkJobs::CLAIM_EXTEND_EVERY);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        h.store
            .claim_receipt(
                job_id,
                ride.into(),
                h.clock.now(),
                WorkJobs::CLAIM_STALE_AFTER
            )
            .await
            .expect("claim"),
        ReceiptClaim::InProgress,
        "the slow sender still holds the claim"
    );
    sender.gate.add_permits(1);
    let outcomes = working.await.expect("joined").expect("worked");
    assert!(
        matches!(outcomes[..], [WorkOutcome::Sent { .. }]),
        "{outcomes:?}"
    );
    assert!(h.store.receipt_sent(ride.into()).await.expect("read"));
    assert_eq!(*sender.sent.lock().expect("lock"), vec![ride.0]);
}

/// A job naming a ride that does not exist cannot be worked: it is
/// dead-lettered alone (the in-memory queue drops it), and the receipt of
/// the good job delivered with it goes out.
#[tokio::test]
async fn a_job_for_a_missing_ride_is_set_aside_and_the_rest_of_its_batch_is_sent() {
    use domain::StagedJob;
    let h = Harness::new().await;
    h.book(&key(0)).await.expect("booked");
    let good = h.store.staged_jobs(1).await.expect("jobs")[0].clone();
    let mut bad: StagedJob = good.clone();
    bad.id = good.id + 1000;
    bad.job.ride_id = domain::RideId(good.job.ride_id.0 + 1000);
    h.queue.publish(&bad).await.expect("published");
    h.queue.publish(&good).await.expect("published");
    let sender = Arc::new(CountingSender::default());
    let worker = h.worker(sender.clone());
    let deliveries = worker
        .receive(10, Duration::from_millis(10))
        .await
        .expect("received");
    assert_eq!(deliveries.len(), 2);
    let mut outcomes = worker.work_all(deliveries).await.expect("worked");
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(
        outcomes,
        vec![
            WorkOutcome::DeadLettered { job_id: bad.id },
            WorkOutcome::Sent { job_id: good.id },
        ]
    );
    assert_eq!(*sender.sent.lock().expect("lock"), vec![good.job.ride_id.0]);
    assert!(h.queue.is_empty(), "neither comes back");
}
