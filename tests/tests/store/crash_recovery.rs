//! Requests whose process dies between or inside phases: the task is aborted
//! (with it, any open transaction and pooled connection), and a retry or the
//! completer finishes the request with exactly one charge. Runs on memory
//! and on Postgres; time is a manual clock, moved past the lock timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::clock::ManualClock;
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryStore};
use application::ports::{
    Finish, KeyPhase, KeyRequest, Keys, Lease, PaymentGateway, Store, StoreError,
};
use application::{
    CompleteStalledKeys, PhaseError, PhaseMachine, PhaseSettings, RideRequest, SeedDemoUsers,
};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, CompleterPolicy, IdempotencyKey, KeyId, KeyRecord, LockPolicy,
    RecoveryPoint, ReviewPolicy, Ride, RideId, RideParams, User,
};
use integration_tests::{Backend, Inspect, on_every_backend};
use std::time::SystemTime;

const LOCK_TIMEOUT: Duration = Duration::from_secs(90);

/// Charges through the fake, then never answers: the process "dies" while
/// waiting on Stripe, after Stripe made the charge.
struct DiesAfterCharging(Arc<FakeGateway>);

#[async_trait]
impl PaymentGateway for DiesAfterCharging {
    async fn create_customer(
        &self,
        email: &str,
        card: domain::TestCard,
    ) -> Result<application::ports::SavedCustomer, application::ports::GatewayError> {
        self.0.create_customer(email, card).await
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        self.0.charge(request).await;
        std::future::pending().await
    }
}

struct World {
    store: Arc<dyn Store>,
    inspect: Arc<dyn Inspect>,
    gateway: Arc<FakeGateway>,
    clock: Arc<ManualClock>,
    rider: User,
}

fn settings() -> PhaseSettings {
    integration_tests::ride_settings()
}

impl World {
    async fn new(backend: Backend) -> Self {
        let (store, inspect): (Arc<dyn Store>, Arc<dyn Inspect>) = match backend {
            Backend::Memory => {
                let store = Arc::new(MemoryStore::new());
                (store.clone(), store)
            }
            Backend::Postgres => {
                let store = integration_tests::postgres::fresh_store().await;
                (store.clone(), store)
            }
        };
        let gateway = Arc::new(FakeGateway::new());
        let users = SeedDemoUsers::new(store.clone(), gateway.clone())
            .run(None)
            .await
            .expect("seeded");
        Self {
            store,
            inspect,
            gateway,
            clock: Arc::new(ManualClock::at_epoch_plus(0)),
            rider: users[0].user.clone(),
        }
    }

    fn create_ride(&self, gateway: Arc<dyn PaymentGateway>) -> Arc<PhaseMachine> {
        Arc::new(PhaseMachine::new(
            self.store.clone(),
            self.store.clone(),
            gateway,
            self.clock.clone(),
            settings(),
        ))
    }

    fn healthy(&self) -> Arc<PhaseMachine> {
        self.create_ride(self.gateway.clone())
    }

    /// A completer at the default ages (300 s old, 60 s idle) on the
    /// healthy gateway.
    fn completer(&self) -> CompleteStalledKeys {
        CompleteStalledKeys::new(
            self.store.clone(),
            self.healthy(),
            self.clock.clone(),
            CompleterPolicy {
                min_age: Duration::from_secs(300),
                min_idle: Duration::from_secs(60),
                lock: LockPolicy {
                    lock_timeout: LOCK_TIMEOUT,
                },
                review: integration_tests::ride_settings().review,
            },
            1000,
        )
    }

    fn request(&self, n: usize) -> RideRequest {
        RideRequest {
            user: self.rider.clone(),
            key: IdempotencyKey::parse(&format!("crash-test-key-{n:08}")).expect("valid"),
            params: RideParams::from_numbers([n as f64 / 1000.0, 0.0, 0.0, 0.0]).expect("valid"),
            request_ip: None,
            request_id: None,
            raise_error: false,
        }
    }

    /// Starts a request that dies once Stripe has charged, and kills it.
    async fn die_after_charging(&self, n: usize) {
        let dying = self.create_ride(Arc::new(DiesAfterCharging(self.gateway.clone())));
        let calls_before = self.gateway.charge_calls();
        let request = self.request(n);
        let task = tokio::spawn(async move { dying.run(request).await });
        for _ in 0..500 {
            if self.gateway.charge_calls() > calls_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            self.gateway.charge_calls() > calls_before,
            "Stripe was called"
        );
        task.abort();
        let _ = task.await;
    }

