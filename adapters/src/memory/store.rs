//! The in-memory store: the embedded default, and the store use-case tests
//! run on. Every method takes one mutex for its whole body, which makes each
//! phase atomic and isolated exactly as a Postgres transaction that locks the
//! key's row would; the contract tests hold both to the same behaviour.
//! Nothing awaits while the mutex is held, and nothing holding it walks
//! every key: the background passes read ordered indexes (unfinished keys
//! by age, keys awaiting review by attempt, all keys by age, staged jobs
//! free to claim), as Postgres does, and a read that counts many (the
//! console's, the completer's gauges) takes the mutex once per chunk of
//! `SCAN_CHUNK`, so a request never waits behind a pass over the whole
//! table. Every map is ordered (a B-tree): none is ever rehashed whole
//! while a request waits, as a growing hash map would be.
//!
//! Memory is not a database: beside the keys the reaper reaps, the store
//! forgets (`Retention`) a ride once its key is reaped and nothing about
//! it can still change (its receipts sent, no payment or refund pending),
//! with its audit records and Stripe event ids of the same age, so a long
//! run's memory stays flat. Postgres keeps rides for good.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::pop_expired;
use application::ports::{
    AwaitingPayment, Backlog, CancelRecording, ClaimToken, Dashboard, FailedRefund, Finish,
    KeyCounts, KeyPhase, KeyRequest, KeyScans, KeyViews, Keys, Lease, Outbox, PendingRefund, Probe,
    ReceiptClaim, Receipts, RecentRide, Retention, RidePayments, SavedCustomer, StoreError, Users,
};
use async_trait::async_trait;
use domain::{
    ApiKeyHash, CancelDecision, CancelPolicy, Cancellation, CompleterPolicy, IdempotencyKey,
    KeyAction, KeyDecision, KeyId, KeyProgress, KeyRecord, LockPolicy, PaymentApplied,
    PaymentIntentState, PaymentUpdate, PhaseWrite, ReceiptFor, ReceiptJob, ReceiptKind,
    RecoveryPoint, RefundRecord, RefundStatus, RefundUpdate, ReviewChecks, ReviewPolicy, Ride,
    RideId, RideParams, RideStatus, StagedJob, User, UserId,
};

/// An audit record, as the original kept them: what happened, to what, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub action: String,
    pub user_id: UserId,
    pub resource_id: RideId,
    pub origin_ip: Option<String>,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy)]
struct Receipt {
    claimed_at: SystemTime,
    sent: bool,
    /// The claim's token; never reused (`State::claim_tokens`).
    token: ClaimToken,
}

/// An entry of an ordered index: a time, then the key (for a total order).
type Entry = (SystemTime, KeyId);

/// Most index entries a read that counts looks at per hold of the mutex.
const SCAN_CHUNK: usize = 1024;

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<UserId, User>,
    emails: BTreeMap<String, UserId>,
    api_keys: BTreeMap<String, UserId>,
    keys: BTreeMap<KeyId, KeyRecord>,
    key_index: BTreeMap<(UserId, IdempotencyKey), KeyId>,
    /// Every key by creation: the reaper's order.
    by_created: BTreeSet<Entry>,
    /// Unfinished keys by creation: the completer's order.
    unfinished: BTreeSet<Entry>,
    /// Keys at `ride_created` with a charge attempted, by first attempt:
    /// the review list's order.
    attempted: BTreeSet<Entry>,
    rides: BTreeMap<RideId, Ride>,
    /// Rides by creation: the order `Retention` forgets them in.
    rides_by_created: BTreeSet<(SystemTime, RideId)>,
    /// Where the last `forget_before` stopped in `rides_by_created`: a
    /// ride that must stay is passed over, not looked at again each time.
    forget_cursor: Option<(SystemTime, RideId)>,
    /// Charge ids on rides: one charge books one ride at most, as the
    /// unique constraint does in Postgres.
    charge_ids: BTreeSet<String>,
    /// Oldest first.
    audit: VecDeque<AuditRecord>,
    staged_jobs: BTreeMap<i64, StagedJob>,
    /// When each staged job was staged.
    staged_at: BTreeMap<i64, SystemTime>,
    /// Staged jobs no enqueuer holds, in id order.
    free_jobs: BTreeSet<i64>,
    /// Staged job id → until when an enqueuer holds it.
    job_claims: BTreeMap<i64, SystemTime>,
    /// The same claims by when they lapse.
    claims_lapse: BTreeSet<(SystemTime, i64)>,
    receipts: BTreeMap<ReceiptFor, Receipt>,
    /// Each ride's cancellation: one at most, as Postgres's primary key.
    cancellations: BTreeMap<RideId, Cancellation>,
    /// Refund ids on cancellations: one ride each, as the unique constraint.
    refund_ids: BTreeMap<String, RideId>,
    /// When each ride's status last changed (a booked ride's: when it was
    /// booked, which the refund rule reads).
    status_changed_at: BTreeMap<RideId, SystemTime>,
    /// Rides whose refund failed, by when: the console's list.
    refund_failed: BTreeSet<(SystemTime, RideId)>,
    /// Cancellations whose refund is still pending, by when it was last
    /// recorded or checked: the sync pass's order.
    refunds_pending: BTreeSet<(SystemTime, RideId)>,
    /// When each entry of `refunds_pending` was made (to remove it).
    refund_checked_at: BTreeMap<RideId, SystemTime>,
    /// The last receipt claim token handed out.
    claim_tokens: i64,
    /// Keys a completer has reported as needing review, with the checks
    /// made of each and when the next is due.
    review_reported: BTreeMap<KeyId, (u32, SystemTime)>,
    /// The same keys by when their next check is due.
    review_due: BTreeSet<(SystemTime, KeyId)>,
    /// PaymentIntent ids on rides (one ride each, as Postgres's unique
    /// constraint).
    payment_intents: BTreeMap<String, RideId>,
    /// Rides awaiting their payment, by when their status last changed or
    /// they were last checked: the sync pass's order.
    awaiting_payment: BTreeSet<(SystemTime, RideId)>,
    /// When each ride in `awaiting_payment` entered it (to remove it).
    awaiting_since: BTreeMap<RideId, SystemTime>,
    /// Stripe event ids applied.
    stripe_events: BTreeSet<String>,
    /// The same, by when, oldest first (to forget them).
    events_applied: VecDeque<(SystemTime, String)>,
    next_id: i64,
}

