//! The store port's contract: one set of test bodies, run against the
//! in-memory store and against Postgres (testcontainers). Whatever one store
//! does, the other must do too. Keys at `started` and `charge_created`,
//! which only earlier versions wrote, are made with `Legacy`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use application::ports::{
    Backlog, CancelRecording, Dashboard, Finish, KeyCounts, KeyPhase, KeyRequest, Lease,
    ReceiptClaim, Store, StoreError,
};
use domain::charge::ReceiptJob;
use domain::{
    ApiKeyHash, CancelDecision, CancelPolicy, Cancellation, Giveback, IdempotencyKey, KeyAction,
    KeyId, KeyProgress, KeyRecord, PaymentApplied, PaymentIntentState, PaymentUpdate, ReceiptFor,
    ReceiptKind, RecoveryPoint, RefundRecord, RefundStatus, RequestFingerprint, RideId, RideParams,
    RideStatus, StoredResponse, User,
};

use integration_tests::{COMPLETER, LOCK, Legacy};

/// A store under contract, with the means to leave keys where an earlier
/// version could.
trait ContractStore: Store + Legacy + Dashboard {}
impl<T: Store + Legacy + Dashboard> ContractStore for T {}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

async fn user(store: &dyn Store, email: &str) -> User {
    store
        .upsert_user(
            email,
            &application::ports::SavedCustomer::without_payment_method(format!("cus_{email}")),
        )
        .await
        .expect("user")
}

/// A request that does not charge at once: tests note attempts themselves.
fn request(user: &User, key: &str, lat: f64) -> KeyRequest {
    let params = RideParams::from_numbers([lat, 2.0, 3.0, 4.0]).expect("valid");
    KeyRequest {
        user_id: user.id,
        key: IdempotencyKey::parse(key).expect("valid"),
        fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
        action: KeyAction::BookRide(params),
        request_ip: Some("198.51.100.7".into()),
        request_id: Some(format!("request-{key}")),
        charges_now: false,
    }
}

fn key(n: usize) -> String {
    format!("contract-key-{n:010}")
}

async fn locked(store: &dyn Store, request: &KeyRequest, now: SystemTime) -> KeyRecord {
    match store
        .begin_request(request, now, LOCK)
        .await
        .expect("key phase")
    {
        KeyPhase::Locked(record) => record,
        other => panic!("expected the lock, got {other:?}"),
    }
}

fn ride_of(record: &KeyRecord) -> RideId {
    record.progress.ride_id().expect("a ride")
}

fn created(ride_id: RideId) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: format!("{{\"ride\":{ride_id}}}"),
    }
}

fn booking(record: &KeyRecord, charge_id: &str) -> Finish {
    let ride = ride_of(record);
    Finish::Booked {
        charge_id: charge_id.to_owned(),
        payment_intent_id: None,
        response: created(ride),
        job: ReceiptJob::for_ride(ride, record.user_id),
    }
}

fn refusal() -> Finish {
    Finish::Refused {
        response: StoredResponse {
            status: 402,
            body: "{\"error\":\"declined\"}".into(),
        },
    }
}

/// Runs a new key to `finished` with a 201, charge `ch_<key id>`.
async fn book(store: &dyn Store, request: &KeyRequest, now: SystemTime) -> KeyRecord {
    let record = locked(store, request, now).await;
    let lease = Lease::of(&record);
    store.note_charge_attempt(lease, now).await.expect("noted");
    store
        .finish(lease, booking(&record, &format!("ch_{}", record.id)), now)
        .await
        .expect("booked");
    record
}

fn lost(result: Result<(), StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::LostLock(_))),
        "{what}: {result:?}"
    );
}

async fn a_new_key_is_locked_at_ride_created_with_its_ride_and_own_downstream_key(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let first = locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    assert_eq!(first.recovery_point(), RecoveryPoint::RideCreated);
    assert!(
        matches!(
            first.progress,
            KeyProgress::RideCreated {
                charge_attempted_at: None,
                last_call_at: None,
                ..
            }
        ),
        "{:?}",
        first.progress
    );
    assert_eq!(first.locked_at, Some(at(0)));
    assert_eq!(first.created_at, at(0));
    assert_eq!(first.last_run_at, at(0));
    assert_eq!(first.request_ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(
        first.request_id.as_deref(),
        Some(format!("request-{}", key(1)).as_str())
    );
    let ride = store
        .find_ride(ride_of(&first))
        .await
        .expect("read")
        .expect("the ride is written with the key");
    assert_eq!(ride.idempotency_key_id, Some(first.id));
    assert_eq!(ride.user_id, rider.id);
    assert_eq!(
        KeyAction::BookRide(ride.params),
        request(&rider, &key(1), 1.0).action
    );
    assert_eq!(ride.stripe_charge_id, None);

    let charging = KeyRequest {
        charges_now: true,
        ..request(&rider, &key(2), 1.0)
    };
    let second = locked(store.as_ref(), &charging, at(3)).await;
    assert_eq!(
        second.unrecorded_charge_attempt(),
        Some(at(3)),
        "a request that charges at once has its attempt noted with the key"
    );
    assert!(!first.downstream_key.is_empty());
    assert_ne!(first.downstream_key, second.downstream_key);
    assert_ne!(first.id, second.id);
    assert_ne!(ride_of(&first), ride_of(&second));
}

async fn a_held_key_is_in_flight_until_its_lock_times_out_then_taken_over(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let first = locked(store.as_ref(), &req, at(0)).await;
    match store
        .begin_request(&req, at(90), LOCK)
        .await
        .expect("key phase")
    {
        KeyPhase::InFlight { retry_after } => assert_eq!(retry_after, Duration::from_secs(1)),
        other => panic!("expected in flight, got {other:?}"),
    }
    let second = locked(store.as_ref(), &req, at(91)).await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.lock_generation, first.lock_generation + 1);
    assert_eq!(second.last_run_at, at(91));
    assert_eq!(second.created_at, at(0));
    assert_eq!(second.progress, first.progress, "resumed where it was");
    assert_eq!(
        second.downstream_key, first.downstream_key,
        "forever the same"
    );
}

async fn a_different_request_under_a_key_is_a_mismatch_and_keys_are_per_user(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let other = user(store.as_ref(), "b@example.com").await;
    locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    assert_eq!(
        store
            .begin_request(&request(&rider, &key(1), 1.5), at(1), LOCK)
            .await
            .expect("key phase"),
        KeyPhase::Mismatch
    );
    let theirs = locked(store.as_ref(), &request(&other, &key(1), 1.5), at(1)).await;
    assert_eq!(theirs.user_id, other.id);
}

async fn a_booking_records_the_charge_stages_the_job_and_replays(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let record = book(store.as_ref(), &req, at(5)).await;
    let ride_id = ride_of(&record);
    let ride = store
        .find_ride(ride_id)
        .await
        .expect("found")
        .expect("exists");
    assert_eq!(ride.idempotency_key_id, Some(record.id));
    assert_eq!(ride.user_id, rider.id);
    assert_eq!(ride.stripe_charge_id, Some(format!("ch_{}", record.id)));
    assert_eq!(KeyAction::BookRide(ride.params), req.action);
    let jobs = store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job, ReceiptJob::for_ride(ride_id, rider.id));
    assert_eq!(
        store
            .begin_request(&req, at(6), LOCK)
            .await
            .expect("key phase"),
        KeyPhase::Replay(created(ride_id))
    );
    let after = store
        .keys_for_review(at(1_000_000), 10)
        .await
        .expect("review");
    assert!(after.is_empty(), "a finished key needs no review");
    // A replay, a mismatch and a 409 take no lock: the key is as it was.
    assert_eq!(
        store
            .begin_request(&request(&rider, &key(1), 7.0), at(7), LOCK)
            .await
            .expect("key phase"),
        KeyPhase::Mismatch
    );
}

async fn a_superseded_lease_writes_nothing_and_cannot_unlock_the_successor(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let first = locked(store.as_ref(), &req, at(0)).await;
    let stale = Lease::of(&first);
    let current = Lease::of(&locked(store.as_ref(), &req, at(100)).await);
    lost(store.note_charge_attempt(stale, at(101)).await, "note");
    lost(
        store
            .finish(stale, booking(&first, "ch_stale"), at(101))
            .await,
        "book",
    );
    lost(store.finish(stale, refusal(), at(101)).await, "refuse");
    store.unlock(stale).await.expect("a no-op");
    match store
        .begin_request(&req, at(102), LOCK)
        .await
        .expect("key phase")
    {
        KeyPhase::InFlight { .. } => {}
        other => panic!("the successor still holds the lock, got {other:?}"),
    }
    let ride = store
        .find_ride(ride_of(&first))
        .await
        .expect("read")
        .expect("ride");
    assert_eq!(ride.stripe_charge_id, None, "no charge recorded");
    assert!(
        store.staged_jobs(10).await.expect("jobs").is_empty(),
        "no job staged"
    );
    store.unlock(current).await.expect("unlocked");
    let resumed = locked(store.as_ref(), &req, at(104)).await;
    assert_eq!(resumed.progress, first.progress);
}