    fn charges_per_downstream_key(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for charge in self.gateway.charges() {
            *counts.entry(charge.idempotency_key).or_insert(0) += 1;
        }
        counts
    }
}

async fn a_request_that_died_after_stripe_charged_is_resumed_by_a_retry_and_charged_once(
    backend: Backend,
) {
    let world = World::new(backend).await;
    world.die_after_charging(1).await;
    assert_eq!(world.gateway.charges().len(), 1);

    let retry = world.healthy();
    let error = retry.run(world.request(1)).await.unwrap_err();
    assert!(
        matches!(error, PhaseError::InFlight { .. }),
        "the dead request's lock still holds: {error:?}"
    );

    world.clock.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let answer = retry.run(world.request(1)).await.expect("resumed");
    assert_eq!(answer.response.status, 201);
    let charges = world.gateway.charges();
    assert_eq!(charges.len(), 1, "charged once");
    assert!(answer.response.body.contains(&charges[0].id));
    assert_eq!(world.inspect.ride_count().await, 1);
    assert_eq!(world.store.staged_jobs(10).await.expect("jobs").len(), 1);
}

async fn a_request_that_died_after_stripe_charged_is_finished_by_the_completer_and_charged_once(
    backend: Backend,
) {
    let world = World::new(backend).await;
    world.die_after_charging(1).await;
    let completer = world.completer();
    world.clock.advance(Duration::from_secs(299));
    assert_eq!(
        completer.run_batch().await.expect("batch").picked,
        0,
        "too young"
    );
    world.clock.advance(Duration::from_secs(2));
    let report = completer.run_batch().await.expect("batch");
    assert_eq!((report.picked, report.finished), (1, 1));
    assert_eq!(world.gateway.charges().len(), 1, "charged once");

    let replay = world
        .healthy()
        .run(world.request(1))
        .await
        .expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response.status, 201);
    assert!(
        replay
            .response
            .body
            .contains(&world.gateway.charges()[0].id)
    );
}

async fn requests_killed_at_random_points_are_all_finished_by_retries_with_one_charge_each(
    backend: Backend,
) {
    let world = World::new(backend).await;
    // Stripe takes a few milliseconds, so a cut can land while it is called
    // (the in-memory store alone never waits, so cuts could only land there).
    let slow_stripe = Arc::new(FakeGateway::with_faults(FakeGatewayFaults {
        unknown_rate: 0.0,
        latency: Duration::from_millis(3),
    }));
    let world = World {
        gateway: slow_stripe,
        ..world
    };
    let create_ride = world.healthy();
    const REQUESTS: usize = 40;
    let mut killed = 0;
    for n in 0..REQUESTS {
        // Cut the request off after a random few milliseconds: before, inside
        // or after any phase, transactions and connections included.
        let spread = match backend {
            Backend::Memory => 6_000,
            Backend::Postgres => 40_000,
        };
        let budget = Duration::from_micros(fastrand_like(n) % spread);
        let run = create_ride.run(world.request(n));
        if tokio::time::timeout(budget, run).await.is_err() {
            killed += 1;
        }
    }
    world.clock.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    for n in 0..REQUESTS {
        let answer = create_ride
            .run(world.request(n))
            .await
            .expect("finished by a retry");
        assert_eq!(answer.response.status, 201, "key {n}");
    }
    assert_eq!(
        world.inspect.ride_count().await,
        REQUESTS,
        "one ride per key"
    );
    let per_key = world.charges_per_downstream_key();
    assert_eq!(per_key.len(), REQUESTS, "every key charged");
    assert!(
        per_key.values().all(|&count| count == 1),
        "once each: {per_key:?}"
    );
    assert_eq!(
        world.store.staged_jobs(1000).await.expect("jobs").len(),
        REQUESTS,
        "one receipt job per 201"
    );
    // Not an assertion on timing, only that the test exercised what it says.
    eprintln!("{killed} of {REQUESTS} requests were killed mid-flight");
}