impl State {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn index(&mut self, record: &KeyRecord) {
        let entry = (record.created_at, record.id);
        self.by_created.insert(entry);
        if record.progress.response().is_none() {
            self.unfinished.insert(entry);
        }
        if let Some(at) = record.unrecorded_charge_attempt() {
            self.attempted.insert((at, record.id));
        }
    }

    fn unindex(&mut self, record: &KeyRecord) {
        let entry = (record.created_at, record.id);
        self.by_created.remove(&entry);
        self.unfinished.remove(&entry);
        if let Some(at) = record.unrecorded_charge_attempt() {
            self.attempted.remove(&(at, record.id));
        }
    }

    fn insert_key(&mut self, record: KeyRecord) {
        self.index(&record);
        self.key_index
            .insert((record.user_id, record.key.clone()), record.id);
        self.keys.insert(record.id, record);
    }

    fn remove_key(&mut self, id: KeyId) -> Option<KeyRecord> {
        let record = self.keys.remove(&id)?;
        self.unindex(&record);
        self.key_index.remove(&(record.user_id, record.key.clone()));
        if let Some((_, due)) = self.review_reported.remove(&id) {
            self.review_due.remove(&(due, id));
        }
        Some(record)
    }

    /// Changes a key, keeping the indexes true; returns it as changed.
    fn change_key(&mut self, id: KeyId, change: impl FnOnce(&mut KeyRecord)) -> Option<KeyRecord> {
        let mut record = self.keys.remove(&id)?;
        self.unindex(&record);
        change(&mut record);
        self.index(&record);
        self.keys.insert(id, record.clone());
        Some(record)
    }

    /// The key a lease names, if the lease may make `write` now
    /// (`KeyRecord::check_lease`).
    fn leased(&self, lease: Lease, write: PhaseWrite) -> Result<&KeyRecord, StoreError> {
        let record = self
            .keys
            .get(&lease.key_id)
            .ok_or_else(|| StoreError::LostLock(format!("key {} is gone", lease.key_id)))?;
        record
            .check_lease(lease.generation, write)
            .map_err(StoreError::LostLock)?;
        Ok(record)
    }

    /// A new ride for a booking key, with its audit record.
    fn create_ride(&mut self, record: &KeyRecord, now: SystemTime) -> Result<RideId, StoreError> {
        let KeyAction::BookRide(params) = &record.action else {
            return Err(StoreError::Inconsistent(format!(
                "key {} books no ride",
                record.id
            )));
        };
        let params: RideParams = *params;
        let ride = Ride {
            id: RideId(self.next_id()),
            user_id: record.user_id,
            idempotency_key_id: Some(record.id),
            params,
            stripe_charge_id: None,
            stripe_payment_intent_id: None,
            status: RideStatus::Charging,
        };
        self.audit.push_back(AuditRecord {
            action: "ride.created".to_owned(),
            user_id: record.user_id,
            resource_id: ride.id,
            origin_ip: record.request_ip.clone(),
            at: now,
        });
        let id = ride.id;
        self.rides.insert(id, ride);
        self.rides_by_created.insert((now, id));
        self.status_changed_at.insert(id, now);
        Ok(id)
    }

    /// Moves a ride to `status` at `now`, keeping the sync pass's index.
    fn set_ride_status(&mut self, ride_id: RideId, status: RideStatus, now: SystemTime) {
        if let Some(since) = self.awaiting_since.remove(&ride_id) {
            self.awaiting_payment.remove(&(since, ride_id));
        }
        if status.awaits_payment() {
            self.awaiting_payment.insert((now, ride_id));
            self.awaiting_since.insert(ride_id, now);
        }
        if let Some(ride) = self.rides.get_mut(&ride_id) {
            ride.status = status;
        }
        if let Some(since) = self.status_changed_at.insert(ride_id, now) {
            self.refund_failed.remove(&(since, ride_id));
        }
        if status == RideStatus::RefundFailed {
            self.refund_failed.insert((now, ride_id));
        }
    }

    /// Notes a cancellation's refund in `status` at `now`, keeping the
    /// sync pass's index of those still pending.
    fn note_refund(&mut self, ride_id: RideId, status: RefundStatus, now: SystemTime) {
        if let Some(since) = self.refund_checked_at.remove(&ride_id) {
            self.refunds_pending.remove(&(since, ride_id));
        }
        if matches!(status, RefundStatus::Pending | RefundStatus::RequiresAction) {
            self.refunds_pending.insert((now, ride_id));
            self.refund_checked_at.insert(ride_id, now);
        }
    }

    /// Stages a ride's receipt job at `now`.
    fn stage_receipt(&mut self, job: ReceiptJob, now: SystemTime) {
        let id = self.next_id();
        self.staged_jobs.insert(id, StagedJob { id, job });
        self.staged_at.insert(id, now);
        self.free_jobs.insert(id);
    }

    /// Drops a staged job's claim; whether it had one.
    fn unclaim(&mut self, id: i64) -> bool {
        let Some(until) = self.job_claims.remove(&id) else {
            return false;
        };
        self.claims_lapse.remove(&(until, id));
        true
    }

    /// Frees a claimed job for the next claim (a job no one holds, or one
    /// deleted, stays as it is).
    fn release(&mut self, id: i64) {
        if self.unclaim(id) {
            self.free_jobs.insert(id);
        }
    }

