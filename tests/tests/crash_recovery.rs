//! Requests whose process dies between or inside phases: the task is aborted
//! (with it, any open transaction and pooled connection), and a retry or the
//! completer finishes the request with exactly one charge. Runs on memory
//! and on Postgres; time is a manual clock, moved past the lock timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::clock::ManualClock;
use adapters::memory::{FakeGateway, FakeGatewayFaults, MemoryStore};
use application::ports::{PaymentGateway, Store};
use application::{
    CompleteStalledKeys, CreateRide, CreateRideError, CreateRideSettings, RideRequest,
    SeedDemoUsers,
};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, CompleterPolicy, IdempotencyKey, LockPolicy, RecoveryPoint,
    RideParams, User,
};
use integration_tests::{Backend, Inspect, on_every_backend};

const LOCK_TIMEOUT: Duration = Duration::from_secs(90);

/// Charges through the fake, then never answers: the process "dies" while
/// waiting on Stripe, after Stripe made the charge.
struct DiesAfterCharging(Arc<FakeGateway>);

#[async_trait]
impl PaymentGateway for DiesAfterCharging {
    async fn create_customer(
        &self,
        email: &str,
        source: &str,
    ) -> Result<String, application::ports::GatewayError> {
        self.0.create_customer(email, source).await
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

fn settings() -> CreateRideSettings {
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

    fn create_ride(&self, gateway: Arc<dyn PaymentGateway>) -> Arc<CreateRide> {
        Arc::new(CreateRide::new(
            self.store.clone(),
            gateway,
            self.clock.clone(),
            settings(),
        ))
    }

    fn healthy(&self) -> Arc<CreateRide> {
        self.create_ride(self.gateway.clone())
    }

    fn request(&self, n: usize) -> RideRequest {
        RideRequest {
            user: self.rider.clone(),
            key: IdempotencyKey::parse(&format!("crash-test-key-{n:08}")).expect("valid"),
            params: RideParams::from_numbers([n as f64 / 1000.0, 0.0, 0.0, 0.0]).expect("valid"),
            request_ip: None,
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
        matches!(error, CreateRideError::InFlight { .. }),
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
    let completer = CompleteStalledKeys::new(
        world.store.clone(),
        world.healthy(),
        world.clock.clone(),
        CompleterPolicy {
            min_age: Duration::from_secs(300),
            min_idle: Duration::from_secs(60),
            lock: LockPolicy {
                lock_timeout: LOCK_TIMEOUT,
            },
            review: integration_tests::ride_settings().review,
        },
        1000,
    );
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
                params: world.request(7).params,
                request_ip: None,
            },
            world.clock.now_plus(LOCK_TIMEOUT + Duration::from_secs(1)),
            settings().lock,
        )
        .await
        .expect("key phase");
    match phase {
        application::ports::KeyPhase::Locked(record) => {
            assert_eq!(record.recovery_point, RecoveryPoint::RideCreated);
            assert!(record.charge_attempted_at.is_some());
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

on_every_backend!(
    a_request_that_died_after_stripe_charged_is_resumed_by_a_retry_and_charged_once,
    a_request_that_died_after_stripe_charged_is_finished_by_the_completer_and_charged_once,
    requests_killed_at_random_points_are_all_finished_by_retries_with_one_charge_each,
    a_key_is_left_at_its_recovery_point_when_killed_between_phases,
);