/// A deterministic spread of budgets without a random-number crate.
fn fastrand_like(n: usize) -> u64 {
    (n as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        ^ 0x5bd1_e995
}

async fn a_key_is_left_at_its_recovery_point_when_killed_between_phases(backend: Backend) {
    let world = World::new(backend).await;
    world.die_after_charging(7).await;
    let phase = world
        .store
        .begin_request(
            &application::ports::KeyRequest {
                user_id: world.rider.id,
                key: world.request(7).key,
                fingerprint: world.request(7).fingerprint(),
                action: domain::KeyAction::BookRide(world.request(7).params),
                request_ip: None,
                request_id: None,
                charges_now: true,
            },
            world.clock.now_plus(LOCK_TIMEOUT + Duration::from_secs(1)),
            settings().lock,
        )
        .await
        .expect("key phase");
    match phase {
        application::ports::KeyPhase::Locked(record) => {
            assert_eq!(record.recovery_point(), RecoveryPoint::RideCreated);
            assert!(record.unrecorded_charge_attempt().is_some());
        }
        other => panic!("expected to take over the key, got {other:?}"),
    }
}

trait NowPlus {
    fn now_plus(&self, by: Duration) -> std::time::SystemTime;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, by: Duration) -> std::time::SystemTime {
        application::ports::Clock::now(self) + by
    }
}

/// Where a process dies: right after one of the request's writes commits,
/// or just before the write that follows the charge, once Stripe charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// The key, its ride and its charge attempt are in; Stripe not called.
    AfterKeyPhase,
    /// Stripe charged; the booking that records it never commits.
    BeforeBooking,
    /// Booked; the client never heard.
    AfterBooking,
}

impl KillPoint {
    const ALL: [KillPoint; 3] = [
        KillPoint::AfterKeyPhase,
        KillPoint::BeforeBooking,
        KillPoint::AfterBooking,
    ];

    /// Where the key must be found after the kill.
    fn recovery_point(self) -> RecoveryPoint {
        match self {
            KillPoint::AfterKeyPhase | KillPoint::BeforeBooking => RecoveryPoint::RideCreated,
            KillPoint::AfterBooking => RecoveryPoint::Finished,
        }
    }

    /// Whether Stripe holds a charge for the key when the process dies.
    fn charged(self) -> bool {
        self != KillPoint::AfterKeyPhase
    }
}

/// The keys of a store whose process dies at `point`. `died` says when.
struct DyingStore {
    inner: Arc<dyn Store>,
    point: KillPoint,
    died: Arc<tokio::sync::Semaphore>,
}

impl DyingStore {
    async fn maybe_die(&self, here: KillPoint) {
        if here == self.point {
            self.died.add_permits(1);
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Keys for DyingStore {
    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let phase = self.inner.begin_request(request, now, policy).await?;
        self.maybe_die(KillPoint::AfterKeyPhase).await;
        Ok(phase)
    }

    async fn lock_for_completion(
        &self,
        key_id: KeyId,
        now: SystemTime,
        policy: CompleterPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.lock_for_completion(key_id, now, policy).await
    }

    async fn lock_for_review(
        &self,
        key_id: KeyId,
        now: SystemTime,
        review: ReviewPolicy,
        lock: LockPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.lock_for_review(key_id, now, review, lock).await
    }

    async fn create_ride(&self, lease: Lease, now: SystemTime) -> Result<KeyRecord, StoreError> {
        self.inner.create_ride(lease, now).await
    }

    async fn note_charge_attempt(&self, lease: Lease, now: SystemTime) -> Result<(), StoreError> {
        self.inner.note_charge_attempt(lease, now).await
    }

    async fn record_cancellation(
        &self,
        lease: Lease,
        policy: domain::CancelPolicy,
        now: SystemTime,
    ) -> Result<application::ports::CancelRecording, StoreError> {
        self.inner.record_cancellation(lease, policy, now).await
    }

    async fn find_cancellation(
        &self,
        ride_id: RideId,
    ) -> Result<Option<domain::Cancellation>, StoreError> {
        self.inner.find_cancellation(ride_id).await
    }

    async fn record_refund(
        &self,
        lease: Lease,
        refund: Option<domain::RefundRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner.record_refund(lease, refund, now).await
    }

    async fn finish(
        &self,
        lease: Lease,
        finish: Finish,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.maybe_die(KillPoint::BeforeBooking).await;
        self.inner.finish(lease, finish, now).await?;
        self.maybe_die(KillPoint::AfterBooking).await;
        Ok(())
    }

    async fn unlock(&self, lease: Lease) -> Result<(), StoreError> {
        self.inner.unlock(lease).await
    }

    async fn find_ride(&self, id: RideId) -> Result<Option<Ride>, StoreError> {
        self.inner.find_ride(id).await
    }
}

impl World {
    /// Runs request `n` on a store that dies at `point`, and kills it there.
    async fn die_at(&self, n: usize, point: KillPoint) {
        let died = Arc::new(tokio::sync::Semaphore::new(0));
        let dying = Arc::new(PhaseMachine::new(
            Arc::new(DyingStore {
                inner: self.store.clone(),
                point,
                died: died.clone(),
            }),
            self.store.clone(),
            self.gateway.clone(),
            self.clock.clone(),
            settings(),
        ));
        let request = self.request(n);
        let task = tokio::spawn(async move { dying.run(request).await });
        tokio::time::timeout(Duration::from_secs(30), died.acquire())
            .await
            .expect("the request reached its kill point")
            .expect("open")
            .forget();
        task.abort();
        let _ = task.await;
    }

    async fn recovery_point_of(&self, n: usize) -> RecoveryPoint {
        let key = self.request(n).key.to_string();
        self.inspect
            .recovery_points()
            .await
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, point)| point)
            .expect("the key exists")
    }
}