    /// Whether nothing about a ride can change any more, its key reaped:
    /// paid or failed for good with its receipts sent, no payment or
    /// refund pending, nothing for a person to look at.
    fn settled(&self, ride: &Ride) -> bool {
        let sent = |kind| {
            self.receipts
                .get(&ReceiptFor {
                    ride_id: ride.id,
                    kind,
                })
                .is_some_and(|receipt| receipt.sent)
        };
        ride.idempotency_key_id.is_none()
            && !self.refund_checked_at.contains_key(&ride.id)
            && match ride.status {
                // A ride whose key was reaped before it charged: nothing
                // will charge it now.
                RideStatus::Charging | RideStatus::PaymentFailed => true,
                RideStatus::Booked => sent(ReceiptKind::Ride),
                RideStatus::Cancelled => sent(ReceiptKind::Cancellation),
                RideStatus::AwaitingAuthentication
                | RideStatus::PaymentPending
                | RideStatus::Cancelling
                | RideStatus::RefundFailed => false,
            }
    }

    /// Forgets a settled ride and everything kept beside it.
    fn forget_ride(&mut self, id: RideId, created: SystemTime) {
        self.rides_by_created.remove(&(created, id));
        let Some(ride) = self.rides.remove(&id) else {
            return;
        };
        if let Some(charge) = &ride.stripe_charge_id {
            self.charge_ids.remove(charge);
        }
        if let Some(intent) = &ride.stripe_payment_intent_id {
            self.payment_intents.remove(intent);
        }
        if let Some(refund) = self
            .cancellations
            .remove(&id)
            .and_then(|cancellation| cancellation.refund)
        {
            self.refund_ids.remove(&refund.refund_id);
        }
        for kind in ReceiptKind::ALL {
            self.receipts.remove(&ReceiptFor { ride_id: id, kind });
        }
        self.status_changed_at.remove(&id);
    }

    /// Keys from `index` with their time before `before`, in order.
    fn before<'a>(
        &'a self,
        index: &'a BTreeSet<Entry>,
        before: SystemTime,
    ) -> impl Iterator<Item = &'a KeyRecord> + 'a {
        index
            .range(..(before, KeyId(i64::MIN)))
            .filter_map(|(_, id)| self.keys.get(id))
    }
}

/// Takes the key's lock for a new generation, recording the request that
/// took it (`None`: the completer or a person).
fn lock_record(record: &mut KeyRecord, now: SystemTime, request_id: Option<String>) {
    record.locked_at = Some(now);
    record.last_run_at = now;
    record.lock_generation += 1;
    record.request_id = request_id;
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a phase half-applied:
        // every method validates before it writes.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the key's lock (a new generation) if `takes` says so, checked
    /// under the store's mutex.
    fn lock_if(
        &self,
        key_id: KeyId,
        now: SystemTime,
        takes: impl FnOnce(&KeyRecord) -> bool,
    ) -> Option<KeyRecord> {
        let mut state = self.state();
        if !takes(state.keys.get(&key_id)?) {
            return None;
        }
        state.change_key(key_id, |record| lock_record(record, now, None))
    }

    /// Visits the entries of a key index between `from` and `to`, taking
    /// the mutex once per `SCAN_CHUNK` entries, so a count over many keys
    /// lets requests in between. Each entry is visited once, with the
    /// state as it is during its chunk (a count, not a snapshot).
    fn scan_chunked(
        &self,
        index: fn(&State) -> &BTreeSet<Entry>,
        from: Bound<Entry>,
        to: Bound<Entry>,
        mut visit: impl FnMut(&State, &Entry),
    ) {
        let mut from = from;
        loop {
            let state = self.state();
            let mut seen = 0;
            let mut last = None;
            for entry in index(&state).range((from, to)).take(SCAN_CHUNK) {
                visit(&state, entry);
                seen += 1;
                last = Some(*entry);
            }
            drop(state);
            match last {
                Some(entry) if seen == SCAN_CHUNK => from = Bound::Excluded(entry),
                _ => return,
            }
        }
    }

    /// Test support: every ride, in id order.
    pub fn rides(&self) -> Vec<Ride> {
        self.state().rides.values().cloned().collect()
    }

    /// Test support: every key, in id order.
    pub fn keys(&self) -> Vec<KeyRecord> {
        self.state().keys.values().cloned().collect()
    }

    /// Test support: the audit trail.
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        self.state().audit.iter().cloned().collect()
    }

    /// Test support: leaves a key at `started` without its ride, as an
    /// earlier version (one commit per phase) could.
    pub fn leave_at_started(&self, id: KeyId) {
        let mut state = self.state();
        let ride = state.keys.get(&id).and_then(|k| k.progress.ride_id());
        if let Some(ride) = ride {
            state.rides.remove(&ride);
            state.audit.retain(|record| record.resource_id != ride);
        }
        state.change_key(id, |record| record.progress = KeyProgress::Started);
    }

    /// Test support: leaves a key at `charge_created`, `charge_id` on its
    /// ride, as an earlier version could.
    pub fn leave_at_charge_created(&self, id: KeyId, charge_id: &str) {
        let mut state = self.state();
        let Some(ride_id) = state.keys.get(&id).and_then(|k| k.progress.ride_id()) else {
            return;
        };
        if let Some(ride) = state.rides.get_mut(&ride_id) {
            ride.stripe_charge_id = Some(charge_id.to_owned());
        }
        state.charge_ids.insert(charge_id.to_owned());
        state.change_key(id, |record| {
            record.progress = KeyProgress::ChargeCreated { ride_id };
        });
    }

    /// Test support: change a stored key, e.g. to age it.
    pub fn update_key(&self, id: KeyId, change: impl FnOnce(&mut KeyRecord)) {
        self.state().change_key(id, change);
    }
}

