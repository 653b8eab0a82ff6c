//! The harness of the use-case tests: the in-memory adapters, a manual clock
//! and the demo users, with one method per thing a test does.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use adapters::clock::ManualClock;
use adapters::memory::{FakeGateway, MemoryQueue, MemoryStore};
use application::ports::{Clock, Outbox, PaymentGateway, ReceiptSender};
use application::{
    Answer, CompleteStalledKeys, DrainStagedJobs, PhaseError, PhaseMachine, PhaseSettings,
    RideRequest, SeedDemoUsers, WorkJobs,
};
use domain::{CompleterPolicy, IdempotencyKey, LockPolicy, ReviewPolicy, RideParams, User};

pub const LOCK_TIMEOUT: Duration = Duration::from_secs(90);
pub const REVIEW_WINDOW: Duration = Duration::from_secs(24 * 3600);

pub fn settings() -> PhaseSettings {
    PhaseSettings {
        lock: LockPolicy {
            lock_timeout: LOCK_TIMEOUT,
        },
        review: ReviewPolicy {
            review_after: REVIEW_WINDOW,
        },
        cancel: domain::CancelPolicy::DEFAULT,
    }
}

pub fn completer_policy() -> CompleterPolicy {
    CompleterPolicy {
        min_age: Duration::from_secs(300),
        min_idle: Duration::from_secs(60),
        lock: LockPolicy {
            lock_timeout: LOCK_TIMEOUT,
        },
        review: settings().review,
    }
}

pub struct Harness {
    pub store: Arc<MemoryStore>,
    pub gateway: Arc<FakeGateway>,
    pub queue: Arc<MemoryQueue>,
    pub clock: Arc<ManualClock>,
    pub create_ride: Arc<PhaseMachine>,
    pub good_user: User,
    pub declined_user: User,
    /// Pays with `pm_card_authenticationRequired`.
    pub three_ds_user: User,
    pub cardless_user: User,
}

impl Harness {
    /// A harness whose fake notes what it makes by the harness's clock.
    pub async fn new() -> Self {
        let clock = Arc::new(ManualClock::at_epoch_plus(0));
        let fake = FakeGateway::new().timed_by(clock.clone());
        Self::with_clock(Arc::new(fake), None, clock).await
    }

    /// A harness whose rides are charged through `charging`, while the
    /// demo users' customers are still created on the fake.
    pub async fn with_gateway(
        fake: Arc<FakeGateway>,
        charging: Option<Arc<dyn PaymentGateway>>,
    ) -> Self {
        Self::with_clock(fake, charging, Arc::new(ManualClock::at_epoch_plus(0))).await
    }

    async fn with_clock(
        fake: Arc<FakeGateway>,
        charging: Option<Arc<dyn PaymentGateway>>,
        clock: Arc<ManualClock>,
    ) -> Self {
        let store = Arc::new(MemoryStore::new());
        let seeded = SeedDemoUsers::new(store.clone(), fake.clone())
            .run(None)
            .await
            .expect("seeding works");
        let gateway: Arc<dyn PaymentGateway> = charging.unwrap_or_else(|| fake.clone());
        let create_ride = Arc::new(PhaseMachine::new(
            store.clone(),
            store.clone(),
            gateway,
            clock.clone(),
            settings(),
        ));
        Self {
            store,
            gateway: fake,
            queue: Arc::new(MemoryQueue::default()),
            clock,
            create_ride,
            good_user: seeded[0].user.clone(),
            declined_user: seeded[1].user.clone(),
            three_ds_user: seeded[2].user.clone(),
            cardless_user: seeded[3].user.clone(),
        }
    }

    /// A harness whose gateway charges but never answers definitively: every
    /// charge ends unknown, and the key stays at `ride_created`.
    pub async fn losing_every_answer() -> Self {
        let unknown = adapters::memory::FakeGatewayFaults {
            unknown_rate: 1.0,
            latency: Duration::ZERO,
        };
        Self::with_gateway(
            Arc::new(FakeGateway::new()),
            Some(Arc::new(FakeGateway::with_faults(unknown))),
        )
        .await
    }

    pub fn request(&self, user: &User, key: &str) -> RideRequest {
        RideRequest {
            user: user.clone(),
            key: IdempotencyKey::parse(key).expect("test keys are valid"),
            params: RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid"),
            request_ip: Some("203.0.113.9".to_owned()),
            request_id: None,
            raise_error: false,
        }
    }

    pub async fn book(&self, key: &str) -> Result<Answer, PhaseError> {
        self.create_ride
            .run(self.request(&self.good_user, key))
            .await
    }

    pub fn completer(&self) -> CompleteStalledKeys {
        self.completer_with_batch(1000)
    }

    pub fn completer_with_batch(&self, batch_size: usize) -> CompleteStalledKeys {
        CompleteStalledKeys::new(
            self.store.clone(),
            self.create_ride.clone(),
            self.clock.clone() as Arc<dyn Clock>,
            completer_policy(),
            batch_size,
        )
    }

    /// An enqueuer over this harness's store and queue: batches of 1000,
    /// claims of 60 s.
    pub fn enqueuer(&self) -> DrainStagedJobs {
        DrainStagedJobs::new(
            self.store.clone(),
            self.queue.clone(),
            self.clock.clone(),
            1000,
            Duration::from_secs(60),
        )
    }

    /// A worker over this harness's store and queue, sending through `sender`.
    pub fn worker(&self, sender: Arc<dyn ReceiptSender>) -> WorkJobs {
        WorkJobs::new(
            self.store.clone(),
            self.queue.clone(),
            sender,
            self.clock.clone(),
        )
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn staged_job_count(&self) -> usize {
        self.store.staged_jobs(10_000).await.expect("jobs").len()
    }
}

/// A review resolution of the other kind of key (a charge for a cancel, a
/// refund for a booking), refused by the phase machine before any write.
pub fn assert_refused_as_the_other_kind(error: &application::PhaseError) {
    assert!(
        matches!(
            error,
            application::PhaseError::Store(application::ports::StoreError::Inconsistent(why))
                if why.contains("cannot be settled as")
        ),
        "refused before any write: {error:?}"
    );
}

pub fn key(n: usize) -> String {
    format!("test-key-{n:020}")
}