/// A request killed right after each of its commits, in turn: the kill is
/// seen at the recovery point it left, and a retry (after the lock timeout)
/// finishes every one with exactly one charge, one ride and one receipt job.
async fn a_request_killed_after_each_commit_is_finished_by_a_retry_with_one_charge(
    backend: Backend,
) {
    let world = World::new(backend).await;
    for (n, point) in KillPoint::ALL.into_iter().enumerate() {
        world.die_at(n, point).await;
        assert_eq!(
            world.recovery_point_of(n).await,
            point.recovery_point(),
            "killed {point:?}"
        );
    }
    assert_eq!(
        world.gateway.charges().len(),
        KillPoint::ALL
            .iter()
            .filter(|point| point.charged())
            .count(),
        "each kill landed on its side of the charge"
    );
    world.clock.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let retry = world.healthy();
    for (n, point) in KillPoint::ALL.into_iter().enumerate() {
        let answer = retry.run(world.request(n)).await.expect("finished");
        assert_eq!(answer.response.status, 201, "{point:?}");
        assert_eq!(
            answer.replayed,
            point == KillPoint::AfterBooking,
            "{point:?}"
        );
    }
    let per_key = world.charges_per_downstream_key();
    assert_eq!(per_key.len(), KillPoint::ALL.len(), "every key charged");
    assert!(per_key.values().all(|&n| n == 1), "once each: {per_key:?}");
    assert_eq!(world.inspect.ride_count().await, KillPoint::ALL.len());
    assert_eq!(
        world.store.staged_jobs(100).await.expect("jobs").len(),
        KillPoint::ALL.len(),
        "one receipt job per 201"
    );
}

/// The same kills, finished by the completer instead of a client.
async fn a_request_killed_after_each_commit_is_finished_by_the_completer_with_one_charge(
    backend: Backend,
) {
    let world = World::new(backend).await;
    for (n, point) in KillPoint::ALL.into_iter().enumerate() {
        world.die_at(n, point).await;
    }
    let completer = world.completer();
    world.clock.advance(Duration::from_secs(301));
    let report = completer.run_batch().await.expect("batch");
    let unfinished = KillPoint::ALL.len() - 1; // the one killed after finishing needs nothing
    assert_eq!(
        (report.picked, report.finished),
        (unfinished, unfinished),
        "{report:?}"
    );
    let per_key = world.charges_per_downstream_key();
    assert_eq!(per_key.len(), KillPoint::ALL.len());
    assert!(per_key.values().all(|&n| n == 1), "once each: {per_key:?}");
    for (n, point) in KillPoint::ALL.into_iter().enumerate() {
        assert_eq!(
            world.recovery_point_of(n).await,
            RecoveryPoint::Finished,
            "{point:?}"
        );
    }
}

on_every_backend!(
    a_request_killed_after_each_commit_is_finished_by_a_retry_with_one_charge,
    a_request_killed_after_each_commit_is_finished_by_the_completer_with_one_charge,
    a_request_that_died_after_stripe_charged_is_resumed_by_a_retry_and_charged_once,
    a_request_that_died_after_stripe_charged_is_finished_by_the_completer_and_charged_once,
    requests_killed_at_random_points_are_all_finished_by_retries_with_one_charge_each,
    a_key_is_left_at_its_recovery_point_when_killed_between_phases,
);