#[async_trait]
impl Users for MemoryStore {
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let state = self.state();
        Ok(state
            .emails
            .get(email)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn find_user_by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<User>, StoreError> {
        let state = self.state();
        Ok(state
            .api_keys
            .get(hash.as_str())
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(&id).cloned())
    }

    async fn upsert_user(&self, email: &str, customer: &SavedCustomer) -> Result<User, StoreError> {
        let mut state = self.state();
        if let Some(id) = state.emails.get(email).copied()
            && let Some(user) = state.users.get_mut(&id)
        {
            user.stripe_customer_id = customer.customer_id.clone();
            user.stripe_payment_method_id = customer.payment_method_id.clone();
            return Ok(user.clone());
        }
        let user = User {
            id: UserId(state.next_id()),
            email: email.to_owned(),
            stripe_customer_id: customer.customer_id.clone(),
            stripe_payment_method_id: customer.payment_method_id.clone(),
        };
        state.emails.insert(email.to_owned(), user.id);
        state.users.insert(user.id, user.clone());
        Ok(user)
    }

    async fn add_api_key(&self, user_id: UserId, hash: &ApiKeyHash) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.users.contains_key(&user_id) {
            return Err(StoreError::Inconsistent(format!("no user {user_id}")));
        }
        state.api_keys.insert(hash.as_str().to_owned(), user_id);
        Ok(())
    }
}