/// Takes a key over from a lease whose lock timed out, at the recovery
/// point it was left at: the stale lease and the current one then name the
/// same key at the same recovery point and differ only in generation.
async fn taken_over(
    store: &dyn Store,
    request: &KeyRequest,
    stale: &KeyRecord,
    now: SystemTime,
) -> Lease {
    let current = locked(store, request, now).await;
    assert_eq!(current.id, stale.id);
    assert_eq!(current.recovery_point(), stale.recovery_point());
    assert!(current.lock_generation > stale.lock_generation);
    Lease::of(&current)
}

/// A key a request holds right now is in flight to everyone else.
async fn still_held(store: &dyn Store, request: &KeyRequest, now: SystemTime) {
    match store
        .begin_request(request, now, LOCK)
        .await
        .expect("key phase")
    {
        KeyPhase::InFlight { .. } => {}
        other => panic!("the current holder lost its lock: {other:?}"),
    }
}

/// Lease fencing, phase by phase: a write with a superseded lease at the
/// very recovery point the current holder is at is refused (`LostLock`)
/// and changes nothing; only the generation tells the two apart.
async fn every_phase_write_with_a_superseded_lease_is_refused_by_generation(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let late = at(100); // past the 90 s lock timeout of a lock taken at 0

    // started (left by an earlier version): create_ride.
    let req = request(&rider, &key(1), 1.0);
    let stale = locked(store.as_ref(), &req, at(0)).await;
    store.leave_at_started(stale.id).await;
    let stale = KeyRecord {
        progress: KeyProgress::Started,
        ..stale
    };
    let current = taken_over(store.as_ref(), &req, &stale, late).await;
    lost(
        store.create_ride(Lease::of(&stale), late).await.map(|_| ()),
        "create_ride",
    );
    still_held(store.as_ref(), &req, late).await;
    let record = store
        .create_ride(current, late)
        .await
        .expect("the holder writes");
    assert_eq!(record.recovery_point(), RecoveryPoint::RideCreated);

    // ride_created: note_charge_attempt, finish(Booked), finish(Refused).
    let req = request(&rider, &key(2), 1.0);
    let stale = locked(store.as_ref(), &req, at(0)).await;
    let current = taken_over(store.as_ref(), &req, &stale, late).await;
    lost(
        store.note_charge_attempt(Lease::of(&stale), late).await,
        "note_charge_attempt",
    );
    assert!(
        store
            .keys_for_review(at(1_000_000), 10)
            .await
            .expect("list")
            .is_empty(),
        "no charge attempt was noted"
    );
    lost(
        store
            .finish(Lease::of(&stale), booking(&stale, "ch_stale"), late)
            .await,
        "finish(Booked)",
    );
    lost(
        store.finish(Lease::of(&stale), refusal(), late).await,
        "finish(Refused)",
    );
    assert!(
        store.staged_jobs(10).await.expect("jobs").is_empty(),
        "no job staged"
    );
    store.unlock(Lease::of(&stale)).await.expect("a no-op");
    still_held(store.as_ref(), &req, late).await;
    store
        .note_charge_attempt(current, late)
        .await
        .expect("noted");
    store
        .finish(current, booking(&stale, "ch_current"), late)
        .await
        .expect("the holder books");
    let ride = store
        .find_ride(ride_of(&stale))
        .await
        .expect("read")
        .expect("ride");
    assert_eq!(ride.stripe_charge_id.as_deref(), Some("ch_current"));

    // charge_created (left by an earlier version): finish(Booked).
    let req = request(&rider, &key(3), 1.0);
    let stale = locked(store.as_ref(), &req, at(0)).await;
    store.leave_at_charge_created(stale.id, "ch_three").await;
    let stale = KeyRecord {
        progress: KeyProgress::ChargeCreated {
            ride_id: ride_of(&stale),
        },
        ..stale
    };
    let current = taken_over(store.as_ref(), &req, &stale, late).await;
    lost(
        store
            .finish(Lease::of(&stale), booking(&stale, "ch_three"), late)
            .await,
        "finish(Booked)",
    );
    assert_eq!(
        store.staged_jobs(10).await.expect("jobs").len(),
        1,
        "no job staged"
    );
    still_held(store.as_ref(), &req, late).await;
    store
        .finish(current, booking(&stale, "ch_three"), late)
        .await
        .expect("the holder finishes");
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 2);
}

/// Recovery points only move forward: each write from a point it does not
/// expect is refused and writes nothing.
async fn every_forbidden_recovery_point_transition_is_refused(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let record = locked(store.as_ref(), &req, at(0)).await;
    let lease = Lease::of(&record);
    let ride_id = ride_of(&record);
    // At started (an earlier version's key): no charge, no finish.
    store.leave_at_started(record.id).await;
    lost(
        store.note_charge_attempt(lease, at(1)).await,
        "note at started",
    );
    lost(
        store.finish(lease, refusal(), at(1)).await,
        "refuse at started",
    );
    lost(
        store.finish(lease, booking(&record, "ch_x"), at(1)).await,
        "book at started",
    );
    let record = store.create_ride(lease, at(1)).await.expect("ride");
    let ride_id = record.progress.ride_id().unwrap_or(ride_id);
    // At ride_created: no second ride.
    lost(
        store.create_ride(lease, at(2)).await.map(|_| ()),
        "ride twice",
    );
    store
        .note_charge_attempt(lease, at(2))
        .await
        .expect("noted");
    store
        .finish(lease, booking(&record, "ch_one"), at(3))
        .await
        .expect("booked");
    // At finished: nothing at all.
    lost(
        store.create_ride(lease, at(4)).await.map(|_| ()),
        "ride after finishing",
    );
    lost(
        store.note_charge_attempt(lease, at(4)).await,
        "note after finishing",
    );
    lost(
        store.finish(lease, refusal(), at(4)).await,
        "refuse after finishing",
    );
    lost(
        store.finish(lease, booking(&record, "ch_two"), at(4)).await,
        "book twice",
    );
    let ride = store.find_ride(ride_id).await.expect("read").expect("ride");
    assert_eq!(ride.stripe_charge_id.as_deref(), Some("ch_one"));
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 1);

    // At charge_created (an earlier version's key): only the booking of
    // the recorded charge.
    let req = request(&rider, &key(2), 1.0);
    let record = locked(store.as_ref(), &req, at(10)).await;
    let lease = Lease::of(&record);
    store.leave_at_charge_created(record.id, "ch_left").await;
    lost(
        store.create_ride(lease, at(11)).await.map(|_| ()),
        "ride after the charge",
    );
    lost(
        store.note_charge_attempt(lease, at(11)).await,
        "note after the charge",
    );
    lost(
        store.finish(lease, refusal(), at(11)).await,
        "refuse after the charge",
    );
    let other = store
        .finish(lease, booking(&record, "ch_other"), at(11))
        .await;
    assert!(
        matches!(other, Err(StoreError::Inconsistent(_))),
        "another charge than the recorded one: {other:?}"
    );
    assert_eq!(
        store.staged_jobs(10).await.expect("jobs").len(),
        1,
        "nothing staged"
    );
    store
        .finish(lease, booking(&record, "ch_left"), at(12))
        .await
        .expect("booked");
    let ride = store
        .find_ride(ride_of(&record))
        .await
        .expect("read")
        .expect("ride");
    assert_eq!(ride.stripe_charge_id.as_deref(), Some("ch_left"));
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 2);
}

/// One charge books one ride: the same charge id on a second key's ride is
/// refused and that key stays where it was.
async fn one_charge_can_never_book_two_rides(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let first = locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    store
        .finish(Lease::of(&first), booking(&first, "ch_shared"), at(0))
        .await
        .expect("booked");
    let second_req = request(&rider, &key(2), 1.0);
    let second = locked(store.as_ref(), &second_req, at(0)).await;
    let error = store
        .finish(Lease::of(&second), booking(&second, "ch_shared"), at(1))
        .await
        .expect_err("a charge on two rides");
    assert!(matches!(error, StoreError::Inconsistent(_)), "{error:?}");
    let ride = store
        .find_ride(ride_of(&second))
        .await
        .expect("read")
        .expect("ride");
    assert_eq!(ride.stripe_charge_id, None);
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 1);
    store.unlock(Lease::of(&second)).await.expect("unlocked");
    let again = locked(store.as_ref(), &second_req, at(2)).await;
    assert_eq!(again.recovery_point(), RecoveryPoint::RideCreated);
}

async fn a_refusal_finishes_the_key_with_no_job_and_replays(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let lease = Lease::of(&locked(store.as_ref(), &req, at(0)).await);
    store
        .finish(lease, refusal(), at(2))
        .await
        .expect("refused from ride_created");
    assert!(
        store.staged_jobs(10).await.expect("jobs").is_empty(),
        "no job without a 201"
    );
    assert_eq!(
        store
            .begin_request(&req, at(3), LOCK)
            .await
            .expect("key phase"),
        KeyPhase::Replay(refusal().response().clone())
    );
}

