//! The phase machine on the in-memory adapters with a manual clock: every
//! row of SPEC.md's table the use case decides, and resuming from each
//! recovery point. No sleeps: lock timeouts are crossed by moving the clock.

use crate::support;

use application::ports::{KeyScans, KeyViews};
use std::time::Duration;

use application::ports::{Finish, KeyPhase, KeyRequest, Keys, Lease, Outbox, StoreError, Users};
use application::{PhaseError, ReviewResolution};
use domain::{LockPolicy, RecoveryPoint, RideParams};
use support::{Harness, LOCK_TIMEOUT, key};

#[tokio::test]
async fn a_booked_ride_is_charged_once_stored_and_staged() {
    let h = Harness::new().await;
    let answer = h.book(&key(1)).await.expect("booked");
    assert_eq!(answer.response.status, 201);
    assert!(!answer.replayed);

    let rides = h.store.rides();
    assert_eq!(rides.len(), 1);
    let charges = h.gateway.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(
        rides[0].stripe_charge_id.as_deref(),
        Some(charges[0].id.as_str())
    );
    assert_eq!(charges[0].amount_cents, 2000);
    assert_eq!(charges[0].currency, "usd");
    assert!(answer.response.body.contains(&charges[0].id));

    let keys = h.store.keys();
    assert_eq!(keys[0].recovery_point(), RecoveryPoint::Finished);
    assert_eq!(keys[0].locked_at, None, "a finished key is unlocked");
    assert_eq!(charges[0].idempotency_key, keys[0].downstream_key);

    let jobs = h.store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.ride_id, rides[0].id);
    assert_eq!(jobs[0].job.amount_cents, 2000);

    let audit = h.store.audit_records();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "ride.created");
    assert_eq!(audit[0].origin_ip.as_deref(), Some("203.0.113.9"));
}

#[tokio::test]
async fn a_finished_key_replays_its_response_byte_for_byte_without_charging_again() {
    let h = Harness::new().await;
    let first = h.book(&key(1)).await.expect("booked");
    h.advance(Duration::from_secs(3600));
    let second = h.book(&key(1)).await.expect("replayed");
    assert!(second.replayed);
    assert_eq!(second.response, first.response);
    assert_eq!(h.gateway.charge_calls(), 1);
    assert_eq!(h.store.rides().len(), 1);
    assert_eq!(h.staged_job_count().await, 1);
}

#[tokio::test]
async fn a_declined_card_finishes_with_402_and_replays_it() {
    let h = Harness::new().await;
    let request = h.request(&h.declined_user, &key(1));
    let answer = h.create_ride.run(request.clone()).await.expect("answered");
    assert_eq!(answer.response.status, 402);
    assert!(answer.response.body.contains("Your card was declined."));
    let replay = h.create_ride.run(request).await.expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response, answer.response);
    assert_eq!(h.gateway.charge_calls(), 1);
    assert_eq!(h.staged_job_count().await, 0, "no receipt without a 201");
    assert_eq!(h.store.rides()[0].stripe_charge_id, None);
}

#[tokio::test]
async fn a_charge_refused_for_good_finishes_with_502() {
    let h = Harness::new().await;
    let request = h.request(&h.cardless_user, &key(1));
    let answer = h.create_ride.run(request).await.expect("answered");
    assert_eq!(answer.response.status, 502);
    assert!(answer.response.body.contains("no charge was made"));
    assert!(!answer.response.body.contains("no active card"));
    assert_eq!(h.store.keys()[0].recovery_point(), RecoveryPoint::Finished);
    assert_eq!(h.staged_job_count().await, 0);
}