#[async_trait]
impl Probe for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Keys for MemoryStore {
    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let mut state = self.state();
        let index = (request.user_id, request.key.clone());
        let Some(id) = state.key_index.get(&index).copied() else {
            let mut record = KeyRecord {
                id: KeyId(state.next_id()),
                user_id: request.user_id,
                key: request.key.clone(),
                fingerprint: request.fingerprint.clone(),
                action: request.action.clone(),
                request_ip: request.request_ip.clone(),
                request_id: request.request_id.clone(),
                progress: KeyProgress::Started,
                locked_at: Some(now),
                lock_generation: 1,
                created_at: now,
                last_run_at: now,
                downstream_key: format!("rocket-rides-{}", uuid::Uuid::new_v4()),
            };
            if let KeyAction::BookRide(_) = &request.action {
                record.progress = KeyProgress::RideCreated {
                    ride_id: state.create_ride(&record, now)?,
                    charge_attempted_at: request.charges_now.then_some(now),
                    last_call_at: request.charges_now.then_some(now),
                };
            }
            state.insert_key(record.clone());
            return Ok(KeyPhase::Locked(record));
        };
        let record = state.keys.get(&id).ok_or_else(|| {
            StoreError::Inconsistent(format!("key index points at missing key {id}"))
        })?;
        let decision = KeyDecision::for_existing(record, &request.fingerprint, now, policy);
        if let Some(phase) = KeyPhase::unless_resumed(decision) {
            return Ok(phase);
        }
        let record = state
            .change_key(id, |record| {
                lock_record(record, now, request.request_id.clone());
            })
            .ok_or_else(|| StoreError::Inconsistent(format!("key {id} vanished")))?;
        Ok(KeyPhase::Locked(record))
    }

    async fn lock_for_completion(
        &self,
        key_id: KeyId,
        now: SystemTime,
        policy: CompleterPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lock_if(key_id, now, |record| policy.is_eligible(record, now)))
    }

    async fn lock_for_review(
        &self,
        key_id: KeyId,
        now: SystemTime,
        review: ReviewPolicy,
        lock: LockPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lock_if(key_id, now, |record| {
            review.can_be_resolved(record, now, lock)
        }))
    }

    async fn create_ride(&self, lease: Lease, now: SystemTime) -> Result<KeyRecord, StoreError> {
        let mut state = self.state();
        let record = state.leased(lease, PhaseWrite::CreateRide)?.clone();
        let ride_id = state.create_ride(&record, now)?;
        state
            .change_key(lease.key_id, |record| {
                record.progress = KeyProgress::RideCreated {
                    ride_id,
                    charge_attempted_at: None,
                    last_call_at: None,
                };
            })
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} vanished", lease.key_id)))
    }

    async fn note_charge_attempt(&self, lease: Lease, now: SystemTime) -> Result<(), StoreError> {
        let mut state = self.state();
        state.leased(lease, PhaseWrite::NoteChargeAttempt)?;
        state.change_key(lease.key_id, |record| match &mut record.progress {
            KeyProgress::RideCreated {
                charge_attempted_at: first,
                last_call_at,
                ..
            }
            | KeyProgress::CancelRecorded {
                call_attempted_at: first,
                last_call_at,
                ..
            } => {
                first.get_or_insert(now);
                *last_call_at = Some(now);
            }
            _ => {}
        });
        Ok(())
    }

    async fn record_cancellation(
        &self,
        lease: Lease,
        policy: CancelPolicy,
        now: SystemTime,
    ) -> Result<CancelRecording, StoreError> {
        let mut state = self.state();
        let record = state.leased(lease, PhaseWrite::RecordCancel)?.clone();
        let KeyAction::CancelRide { ride_id, reason } = &record.action else {
            return Err(StoreError::Inconsistent(format!(
                "key {} cancels no ride",
                record.id
            )));
        };
        let ride_id = *ride_id;
        let ride = state
            .rides
            .get(&ride_id)
            .filter(|ride| ride.user_id == record.user_id)
            .ok_or_else(|| {
                StoreError::Inconsistent(format!(
                    "key {}: no ride {ride_id} of its user",
                    record.id
                ))
            })?;
        let paid_at = state
            .status_changed_at
            .get(&ride_id)
            .copied()
            .unwrap_or(record.created_at);
        let decision = if state.cancellations.contains_key(&ride_id) {
            CancelDecision::AlreadyCancelled
        } else {
            policy.decide(ride.status, paid_at, record.created_at)
        };
        let CancelDecision::Cancel(giveback) = decision else {
            return Ok(CancelRecording::Refused(decision));
        };
        let cancellation = Cancellation {
            ride_id,
            reason: reason.clone(),
            giveback,
            refund: None,
        };
        state.cancellations.insert(ride_id, cancellation.clone());
        state.set_ride_status(ride_id, RideStatus::Cancelling, now);
        state.audit.push_back(AuditRecord {
            action: "ride.cancelled".to_owned(),
            user_id: record.user_id,
            resource_id: ride_id,
            origin_ip: record.request_ip.clone(),
            at: now,
        });
        let record = state
            .change_key(lease.key_id, |record| {
                record.progress = KeyProgress::CancelRecorded {
                    ride_id,
                    call_attempted_at: None,
                    last_call_at: None,
                };
            })
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} vanished", lease.key_id)))?;
        Ok(CancelRecording::Recorded {
            record,
            cancellation,
        })
    }

    async fn find_cancellation(&self, ride_id: RideId) -> Result<Option<Cancellation>, StoreError> {
        Ok(self.state().cancellations.get(&ride_id).cloned())
    }

    async fn record_refund(
        &self,
        lease: Lease,
        refund: Option<RefundRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let record = state.leased(lease, PhaseWrite::RecordRefund)?;
        let ride_id = record
            .progress
            .ride_id()
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} has no ride", lease.key_id)))?;
        if let Some(refund) = &refund
            && state.refund_ids.contains_key(&refund.refund_id)
        {
            return Err(StoreError::Inconsistent(format!(
                "refund {} is already on a cancellation",
                refund.refund_id
            )));
        }
        let cancellation = state.cancellations.get_mut(&ride_id).ok_or_else(|| {
            StoreError::Inconsistent(format!("ride {ride_id} has no cancellation"))
        })?;
        if cancellation.refund.is_some() {
            return Err(StoreError::Inconsistent(format!(
                "ride {ride_id} already has a refund"
            )));
        }
        cancellation.refund = refund.clone();
        if let Some(refund) = refund {
            state.note_refund(ride_id, refund.status, now);
            state.refund_ids.insert(refund.refund_id, ride_id);
        }
        state.change_key(lease.key_id, |record| {
            record.progress = KeyProgress::RefundCreated { ride_id };
        });
        Ok(())
    }

    async fn finish(
        &self,
        lease: Lease,
        finish: Finish,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let record = state.leased(lease, finish.write())?;
        let ride_id = record
            .ride_id()
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} has no ride", lease.key_id)))?;
        let response = finish.response().clone();
        match finish {
            Finish::Booked {
                charge_id,
                payment_intent_id,
                job,
                ..
            } => {
                let ride = state
                    .rides
                    .get(&ride_id)
                    .ok_or_else(|| StoreError::Inconsistent(format!("ride {ride_id} is gone")))?;
                match &ride.stripe_charge_id {
                    Some(recorded) if *recorded == charge_id => {}
                    Some(recorded) => {
                        return Err(StoreError::Inconsistent(format!(
                            "ride {ride_id} already carries charge {recorded}, not {charge_id}"
                        )));
                    }
                    None if state.charge_ids.contains(&charge_id) => {
                        return Err(StoreError::Inconsistent(format!(
                            "charge {charge_id} is already on another ride"
                        )));
                    }
                    None => {}
                }
                state.charge_ids.insert(charge_id.clone());
                if let Some(id) = &payment_intent_id {
                    state.payment_intents.insert(id.clone(), ride_id);
                }
                if let Some(ride) = state.rides.get_mut(&ride_id) {
                    ride.stripe_charge_id = Some(charge_id);
                    ride.stripe_payment_intent_id = payment_intent_id;
                }
                state.set_ride_status(ride_id, RideStatus::Booked, now);
                state.stage_receipt(job, now);
            }
            Finish::Refused { .. } => {
                state.set_ride_status(ride_id, RideStatus::PaymentFailed, now)
            }
            Finish::AwaitingPayment {
                payment_intent_id,
                status,
                ..
            } => {
                if state.payment_intents.contains_key(&payment_intent_id) {
                    return Err(StoreError::Inconsistent(format!(
                        "PaymentIntent {payment_intent_id} is already on another ride"
                    )));
                }
                state
                    .payment_intents
                    .insert(payment_intent_id.clone(), ride_id);
                if let Some(ride) = state.rides.get_mut(&ride_id) {
                    ride.stripe_payment_intent_id = Some(payment_intent_id);
                }
                state.set_ride_status(ride_id, status, now);
            }
            Finish::CancelRefused { .. } => {}
            Finish::RefundFailed { .. } => {
                state.set_ride_status(ride_id, RideStatus::RefundFailed, now);
            }
            Finish::Cancelled { job, .. } => {
                // A refund already reported failed keeps its ride
                // `refund_failed`; any other state is not a cancel's.
                match state.rides.get(&ride_id).map(|ride| ride.status) {
                    Some(RideStatus::Cancelling) => {
                        state.set_ride_status(ride_id, RideStatus::Cancelled, now);
                    }
                    Some(RideStatus::RefundFailed) => {}
                    other => {
                        return Err(StoreError::Inconsistent(format!(
                            "key {}: ride {ride_id} is not being cancelled ({other:?})",
                            lease.key_id
                        )));
                    }
                }
                state.stage_receipt(job, now);
            }
        }
        state.change_key(lease.key_id, |record| {
            record.progress = KeyProgress::Finished { ride_id, response };
            record.locked_at = None;
        });
        Ok(())
    }

    async fn unlock(&self, lease: Lease) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(record) = state.keys.get_mut(&lease.key_id)
            && record.lock_generation == lease.generation
        {
            // Neither index reads the lock.
            record.locked_at = None;
        }
        Ok(())
    }

    async fn find_ride(&self, id: RideId) -> Result<Option<Ride>, StoreError> {
        Ok(self.state().rides.get(&id).cloned())
    }
}