async fn the_completer_query_and_lock_take_exactly_the_eligible_keys(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    // 1: unlocked at ride_created since t=0.  2: finished.  3: locked at t=0.
    // 4: unlocked, created at t=200.
    let one = locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    store.unlock(Lease::of(&one)).await.expect("unlocked");
    book(store.as_ref(), &request(&rider, &key(2), 1.0), at(0)).await;
    let three = locked(store.as_ref(), &request(&rider, &key(3), 1.0), at(0)).await;
    let four = locked(store.as_ref(), &request(&rider, &key(4), 1.0), at(200)).await;
    store.unlock(Lease::of(&four)).await.expect("unlocked");

    let ids = |now| {
        let store = store.clone();
        async move {
            store
                .find_completable(now, COMPLETER, 100)
                .await
                .expect("query")
        }
    };
    assert!(ids(at(300)).await.is_empty(), "nothing is over 300 s old");
    assert_eq!(ids(at(301)).await, vec![one.id, three.id]);
    assert_eq!(ids(at(501)).await, vec![one.id, three.id, four.id]);
    assert_eq!(
        store
            .find_completable(at(501), COMPLETER, 2)
            .await
            .expect("query"),
        vec![one.id, three.id],
        "oldest first, at most a batch"
    );

    let taken = store
        .lock_for_completion(one.id, at(501), COMPLETER)
        .await
        .expect("lock")
        .expect("eligible");
    assert_eq!(taken.lock_generation, one.lock_generation + 1);
    assert_eq!(taken.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(
        store
            .lock_for_completion(one.id, at(502), COMPLETER)
            .await
            .expect("lock"),
        None,
        "locked and just run: not eligible again"
    );
    assert_eq!(ids(at(502)).await, vec![three.id, four.id]);
}

async fn the_reaper_deletes_old_keys_only_and_keeps_their_rides(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let old = book(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    let old_two = book(store.as_ref(), &request(&rider, &key(2), 1.0), at(1)).await;
    let young = book(store.as_ref(), &request(&rider, &key(3), 1.0), at(100)).await;
    assert_eq!(
        store.reap_keys(at(0), 10).await.expect("reap"),
        0,
        "strictly older"
    );
    assert_eq!(
        store.reap_keys(at(50), 1).await.expect("reap"),
        1,
        "a batch at most"
    );
    assert_eq!(store.reap_keys(at(50), 10).await.expect("reap"), 1);
    for gone in [&old, &old_two] {
        let ride = store
            .find_ride(ride_of(gone))
            .await
            .expect("found")
            .expect("the ride stays");
        assert_eq!(ride.idempotency_key_id, None);
    }
    let kept = store
        .find_ride(ride_of(&young))
        .await
        .expect("found")
        .expect("exists");
    assert_eq!(kept.idempotency_key_id, Some(young.id));
    // A reaped key's string is free again.
    let again = locked(store.as_ref(), &request(&rider, &key(1), 9.0), at(200)).await;
    assert_ne!(again.id, old.id);
}

/// How many keys a person's review lists at `now`.
async fn listed_for_review(store: &dyn Store, now: SystemTime) -> usize {
    store
        .keys_for_review(COMPLETER.review.attempted_before(now), 10)
        .await
        .expect("list")
        .len()
}

/// A key whose request charged at `attempt` and died before the answer.
async fn charge_attempted(
    store: &dyn Store,
    request: &KeyRequest,
    attempt: SystemTime,
) -> KeyRecord {
    let record = locked(store, request, at(0)).await;
    let lease = Lease::of(&record);
    store
        .note_charge_attempt(lease, attempt)
        .await
        .expect("noted");
    record
}

async fn the_reaper_keeps_keys_whose_charge_outcome_was_never_recorded(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let unresolved = charge_attempted(store.as_ref(), &request(&rider, &key(1), 1.0), at(5)).await;
    let never_charged = locked(store.as_ref(), &request(&rider, &key(2), 1.0), at(0)).await;
    store
        .unlock(Lease::of(&never_charged))
        .await
        .expect("unlocked");
    book(store.as_ref(), &request(&rider, &key(3), 1.0), at(0)).await;
    assert_eq!(
        store.reap_keys(at(1_000_000), 10).await.expect("reap"),
        2,
        "the finished key and the one that never reached Stripe"
    );
    let left: Vec<KeyId> = store
        .keys_for_review(at(1_000_000), 10)
        .await
        .expect("list")
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(left, vec![unresolved.id], "kept for a person, still listed");
}

/// However old, the reaper leaves a key whose charge exists unrecorded as
/// finished (`charge_created`) and a key a request holds or held (locked):
/// deleting either would let a retry start over and charge again.
async fn the_reaper_never_deletes_a_charged_or_locked_key(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let charged = locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    let lease = Lease::of(&charged);
    store
        .note_charge_attempt(lease, at(0))
        .await
        .expect("noted");
    store
        .leave_at_charge_created(charged.id, "ch_charged")
        .await;
    store.unlock(lease).await.expect("unlocked");
    let held_at_start = locked(store.as_ref(), &request(&rider, &key(2), 1.0), at(1)).await;
    store.leave_at_started(held_at_start.id).await;
    let held_with_ride = locked(store.as_ref(), &request(&rider, &key(3), 1.0), at(2)).await;
    assert_eq!(
        store.reap_keys(at(1_000_000), 10).await.expect("reap"),
        0,
        "nothing here may go"
    );
    // A retry with the charged key resumes it: same key, no new charge.
    let retried = locked(
        store.as_ref(),
        &request(&rider, &key(1), 1.0),
        at(1_000_000),
    )
    .await;
    assert_eq!(retried.id, charged.id);
    assert_eq!(retried.recovery_point(), RecoveryPoint::ChargeCreated);
    assert!(held_at_start.locked_at.is_some());
    assert!(held_with_ride.locked_at.is_some());
}

/// Oldest first, as both stores must: a batch of one takes the oldest key.
async fn the_reaper_takes_the_oldest_keys_first(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let mut booked = Vec::new();
    for (n, created) in [(1, 30), (2, 10), (3, 20)] {
        booked.push(book(store.as_ref(), &request(&rider, &key(n), 1.0), at(created)).await);
    }
    for expected_gone in [&booked[1], &booked[2], &booked[0]] {
        assert_eq!(store.reap_keys(at(100), 1).await.expect("reap"), 1);
        let ride = store
            .find_ride(ride_of(expected_gone))
            .await
            .expect("found")
            .expect("the ride stays");
        assert_eq!(
            ride.idempotency_key_id, None,
            "key {} reaped in turn",
            expected_gone.id
        );
    }
}

async fn reported_keys_are_checked_when_due_backing_off_a_bounded_number_of_times(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let first = charge_attempted(store.as_ref(), &request(&rider, &key(1), 1.0), at(10)).await;
    let second = charge_attempted(store.as_ref(), &request(&rider, &key(2), 1.0), at(20)).await;
    let settled = charge_attempted(store.as_ref(), &request(&rider, &key(3), 1.0), at(30)).await;
    let checks = domain::ReviewChecks {
        first_gap: Duration::from_secs(100),
        max_checks: 3,
    };
    let now = at(31) + COMPLETER.review.review_after;
    let claim = |now: SystemTime, limit: usize| {
        let store = store.clone();
        async move {
            store
                .claim_review_checks(now, checks, limit)
                .await
                .expect("claim")
        }
    };
    assert!(
        claim(now, 10).await.is_empty(),
        "never reported: not checked"
    );
    let reported = store
        .report_keys_for_review(COMPLETER.review.attempted_before(now), now, 10)
        .await
        .expect("report");
    assert_eq!(reported.len(), 3);
    // A person settles one of them: it is never checked again.
    let taken = store
        .lock_for_review(settled.id, now, COMPLETER.review, LOCK)
        .await
        .expect("lock")
        .expect("awaits review");
    store
        .finish(Lease::of(&taken), refusal(), now)
        .await
        .expect("settled");
    // Due at once when reported, in order, each claimed once.
    assert_eq!(claim(now, 1).await, vec![first.id]);
    assert_eq!(claim(now, 10).await, vec![second.id]);
    assert!(
        claim(now, 10).await.is_empty(),
        "checked: not due again yet"
    );
    let after = |seconds: u64| now + Duration::from_secs(seconds);
    assert!(claim(after(99), 10).await.is_empty());
    assert_eq!(claim(after(100), 10).await, vec![first.id, second.id]);
    // The next gap is twice the first.
    assert!(claim(after(100 + 199), 10).await.is_empty());
    assert_eq!(claim(after(300), 10).await, vec![first.id, second.id]);
    // Three checks made: a person's from now on.
    assert!(claim(after(1_000_000), 10).await.is_empty());
    assert_eq!(
        listed_for_review(store.as_ref(), now).await,
        2,
        "still listed for a person"
    );
}

async fn only_keys_awaiting_review_are_locked_for_a_person(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let review = COMPLETER.review;
    let window = review.review_after;
    let awaiting = charge_attempted(store.as_ref(), &request(&rider, &key(1), 1.0), at(10)).await;
    let recent = charge_attempted(store.as_ref(), &request(&rider, &key(2), 1.0), at(500)).await;
    let finished = book(store.as_ref(), &request(&rider, &key(3), 1.0), at(0)).await;
    let now = at(11) + window;
    for id in [recent.id, finished.id, KeyId(999_999)] {
        assert_eq!(
            store
                .lock_for_review(id, now, review, LOCK)
                .await
                .expect("lock"),
            None,
            "key {id} does not await review"
        );
    }
    // The request that attempted the charge died holding its lock, long
    // stale by now; a fresh lock (the first person's) blocks a second one.
    let taken = store
        .lock_for_review(awaiting.id, now, review, LOCK)
        .await
        .expect("lock")
        .expect("awaits review");
    assert_eq!(taken.lock_generation, awaiting.lock_generation + 1);
    assert_eq!(
        store
            .lock_for_review(awaiting.id, now, review, LOCK)
            .await
            .expect("lock"),
        None,
        "held by the first person now"
    );
    store
        .finish(
            Lease::of(&taken),
            booking(&taken, "ch_found_by_a_person"),
            now,
        )
        .await
        .expect("booked");
    let ride = store
        .find_ride(ride_of(&taken))
        .await
        .expect("read")
        .expect("ride");
    assert_eq!(
        ride.stripe_charge_id.as_deref(),
        Some("ch_found_by_a_person")
    );
}

async fn staged_jobs_come_in_id_order_and_receipts_are_recorded_once(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    for n in 0..3 {
        book(store.as_ref(), &request(&rider, &key(n), 1.0), at(0)).await;
    }
    let jobs = store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 3);
    assert!(jobs.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.staged_jobs(2).await.expect("jobs").len(), 2);
    store
        .delete_staged_jobs(&[jobs[0].id])
        .await
        .expect("deleted");
    let left = store.staged_jobs(10).await.expect("jobs");
    assert_eq!(left, jobs[1..].to_vec());

    let ride = jobs[0].job.ride_id;
    let job_id = jobs[0].id;
    let stale = Duration::from_secs(60);
    assert!(!store.receipt_sent(ride.into()).await.expect("read"));
    let claim = |now| {
        let store = store.clone();
        async move {
            store
                .claim_receipt(job_id, ride.into(), now, stale)
                .await
                .expect("claim")
        }
    };
    let ReceiptClaim::Claimed(first) = claim(at(1)).await else {
        panic!("claimed");
    };
    assert_eq!(
        claim(at(2)).await,
        ReceiptClaim::InProgress,
        "another worker sends it"
    );
    store
        .release_receipt(ride.into(), first)
        .await
        .expect("released");
    let ReceiptClaim::Claimed(second) = claim(at(3)).await else {
        panic!("a failed send frees it");
    };
    assert_ne!(second, first, "a new claim, a new token");
    assert_eq!(
        claim(at(62)).await,
        ReceiptClaim::InProgress,
        "59 s old: still the other worker's"
    );
    let ReceiptClaim::Claimed(third) = claim(at(63)).await else {
        panic!("60 s old: a dead worker's claim goes stale");
    };
    assert!(
        store
            .mark_receipt_sent(ride.into(), third, at(65))
            .await
            .expect("sent")
    );
    assert!(store.receipt_sent(ride.into()).await.expect("read"));
    assert_eq!(claim(at(66)).await, ReceiptClaim::AlreadySent);
    assert_eq!(
        claim(at(10_000)).await,
        ReceiptClaim::AlreadySent,
        "sent is forever"
    );
    store
        .release_receipt(ride.into(), third)
        .await
        .expect("a no-op once sent");
    assert!(store.receipt_sent(ride.into()).await.expect("read"));
}

/// A job naming a ride that does not exist is answered `NoSuchRide`, and
/// the rest of its batch is claimed as usual (on Postgres the batch's one
/// statement does not fail on the missing ride).
async fn a_claim_for_a_missing_ride_is_refused_alone(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    book(store.as_ref(), &request(&rider, &key(0), 1.0), at(0)).await;
    let job = store.staged_jobs(1).await.expect("jobs")[0].clone();
    let missing = RideId(job.job.ride_id.0 + 1_000_000);
    let claims = store
        .claim_receipts(
            &[
                (999, missing.into()),
                (job.id, job.job.ride_id.into()),
                (998, missing.into()),
            ],
            at(1),
            Duration::from_secs(60),
        )
        .await
        .expect("the batch is claimed");
    assert!(
        matches!(
            claims[..],
            [
                ReceiptClaim::NoSuchRide,
                ReceiptClaim::Claimed(_),
                ReceiptClaim::NoSuchRide
            ]
        ),
        "{claims:?}"
    );
}

/// A worker whose claim went stale and was taken over holds nothing: its
/// release leaves the new holder's claim, its mark marks nothing, and its
/// extension does not renew the claim; the holder's extension does, so a
/// slow send keeps its claim past the stale age.
async fn receipt_claims_are_fenced_by_their_tokens(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    book(store.as_ref(), &request(&rider, &key(0), 1.0), at(0)).await;
    let job = store.staged_jobs(1).await.expect("jobs")[0].clone();
    let (job_id, ride) = (job.id, job.job.ride_id);
    let stale = Duration::from_secs(60);
    let claim = |now| {
        let store = store.clone();
        async move {
            store
                .claim_receipt(job_id, ride.into(), now, stale)
                .await
                .expect("claim")
        }
    };
    let ReceiptClaim::Claimed(slow) = claim(at(1)).await else {
        panic!("claimed");
    };
    let ReceiptClaim::Claimed(taker) = claim(at(61)).await else {
        panic!("stale: taken over");
    };
    store
        .release_receipt(ride.into(), slow)
        .await
        .expect("no-op");
    assert_eq!(claim(at(62)).await, ReceiptClaim::InProgress, "still held");
    assert!(
        !store
            .mark_receipt_sent(ride.into(), slow, at(63))
            .await
            .expect("no-op")
    );
    assert!(!store.receipt_sent(ride.into()).await.expect("read"));
    store
        .extend_receipt_claims(&[(ride.into(), slow)], at(100))
        .await
        .expect("no-op");
    assert!(
        matches!(claim(at(122)).await, ReceiptClaim::Claimed(_)),
        "the stale holder's extension renewed nothing: 61 s old, stale"
    );
    // The holder of a claim keeps it by extending it while it sends.
    let ReceiptClaim::Claimed(holder) = claim(at(200)).await else {
        panic!("stale again: claimed");
    };
    assert_ne!(holder, taker);
    store
        .extend_receipt_claims(&[(ride.into(), holder)], at(250))
        .await
        .expect("extended");
    assert_eq!(
        claim(at(300)).await,
        ReceiptClaim::InProgress,
        "extended at 250: 50 s old, still held"
    );
    assert!(
        store
            .mark_receipt_sent(ride.into(), holder, at(301))
            .await
            .expect("sent")
    );
    assert!(store.receipt_sent(ride.into()).await.expect("read"));
}

/// Receipts claimed and marked many at once answer exactly as one at a
/// time would, in order; a ride listed twice is claimed once.
async fn receipts_are_claimed_and_marked_in_batches(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    for n in 0..3 {
        book(store.as_ref(), &request(&rider, &key(n), 1.0), at(0)).await;
    }
    let jobs = store.staged_jobs(10).await.expect("jobs");
    let ride = |i: usize| jobs[i].job.ride_id;
    let stale = Duration::from_secs(60);
    let first = store
        .claim_receipts(
            &[
                (jobs[0].id, ride(0).into()),
                (jobs[1].id, ride(1).into()),
                (jobs[0].id, ride(0).into()),
            ],
            at(1),
            stale,
        )
        .await
        .expect("claims");
    let (ReceiptClaim::Claimed(token0), ReceiptClaim::Claimed(_), ReceiptClaim::InProgress) =
        (first[0], first[1], first[2])
    else {
        panic!("a ride listed twice is claimed once: {first:?}");
    };
    assert_eq!(first.len(), 3);
    assert_eq!(
        store
            .mark_receipts_sent(&[(ride(0).into(), token0)], at(2))
            .await
            .expect("marked"),
        vec![ReceiptFor::ride(ride(0))]
    );
    let second = store
        .claim_receipts(
            &[
                (jobs[2].id, ride(2).into()),
                (jobs[1].id, ride(1).into()),
                (jobs[0].id, ride(0).into()),
            ],
            at(3),
            stale,
        )
        .await
        .expect("claims");
    let (ReceiptClaim::Claimed(token2), ReceiptClaim::InProgress, ReceiptClaim::AlreadySent) =
        (second[0], second[1], second[2])
    else {
        panic!("in the order asked: {second:?}");
    };
    let again = store
        .claim_receipts(&[(jobs[1].id, ride(1).into())], at(61), stale)
        .await
        .expect("claims");
    let [ReceiptClaim::Claimed(token1)] = again[..] else {
        panic!("a claim 60 s old is stale: {again:?}");
    };
    let mut marked = store
        .mark_receipts_sent(
            &[(ride(1).into(), token1), (ride(2).into(), token2)],
            at(62),
        )
        .await
        .expect("marked");
    marked.sort();
    assert_eq!(
        marked,
        vec![ReceiptFor::ride(ride(1)), ReceiptFor::ride(ride(2))]
    );
    for i in 0..3 {
        assert!(
            store.receipt_sent(ride(i).into()).await.expect("read"),
            "ride {i}"
        );
    }
    assert!(
        store
            .claim_receipts(&[], at(63), stale)
            .await
            .expect("none")
            .is_empty()
    );
}

async fn enqueuers_claim_disjoint_batches_and_a_dead_enqueuers_claim_runs_out(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    for n in 0..5 {
        book(store.as_ref(), &request(&rider, &key(n), 1.0), at(0)).await;
    }
    let all = store.staged_jobs(10).await.expect("jobs");
    let hold = Duration::from_secs(60);
    let first = store
        .claim_staged_jobs(3, at(10), hold)
        .await
        .expect("claim");
    let second = store
        .claim_staged_jobs(3, at(11), hold)
        .await
        .expect("claim");
    assert_eq!(first, all[..3].to_vec(), "in id order");
    assert_eq!(
        second,
        all[3..].to_vec(),
        "only what the first did not hold"
    );
    assert!(
        store
            .claim_staged_jobs(3, at(12), hold)
            .await
            .expect("claim")
            .is_empty()
    );
    let published: Vec<i64> = second.iter().map(|job| job.id).collect();
    store.delete_staged_jobs(&published).await.expect("deleted");
    assert_eq!(
        store.staged_jobs(10).await.expect("jobs"),
        all[..3].to_vec(),
        "exactly the published ones went"
    );
    // The first enqueuer died: its claim runs out and its jobs come back.
    assert!(
        store
            .claim_staged_jobs(10, at(69), hold)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store
        .claim_staged_jobs(10, at(70), hold)
        .await
        .expect("claim");
    assert_eq!(again, all[..3].to_vec());
    assert_eq!(
        store.staged_jobs(10).await.expect("jobs").len(),
        3,
        "claims delete nothing"
    );
    // Refused by the queue: the claim is given up, and the jobs can be
    // claimed again at once.
    let refused: Vec<i64> = again[..2].iter().map(|job| job.id).collect();
    store.release_staged_jobs(&refused).await.expect("released");
    let retried = store
        .claim_staged_jobs(10, at(71), hold)
        .await
        .expect("claim");
    assert_eq!(retried, all[..2].to_vec(), "only the released ones");
}

async fn users_upsert_by_email_and_are_found_by_api_key_hash(store: Arc<dyn ContractStore>) {
    let first = store
        .upsert_user(
            "a@example.com",
            &application::ports::SavedCustomer::without_payment_method("cus_1"),
        )
        .await
        .expect("user");
    let again = store
        .upsert_user(
            "a@example.com",
            &application::ports::SavedCustomer::without_payment_method("cus_2"),
        )
        .await
        .expect("user");
    assert_eq!(again.id, first.id);
    assert_eq!(again.stripe_customer_id, "cus_2");
    assert_eq!(
        store
            .find_user_by_email("a@example.com")
            .await
            .expect("read"),
        Some(again.clone())
    );
    assert_eq!(
        store.find_user(first.id).await.expect("read"),
        Some(again.clone())
    );
    assert_eq!(
        store
            .find_user_by_email("b@example.com")
            .await
            .expect("read"),
        None
    );
    let hash = ApiKeyHash::of("rr_secret");
    store.add_api_key(first.id, &hash).await.expect("added");
    assert_eq!(
        store.find_user_by_api_key(&hash).await.expect("read"),
        Some(again)
    );
    assert_eq!(
        store
            .find_user_by_api_key(&ApiKeyHash::of("rr_other"))
            .await
            .expect("read"),
        None
    );
}

async fn keys_whose_charge_was_attempted_long_ago_are_listed_for_review(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let record = locked(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    let lease = Lease::of(&record);
    store
        .note_charge_attempt(lease, at(10))
        .await
        .expect("noted");
    store
        .note_charge_attempt(lease, at(20))
        .await
        .expect("first attempt kept");
    store.unlock(lease).await.expect("unlocked");
    assert!(
        store
            .keys_for_review(at(10), 10)
            .await
            .expect("list")
            .is_empty()
    );
    let listed = store.keys_for_review(at(11), 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].unrecorded_charge_attempt(), Some(at(10)));
    // Read by id, as reconciling one key does: the same record.
    let found = store.find_key(record.id).await.expect("read");
    assert_eq!(found.as_ref(), Some(&listed[0]));
    assert_eq!(found.map(|k| k.downstream_key), Some(record.downstream_key));
    let unknown = KeyId(record.id.0 + 1000);
    assert!(store.find_key(unknown).await.expect("read").is_none());
}

async fn keys_for_review_are_reported_once_and_left_out_of_the_completers_batches(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let mut attempted = Vec::new();
    for (n, attempt) in [(1, 30), (2, 10), (3, 20)] {
        let record = locked(store.as_ref(), &request(&rider, &key(n), 1.0), at(0)).await;
        let lease = Lease::of(&record);
        store
            .note_charge_attempt(lease, at(attempt))
            .await
            .expect("noted");
        store.unlock(lease).await.expect("unlocked");
        attempted.push(record.id);
    }
    let never_attempted = locked(store.as_ref(), &request(&rider, &key(4), 1.0), at(0)).await;
    store
        .unlock(Lease::of(&never_attempted))
        .await
        .expect("unlocked");

    let window = COMPLETER.review.review_after;
    let now = at(25) + window;
    let completable = store
        .find_completable(now, COMPLETER, 100)
        .await
        .expect("find");
    assert_eq!(
        completable,
        vec![attempted[0], never_attempted.id],
        "keys attempted over the window ago are review's, not the completer's"
    );

    let first = store
        .report_keys_for_review(COMPLETER.review.attempted_before(now), now, 1)
        .await
        .expect("report");
    let second = store
        .report_keys_for_review(COMPLETER.review.attempted_before(now), now, 10)
        .await
        .expect("report");
    let third = store
        .report_keys_for_review(COMPLETER.review.attempted_before(now), now, 10)
        .await
        .expect("report");
    let ids = |keys: &[KeyRecord]| keys.iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), vec![attempted[1]], "oldest attempt first");
    assert_eq!(ids(&second), vec![attempted[2]]);
    assert!(third.is_empty(), "each key is reported once");
    assert_eq!(
        listed_for_review(store.as_ref(), now).await,
        2,
        "reported keys stay listed for a person"
    );
}