#[tokio::test]
async fn raise_error_fails_the_charge_phase_unlocks_and_a_retry_without_it_succeeds() {
    let h = Harness::new().await;
    let mut request = h.request(&h.good_user, &key(1));
    request.raise_error = true;
    let error = h.create_ride.run(request.clone()).await.unwrap_err();
    assert!(matches!(error, PhaseError::Simulated), "{error:?}");
    let stored = &h.store.keys()[0];
    assert_eq!(stored.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(
        stored.locked_at, None,
        "an error path never leaves a key locked"
    );
    assert_eq!(stored.progress.response(), None, "a 500 is not stored");
    assert_eq!(h.gateway.charge_calls(), 0);

    request.raise_error = false;
    let answer = h.create_ride.run(request).await.expect("retried");
    assert_eq!(answer.response.status, 201);
    assert!(!answer.replayed);
    assert_eq!(h.store.rides().len(), 1, "the retry reuses the ride");
    assert_eq!(h.gateway.charges().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused_and_changes_nothing() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    let before = h.store.keys();
    let mut other = h.request(&h.good_user, &key(1));
    other.params = RideParams::from_numbers([1.0, 2.0, 3.0, 4.5]).expect("valid");
    let error = h.create_ride.run(other).await.unwrap_err();
    assert!(matches!(error, PhaseError::KeyReused), "{error:?}");
    assert_eq!(h.store.keys(), before);
    assert_eq!(h.store.rides().len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_user() {
    let h = Harness::new().await;
    h.book(&key(1)).await.expect("booked");
    let mut theirs = h.request(&h.declined_user, &key(1));
    theirs.params = RideParams::from_numbers([0.0; 4]).expect("valid");
    let answer = h.create_ride.run(theirs).await.expect("their own request");
    assert_eq!(answer.response.status, 402);
    assert!(!answer.replayed);
    assert_eq!(h.store.keys().len(), 2);
}

/// Leaves a key locked at `ride_created` (its ride written with it), as a
/// process that died right after the key phase would, before it charged.
async fn crash_after_key_phase(h: &Harness, key_text: &str) -> domain::KeyRecord {
    let request = h.request(&h.good_user, key_text);
    let phase = h
        .store
        .begin_request(
            &KeyRequest {
                user_id: request.user.id,
                key: request.key.clone(),
                fingerprint: request.fingerprint(),
                action: domain::KeyAction::BookRide(request.params),
                request_ip: None,
                request_id: None,
                charges_now: false,
            },
            h.clock_now(),
            LockPolicy {
                lock_timeout: LOCK_TIMEOUT,
            },
        )
        .await
        .expect("key phase");
    let KeyPhase::Locked(record) = phase else {
        panic!("expected a new key, got {phase:?}");
    };
    record
}

trait Now {
    fn clock_now(&self) -> std::time::SystemTime;
}

impl Now for Harness {
    fn clock_now(&self) -> std::time::SystemTime {
        application::ports::Clock::now(self.clock.as_ref())
    }
}

#[tokio::test]
async fn a_key_locked_by_a_live_request_answers_409_until_the_lock_times_out() {
    let h = Harness::new().await;
    crash_after_key_phase(&h, &key(1)).await;
    h.advance(Duration::from_secs(30));
    let error = h.book(&key(1)).await.unwrap_err();
    let PhaseError::InFlight { retry_after } = error else {
        panic!("expected 409, got {error:?}");
    };
    assert_eq!(retry_after, Duration::from_secs(60));
    assert_eq!(h.store.rides().len(), 1, "a 409 changes nothing");
    assert_eq!(h.gateway.charge_calls(), 0, "a 409 changes nothing");

    h.advance(Duration::from_secs(61));
    let answer = h
        .book(&key(1))
        .await
        .expect("resumed after the lock timeout");
    assert_eq!(answer.response.status, 201);
    assert_eq!(h.gateway.charges().len(), 1);
}

#[tokio::test]
async fn a_retry_resumes_from_started() {
    let h = Harness::new().await;
    // An earlier version committed the key phase alone.
    let record = crash_after_key_phase(&h, &key(1)).await;
    h.store.leave_at_started(record.id);
    assert!(h.store.rides().is_empty());
    h.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let answer = h.book(&key(1)).await.expect("resumed");
    assert_eq!(answer.response.status, 201);
    assert_eq!(h.store.rides().len(), 1);
    assert_eq!(h.gateway.charges().len(), 1);
    assert_eq!(h.staged_job_count().await, 1);
}

#[tokio::test]
async fn a_retry_after_a_crash_in_the_charge_phase_charges_once() {
    let h = Harness::new().await;
    // The process died after Stripe charged but before the charge was recorded.
    let record = crash_after_key_phase(&h, &key(1)).await;
    let user = h.good_user.clone();
    application::ports::PaymentGateway::charge(
        h.gateway.as_ref(),
        &domain::ChargeRequest {
            customer_id: user.stripe_customer_id.clone(),
            payment_method_id: user.stripe_payment_method_id.clone(),
            amount_cents: 2000,
            currency: "usd".into(),
            description: format!("Rocket Rides ride for {}", user.email),
            idempotency_key: record.downstream_key.clone(),
        },
    )
    .await;
    assert_eq!(h.gateway.charges().len(), 1);

    h.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let answer = h.book(&key(1)).await.expect("resumed");
    assert_eq!(answer.response.status, 201);
    let charges = h.gateway.charges();
    assert_eq!(charges.len(), 1, "the downstream key collapses the retry");
    assert_eq!(
        h.store.rides()[0].stripe_charge_id.as_deref(),
        Some(charges[0].id.as_str())
    );
}

#[tokio::test]
async fn a_retry_resumes_from_charge_created_without_calling_the_gateway() {
    let h = Harness::new().await;
    // An earlier version committed the charge alone, then died.
    let record = crash_after_key_phase(&h, &key(1)).await;
    h.store
        .leave_at_charge_created(record.id, "ch_recorded_before_crash");

    h.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let answer = h.book(&key(1)).await.expect("resumed");
    assert_eq!(answer.response.status, 201);
    assert!(answer.response.body.contains("ch_recorded_before_crash"));
    assert_eq!(h.gateway.charge_calls(), 0);
    assert_eq!(h.staged_job_count().await, 1);
}

#[tokio::test]
async fn a_request_whose_lock_was_taken_over_cannot_write_behind_its_successor() {
    let h = Harness::new().await;
    let stale = Lease::of(&crash_after_key_phase(&h, &key(1)).await);
    h.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let booked = h.book(&key(1)).await.expect("the successor finishes");
    let refusal = Finish::Refused {
        response: domain::StoredResponse::charge_refused(),
    };
    let error = h
        .store
        .finish(stale, refusal, h.clock_now())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LostLock(_)), "{error:?}");
    assert_eq!(h.store.rides().len(), 1);
    let replay = h.book(&key(1)).await.expect("replayed");
    assert_eq!(
        replay.response, booked.response,
        "the successor's answer stands"
    );
}

#[tokio::test]
async fn the_completer_finishes_a_failed_request_with_one_charge() {
    let h = Harness::new().await;
    let mut request = h.request(&h.good_user, &key(1));
    request.raise_error = true;
    h.create_ride.run(request.clone()).await.unwrap_err();

    h.advance(Duration::from_secs(301));
    let report = h.completer().run_batch().await.expect("batch");
    assert_eq!((report.picked, report.finished), (1, 1));
    assert_eq!(h.gateway.charges().len(), 1);

    request.raise_error = false;
    let answer = h.create_ride.run(request).await.expect("replay");
    assert!(answer.replayed);
    assert_eq!(answer.response.status, 201);
    assert_eq!(h.gateway.charges().len(), 1);
}

#[tokio::test]
async fn the_completer_picks_exactly_the_eligible_keys() {
    let h = Harness::new().await;
    let mut failing = h.request(&h.good_user, &key(1));
    failing.raise_error = true;
    // Key 1: fails at t=0 (old enough later).
    h.create_ride.run(failing.clone()).await.unwrap_err();
    // Key 2: finished at t=0: never eligible.
    h.book(&key(2)).await.expect("booked");
    // Key 3: crashed holding its lock at t=0.
    crash_after_key_phase(&h, &key(3)).await;

    h.advance(Duration::from_secs(200));
    // Key 4: fails at t=200: too young at t=301.
    let mut young = h.request(&h.good_user, &key(4));
    young.raise_error = true;
    h.create_ride.run(young).await.unwrap_err();
    // Key 1 retried at t=260: run too recently at t=301.
    h.advance(Duration::from_secs(60));
    h.create_ride.run(failing).await.unwrap_err();

    h.advance(Duration::from_secs(41)); // t = 301
    let policy = support::completer_policy();
    let ids = |h: &Harness| {
        let now = h.clock_now();
        let store = h.store.clone();
        async move {
            let mut ids: Vec<i64> = store
                .find_completable(now, policy, 100)
                .await
                .expect("query")
                .into_iter()
                .map(|id| id.0)
                .collect();
            ids.sort();
            ids
        }
    };
    let key_id = |h: &Harness, n: usize| {
        h.store
            .keys()
            .into_iter()
            .find(|k| k.key.as_str() == key(n))
            .map(|k| k.id.0)
            .expect("key exists")
    };
    // Key 3's lock is 301 s old (stale), it is unfinished and idle: eligible.
    assert_eq!(ids(&h).await, vec![key_id(&h, 3)]);

    h.advance(Duration::from_secs(20)); // t = 321: key 1 idle 61 s
    assert_eq!(ids(&h).await, vec![key_id(&h, 1), key_id(&h, 3)]);

    h.advance(Duration::from_secs(180)); // t = 501: key 4 is 301 s old
    assert_eq!(
        ids(&h).await,
        vec![key_id(&h, 1), key_id(&h, 3), key_id(&h, 4)]
    );

    let report = h.completer().run_batch().await.expect("batch");
    assert_eq!((report.picked, report.finished, report.failed), (3, 3, 0));
    assert!(ids(&h).await.is_empty());
    assert_eq!(h.gateway.charges().len(), 4);
    assert_eq!(h.staged_job_count().await, 4);
}

#[tokio::test]
async fn a_batch_size_limits_the_completer() {
    let h = Harness::new().await;
    for n in 0..5 {
        let mut request = h.request(&h.good_user, &key(n));
        request.raise_error = true;
        h.create_ride.run(request).await.unwrap_err();
    }
    h.advance(Duration::from_secs(301));
    let completer = h.completer_with_batch(2);
    assert_eq!(completer.run_batch().await.expect("batch").finished, 2);
    assert_eq!(completer.run_batch().await.expect("batch").finished, 2);
    assert_eq!(completer.run_batch().await.expect("batch").finished, 1);
    assert_eq!(completer.run_batch().await.expect("batch").picked, 0);
}

/// A request that created its ride, noted its charge attempt, and died
/// before Stripe answered.
async fn crash_after_charge_attempt(h: &Harness, key_text: &str) -> Lease {
    let lease = Lease::of(&crash_after_key_phase(h, key_text).await);
    h.store
        .note_charge_attempt(lease, h.clock_now())
        .await
        .expect("attempt noted");
    lease
}

#[tokio::test]
async fn a_charge_attempted_beyond_the_gateway_window_goes_to_review_not_to_stripe() {
    let h = Harness::new().await;
    let lease = crash_after_charge_attempt(&h, &key(1)).await;

    h.advance(support::REVIEW_WINDOW + Duration::from_secs(1));
    let report = h.completer().run_batch().await.expect("batch");
    assert_eq!(report.needs_review, 1, "reported");
    assert_eq!(report.picked, 0, "left out of the completer's batch");
    assert_eq!(h.gateway.charge_calls(), 0, "not charged again blindly");
    let stored = &h.store.keys()[0];
    assert_eq!(stored.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(
        stored.lock_generation, lease.generation,
        "the completer did not even take the key"
    );

    h.advance(Duration::from_secs(120));
    let again = h.completer().run_batch().await.expect("batch");
    assert_eq!(again.needs_review, 0, "reported once, not every pass");
    assert_eq!(h.gateway.charge_calls(), 0);

    let listed = h
        .store
        .keys_for_review(
            support::settings().review.attempted_before(h.clock_now()),
            10,
        )
        .await
        .expect("listed");
    assert_eq!(
        listed.len(),
        1,
        "still listed for a person after the report"
    );
    assert_eq!(listed[0].id, lease.key_id);
}

#[tokio::test]
async fn a_booking_key_is_not_settled_as_a_cancel_and_stays_for_the_right_resolution() {
    let h = Harness::new().await;
    let lost = crash_after_charge_attempt(&h, &key(1)).await;
    h.advance(support::REVIEW_WINDOW + Duration::from_secs(1));
    for wrong in [
        ReviewResolution::Refunded { refund: None },
        ReviewResolution::NotRefunded,
    ] {
        let error = h
            .create_ride
            .resolve_review(lost.key_id, wrong)
            .await
            .expect_err("a booking key cannot be settled as a cancel");
        crate::support::assert_refused_as_the_other_kind(&error);
    }
    // Refused without a trace: the key still awaits review, unlocked.
    let settled = h
        .create_ride
        .resolve_review(lost.key_id, ReviewResolution::NotCharged)
        .await
        .expect("resolve")
        .expect("still awaiting review");
    assert_eq!(settled.response.status, 502);
}

#[tokio::test]
async fn a_person_resolves_a_key_awaiting_review_with_the_charge_found_or_with_none() {
    let h = Harness::new().await;
    let found = crash_after_charge_attempt(&h, &key(1)).await;
    let none = crash_after_charge_attempt(&h, &key(2)).await;
    let charged = || ReviewResolution::Charged {
        charge_id: "ch_found_at_stripe".to_owned(),
        payment_intent_id: Some("pi_found_at_stripe".to_owned()),
    };
    assert!(
        h.create_ride
            .resolve_review(found.key_id, charged())
            .await
            .expect("resolve")
            .is_none(),
        "inside the gateway's window the completer may still retry it"
    );

    h.advance(support::REVIEW_WINDOW + Duration::from_secs(1));
    let booked = h
        .create_ride
        .resolve_review(found.key_id, charged())
        .await
        .expect("resolve")
        .expect("awaiting review");
    assert_eq!(booked.response.status, 201);
    assert!(booked.response.body.contains("ch_found_at_stripe"));
    let ride = h
        .store
        .rides()
        .into_iter()
        .find(|ride| ride.stripe_charge_id.as_deref() == Some("ch_found_at_stripe"))
        .expect("the ride carries the charge");
    assert_eq!(
        (ride.stripe_payment_intent_id.as_deref(), ride.status),
        (Some("pi_found_at_stripe"), domain::RideStatus::Booked),
        "and the intent it paid, booked"
    );
    let abandoned = h
        .create_ride
        .resolve_review(none.key_id, ReviewResolution::NotCharged)
        .await
        .expect("resolve")
        .expect("awaiting review");
    assert_eq!(abandoned.response.status, 502);
    assert!(abandoned.response.body.contains("no charge was made"));
    assert_eq!(
        h.gateway.charge_calls(),
        0,
        "a person's decision charges nothing"
    );

    for (lease, status) in [(found, 201), (none, 502)] {
        let stored = h
            .store
            .keys()
            .into_iter()
            .find(|k| k.id == lease.key_id)
            .expect("key");
        assert_eq!(stored.recovery_point(), RecoveryPoint::Finished);
        assert_eq!(stored.progress.response().map(|r| r.status), Some(status));
        assert!(
            h.create_ride
                .resolve_review(lease.key_id, ReviewResolution::NotCharged)
                .await
                .expect("resolve")
                .is_none(),
            "a resolved key is finished for good"
        );
    }
    let rides = h.store.rides();
    let booked_ride = rides
        .iter()
        .find(|r| r.stripe_charge_id.as_deref() == Some("ch_found_at_stripe"))
        .expect("the found charge is on the ride");
    let jobs = h.store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "a receipt for the booked ride only");
    assert_eq!(jobs[0].job.ride_id, booked_ride.id);
    // The client's retry now replays what the person decided.
    let replay = h
        .create_ride
        .run(h.request(&h.good_user, &key(2)))
        .await
        .expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response, abandoned.response);
}

#[tokio::test]
async fn keys_awaiting_review_never_crowd_stalled_keys_out_of_a_completer_batch() {
    let h = Harness::new().await;
    for n in 0..3 {
        crash_after_charge_attempt(&h, &key(n)).await;
    }
    h.advance(support::REVIEW_WINDOW + Duration::from_secs(1));
    let mut stalled = h.request(&h.good_user, &key(10));
    stalled.raise_error = true;
    h.create_ride.run(stalled).await.unwrap_err();
    h.advance(Duration::from_secs(301));

    let completer = h.completer_with_batch(2);
    let report = completer.run_batch().await.expect("batch");
    assert_eq!(
        report.finished, 1,
        "the stalled key, though three older keys await review"
    );
    assert_eq!(report.needs_review, 2, "reports are batched too");
    assert_eq!(completer.run_batch().await.expect("batch").needs_review, 1);
    assert_eq!(
        h.gateway.charge_calls(),
        1,
        "only the stalled key was charged"
    );
}

/// Counts of `rocket_rides_ride_requests_total` by outcome, for what `run`
/// does inside: a recorder local to this thread, on a runtime of its own.
fn counted_outcomes(
    work: impl std::future::Future<Output = ()>,
) -> std::collections::HashMap<String, u64> {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "rocket_rides_ride_requests_total")
        .filter_map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            match value {
                DebugValue::Counter(n) => Some((labels.join(","), n)),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn every_outcome_is_counted_by_runner_and_outcome() {
    let counts = counted_outcomes(async {
        let h = Harness::new().await;
        h.book(&key(1)).await.expect("booked");
        h.book(&key(1)).await.expect("replayed");
        h.create_ride
            .run(h.request(&h.declined_user, &key(2)))
            .await
            .expect("declined");
        h.create_ride
            .run(h.request(&h.cardless_user, &key(3)))
            .await
            .expect("refused");
        let mut failing = h.request(&h.good_user, &key(4));
        failing.raise_error = true;
        h.create_ride.run(failing).await.unwrap_err();
        h.create_ride
            .run(h.request(&h.three_ds_user, &key(5)))
            .await
            .expect("authentication required");
        let mut processing = application::ports::MockPaymentGateway::new();
        processing
            .expect_charge()
            .returning(|_| domain::ChargeOutcome::Processing {
                payment_intent_id: "pi_processing".into(),
            });
        let slow = Harness::with_gateway(
            std::sync::Arc::new(adapters::memory::FakeGateway::new()),
            Some(std::sync::Arc::new(processing)),
        )
        .await;
        let pending = slow.book(&key(6)).await.expect("pending");
        assert_eq!(pending.response.status, 202);
        // A cancel (200), and one of a ride whose payment failed (409).
        let cancel = |user: &domain::User, ride_id, n| application::CancelRequest {
            user: user.clone(),
            key: domain::IdempotencyKey::parse(&key(n)).expect("valid"),
            ride_id,
            reason: None,
            request_ip: None,
            request_id: None,
        };
        let ride_of = |status| {
            h.store
                .rides()
                .into_iter()
                .find(|ride| ride.status == status)
                .expect("a ride so")
                .id
        };
        let booked = ride_of(domain::RideStatus::Booked);
        let failed = ride_of(domain::RideStatus::PaymentFailed);
        let answer = h.create_ride.cancel(cancel(&h.good_user, booked, 7)).await;
        assert_eq!(answer.expect("cancelled").response.status, 200);
        let answer = h
            .create_ride
            .cancel(cancel(&h.declined_user, failed, 8))
            .await;
        assert_eq!(answer.expect("refused").response.status, 409);
    });
    for outcome in [
        "created",
        "replayed",
        "declined",
        "refused",
        "simulated_error",
        "authentication_required",
        "pending",
        "cancelled",
        "not_cancellable",
    ] {
        assert_eq!(
            counts.get(&format!("runner=api,outcome={outcome}")),
            Some(&1),
            "{outcome}: {counts:?}"
        );
    }
    assert_eq!(counts.len(), 9, "{counts:?}");
}

#[tokio::test]
async fn a_panicking_phase_carries_its_message_and_releases_the_key() {
    use application::ports::MockPaymentGateway;
    let mut gateway = MockPaymentGateway::new();
    gateway
        .expect_charge()
        .returning(|_| panic!("the gateway adapter has a bug"));
    let h = Harness::with_gateway(
        std::sync::Arc::new(adapters::memory::FakeGateway::new()),
        Some(std::sync::Arc::new(gateway)),
    )
    .await;
    let error = h.book(&key(1)).await.unwrap_err();
    let PhaseError::Panicked(message) = error else {
        panic!("expected a caught panic, got {error:?}");
    };
    assert_eq!(message, "the gateway adapter has a bug");
    assert_eq!(h.store.keys()[0].locked_at, None, "released");
}

#[tokio::test]
async fn authorization_names_a_user_by_email_or_by_api_key() {
    use application::{AuthError, AuthMode, Authenticate};
    let h = Harness::new().await;
    let by_email = Authenticate::new(h.store.clone(), AuthMode::Email);
    let found = by_email
        .user(Some(" user@example.com "))
        .await
        .expect("known");
    assert_eq!(found.id, h.good_user.id);
    for missing in [None, Some(""), Some("   ")] {
        assert!(
            matches!(by_email.user(missing).await, Err(AuthError::Missing)),
            "{missing:?}"
        );
    }
    assert!(matches!(
        by_email.user(Some("nobody@example.com")).await,
        Err(AuthError::Unknown)
    ));

    let hash = domain::ApiKeyHash::of("rr_secret_key");
    h.store
        .add_api_key(h.good_user.id, &hash)
        .await
        .expect("key");
    let by_key = Authenticate::new(h.store.clone(), AuthMode::ApiKey);
    let found = by_key
        .user(Some("Bearer rr_secret_key"))
        .await
        .expect("known");
    assert_eq!(found.id, h.good_user.id);
    for refused in [
        "Bearer ",
        "Bearer    ",
        "Basic rr_secret_key",
        "rr_secret_key",
        "Bearer other",
    ] {
        assert!(
            matches!(by_key.user(Some(refused)).await, Err(AuthError::Unknown)),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn a_rider_sees_their_own_ride_and_nobody_elses() {
    use application::ShowRide;
    let h = Harness::new().await;
    let answer = h.book(&key(1)).await.expect("booked");
    let ride_id = h.store.rides()[0].id;
    assert!(answer.response.body.contains(&format!("\"id\":{ride_id}")));
    let show = ShowRide::new(h.store.clone());
    let own = show.run(&h.good_user, ride_id).await.expect("read");
    let own = own.expect("their own");
    assert_eq!(
        (own.ride.id, own.refund),
        (ride_id.0, None),
        "booked: no refund"
    );
    assert_eq!(
        show.run(&h.declined_user, ride_id).await.expect("read"),
        None
    );
    assert_eq!(
        show.run(&h.good_user, domain::RideId(ride_id.0 + 100))
            .await
            .expect("read"),
        None
    );
}

/// A user found once is not looked up again for the cache's lifetime:
/// counted on a mock, the second request costs no store call; after the
/// TTL, or with the cache off, each does. Unknown users are never cached.
#[tokio::test]
async fn an_authenticated_user_is_remembered_for_the_cache_ttl_only() {
    use application::ports::MockUsers;
    use application::{AuthError, AuthMode, Authenticate};
    let h = Harness::new().await;
    let rider = h.good_user.clone();
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = |lookups: std::sync::Arc<std::sync::atomic::AtomicUsize>| {
        let mut users = MockUsers::new();
        let rider = rider.clone();
        users.expect_find_user_by_email().returning(move |email| {
            lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((email == rider.email).then(|| rider.clone()))
        });
        std::sync::Arc::new(users)
    };
    let count = || lookups.load(std::sync::atomic::Ordering::SeqCst);
    let cached = Authenticate::new(counting(lookups.clone()), AuthMode::Email)
        .cached(h.clock.clone(), Duration::from_secs(5));
    for _ in 0..3 {
        let user = cached.user(Some("user@example.com")).await.expect("known");
        assert_eq!(user, rider);
    }
    assert_eq!(count(), 1, "looked up once");
    for _ in 0..2 {
        assert!(matches!(
            cached.user(Some("nobody@example.com")).await,
            Err(AuthError::Unknown)
        ));
    }
    assert_eq!(count(), 3, "an unknown user is looked up every time");
    h.advance(Duration::from_secs(4));
    cached.user(Some("user@example.com")).await.expect("known");
    assert_eq!(count(), 3, "still fresh at 4 s");
    h.advance(Duration::from_secs(1));
    cached.user(Some("user@example.com")).await.expect("known");
    assert_eq!(count(), 4, "looked up again once 5 s old");

    lookups.store(0, std::sync::atomic::Ordering::SeqCst);
    let uncached = Authenticate::new(counting(lookups.clone()), AuthMode::Email)
        .cached(h.clock.clone(), Duration::ZERO);
    for _ in 0..2 {
        uncached
            .user(Some("user@example.com"))
            .await
            .expect("known");
    }
    assert_eq!(count(), 2, "a zero TTL turns the cache off");
}

/// The cache holds every user found, not just the last one, and stays
/// bounded: past its capacity it starts over, so the first user is looked
/// up again.
#[tokio::test]
async fn the_user_cache_remembers_many_users_and_stays_bounded() {
    use application::ports::MockUsers;
    use application::{AuthMode, Authenticate};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let h = Harness::new().await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let mut users = MockUsers::new();
    let counted = lookups.clone();
    users.expect_find_user_by_email().returning(move |email| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        Ok(Some(domain::User {
            id: domain::UserId(n as i64 + 1),
            stripe_payment_method_id: None,
            email: email.to_owned(),
            stripe_customer_id: format!("cus_{n}"),
        }))
    });
    let cached = Authenticate::new(Arc::new(users), AuthMode::Email)
        .cached(h.clock.clone(), Duration::from_secs(5));
    let email = |n: usize| format!("rider-{n}@example.com");
    for n in [0, 1, 0, 1] {
        cached.user(Some(&email(n))).await.expect("known");
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 2, "both users remembered");

    // 10 000 entries at most: the 10 001st user starts the cache over.
    for n in 2..=10_000 {
        cached.user(Some(&email(n))).await.expect("known");
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 10_001);
    cached.user(Some(&email(10_000))).await.expect("known");
    assert_eq!(lookups.load(Ordering::SeqCst), 10_001, "the newest is kept");
    cached.user(Some(&email(0))).await.expect("known");
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        10_002,
        "the oldest was dropped with the rest"
    );
}

/// Every gateway call is noted on the key just before it is made, the
/// retries of a key attempted long ago included: the reconcile rule counts
/// from the last call, never from an earlier one.
#[tokio::test]
async fn each_call_of_a_resumed_key_is_noted_before_it_is_made() {
    use application::ports::Clock as _;
    let h = Harness::losing_every_answer().await;
    let first = h.book(&key(1)).await.unwrap_err();
    assert!(
        matches!(first, PhaseError::GatewayUnknown { .. }),
        "{first:?}"
    );
    let started = h.clock.now();
    let record = h.store.keys()[0].clone();
    assert_eq!(record.progress.last_call_at(), Some(started));
    // The client retries later: its call is noted at its own time.
    h.advance(Duration::from_secs(30));
    h.book(&key(1)).await.unwrap_err();
    let record = h.store.keys()[0].clone();
    assert_eq!(
        record.progress.last_call_at(),
        Some(started + Duration::from_secs(30))
    );
    assert_eq!(
        record.unrecorded_charge_attempt(),
        Some(started),
        "the first attempt stays"
    );
}