#[async_trait]
impl KeyScans for MemoryStore {
    async fn find_completable(
        &self,
        now: SystemTime,
        policy: CompleterPolicy,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let state = self.state();
        let created_before = policy.cutoffs(now).created_before;
        Ok(state
            .before(&state.unfinished, created_before)
            .filter(|record| policy.is_eligible(record, now))
            .take(limit)
            .map(|record| record.id)
            .collect())
    }

    async fn report_keys_for_review(
        &self,
        attempted_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut state = self.state();
        let reported: Vec<KeyRecord> = state
            .before(&state.attempted, attempted_before)
            .filter(|record| !state.review_reported.contains_key(&record.id))
            .take(limit)
            .cloned()
            .collect();
        for record in &reported {
            state.review_reported.insert(record.id, (0, now));
            state.review_due.insert((now, record.id));
        }
        Ok(reported)
    }

    async fn claim_review_checks(
        &self,
        now: SystemTime,
        checks: ReviewChecks,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut state = self.state();
        let mut claimed = Vec::new();
        let mut rescheduled = Vec::new();
        // Most overdue first, one at a time, each taken off the list as it
        // is looked at: the hold is as long as the batch, not the list, and
        // a key rescheduled here is not taken twice.
        while claimed.len() < limit {
            let Some(&(at, id)) = state.review_due.first().filter(|(at, _)| *at <= now) else {
                break;
            };
            state.review_due.remove(&(at, id));
            let unfinished = state.keys.get(&id).is_some_and(|record| {
                matches!(
                    record.progress.recovery_point(),
                    RecoveryPoint::RideCreated | RecoveryPoint::CancelRecorded
                )
            });
            let done = state.review_reported.get(&id).map_or(0, |(done, _)| *done);
            if !unfinished || !checks.another(done) {
                // Finished, or checked as often as it is: no more checks
                // (its entry stays, so it is not reported again).
                continue;
            }
            let next = now + checks.gap_after(done + 1);
            state.review_reported.insert(id, (done + 1, next));
            rescheduled.push((next, id));
            claimed.push(id);
        }
        state.review_due.extend(rescheduled);
        claimed.sort_unstable();
        Ok(claimed)
    }

    async fn reap_keys(
        &self,
        created_before: SystemTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut state = self.state();
        // Oldest first, as Postgres takes them.
        let doomed: Vec<(KeyId, Option<RideId>)> = state
            .before(&state.by_created, created_before)
            .filter(|record| record.may_be_reaped())
            .take(limit)
            .map(|record| (record.id, record.progress.ride_id()))
            .collect();
        for (id, ride_id) in &doomed {
            state.remove_key(*id);
            if let Some(ride) = ride_id.and_then(|ride_id| state.rides.get_mut(&ride_id)) {
                ride.idempotency_key_id = None;
            }
        }
        Ok(doomed.len())
    }
}

#[async_trait]
impl KeyViews for MemoryStore {
    async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.state().keys.get(&id).cloned())
    }

    async fn keys_for_review(
        &self,
        attempted_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .before(&state.attempted, attempted_before)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn unfinished_counts(
        &self,
        attempted_before: SystemTime,
    ) -> Result<KeyCounts, StoreError> {
        let mut by_point = BTreeMap::new();
        self.scan_chunked(
            |state| &state.unfinished,
            Bound::Unbounded,
            Bound::Unbounded,
            |state, (_, id)| {
                if let Some(record) = state.keys.get(id) {
                    *by_point.entry(record.recovery_point()).or_insert(0) += 1;
                }
            },
        );
        let mut awaiting_review = 0;
        self.scan_chunked(
            |state| &state.attempted,
            Bound::Unbounded,
            Bound::Excluded((attempted_before, KeyId(i64::MIN))),
            |_, _| awaiting_review += 1,
        );
        Ok(KeyCounts {
            by_recovery_point: by_point.into_iter().collect(),
            awaiting_review,
        })
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn staged_jobs(&self, limit: usize) -> Result<Vec<StagedJob>, StoreError> {
        Ok(self
            .state()
            .staged_jobs
            .values()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn claim_staged_jobs(
        &self,
        limit: usize,
        now: SystemTime,
        claim_for: Duration,
    ) -> Result<Vec<StagedJob>, StoreError> {
        let mut state = self.state();
        // Claims that lapsed free their jobs first, each once.
        while let Some(&(until, id)) = state.claims_lapse.first()
            && until <= now
        {
            state.release(id);
        }
        let ids: Vec<i64> = state.free_jobs.iter().take(limit).copied().collect();
        let until = now + claim_for;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            state.free_jobs.remove(&id);
            state.job_claims.insert(id, until);
            state.claims_lapse.insert((until, id));
            if let Some(job) = state.staged_jobs.get(&id) {
                claimed.push(job.clone());
            }
        }
        Ok(claimed)
    }

    async fn backlog(&self, now: SystemTime) -> Result<Backlog, StoreError> {
        let state = self.state();
        let oldest = state
            .staged_jobs
            .keys()
            .next()
            .and_then(|id| state.staged_at.get(id));
        Ok(Backlog {
            jobs: state.staged_jobs.len() as u64,
            oldest_age: oldest
                .and_then(|at| now.duration_since(*at).ok())
                .unwrap_or_default(),
        })
    }

    async fn release_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut state = self.state();
        for id in ids {
            state.release(*id);
        }
        Ok(())
    }

    async fn delete_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut state = self.state();
        for id in ids {
            state.staged_jobs.remove(id);
            state.unclaim(*id);
            state.free_jobs.remove(id);
            state.staged_at.remove(id);
        }
        Ok(())
    }
}