async fn concurrent_first_requests_with_one_key_let_exactly_one_through(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let req = request(&rider, &key(1), 1.0);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, req) = (store.clone(), req.clone());
        tasks.spawn(async move { store.begin_request(&req, at(0), LOCK).await });
    }
    let mut locked = 0;
    let mut in_flight = 0;
    while let Some(phase) = tasks.join_next().await {
        match phase.expect("task").expect("no store error from a race") {
            KeyPhase::Locked(_) => locked += 1,
            KeyPhase::InFlight { .. } => in_flight += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((locked, in_flight), (1, 15));
}

/// The operator's gauges: unfinished keys by recovery point, those whose
/// charge was attempted before the review cutoff, and the staged backlog
/// with its oldest job's age.
async fn the_gauges_count_unfinished_keys_and_the_staged_backlog(store: Arc<dyn ContractStore>) {
    let s = store.as_ref();
    assert_eq!(
        s.unfinished_counts(at(1_000)).await.expect("counts"),
        KeyCounts::default()
    );
    assert_eq!(
        s.backlog(at(1_000)).await.expect("backlog"),
        Backlog::default()
    );

    let rider = user(s, "gauges@example.com").await;
    charge_attempted(s, &request(&rider, &key(1), 1.0), at(10)).await;
    charge_attempted(s, &request(&rider, &key(2), 1.0), at(20)).await;
    locked(s, &request(&rider, &key(3), 1.0), at(0)).await;
    let legacy = locked(s, &request(&rider, &key(4), 1.0), at(0)).await;
    store.leave_at_started(legacy.id).await;
    book(s, &request(&rider, &key(5), 1.0), at(30)).await;
    book(s, &request(&rider, &key(6), 1.0), at(40)).await;

    let counts = s.unfinished_counts(at(15)).await.expect("counts");
    assert_eq!(
        counts.by_recovery_point,
        vec![(RecoveryPoint::Started, 1), (RecoveryPoint::RideCreated, 3)]
    );
    assert_eq!(counts.awaiting_review, 1, "attempted before 15 s");
    let later = s.unfinished_counts(at(25)).await.expect("counts");
    assert_eq!(later.awaiting_review, 2, "attempted before 25 s");

    let backlog = s.backlog(at(100)).await.expect("backlog");
    assert_eq!(
        backlog,
        Backlog {
            jobs: 2,
            oldest_age: Duration::from_secs(70),
        },
        "the job staged at 30 s is the oldest"
    );
}

async fn the_console_lists_recent_rides_with_their_requests_and_counts_answers_by_status(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let booked = book(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    let refused = locked(store.as_ref(), &request(&rider, &key(2), 1.0), at(10)).await;
    store
        .finish(Lease::of(&refused), refusal(), at(11))
        .await
        .expect("refused");
    let open = locked(store.as_ref(), &request(&rider, &key(3), 1.0), at(20)).await;
    book(store.as_ref(), &request(&rider, &key(4), 1.0), at(30)).await;

    let recent = store.recent_rides(3).await.expect("recent rides");
    let shown: Vec<(Option<KeyId>, Option<String>, Option<u16>)> = recent
        .iter()
        .map(|r| (r.ride.idempotency_key_id, r.request_id.clone(), r.status))
        .collect();
    assert_eq!(shown.len(), 3, "the limit holds");
    assert_eq!(
        shown[0].1.as_deref(),
        Some(format!("request-{}", key(4)).as_str()),
        "newest first"
    );
    assert_eq!(shown[0].2, Some(201));
    assert_eq!(
        shown[1],
        (Some(open.id), Some(format!("request-{}", key(3))), None)
    );
    assert_eq!(
        shown[2],
        (
            Some(refused.id),
            Some(format!("request-{}", key(2))),
            Some(402)
        )
    );
    assert_eq!(recent[1].requested_at, Some(at(20)));
    let all = store.recent_rides(10).await.expect("recent rides");
    assert_eq!(all.last().map(|r| r.ride.id), booked.progress.ride_id());
    assert_eq!(
        all.last().and_then(|r| r.ride.stripe_charge_id.clone()),
        Some(format!("ch_{}", booked.id))
    );

    // Keys created at or after the instant, by stored status.
    assert_eq!(
        store.answers_since(at(0)).await.expect("answers"),
        vec![(None, 1), (Some(201), 2), (Some(402), 1)]
    );
    assert_eq!(
        store.answers_since(at(10)).await.expect("answers"),
        vec![(None, 1), (Some(201), 1), (Some(402), 1)]
    );
    assert_eq!(store.answers_since(at(31)).await.expect("answers"), vec![]);
}

/// A key finished with its ride waiting on `intent` (`status`), at `now`.
async fn awaiting(
    store: &dyn Store,
    n: usize,
    intent: &str,
    status: domain::RideStatus,
    now: SystemTime,
) -> RideId {
    let rider = user(store, "a@example.com").await;
    let record = locked(store, &request(&rider, &key(n), 1.0), now).await;
    store
        .finish(
            Lease::of(&record),
            Finish::AwaitingPayment {
                payment_intent_id: intent.to_owned(),
                status,
                response: StoredResponse {
                    status: 402,
                    body: "{}".into(),
                },
            },
            now,
        )
        .await
        .expect("finished");
    ride_of(&record)
}

fn update(event: Option<&str>, intent: &str, state: PaymentIntentState) -> PaymentUpdate {
    PaymentUpdate {
        event_id: event.map(str::to_owned),
        event_type: "payment_intent.test".into(),
        payment_intent_id: intent.to_owned(),
        state,
    }
}

async fn ride_status(store: &dyn Store, ride: RideId) -> RideStatus {
    store
        .find_ride(ride)
        .await
        .expect("read")
        .expect("ride")
        .status
}

async fn a_ride_waiting_on_its_payment_moves_forward_once_per_event(store: Arc<dyn ContractStore>) {
    let ride = awaiting(
        &*store,
        1,
        "pi_1",
        RideStatus::AwaitingAuthentication,
        at(0),
    )
    .await;
    assert_eq!(
        ride_status(&*store, ride).await,
        RideStatus::AwaitingAuthentication
    );
    let found = store.find_ride(ride).await.expect("read").expect("ride");
    assert_eq!(found.stripe_payment_intent_id.as_deref(), Some("pi_1"));
    let succeeded = PaymentIntentState::Succeeded {
        charge_id: Some("ch_1".into()),
    };
    assert_eq!(
        store
            .apply_payment(&update(Some("evt_1"), "pi_1", succeeded.clone()), at(5))
            .await
            .expect("applied"),
        PaymentApplied::Moved {
            from: RideStatus::AwaitingAuthentication,
            to: RideStatus::Booked
        }
    );
    let booked = store.find_ride(ride).await.expect("read").expect("ride");
    assert_eq!(booked.status, RideStatus::Booked);
    assert_eq!(booked.stripe_charge_id.as_deref(), Some("ch_1"));
    let jobs = store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.ride_id, ride);
    // The same event again, and news from behind: nothing changes.
    assert_eq!(
        store
            .apply_payment(&update(Some("evt_1"), "pi_1", succeeded), at(6))
            .await
            .expect("applied"),
        PaymentApplied::Duplicate
    );
    assert_eq!(
        store
            .apply_payment(
                &update(Some("evt_2"), "pi_1", PaymentIntentState::Failed),
                at(7)
            )
            .await
            .expect("applied"),
        PaymentApplied::Unchanged {
            status: RideStatus::Booked
        }
    );
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 1);
    // An intent no ride carries stores nothing, not even its event id.
    assert_eq!(
        store
            .apply_payment(
                &update(Some("evt_3"), "pi_nobody", PaymentIntentState::Failed),
                at(8)
            )
            .await
            .expect("applied"),
        PaymentApplied::UnknownIntent
    );
}

