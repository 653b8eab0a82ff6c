//! What the fake gateway cannot stage, staged with mockall: an unknown
//! outcome on the first call only, and a store that fails at a chosen step.

use crate::support;

use std::sync::{Arc, Mutex};

use adapters::memory::FakeGateway;
use application::ports::{
    Finish, KeyPhase, Keys, Lease, MockKeys, MockPaymentGateway, PaymentGateway, StoreError,
};
use application::{PhaseError, PhaseMachine, RideRequest};
use domain::{ChargeOutcome, IdempotencyKey, RecoveryPoint, RideParams};
use support::{Harness, key};

#[tokio::test]
async fn an_unknown_outcome_then_success_charges_once_with_the_same_downstream_key() {
    let seen_keys = Arc::new(Mutex::new(Vec::new()));
    let mut gateway = MockPaymentGateway::new();
    let mut sequence = mockall::Sequence::new();
    let seen = seen_keys.clone();
    gateway
        .expect_charge()
        .times(1)
        .in_sequence(&mut sequence)
        .returning(move |request| {
            seen.lock()
                .expect("lock")
                .push(request.idempotency_key.clone());
            ChargeOutcome::Unknown {
                reason: "timed out".into(),
            }
        });
    let seen = seen_keys.clone();
    gateway
        .expect_charge()
        .times(1)
        .in_sequence(&mut sequence)
        .returning(move |request| {
            seen.lock()
                .expect("lock")
                .push(request.idempotency_key.clone());
            assert_eq!(request.amount_cents, 2000);
            ChargeOutcome::Charged {
                charge_id: "ch_after_retry".into(),
                payment_intent_id: None,
            }
        });
    let h = Harness::with_gateway(Arc::new(FakeGateway::new()), Some(Arc::new(gateway))).await;

    let error = h.book(&key(1)).await.unwrap_err();
    assert!(
        matches!(error, PhaseError::GatewayUnknown { .. }),
        "{error:?}"
    );
    let stored = &h.store.keys()[0];
    assert_eq!(stored.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(stored.locked_at, None, "unlocked for an immediate retry");
    assert_eq!(
        stored.progress.response(),
        None,
        "an unknown outcome is never stored"
    );

    let answer = h.book(&key(1)).await.expect("retried");
    assert_eq!(answer.response.status, 201);
    assert!(answer.response.body.contains("ch_after_retry"));
    let seen = seen_keys.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "both attempts carry one downstream key");
    assert_eq!(seen[0], h.store.keys()[0].downstream_key);
    assert_eq!(h.store.rides().len(), 1);
    assert_eq!(h.staged_job_count().await, 1);
}

#[tokio::test]
async fn a_declined_card_is_stored_and_replayed_without_a_second_call() {
    let mut gateway = MockPaymentGateway::new();
    gateway
        .expect_charge()
        .times(1)
        .returning(|_| ChargeOutcome::Declined {
            message: "Your card has insufficient funds.".into(),
        });
    let h = Harness::with_gateway(Arc::new(FakeGateway::new()), Some(Arc::new(gateway))).await;
    let first = h.book(&key(1)).await.expect("answered");
    assert_eq!(first.response.status, 402);
    assert!(first.response.body.contains("insufficient funds"));
    let replay = h.book(&key(1)).await.expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response, first.response);
    assert_eq!(h.staged_job_count().await, 0);
}

#[tokio::test]
async fn downstream_keys_differ_between_idempotency_keys() {
    let seen_keys = Arc::new(Mutex::new(Vec::new()));
    let mut gateway = MockPaymentGateway::new();
    let seen = seen_keys.clone();
    gateway.expect_charge().times(3).returning(move |request| {
        seen.lock()
            .expect("lock")
            .push(request.idempotency_key.clone());
        ChargeOutcome::Charged {
            charge_id: format!("ch_{}", request.idempotency_key),
            payment_intent_id: None,
        }
    });
    let h = Harness::with_gateway(Arc::new(FakeGateway::new()), Some(Arc::new(gateway))).await;
    for n in 0..3 {
        h.book(&key(n)).await.expect("booked");
    }
    let mut seen = seen_keys.lock().expect("lock").clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
}