#[async_trait]
impl Receipts for MemoryStore {
    async fn claim_receipts(
        &self,
        claims: &[(i64, ReceiptFor)],
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<Vec<ReceiptClaim>, StoreError> {
        let mut state = self.state();
        let mut answers = Vec::with_capacity(claims.len());
        for (_, receipt) in claims {
            if !state.rides.contains_key(&receipt.ride_id) {
                answers.push(ReceiptClaim::NoSuchRide);
                continue;
            }
            let answer = match state.receipts.get(receipt) {
                Some(receipt) if receipt.sent => ReceiptClaim::AlreadySent,
                Some(receipt) if receipt.claimed_at + stale_after > now => ReceiptClaim::InProgress,
                _ => {
                    state.claim_tokens += 1;
                    let token = ClaimToken(state.claim_tokens);
                    state.receipts.insert(
                        *receipt,
                        Receipt {
                            claimed_at: now,
                            sent: false,
                            token,
                        },
                    );
                    ReceiptClaim::Claimed(token)
                }
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn extend_receipt_claims(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for (receipt_for, token) in claims {
            if let Some(receipt) = state.receipts.get_mut(receipt_for)
                && receipt.token == *token
                && !receipt.sent
            {
                receipt.claimed_at = now;
            }
        }
        Ok(())
    }

    async fn mark_receipts_sent(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        _now: SystemTime,
    ) -> Result<Vec<ReceiptFor>, StoreError> {
        let mut state = self.state();
        let mut marked = Vec::with_capacity(claims.len());
        for (receipt_for, token) in claims {
            if let Some(receipt) = state.receipts.get_mut(receipt_for)
                && receipt.token == *token
                && !receipt.sent
            {
                receipt.sent = true;
                marked.push(*receipt_for);
            }
        }
        Ok(marked)
    }

    async fn release_receipt(
        &self,
        receipt: ReceiptFor,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state
            .receipts
            .get(&receipt)
            .is_some_and(|r| !r.sent && r.token == token)
        {
            state.receipts.remove(&receipt);
        }
        Ok(())
    }

    async fn receipt_sent(&self, receipt: ReceiptFor) -> Result<bool, StoreError> {
        Ok(self.state().receipts.get(&receipt).is_some_and(|r| r.sent))
    }
}

#[async_trait]
impl Dashboard for MemoryStore {
    async fn failed_refunds(&self, limit: usize) -> Result<Vec<FailedRefund>, StoreError> {
        let state = self.state();
        Ok(state
            .refund_failed
            .iter()
            .rev()
            .take(limit)
            .filter_map(|(_, ride_id)| {
                let ride = state.rides.get(ride_id)?;
                let cancellation = state.cancellations.get(ride_id)?;
                Some(FailedRefund {
                    ride_id: *ride_id,
                    user_id: ride.user_id,
                    amount_cents: cancellation.giveback.refund_cents(),
                    refund_id: cancellation.refund.as_ref().map(|r| r.refund_id.clone()),
                })
            })
            .collect())
    }

    async fn recent_rides(&self, limit: usize) -> Result<Vec<RecentRide>, StoreError> {
        let state = self.state();
        Ok(state
            .rides
            .values()
            .rev()
            .take(limit)
            .map(|ride| {
                let key = ride.idempotency_key_id.and_then(|id| state.keys.get(&id));
                RecentRide {
                    ride: ride.clone(),
                    request_id: key.and_then(|k| k.request_id.clone()),
                    status: key.and_then(|k| k.progress.response().map(|r| r.status)),
                    requested_at: key.map(|k| k.created_at),
                }
            })
            .collect())
    }

    async fn answers_since(
        &self,
        since: SystemTime,
    ) -> Result<Vec<(Option<u16>, u64)>, StoreError> {
        let mut counts: BTreeMap<Option<u16>, u64> = BTreeMap::new();
        self.scan_chunked(
            |state| &state.by_created,
            Bound::Included((since, KeyId(i64::MIN))),
            Bound::Unbounded,
            |state, (_, id)| {
                if let Some(key) = state.keys.get(id) {
                    *counts
                        .entry(key.progress.response().map(|r| r.status))
                        .or_default() += 1;
                }
            },
        );
        Ok(counts.into_iter().collect())
    }
}

#[async_trait]
impl RidePayments for MemoryStore {
    async fn apply_payment(
        &self,
        update: &PaymentUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError> {
        let mut state = self.state();
        let Some(ride_id) = state
            .payment_intents
            .get(&update.payment_intent_id)
            .copied()
        else {
            return Ok(PaymentApplied::UnknownIntent);
        };
        let ride = state
            .rides
            .get(&ride_id)
            .cloned()
            .ok_or_else(|| StoreError::Inconsistent(format!("ride {ride_id} is gone")))?;
        if let Some(event_id) = &update.event_id {
            if !state.stripe_events.insert(event_id.clone()) {
                return Ok(PaymentApplied::Duplicate);
            }
            state.events_applied.push_back((now, event_id.clone()));
        }
        let Some(next) = ride.status.after(&update.state) else {
            if update.event_id.is_none() && ride.status.awaits_payment() {
                // Checked and still waiting: next check a sync period later.
                state.set_ride_status(ride_id, ride.status, now);
            }
            return Ok(PaymentApplied::Unchanged {
                status: ride.status,
            });
        };
        if let PaymentIntentState::Succeeded {
            charge_id: Some(charge_id),
        } = &update.state
            && ride.stripe_charge_id.is_none()
            && state.charge_ids.insert(charge_id.clone())
            && let Some(ride) = state.rides.get_mut(&ride_id)
        {
            ride.stripe_charge_id = Some(charge_id.clone());
        }
        state.set_ride_status(ride_id, next, now);
        if next == RideStatus::Booked {
            state.stage_receipt(ReceiptJob::for_ride(ride_id, ride.user_id), now);
        }
        Ok(PaymentApplied::Moved {
            from: ride.status,
            to: next,
        })
    }

    async fn apply_refund(
        &self,
        update: &RefundUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError> {
        let mut state = self.state();
        let Some(ride_id) = state.refund_ids.get(&update.refund_id).copied() else {
            return Ok(PaymentApplied::UnknownIntent);
        };
        if let Some(event_id) = &update.event_id {
            if !state.stripe_events.insert(event_id.clone()) {
                return Ok(PaymentApplied::Duplicate);
            }
            state.events_applied.push_back((now, event_id.clone()));
        }
        state.note_refund(ride_id, update.status, now);
        if let Some(refund) = state
            .cancellations
            .get_mut(&ride_id)
            .and_then(|c| c.refund.as_mut())
        {
            refund.status = update.status;
        }
        let status = state
            .rides
            .get(&ride_id)
            .map(|ride| ride.status)
            .ok_or_else(|| StoreError::Inconsistent(format!("ride {ride_id} is gone")))?;
        match status
            .after_refund_failed()
            .filter(|_| update.status.is_failure())
        {
            Some(next) => {
                state.set_ride_status(ride_id, next, now);
                Ok(PaymentApplied::Moved {
                    from: status,
                    to: next,
                })
            }
            None => Ok(PaymentApplied::Unchanged { status }),
        }
    }

    async fn refunds_pending(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingRefund>, StoreError> {
        let state = self.state();
        Ok(state
            .refunds_pending
            .range(..(stale_before, RideId(i64::MAX)))
            .take(limit)
            .filter_map(|(_, ride_id)| {
                let refund = state.cancellations.get(ride_id)?.refund.as_ref()?;
                Some(PendingRefund {
                    ride_id: *ride_id,
                    refund_id: refund.refund_id.clone(),
                })
            })
            .collect())
    }

    async fn rides_awaiting_payment(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<AwaitingPayment>, StoreError> {
        let state = self.state();
        Ok(state
            .awaiting_payment
            .iter()
            .take_while(|(at, _)| *at <= stale_before)
            .take(limit)
            .filter_map(|(_, ride_id)| {
                let ride = state.rides.get(ride_id)?;
                Some(AwaitingPayment {
                    ride_id: *ride_id,
                    payment_intent_id: ride.stripe_payment_intent_id.clone()?,
                    status: ride.status,
                })
            })
            .collect())
    }
}

impl Retention for MemoryStore {
    /// Forgets settled rides created before `before` (`State::settled`:
    /// their key reaped, nothing pending), looking at `limit` of them from
    /// where the last call stopped, then audit records and Stripe event
    /// ids older than `before`, `limit` of each at most.
    fn forget_before(&self, before: SystemTime, limit: usize) -> usize {
        let mut state = self.state();
        let horizon = (before, RideId(i64::MIN));
        let from = match state.forget_cursor {
            Some(cursor) if cursor < horizon => Bound::Excluded(cursor),
            _ => Bound::Unbounded,
        };
        let looked: Vec<(SystemTime, RideId)> = state
            .rides_by_created
            .range((from, Bound::Excluded(horizon)))
            .take(limit)
            .copied()
            .collect();
        // A full batch resumes after its last; a short one reached the
        // horizon, and the next starts again from the oldest kept.
        state.forget_cursor = looked.last().copied().filter(|_| looked.len() == limit);
        let mut forgotten = 0;
        for (created, id) in looked {
            let forget = state.rides.get(&id).is_none_or(|ride| state.settled(ride));
            if forget {
                state.forget_ride(id, created);
                forgotten += 1;
            }
        }
        for _ in 0..limit {
            if pop_expired(&mut state.audit, |record| record.at < before).is_none() {
                break;
            }
            forgotten += 1;
        }
        for _ in 0..limit {
            let Some((_, event_id)) =
                pop_expired(&mut state.events_applied, |(at, _)| *at < before)
            else {
                break;
            };
            state.stripe_events.remove(&event_id);
            forgotten += 1;
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{RequestFingerprint, RideParams};

    fn booking(user: UserId, n: usize) -> KeyRequest {
        let params = RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid");
        KeyRequest {
            user_id: user,
            key: IdempotencyKey::parse(&format!("key-{n:08}-of-the-chunked-count")).expect("valid"),
            fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
            action: KeyAction::BookRide(params),
            request_ip: None,
            request_id: None,
            charges_now: n.is_multiple_of(2),
        }
    }

    /// The counts that read many keys take the mutex per chunk: across
    /// chunk boundaries (and with a partial last chunk) every key is
    /// counted once.
    #[tokio::test]
    async fn counts_read_in_chunks_count_every_key_once() {
        let store = MemoryStore::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let policy = LockPolicy {
            lock_timeout: Duration::from_secs(60),
        };
        let keys = 2 * SCAN_CHUNK + 7;
        for n in 0..keys {
            let at = start + Duration::from_millis(n as u64);
            store
                .begin_request(&booking(UserId(1), n), at, policy)
                .await
                .expect("a new key");
        }
        let since = start + Duration::from_millis(SCAN_CHUNK as u64);
        let answers = store.answers_since(since).await.expect("counted");
        assert_eq!(answers, [(None, (keys - SCAN_CHUNK) as u64)]);
        let all = store.answers_since(start).await.expect("counted");
        assert_eq!(all, [(None, keys as u64)]);

        let counts = store
            .unfinished_counts(start + Duration::from_secs(3600))
            .await
            .expect("counted");
        let total: u64 = counts.by_recovery_point.iter().map(|(_, n)| n).sum();
        assert_eq!(total, keys as u64);
        // Every other key noted its charge attempt.
        assert_eq!(counts.awaiting_review, keys.div_ceil(2) as u64);
    }
}