async fn the_sync_pass_lists_rides_waiting_longer_than_the_cutoff_and_rechecks_later(
    store: Arc<dyn ContractStore>,
) {
    let old = awaiting(&*store, 1, "pi_old", RideStatus::PaymentPending, at(0)).await;
    let _new = awaiting(
        &*store,
        2,
        "pi_new",
        RideStatus::AwaitingAuthentication,
        at(100),
    )
    .await;
    let listed = store
        .rides_awaiting_payment(at(50), 10)
        .await
        .expect("listed");
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.ride_id, r.payment_intent_id.as_str(), r.status))
            .collect::<Vec<_>>(),
        [(old, "pi_old", RideStatus::PaymentPending)]
    );
    // Checked and still pending: its wait restarts.
    assert_eq!(
        store
            .apply_payment(
                &update(None, "pi_old", PaymentIntentState::Processing),
                at(60)
            )
            .await
            .expect("applied"),
        PaymentApplied::Unchanged {
            status: RideStatus::PaymentPending
        }
    );
    assert_eq!(
        store
            .rides_awaiting_payment(at(59), 10)
            .await
            .expect("listed"),
        []
    );
    let both = store
        .rides_awaiting_payment(at(100), 10)
        .await
        .expect("listed");
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].ride_id, old, "oldest first");
    assert_eq!(
        store
            .rides_awaiting_payment(at(100), 1)
            .await
            .expect("listed")
            .len(),
        1
    );
    // Settled rides leave the list.
    store
        .apply_payment(&update(None, "pi_old", PaymentIntentState::Failed), at(200))
        .await
        .expect("applied");
    assert_eq!(ride_status(&*store, old).await, RideStatus::PaymentFailed);
    let left = store
        .rides_awaiting_payment(at(300), 10)
        .await
        .expect("listed");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payment_intent_id, "pi_new");
    assert_eq!(store.staged_jobs(10).await.expect("jobs").len(), 0);
}