/// The keys of the in-memory store, except that `finish` (the booking or
/// the refusal after the charge) answers "unavailable"; unlocks are counted.
fn failing_finish(
    inner: Arc<adapters::memory::MemoryStore>,
    unlocks: Arc<Mutex<Vec<Lease>>>,
) -> MockKeys {
    let mut keys = MockKeys::new();
    let s = inner.clone();
    keys.expect_begin_request()
        .returning(move |request, now, policy| {
            let s = s.clone();
            let request = request.clone();
            futures_block_on(async move { s.begin_request(&request, now, policy).await })
        });
    keys.expect_finish().returning(|_, _: Finish, _| {
        Err(StoreError::Unavailable(anyhow::anyhow!("connection reset")))
    });
    let s = inner;
    keys.expect_unlock().returning(move |lease| {
        unlocks.lock().expect("lock").push(lease);
        futures_block_on(s.unlock(lease))
    });
    keys
}

/// The in-memory store never awaits anything real, so its futures complete
/// on the first poll; mockall's `returning` closures are synchronous.
fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the in-memory store never waits"),
    }
}

#[tokio::test]
async fn an_internal_error_after_charging_unlocks_the_key_and_a_retry_charges_once() {
    let h = Harness::new().await;
    let unlocks = Arc::new(Mutex::new(Vec::new()));
    let broken = failing_finish(h.store.clone(), unlocks.clone());
    let create_ride = PhaseMachine::new(
        Arc::new(broken),
        h.store.clone(),
        h.gateway.clone() as Arc<dyn PaymentGateway>,
        h.clock.clone(),
        support::settings(),
    );
    let request = RideRequest {
        user: h.good_user.clone(),
        key: IdempotencyKey::parse(&key(1)).expect("valid"),
        params: RideParams::from_numbers([0.0; 4]).expect("valid"),
        request_ip: None,
        request_id: None,
        raise_error: false,
    };
    let error = create_ride.run(request.clone()).await.unwrap_err();
    assert!(
        matches!(error, PhaseError::Store(StoreError::Unavailable(_))),
        "{error:?}"
    );
    assert_eq!(
        unlocks.lock().expect("lock").len(),
        1,
        "the key was unlocked"
    );
    let stored = &h.store.keys()[0];
    assert_eq!(stored.locked_at, None);
    assert_eq!(stored.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(h.gateway.charges().len(), 1, "Stripe did charge");

    // The store is back: a retry (no lock timeout to wait for) finishes with
    // the same charge.
    let answer = h.create_ride.run(request).await.expect("retried");
    assert_eq!(answer.response.status, 201);
    assert_eq!(h.gateway.charges().len(), 1);
    assert!(answer.response.body.contains(&h.gateway.charges()[0].id));
}

#[tokio::test]
async fn a_store_failing_while_unlocking_still_answers_and_the_lock_timeout_frees_the_key() {
    let h = Harness::new().await;
    let mut store = MockKeys::new();
    let inner = h.store.clone();
    store
        .expect_begin_request()
        .returning(move |request, now, policy| {
            futures_block_on(inner.begin_request(request, now, policy))
        });
    store
        .expect_unlock()
        .times(1)
        .returning(|_| Err(StoreError::Unavailable(anyhow::anyhow!("gone"))));
    let create_ride = PhaseMachine::new(
        Arc::new(store),
        h.store.clone(),
        h.gateway.clone() as Arc<dyn PaymentGateway>,
        h.clock.clone(),
        support::settings(),
    );
    let mut request = h.request(&h.good_user, &key(1));
    request.raise_error = true;
    let error = create_ride.run(request.clone()).await.unwrap_err();
    assert!(matches!(error, PhaseError::Simulated), "{error:?}");
    assert!(h.store.keys()[0].locked_at.is_some(), "still locked");

    request.raise_error = false;
    let error = h.create_ride.run(request.clone()).await.unwrap_err();
    assert!(matches!(error, PhaseError::InFlight { .. }), "{error:?}");
    h.advance(support::LOCK_TIMEOUT + std::time::Duration::from_secs(1));
    let answer = h.create_ride.run(request).await.expect("after the timeout");
    assert_eq!(answer.response.status, 201);
}

#[tokio::test]
async fn losing_the_lock_does_not_unlock_the_successor() {
    let h = Harness::new().await;
    let mut store = MockKeys::new();
    let inner = h.store.clone();
    store
        .expect_begin_request()
        .returning(move |request, now, policy| {
            futures_block_on(inner.begin_request(request, now, policy))
        });
    store
        .expect_finish()
        .returning(|_, _, _| Err(StoreError::LostLock("taken over".into())));
    store.expect_unlock().never();
    let create_ride = PhaseMachine::new(
        Arc::new(store),
        h.store.clone(),
        h.gateway.clone() as Arc<dyn PaymentGateway>,
        h.clock.clone(),
        support::settings(),
    );
    let error = create_ride
        .run(h.request(&h.good_user, &key(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, PhaseError::Store(StoreError::LostLock(_))),
        "{error:?}"
    );
    let _ = KeyPhase::Mismatch;
}

/// The store failing as the key finishes, for a booking and for a
/// refusal: each time the key is released at once (a retry need not wait
/// for the lock timeout), and the retry ends it with one charge at most.
#[tokio::test]
async fn a_store_failing_as_the_key_finishes_unlocks_it_and_a_retry_ends_it() {
    for (declined, status) in [(false, 201), (true, 402)] {
        let h = Harness::new().await;
        let unlocks = Arc::new(Mutex::new(Vec::new()));
        let create_ride = PhaseMachine::new(
            Arc::new(failing_finish(h.store.clone(), unlocks.clone())),
            h.store.clone(),
            h.gateway.clone() as Arc<dyn PaymentGateway>,
            h.clock.clone(),
            support::settings(),
        );
        let user = if declined {
            &h.declined_user
        } else {
            &h.good_user
        };
        let request = h.request(user, &key(1));
        let error = create_ride.run(request.clone()).await.unwrap_err();
        assert!(
            matches!(error, PhaseError::Store(StoreError::Unavailable(_))),
            "{status}: {error:?}"
        );
        assert_eq!(unlocks.lock().expect("lock").len(), 1, "{status}");
        assert_eq!(h.store.keys()[0].locked_at, None, "{status}");
        assert_eq!(
            h.store.keys()[0].recovery_point(),
            RecoveryPoint::RideCreated
        );
        let answer = h.create_ride.run(request).await.expect("retried at once");
        assert_eq!(answer.response.status, status);
        assert_eq!(
            h.gateway.charges().len(),
            usize::from(!declined),
            "{status}"
        );
    }
}

/// Key `n` of the good user, taken by a request at the epoch and held.
async fn locked_key(h: &Harness, n: usize) -> domain::KeyRecord {
    let request = h.request(&h.good_user, &key(n));
    let phase = h
        .store
        .begin_request(
            &application::ports::KeyRequest {
                user_id: h.good_user.id,
                fingerprint: request.fingerprint(),
                key: request.key,
                action: domain::KeyAction::BookRide(request.params),
                request_ip: None,
                request_id: None,
                charges_now: true,
            },
            std::time::SystemTime::UNIX_EPOCH,
            support::settings().lock,
        )
        .await
        .expect("key phase");
    match phase {
        KeyPhase::Locked(record) => record,
        other => panic!("{other:?}"),
    }
}

/// The completer resuming a key whose user is gone, or whose user cannot be
/// read: the key is released, not held until the lock timeout.
#[tokio::test]
async fn a_completer_that_cannot_find_the_keys_user_unlocks_the_key() {
    let h = Harness::new().await;
    let record = locked_key(&h, 1).await;
    for found in [Ok(None), Err(())] {
        let mut store = MockKeys::new();
        let locked = record.clone();
        store
            .expect_lock_for_completion()
            .returning(move |_, _, _| Ok(Some(locked.clone())));
        let mut users = application::ports::MockUsers::new();
        let answer = found.clone();
        users.expect_find_user().returning(move |_| match &answer {
            Ok(user) => Ok(user.clone()),
            Err(()) => Err(StoreError::Unavailable(anyhow::anyhow!("gone"))),
        });
        let lease = Lease::of(&record);
        store
            .expect_unlock()
            .withf(move |unlocked| *unlocked == lease)
            .times(1)
            .returning(|_| Ok(()));
        let create_ride = PhaseMachine::new(
            Arc::new(store),
            Arc::new(users),
            h.gateway.clone() as Arc<dyn PaymentGateway>,
            h.clock.clone(),
            support::settings(),
        );
        let error = create_ride
            .resume(record.id, support::completer_policy())
            .await
            .unwrap_err();
        assert!(
            matches!(error, PhaseError::Store(_)),
            "{found:?}: {error:?}"
        );
    }
}

/// A key whose charge was attempted longer ago than REVIEW_AFTER, retried by
/// its client: refused for review, and released for the person who will
/// resolve it.
#[tokio::test]
async fn a_key_needing_review_on_the_api_path_is_refused_and_unlocked() {
    let lost = Harness::losing_every_answer().await;
    let request = lost.request(&lost.good_user, &key(1));
    let error = lost.create_ride.run(request.clone()).await.unwrap_err();
    assert!(
        matches!(error, PhaseError::GatewayUnknown { .. }),
        "{error:?}"
    );
    lost.advance(support::REVIEW_WINDOW + std::time::Duration::from_secs(1));
    let error = lost.create_ride.run(request).await.unwrap_err();
    assert!(matches!(error, PhaseError::NeedsReview), "{error:?}");
    let key = &lost.store.keys()[0];
    assert_eq!(key.locked_at, None, "released for a person");
    assert_eq!(key.recovery_point(), RecoveryPoint::RideCreated);
}

/// A person's resolution that the store refuses (the charge id they found
/// is already on another ride): nothing changes and the key is released,
/// so the next try need not wait for the lock timeout.
#[tokio::test]
async fn a_resolution_the_store_refuses_unlocks_the_key() {
    let h = Harness::losing_every_answer().await;
    let request = h.request(&h.good_user, &key(1));
    h.create_ride.run(request).await.unwrap_err();
    // Another key holds charge "ch_taken".
    let other = locked_key(&h, 2).await;
    h.store.leave_at_charge_created(other.id, "ch_taken");
    h.advance(support::REVIEW_WINDOW + std::time::Duration::from_secs(1));
    let waiting = h
        .store
        .keys()
        .into_iter()
        .find(|k| k.key.to_string() == key(1))
        .expect("key");
    let error = h
        .create_ride
        .resolve_review(
            waiting.id,
            application::ReviewResolution::Charged {
                charge_id: "ch_taken".to_owned(),
                payment_intent_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, PhaseError::Store(StoreError::Inconsistent(_))),
        "{error:?}"
    );
    let after = h
        .store
        .keys()
        .into_iter()
        .find(|k| k.id == waiting.id)
        .expect("key");
    assert_eq!(after.locked_at, None, "released");
    assert_eq!(
        after.recovery_point(),
        RecoveryPoint::RideCreated,
        "nothing recorded"
    );
    // The person corrects the charge id: it resolves at once.
    let answer = h
        .create_ride
        .resolve_review(
            waiting.id,
            application::ReviewResolution::Charged {
                charge_id: "ch_right".to_owned(),
                payment_intent_id: None,
            },
        )
        .await
        .expect("resolved")
        .expect("awaited review");
    assert_eq!(answer.response.status, 201);
}
