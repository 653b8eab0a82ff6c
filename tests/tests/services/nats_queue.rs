//! The job queue on NATS JetStream with Postgres (both in testcontainers):
//! crashes between publish and delete, workers dying before their ack, NATS
//! restarting mid-run, and several enqueuers and workers at once. Each time:
//! exactly one receipt per ride, nothing left staged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::clock::{ManualClock, SystemClock};
use adapters::memory::FakeGateway;
use adapters::nats::{NatsQueue, NatsSettings};
use adapters::postgres::PostgresStore;
use application::ports::{Clock, JobQueue, Outbox, ReceiptClaim, ReceiptSender, Receipts};
use application::{
    DrainStagedJobs, PhaseMachine, RideRequest, SeedDemoUsers, WorkJobs, WorkOutcome,
};
use async_trait::async_trait;
use domain::charge::ReceiptJob;
use domain::{IdempotencyKey, RideParams};
use integration_tests::nats::start_nats;

/// Counts receipts per ride.
#[derive(Default)]
struct CountingSender {
    sent: Mutex<Vec<i64>>,
}

impl CountingSender {
    fn per_ride(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for ride in self.sent.lock().expect("lock").iter() {
            *counts.entry(*ride).or_insert(0) += 1;
        }
        counts
    }
}

#[async_trait]
impl ReceiptSender for CountingSender {
    async fn send(&self, _job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()> {
        self.sent.lock().expect("lock").push(receipt.ride_id.0);
        Ok(())
    }
}

/// The queue of `store`'s deployment, as `rocket-rides` wires it.
async fn queue(url: &str, store: &PostgresStore, ack_wait: Duration) -> Arc<NatsQueue> {
    let deployment = store.deployment_id().await.expect("deployment id");
    Arc::new(
        NatsQueue::connect(NatsSettings {
            ack_wait,
            ..NatsSettings::new(url, &deployment)
        })
        .await
        .expect("NATS"),
    )
}

/// An enqueuer on the system clock, claiming `batch` jobs for `claim_for`.
fn enqueuer(
    store: &Arc<PostgresStore>,
    queue: Arc<NatsQueue>,
    batch: usize,
    claim_for: Duration,
) -> DrainStagedJobs {
    DrainStagedJobs::new(
        store.clone(),
        queue,
        Arc::new(SystemClock),
        batch,
        claim_for,
    )
}

/// A Postgres store with `rides` booked rides (and as many staged jobs).
async fn store_with_rides(rides: usize) -> Arc<PostgresStore> {
    let store = integration_tests::postgres::fresh_store().await;
    let gateway = Arc::new(FakeGateway::new());
    let users = SeedDemoUsers::new(store.clone(), gateway.clone())
        .run(None)
        .await
        .expect("seeded");
    let create_ride = PhaseMachine::new(
        store.clone(),
        store.clone(),
        gateway,
        Arc::new(SystemClock),
        integration_tests::ride_settings(),
    );
    for n in 0..rides {
        let answer = create_ride
            .run(RideRequest {
                user: users[0].user.clone(),
                key: IdempotencyKey::parse(&format!("nats-test-key-{n:08}")).expect("valid"),
                params: RideParams::from_numbers([0.0; 4]).expect("valid"),
                request_ip: None,
                request_id: None,
                raise_error: false,
            })
            .await
            .expect("booked");
        assert_eq!(answer.response.status, 201);
    }
    store
}

async fn ride_ids(store: &PostgresStore) -> Vec<i64> {
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT id FROM rides ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("rides");
    rows.into_iter().map(|(id,)| id).collect()
}

/// Works jobs until the queue stays empty for a while.
async fn work_until_idle(worker: &WorkJobs) {
    let mut idle = 0;
    while idle < 2 {
        match worker
            .work_next(Duration::from_secs(1))
            .await
            .expect("worked")
        {
            Some(_) => idle = 0,
            None => idle += 1,
        }
    }
}

fn assert_one_receipt_per_ride(sender: &CountingSender, rides: &[i64]) {
    let per_ride = sender.per_ride();
    assert_eq!(per_ride.len(), rides.len(), "every ride got a receipt");
    for ride in rides {
        assert_eq!(
            per_ride.get(ride),
            Some(&1),
            "ride {ride}: exactly one receipt"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_publish_and_delete_republishes_and_still_sends_one_receipt() {
    let nats = start_nats().await;
    let store = store_with_rides(3).await;
    let queue = queue(&nats.url, &store, Duration::from_secs(30)).await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let claim_for = Duration::from_secs(60);

    // The first enqueuer claims and publishes, then dies before deleting.
    let claimed = store
        .claim_staged_jobs(10, clock.now(), claim_for)
        .await
        .expect("claimed");
    assert_eq!(claimed.len(), 3);
    for job in &claimed {
        queue.publish(job).await.expect("published");
    }
    // Its claim runs out; the next enqueuer publishes the same jobs again.
    let enqueuer = DrainStagedJobs::new(store.clone(), queue.clone(), clock.clone(), 10, claim_for);
    assert_eq!(
        enqueuer.run_batch().await.expect("batch"),
        0,
        "still claimed"
    );
    clock.advance(claim_for + Duration::from_secs(1));
    assert_eq!(enqueuer.run_batch().await.expect("batch"), 3);
    assert!(store.staged_jobs(10).await.expect("jobs").is_empty());

    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    work_until_idle(&worker).await;
    assert_one_receipt_per_ride(&sender, &ride_ids(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_before_acking_gets_the_job_redelivered_and_one_receipt_is_sent() {
    let nats = start_nats().await;
    let store = store_with_rides(2).await;
    let queue = queue(&nats.url, &store, Duration::from_secs(1)).await;
    let drain = enqueuer(&store, queue.clone(), 10, Duration::from_secs(60));
    assert_eq!(drain.run_batch().await.expect("batch"), 2);
    let sender = Arc::new(CountingSender::default());

    // Worker A takes both jobs. The first it dies on before sending; the
    // second it sends and records, and dies before acknowledging.
    let dead_worker = queue.clone();
    let first = dead_worker
        .receive(Duration::from_secs(5))
        .await
        .expect("received")
        .expect("a job");
    let second = dead_worker
        .receive(Duration::from_secs(5))
        .await
        .expect("received")
        .expect("a job");
    let now = SystemClock.now();
    let ReceiptClaim::Claimed(token) = store
        .claim_receipt(
            second.job.id,
            second.job.job.ride_id.into(),
            now,
            WorkJobs::CLAIM_STALE_AFTER,
        )
        .await
        .expect("claim")
    else {
        panic!("claimed");
    };
    sender
        .send(second.job.id, &second.job.job)
        .await
        .expect("sent");
    assert!(
        store
            .mark_receipt_sent(second.job.job.ride_id.into(), token, now)
            .await
            .expect("marked")
    );
    drop((first, second));

    // Worker B, on its own connection, gets both again after the ack wait.
    let other = queue_for_same_consumer(&nats.url, &store).await;
    let worker = WorkJobs::new(store.clone(), other, sender.clone(), Arc::new(SystemClock));
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        if outcomes.len() == 2 {
            break;
        }
        if let Some(outcome) = worker
            .work_next(Duration::from_secs(3))
            .await
            .expect("worked")
        {
            outcomes.push(outcome);
        }
    }
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, WorkOutcome::Sent { .. })),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, WorkOutcome::AlreadySent { .. })),
        "{outcomes:?}"
    );
    work_until_idle(&worker).await;
    assert_one_receipt_per_ride(&sender, &ride_ids(&store).await);
}

async fn queue_for_same_consumer(url: &str, store: &PostgresStore) -> Arc<NatsQueue> {
    queue(url, store, Duration::from_secs(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_run_loses_nothing() {
    let nats = start_nats().await;
    let store = store_with_rides(60).await;
    let queue = queue(&nats.url, &store, Duration::from_secs(5)).await;
    let enqueuer = enqueuer(&store, queue.clone(), 20, Duration::from_secs(1));
    assert_eq!(enqueuer.run_batch().await.expect("first batch"), 20);

    nats.container.stop().await.expect("stopped");
    // While NATS is down the enqueuer fails and keeps its jobs staged.
    let failed = tokio::time::timeout(Duration::from_secs(15), enqueuer.run_batch()).await;
    assert!(
        !matches!(failed, Ok(Ok(n)) if n > 0),
        "nothing can be enqueued while NATS is down"
    );
    nats.container.start().await.expect("restarted");

    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    let mut rounds = 0;
    while !store.staged_jobs(1).await.expect("jobs").is_empty() {
        rounds += 1;
        assert!(rounds < 60, "the enqueuer never recovered");
        if enqueuer.run_batch().await.is_err() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    work_until_idle(&worker).await;
    assert_one_receipt_per_ride(&sender, &ride_ids(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_enqueuers_and_two_workers_send_exactly_one_receipt_per_ride() {
    let nats = start_nats().await;
    let store = store_with_rides(300).await;
    let sender = Arc::new(CountingSender::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let queue = queue(&nats.url, &store, Duration::from_secs(5)).await;
        let enqueuer = enqueuer(&store, queue, 25, Duration::from_secs(60));
        let store = store.clone();
        tasks.spawn(async move {
            while !store.staged_jobs(1).await.expect("jobs").is_empty() {
                enqueuer.run_batch().await.expect("batch");
            }
        });
    }
    let rides = ride_ids(&store).await;
    for _ in 0..2 {
        let queue = queue(&nats.url, &store, Duration::from_secs(5)).await;
        let worker = WorkJobs::new(store.clone(), queue, sender.clone(), Arc::new(SystemClock));
        let (sender, expected) = (sender.clone(), rides.len());
        tasks.spawn(async move {
            for _ in 0..200 {
                if sender.per_ride().len() == expected {
                    break;
                }
                worker
                    .work_next(Duration::from_millis(500))
                    .await
                    .expect("worked");
            }
            work_until_idle(&worker).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    assert!(store.staged_jobs(1).await.expect("jobs").is_empty());
    assert_one_receipt_per_ride(&sender, &rides);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_sharing_one_nats_server_each_get_their_own_jobs() {
    let nats = start_nats().await;
    // Two databases, as after a reset or in a second environment: their
    // staged job ids both start at 1.
    let (first, second) = (store_with_rides(3).await, store_with_rides(3).await);
    let (first_jobs, second_jobs) = (
        first.staged_jobs(10).await.expect("jobs"),
        second.staged_jobs(10).await.expect("jobs"),
    );
    assert_eq!(
        first_jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        second_jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        "the same job ids in both databases"
    );
    assert_ne!(
        first.deployment_id().await.expect("id"),
        second.deployment_id().await.expect("id")
    );
    for store in [&first, &second] {
        let queue = queue(&nats.url, store, Duration::from_secs(5)).await;
        assert_eq!(
            enqueuer(store, queue, 10, Duration::from_secs(60))
                .run_batch()
                .await
                .expect("enqueued"),
            3
        );
    }
    for store in [&first, &second] {
        let sender = Arc::new(CountingSender::default());
        let queue = queue(&nats.url, store, Duration::from_secs(5)).await;
        let worker = WorkJobs::new(store.clone(), queue, sender.clone(), Arc::new(SystemClock));
        work_until_idle(&worker).await;
        // Neither database's jobs were dropped as repeats of the other's,
        // nor worked against the other's rides.
        assert_one_receipt_per_ride(&sender, &ride_ids(store).await);
        assert!(
            store
                .receipt_sent(domain::RideId(3).into())
                .await
                .expect("sent")
        );
    }
}

/// A sender whose mail server is down for good.
struct FailingSender;

#[async_trait]
impl ReceiptSender for FailingSender {
    async fn send(&self, _job_id: i64, _receipt: &ReceiptJob) -> anyhow::Result<()> {
        Err(anyhow::anyhow!("mail server down"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_goes_to_the_dead_letter_stream_and_is_listed() {
    let nats = start_nats().await;
    let store = store_with_rides(1).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let queue = Arc::new(
        NatsQueue::connect(NatsSettings {
            max_deliver: 2,
            ..NatsSettings::new(&nats.url, &deployment)
        })
        .await
        .expect("NATS"),
    );
    enqueuer(&store, queue.clone(), 10, Duration::from_secs(60))
        .run_batch()
        .await
        .expect("enqueued");
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        Arc::new(FailingSender),
        Arc::new(SystemClock),
    );
    let mut failures = 0;
    for _ in 0..10 {
        match worker
            .work_next(Duration::from_secs(3))
            .await
            .expect("worked")
        {
            Some(WorkOutcome::Retrying { .. }) => failures += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(failures, 2, "tried max_deliver times, then buried");
    let dead = queue.dead_jobs(10).await.expect("listed");
    assert_eq!(dead.len(), 1);
    let ride = ride_ids(&store).await[0];
    assert_eq!(dead[0].job.as_ref().expect("a job").job.ride_id.0, ride);
    assert!(
        dead[0].reason.contains("failed 2 times"),
        "{}",
        dead[0].reason
    );
    assert!(
        !store
            .receipt_sent(domain::RideId(ride).into())
            .await
            .expect("read")
    );
    // Once what made it fail is fixed, `dead-jobs --requeue` puts it back
    // (under a new message id: its own is still in the duplicate window).
    let requeued = queue.requeue_dead_jobs(10).await.expect("requeued");
    assert_eq!(requeued.len(), 1);
    assert!(queue.dead_jobs(10).await.expect("listed").is_empty());
    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    let outcome = worker
        .work_next(Duration::from_secs(10))
        .await
        .expect("worked");
    assert!(
        matches!(outcome, Some(WorkOutcome::Sent { .. })),
        "{outcome:?}"
    );
    assert!(
        store
            .receipt_sent(domain::RideId(ride).into())
            .await
            .expect("read")
    );
}

/// One bad job does not break its batch: a job naming a ride that does not
/// exist is dead-lettered alone, with the reason, at once (no redelivery
/// until `NATS_MAX_DELIVER`), and the good job taken with it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_missing_ride_is_dead_lettered_alone_and_its_batch_proceeds() {
    let nats = start_nats().await;
    let store = store_with_rides(1).await;
    let queue = queue(&nats.url, &store, Duration::from_secs(30)).await;
    let good = store.staged_jobs(1).await.expect("jobs")[0].clone();
    let mut bad = good.clone();
    bad.id = good.id + 1000;
    bad.job.ride_id = domain::RideId(good.job.ride_id.0 + 1000);
    queue.publish(&bad).await.expect("published");
    queue.publish(&good).await.expect("published");
    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    let mut deliveries = Vec::new();
    while deliveries.len() < 2 {
        let more = worker
            .receive(10, Duration::from_secs(5))
            .await
            .expect("received");
        assert!(!more.is_empty(), "both jobs delivered");
        deliveries.extend(more);
    }
    let outcomes = worker.work_all(deliveries).await.expect("worked");
    assert!(
        outcomes.contains(&WorkOutcome::DeadLettered { job_id: bad.id })
            && outcomes.contains(&WorkOutcome::Sent { job_id: good.id }),
        "{outcomes:?}"
    );
    assert_eq!(*sender.sent.lock().expect("lock"), vec![good.job.ride_id.0]);
    let dead = queue.dead_jobs(10).await.expect("listed");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.as_ref().expect("a job").id, bad.id);
    assert!(
        dead[0].reason.contains("does not exist"),
        "{}",
        dead[0].reason
    );
}

/// A message in the dead letters that is not a job breaks nothing: it is
/// listed as such with its bytes, beside the readable ones; a requeue
/// leaves it; `dead-jobs --delete` (and the console's button) remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_dead_letter_is_listed_as_such_and_can_be_deleted() {
    use application::ports::DeadLetters;
    let nats = start_nats().await;
    let store = store_with_rides(1).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let settings = NatsSettings::new(&nats.url, &deployment);
    let queue = Arc::new(NatsQueue::connect(settings.clone()).await.expect("NATS"));
    // A forger with the credentials (the client library takes them from
    // options, not from the URL).
    let jetstream = integration_tests::nats::jetstream_as_user(&settings.url).await;
    jetstream
        .publish(
            settings.dead_letter_subject.clone(),
            b"\xffnot {json".to_vec().into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
    let good = store.staged_jobs(1).await.expect("jobs")[0].clone();
    let mut bad = good.clone();
    bad.id = good.id + 1000;
    bad.job.ride_id = domain::RideId(good.job.ride_id.0 + 1000);
    queue.publish(&bad).await.expect("published");
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        Arc::new(CountingSender::default()),
        Arc::new(SystemClock),
    );
    work_until_idle(&worker).await;
    let dead = DeadLetters::dead_jobs(queue.as_ref(), 10)
        .await
        .expect("listed despite the unreadable one");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let unreadable = &dead[0];
    assert_eq!(unreadable.job, None);
    assert_eq!(unreadable.payload, "\\xffnot {json");
    assert_eq!(dead[1].job.as_ref().map(|job| job.id), Some(bad.id));
    let requeued = DeadLetters::requeue_dead_jobs(queue.as_ref(), 10)
        .await
        .expect("requeued");
    assert_eq!(requeued.len(), 1, "only the job");
    let left = DeadLetters::dead_jobs(queue.as_ref(), 10)
        .await
        .expect("listed");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence, unreadable.sequence);
    assert!(
        DeadLetters::delete_dead_job(queue.as_ref(), unreadable.sequence)
            .await
            .expect("deleted")
    );
    assert!(
        DeadLetters::dead_jobs(queue.as_ref(), 10)
            .await
            .expect("listed")
            .is_empty()
    );
}

/// A NATS server that requires a token admits the queue given it in the
/// URL (`nats://TOKEN@host`) or in `NATS_TOKEN` (the settings' `auth`),
/// refuses one without it at once as a configuration error, and neither
/// error nor settings show the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_a_token_admits_the_url_or_setting_that_carries_it() {
    use adapters::nats::NatsAuth;
    let token = "t0ken-s3cret-for-nats";
    let nats = integration_tests::nats::start_nats_with_token(token).await;
    let store = store_with_rides(1).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let in_url = NatsSettings::new(
        nats.url.replace("nats://", &format!("nats://{token}@")),
        &deployment,
    );
    let in_setting = NatsSettings {
        auth: NatsAuth::Token(token.to_owned()),
        ..NatsSettings::new(&nats.url, &deployment)
    };
    for settings in [in_url, in_setting] {
        assert!(!format!("{settings:?}").contains(token));
        let queue = Arc::new(NatsQueue::connect(settings).await.expect("admitted"));
        queue
            .publish(&store.staged_jobs(1).await.expect("jobs")[0])
            .await
            .expect("published");
    }
    let Err(error) = NatsQueue::connect(NatsSettings::new(&nats.url, &deployment)).await else {
        panic!("admitted without the token");
    };
    assert!(!error.is_transient(), "a configuration error: {error}");
    let wrong = nats.url.replace("nats://", "nats://not-the-token@");
    let Err(error) = NatsQueue::connect(NatsSettings::new(&wrong, &deployment)).await else {
        panic!("admitted with a wrong token");
    };
    assert!(!error.to_string().contains("not-the-token"), "{error}");
}

/// A NATS server that requires credentials admits the queue whose URL
/// carries them (the client library does not read them from a URL by
/// itself), refuses one without them at once as a configuration error,
/// and neither error nor settings show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_a_user_and_password_admits_the_url_that_carries_them() {
    let nats = integration_tests::nats::start_nats_with_user("rides", "s3cret-p4ss");
    let nats = nats.await;
    let store = store_with_rides(1).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let with = nats.url.replace("nats://", "nats://rides:s3cret-p4ss@");
    let settings = NatsSettings::new(&with, &deployment);
    assert!(!format!("{settings:?}").contains("s3cret"));
    let queue = Arc::new(NatsQueue::connect(settings).await.expect("admitted"));
    enqueuer(&store, queue.clone(), 10, Duration::from_secs(60))
        .run_batch()
        .await
        .expect("enqueued");
    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(
        store.clone(),
        queue.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    work_until_idle(&worker).await;
    assert_eq!(sender.sent.lock().expect("lock").len(), 1);
    let refused = NatsQueue::connect(NatsSettings::new(&nats.url, &deployment)).await;
    let Err(error) = refused else {
        panic!("admitted without credentials");
    };
    assert!(!error.is_transient(), "a configuration error: {error}");
    let wrong = nats.url.replace("nats://", "nats://rides:wrong@");
    let Err(error) = NatsQueue::connect(NatsSettings::new(&wrong, &deployment)).await else {
        panic!("admitted with a wrong password");
    };
    assert!(!error.to_string().contains("wrong"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_in_operator_mode_admits_a_credentials_file_and_a_bad_one_is_named_not_shown() {
    use adapters::nats::NatsAuth;
    let nats = integration_tests::nats::start_nats_with_credentials().await;
    let store = store_with_rides(1).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let dir = std::env::temp_dir().join(format!("rr-creds-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let creds = dir.join("user.creds");
    std::fs::write(&creds, &nats.credentials).expect("written");
    let settings = NatsSettings {
        auth: NatsAuth::CredentialsFile(creds.clone()),
        ..NatsSettings::new(&nats.server.url, &deployment)
    };
    let seed = nats
        .credentials
        .lines()
        .find(|line| line.starts_with("SU"))
        .expect("a user seed")
        .to_owned();
    assert!(!format!("{settings:?}").contains(&seed));
    let queue = Arc::new(NatsQueue::connect(settings).await.expect("admitted"));
    enqueuer(&store, queue.clone(), 10, Duration::from_secs(60))
        .run_batch()
        .await
        .expect("enqueued");
    let sender = Arc::new(CountingSender::default());
    let worker = WorkJobs::new(store.clone(), queue, sender.clone(), Arc::new(SystemClock));
    work_until_idle(&worker).await;
    assert_eq!(
        sender.sent.lock().expect("lock").len(),
        1,
        "JetStream works for the user"
    );

    // Without credentials: refused, a configuration error.
    let Err(error) = NatsQueue::connect(NatsSettings::new(&nats.server.url, &deployment)).await
    else {
        panic!("admitted without credentials");
    };
    assert!(!error.is_transient(), "a configuration error: {error}");
    // A file that is not credentials, and one that is missing: refused at
    // once, naming the file, never showing what it holds.
    let garbled = dir.join("garbled.creds");
    std::fs::write(&garbled, format!("not a creds file {seed}")).expect("written");
    for path in [garbled, dir.join("missing.creds")] {
        let settings = NatsSettings {
            auth: NatsAuth::CredentialsFile(path.clone()),
            ..NatsSettings::new(&nats.server.url, &deployment)
        };
        let Err(error) = NatsQueue::connect(settings).await else {
            panic!("admitted with {}", path.display());
        };
        let text = format!("{error:#}");
        assert!(!error.is_transient(), "{text}");
        assert!(text.contains("NATS_CREDS"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!text.contains(&seed), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Settings changed between two starts reach the streams and the consumer
/// that already exist (before, an existing stream kept its old
/// `duplicate_window` and the consumer its old `ack_wait`, silently); a
/// change NATS refuses stops the start with what differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_stream_and_consumer_settings_are_applied_to_existing_ones_or_refused() {
    let nats = start_nats().await;
    let store = store_with_rides(0).await;
    let deployment = store.deployment_id().await.expect("deployment id");
    let first = NatsSettings {
        duplicate_window: Duration::from_secs(120),
        ack_wait: Duration::from_secs(30),
        ..NatsSettings::new(&nats.url, &deployment)
    };
    NatsQueue::connect(first.clone()).await.expect("created");
    let changed = NatsSettings {
        duplicate_window: Duration::from_secs(3600),
        ack_wait: Duration::from_secs(75),
        ..first.clone()
    };
    NatsQueue::connect(changed.clone()).await.expect("updated");
    let jetstream = integration_tests::nats::jetstream_as_user(&first.url).await;
    let mut stream = jetstream.get_stream(&first.stream).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").config.duplicate_window,
        Duration::from_secs(3600)
    );
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&first.consumer)
        .await
        .expect("consumer");
    assert_eq!(
        consumer.info().await.expect("info").config.ack_wait,
        Duration::from_secs(75)
    );
    // A stream of that name made by hand with another retention: NATS
    // will not turn it into a work queue, and the start says so.
    let other = NatsSettings::new(&nats.url, &format!("{deployment}-other"));
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: other.stream.clone(),
            subjects: vec![other.subject.clone()],
            ..Default::default()
        })
        .await
        .expect("made by hand");
    let Err(error) = NatsQueue::connect(other).await else {
        panic!("a stream of another retention was taken as the jobs stream");
    };
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("retention Limits -> WorkQueue") && message.contains("refused"),
        "{message}"
    );
}