async fn a_refused_ride_fails_and_one_intent_pays_for_one_ride_only(store: Arc<dyn ContractStore>) {
    let rider = user(&*store, "a@example.com").await;
    let refused = locked(&*store, &request(&rider, &key(1), 1.0), at(0)).await;
    store
        .finish(
            Lease::of(&refused),
            Finish::Refused {
                response: StoredResponse {
                    status: 402,
                    body: "{}".into(),
                },
            },
            at(1),
        )
        .await
        .expect("finished");
    assert_eq!(
        ride_status(&*store, ride_of(&refused)).await,
        RideStatus::PaymentFailed
    );
    awaiting(&*store, 2, "pi_1", RideStatus::PaymentPending, at(2)).await;
    let second = locked(&*store, &request(&rider, &key(3), 1.0), at(3)).await;
    let error = store
        .finish(
            Lease::of(&second),
            Finish::AwaitingPayment {
                payment_intent_id: "pi_1".into(),
                status: RideStatus::PaymentPending,
                response: StoredResponse {
                    status: 202,
                    body: "{}".into(),
                },
            },
            at(4),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Inconsistent(_)), "{error:?}");
    assert_eq!(
        ride_status(&*store, ride_of(&second)).await,
        RideStatus::Charging
    );
}

async fn last_call(store: &dyn Store, id: KeyId) -> Option<SystemTime> {
    store
        .find_key(id)
        .await
        .expect("read")
        .expect("key")
        .progress
        .last_call_at()
}

/// Each gateway call's start is noted by the store's clock under the
/// lease: a new key charging at once is noted in its key phase, every
/// later holder notes its own call, and a superseded holder cannot.
async fn every_gateway_call_is_noted_under_the_lease_by_the_stores_clock(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(&*store, "a@example.com").await;
    let mut charging = request(&rider, &key(1), 1.0);
    charging.charges_now = true;
    let first = locked(&*store, &charging, at(0)).await;
    assert!(first.call_noted_by_this_lock(), "noted in the key phase");
    let noted = last_call(&*store, first.id).await.expect("noted");
    // Its lock times out; the next holder notes its own call, later.
    let stale = first.clone();
    let current = taken_over(&*store, &charging, &stale, at(100)).await;
    let record = store
        .find_key(current.key_id)
        .await
        .expect("read")
        .expect("key");
    assert!(
        !record.call_noted_by_this_lock(),
        "a new holder notes its own call"
    );
    lost(
        store.note_charge_attempt(Lease::of(&stale), at(101)).await,
        "stale note",
    );
    assert_eq!(
        last_call(&*store, first.id).await,
        Some(noted),
        "the stale note wrote nothing"
    );
    store
        .note_charge_attempt(current, at(102))
        .await
        .expect("noted");
    let again = last_call(&*store, first.id).await.expect("noted");
    assert!(again >= noted, "{again:?} after {noted:?}");
    let progress = store
        .find_key(first.id)
        .await
        .expect("read")
        .expect("key")
        .progress;
    assert_eq!(
        progress.unrecorded_charge_attempt(),
        Some(at(0)),
        "the first attempt's time stays"
    );
}

/// A cancel key for `ride`, as `request` is a booking's.
fn cancel_request(user: &User, key: &str, ride: RideId) -> KeyRequest {
    KeyRequest {
        user_id: user.id,
        key: IdempotencyKey::parse(key).expect("valid"),
        fingerprint: RequestFingerprint::for_cancel(
            "POST",
            &format!("/rides/{ride}/cancel"),
            Some("late"),
        ),
        action: KeyAction::CancelRide {
            ride_id: ride,
            reason: Some("late".to_owned()),
        },
        request_ip: Some("198.51.100.7".into()),
        request_id: None,
        charges_now: false,
    }
}

fn recorded(recording: CancelRecording) -> (KeyRecord, Cancellation) {
    match recording {
        CancelRecording::Recorded {
            record,
            cancellation,
        } => (record, cancellation),
        other => panic!("expected a recorded cancellation, got {other:?}"),
    }
}

/// A booked ride (key `n`, at 0) whose cancellation a second key (`100 +
/// n`, at 1) has recorded in full: the ride, and the cancel key at
/// `cancel_recorded`.
async fn cancelling(store: &dyn Store, rider: &User, n: usize) -> (RideId, KeyRecord) {
    let ride = ride_of(&book(store, &request(rider, &key(n), 1.0), at(0)).await);
    let record = locked(store, &cancel_request(rider, &key(100 + n), ride), at(1)).await;
    let (record, _) = recorded(
        store
            .record_cancellation(Lease::of(&record), CancelPolicy::DEFAULT, at(1))
            .await
            .expect("recorded"),
    );
    (ride, record)
}

async fn status_of(store: &dyn Store, ride: RideId) -> RideStatus {
    store
        .find_ride(ride)
        .await
        .expect("read")
        .expect("ride")
        .status
}

async fn a_cancel_is_recorded_once_per_ride_refunded_and_finished_with_its_receipt(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let booking = book(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await;
    let ride = ride_of(&booking);
    let req = cancel_request(&rider, &key(100), ride);
    let key_record = locked(store.as_ref(), &req, at(60)).await;
    assert_eq!(key_record.recovery_point(), RecoveryPoint::Started);
    assert_eq!(key_record.ride_id(), Some(ride));
    assert_eq!(key_record.action, req.action);
    let lease = Lease::of(&key_record);
    let (moved, cancellation) = recorded(
        store
            .record_cancellation(lease, CancelPolicy::DEFAULT, at(61))
            .await
            .expect("recorded"),
    );
    assert_eq!(moved.recovery_point(), RecoveryPoint::CancelRecorded);
    assert_eq!(moved.progress.ride_id(), Some(ride));
    let full = Giveback::Refund {
        amount_cents: domain::RIDE_PRICE.amount_cents,
    };
    assert_eq!(cancellation.giveback, full, "within the free window");
    assert_eq!(
        store.find_cancellation(ride).await.expect("read"),
        Some(cancellation.clone())
    );
    assert_eq!(
        status_of(store.as_ref(), ride).await,
        RideStatus::Cancelling
    );
    lost(
        store
            .record_cancellation(lease, CancelPolicy::DEFAULT, at(62))
            .await
            .map(|_| ()),
        "a second recording by the same key",
    );

    // Another key finds the ride cancelled: refused, nothing written.
    let other = locked(
        store.as_ref(),
        &cancel_request(&rider, &key(101), ride),
        at(63),
    )
    .await;
    assert_eq!(
        store
            .record_cancellation(Lease::of(&other), CancelPolicy::DEFAULT, at(63))
            .await
            .expect("decided"),
        CancelRecording::Refused(CancelDecision::AlreadyCancelled)
    );
    let refused = StoredResponse::ride_already_cancelled();
    store
        .finish(
            Lease::of(&other),
            Finish::CancelRefused {
                response: refused.clone(),
            },
            at(64),
        )
        .await
        .expect("refused");
    assert_eq!(
        status_of(store.as_ref(), ride).await,
        RideStatus::Cancelling
    );

    store
        .note_charge_attempt(lease, at(65))
        .await
        .expect("noted");
    let refund = RefundRecord {
        refund_id: "re_1".to_owned(),
        status: RefundStatus::Pending,
    };
    store
        .record_refund(lease, Some(refund.clone()), at(66))
        .await
        .expect("refund recorded");
    lost(
        store
            .record_refund(lease, Some(refund.clone()), at(66))
            .await,
        "a second refund",
    );
    assert_eq!(
        store
            .find_cancellation(ride)
            .await
            .expect("read")
            .and_then(|c| c.refund),
        Some(refund)
    );
    let response = StoredResponse {
        status: 200,
        body: "{\"cancelled\":true}".into(),
    };
    let jobs_before = store.staged_jobs(10).await.expect("jobs").len();
    store
        .finish(
            lease,
            Finish::Cancelled {
                response: response.clone(),
                job: ReceiptJob::for_cancellation(ride, rider.id, full.refund_cents()),
            },
            at(67),
        )
        .await
        .expect("finished");
    assert_eq!(status_of(store.as_ref(), ride).await, RideStatus::Cancelled);
    let jobs = store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), jobs_before + 1, "one job staged with the 200");
    let job = &jobs.last().expect("job").job;
    assert_eq!(job.kind, ReceiptKind::Cancellation);
    assert_eq!(job.ride_id, ride);
    assert_eq!(job.amount_cents, full.refund_cents());
    for (request, answer) in [
        (req, response),
        (cancel_request(&rider, &key(101), ride), refused),
    ] {
        assert_eq!(
            store
                .begin_request(&request, at(68), LOCK)
                .await
                .expect("key phase"),
            KeyPhase::Replay(answer)
        );
    }
}

async fn a_cancel_is_decided_from_the_rides_status_and_booking_time(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let other_rider = user(store.as_ref(), "b@example.com").await;
    let late = ride_of(&book(store.as_ref(), &request(&rider, &key(1), 1.0), at(0)).await);
    let decide = |n: usize, who: User, ride: RideId, now: SystemTime| {
        let store = store.clone();
        async move {
            let record = locked(store.as_ref(), &cancel_request(&who, &key(n), ride), now).await;
            store
                .record_cancellation(Lease::of(&record), CancelPolicy::DEFAULT, now)
                .await
        }
    };
    let (_, cancellation) = recorded(decide(100, rider.clone(), late, at(301)).await.expect("ok"));
    assert_eq!(
        cancellation.giveback,
        Giveback::Refund {
            amount_cents: domain::RIDE_PRICE.amount_cents - 500
        },
        "after the free window: less the fee"
    );

    let failed = locked(store.as_ref(), &request(&rider, &key(2), 1.0), at(0)).await;
    store
        .finish(Lease::of(&failed), refusal(), at(1))
        .await
        .expect("refused");
    assert_eq!(
        decide(101, rider.clone(), ride_of(&failed), at(2))
            .await
            .expect("ok"),
        CancelRecording::Refused(CancelDecision::NotCancellable)
    );
    let charging = locked(store.as_ref(), &request(&rider, &key(3), 1.0), at(0)).await;
    store.unlock(Lease::of(&charging)).await.expect("unlocked");
    assert_eq!(
        decide(102, rider.clone(), ride_of(&charging), at(2))
            .await
            .expect("ok"),
        CancelRecording::Refused(CancelDecision::PaymentInProgress)
    );
    assert_eq!(
        status_of(store.as_ref(), ride_of(&charging)).await,
        RideStatus::Charging,
        "a refusal changes nothing"
    );
    let booked = ride_of(&book(store.as_ref(), &request(&rider, &key(4), 1.0), at(0)).await);
    assert!(
        matches!(
            decide(103, other_rider, booked, at(1)).await,
            Err(StoreError::Inconsistent(_))
        ),
        "another rider's ride is never cancelled by the store"
    );
    assert_eq!(status_of(store.as_ref(), booked).await, RideStatus::Booked);
    assert_eq!(store.find_cancellation(booked).await.expect("read"), None);
}

async fn a_refused_refund_fails_the_ride_and_a_refund_id_serves_one_cancellation(
    store: Arc<dyn ContractStore>,
) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let mut leases = Vec::new();
    for n in 0..2 {
        let (ride, record) = cancelling(store.as_ref(), &rider, n).await;
        leases.push((Lease::of(&record), ride));
    }
    let refund = RefundRecord {
        refund_id: "re_shared".to_owned(),
        status: RefundStatus::Succeeded,
    };
    store
        .record_refund(leases[0].0, Some(refund.clone()), at(2))
        .await
        .expect("recorded");
    assert!(
        matches!(
            store.record_refund(leases[1].0, Some(refund), at(2)).await,
            Err(StoreError::Inconsistent(_))
        ),
        "one refund pays back one ride"
    );
    let response = StoredResponse::refund_refused();
    store
        .finish(
            leases[1].0,
            Finish::RefundFailed {
                response: response.clone(),
            },
            at(3),
        )
        .await
        .expect("finished");
    assert_eq!(
        status_of(store.as_ref(), leases[1].1).await,
        RideStatus::RefundFailed
    );
    assert_eq!(
        store.failed_refunds(10).await.expect("listed"),
        vec![application::ports::FailedRefund {
            ride_id: leases[1].1,
            user_id: rider.id,
            amount_cents: domain::RIDE_PRICE.amount_cents,
            refund_id: None,
        }],
        "listed for a person"
    );
    let jobs = store.staged_jobs(10).await.expect("jobs");
    assert!(
        jobs.iter().all(|j| j.job.kind == ReceiptKind::Ride),
        "no cancellation receipt without a 200"
    );
}

async fn a_refund_reported_failed_fails_its_ride_once_per_event(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let (ride, record) = cancelling(store.as_ref(), &rider, 1).await;
    store
        .record_refund(
            Lease::of(&record),
            Some(RefundRecord {
                refund_id: "re_fails".to_owned(),
                status: RefundStatus::Succeeded,
            }),
            at(2),
        )
        .await
        .expect("refund");
    let update = |event: &str, refund: &str, status| domain::RefundUpdate {
        event_id: Some(event.to_owned()),
        event_type: "charge.refund.updated".to_owned(),
        refund_id: refund.to_owned(),
        status,
    };
    assert_eq!(
        store
            .apply_refund(&update("evt_x", "re_unknown", RefundStatus::Failed), at(3))
            .await
            .expect("applied"),
        PaymentApplied::UnknownIntent
    );
    assert_eq!(
        store
            .apply_refund(&update("evt_1", "re_fails", RefundStatus::Failed), at(3))
            .await
            .expect("applied"),
        PaymentApplied::Moved {
            from: RideStatus::Cancelling,
            to: RideStatus::RefundFailed
        }
    );
    assert_eq!(
        store
            .apply_refund(&update("evt_1", "re_fails", RefundStatus::Failed), at(4))
            .await
            .expect("applied"),
        PaymentApplied::Duplicate
    );
    assert_eq!(
        store
            .apply_refund(&update("evt_2", "re_fails", RefundStatus::Succeeded), at(5))
            .await
            .expect("applied"),
        PaymentApplied::Unchanged {
            status: RideStatus::RefundFailed
        }
    );
    assert_eq!(
        status_of(store.as_ref(), ride).await,
        RideStatus::RefundFailed
    );
    let listed = store.failed_refunds(10).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].refund_id.as_deref(), Some("re_fails"));
    // The cancel still finishes with its 200: the ride stays refund_failed.
    store
        .finish(
            Lease::of(&record),
            Finish::Cancelled {
                response: StoredResponse {
                    status: 200,
                    body: "{}".into(),
                },
                job: ReceiptJob::for_cancellation(ride, rider.id, 2000),
            },
            at(6),
        )
        .await
        .expect("finished");
    assert_eq!(
        status_of(store.as_ref(), ride).await,
        RideStatus::RefundFailed
    );
}

async fn pending_refunds_are_listed_for_the_sync_pass_until_settled(store: Arc<dyn ContractStore>) {
    let rider = user(store.as_ref(), "a@example.com").await;
    let (ride, record) = cancelling(store.as_ref(), &rider, 1).await;
    store
        .record_refund(
            Lease::of(&record),
            Some(RefundRecord {
                refund_id: "re_pending".to_owned(),
                status: RefundStatus::Pending,
            }),
            at(10),
        )
        .await
        .expect("refund");
    let pending = |before| {
        let store = store.clone();
        async move {
            store
                .refunds_pending(before, 10)
                .await
                .expect("listed")
                .into_iter()
                .map(|p| (p.ride_id, p.refund_id))
                .collect::<Vec<_>>()
        }
    };
    assert!(pending(at(9)).await.is_empty(), "recorded at 10");
    assert_eq!(pending(at(10)).await, vec![(ride, "re_pending".to_owned())]);
    let sync = |status, now| {
        let store = store.clone();
        async move {
            store
                .apply_refund(
                    &domain::RefundUpdate {
                        event_id: None,
                        event_type: "sync".into(),
                        refund_id: "re_pending".into(),
                        status,
                    },
                    now,
                )
                .await
                .expect("applied")
        }
    };
    assert_eq!(
        sync(RefundStatus::Pending, at(20)).await,
        PaymentApplied::Unchanged {
            status: RideStatus::Cancelling
        }
    );
    assert!(pending(at(19)).await.is_empty(), "checked at 20");
    assert_eq!(pending(at(20)).await.len(), 1);
    assert_eq!(
        sync(RefundStatus::Succeeded, at(30)).await,
        PaymentApplied::Unchanged {
            status: RideStatus::Cancelling
        }
    );
    assert!(pending(at(1000)).await.is_empty(), "settled: not listed");
}

macro_rules! contract {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let store: Arc<dyn ContractStore> = $make;
                        super::$name(store).await;
                    }
                };
            }

            case!(a_new_key_is_locked_at_ride_created_with_its_ride_and_own_downstream_key);
            case!(a_held_key_is_in_flight_until_its_lock_times_out_then_taken_over);
            case!(a_different_request_under_a_key_is_a_mismatch_and_keys_are_per_user);
            case!(a_booking_records_the_charge_stages_the_job_and_replays);
            case!(a_superseded_lease_writes_nothing_and_cannot_unlock_the_successor);
            case!(a_refusal_finishes_the_key_with_no_job_and_replays);
            case!(every_phase_write_with_a_superseded_lease_is_refused_by_generation);
            case!(every_forbidden_recovery_point_transition_is_refused);
            case!(one_charge_can_never_book_two_rides);
            case!(the_completer_query_and_lock_take_exactly_the_eligible_keys);
            case!(the_reaper_deletes_old_keys_only_and_keeps_their_rides);
            case!(staged_jobs_come_in_id_order_and_receipts_are_recorded_once);
            case!(users_upsert_by_email_and_are_found_by_api_key_hash);
            case!(enqueuers_claim_disjoint_batches_and_a_dead_enqueuers_claim_runs_out);
            case!(receipts_are_claimed_and_marked_in_batches);
            case!(receipt_claims_are_fenced_by_their_tokens);
            case!(a_claim_for_a_missing_ride_is_refused_alone);
            case!(keys_whose_charge_was_attempted_long_ago_are_listed_for_review);
            case!(keys_for_review_are_reported_once_and_left_out_of_the_completers_batches);
            case!(the_reaper_keeps_keys_whose_charge_outcome_was_never_recorded);
            case!(the_reaper_never_deletes_a_charged_or_locked_key);
            case!(the_reaper_takes_the_oldest_keys_first);
            case!(only_keys_awaiting_review_are_locked_for_a_person);
            case!(reported_keys_are_checked_when_due_backing_off_a_bounded_number_of_times);
            case!(concurrent_first_requests_with_one_key_let_exactly_one_through);
            case!(the_gauges_count_unfinished_keys_and_the_staged_backlog);
            case!(the_console_lists_recent_rides_with_their_requests_and_counts_answers_by_status);
            case!(a_ride_waiting_on_its_payment_moves_forward_once_per_event);
            case!(every_gateway_call_is_noted_under_the_lease_by_the_stores_clock);
            case!(the_sync_pass_lists_rides_waiting_longer_than_the_cutoff_and_rechecks_later);
            case!(a_refused_ride_fails_and_one_intent_pays_for_one_ride_only);
            case!(a_cancel_is_recorded_once_per_ride_refunded_and_finished_with_its_receipt);
            case!(a_cancel_is_decided_from_the_rides_status_and_booking_time);
            case!(a_refused_refund_fails_the_ride_and_a_refund_id_serves_one_cancellation);
            case!(a_refund_reported_failed_fails_its_ride_once_per_event);
            case!(pending_refunds_are_listed_for_the_sync_pass_until_settled);
        }
    };
}

contract!(memory, Arc::new(adapters::memory::MemoryStore::new()));
contract!(postgres, integration_tests::postgres::fresh_store().await);
