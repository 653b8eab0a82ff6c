//! The in-memory store: the embedded default, and the store use-case tests
//! run on. Every method takes one mutex for its whole body, which makes each
//! phase atomic and isolated exactly as a Postgres transaction that locks the
//! key's row would; the contract tests hold both to the same behaviour.
//! Nothing awaits while the mutex is held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use application::ports::{Finish, KeyPhase, KeyRequest, Lease, ReceiptClaim, Store, StoreError};
use async_trait::async_trait;
use domain::{
    ApiKeyHash, CompleterPolicy, IdempotencyKey, KeyDecision, KeyId, KeyRecord, LockPolicy,
    RecoveryPoint, ReviewPolicy, Ride, RideId, StagedJob, User, UserId,
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
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<UserId, User>,
    api_keys: HashMap<String, UserId>,
    keys: BTreeMap<KeyId, KeyRecord>,
    key_index: HashMap<(UserId, IdempotencyKey), KeyId>,
    rides: BTreeMap<RideId, Ride>,
    /// Charge ids on rides: one charge books one ride at most, as the
    /// unique constraint does in Postgres.
    charge_ids: HashSet<String>,
    audit: Vec<AuditRecord>,
    staged_jobs: BTreeMap<i64, StagedJob>,
    /// Staged job id → until when an enqueuer holds it.
    job_claims: HashMap<i64, SystemTime>,
    receipts: HashMap<RideId, Receipt>,
    /// Keys a completer has reported as needing review.
    review_reported: HashSet<KeyId>,
    next_id: i64,
}

impl State {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// The key a lease names, if the lease is still the current one.
    fn leased(&mut self, lease: Lease) -> Result<&mut KeyRecord, StoreError> {
        let record = self
            .keys
            .get_mut(&lease.key_id)
            .ok_or_else(|| StoreError::LostLock(format!("key {} is gone", lease.key_id)))?;
        if record.lock_generation != lease.generation || record.locked_at.is_none() {
            return Err(StoreError::LostLock(format!(
                "key {} is now held by lock generation {}",
                lease.key_id, record.lock_generation
            )));
        }
        Ok(record)
    }

    fn leased_at(
        &mut self,
        lease: Lease,
        expected: RecoveryPoint,
    ) -> Result<&mut KeyRecord, StoreError> {
        let record = self.leased(lease)?;
        if record.recovery_point != expected {
            return Err(StoreError::LostLock(format!(
                "key {} is at {}, expected {expected}",
                lease.key_id, record.recovery_point
            )));
        }
        Ok(record)
    }
}

fn lock_record(record: &mut KeyRecord, now: SystemTime) {
    record.locked_at = Some(now);
    record.last_run_at = now;
    record.lock_generation += 1;
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
        let record = state.keys.get_mut(&key_id)?;
        if !takes(record) {
            return None;
        }
        lock_record(record, now);
        Some(record.clone())
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
        self.state().audit.clone()
    }

    /// Test support: change a stored key, e.g. to age it.
    pub fn update_key(&self, id: KeyId, change: impl FnOnce(&mut KeyRecord)) {
        if let Some(record) = self.state().keys.get_mut(&id) {
            change(record);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .state()
            .users
            .values()
            .find(|user| user.email == email)
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

    async fn upsert_user(&self, email: &str, stripe_customer_id: &str) -> Result<User, StoreError> {
        let mut state = self.state();
        if let Some(user) = state.users.values_mut().find(|user| user.email == email) {
            user.stripe_customer_id = stripe_customer_id.to_owned();
            return Ok(user.clone());
        }
        let user = User {
            id: UserId(state.next_id()),
            email: email.to_owned(),
            stripe_customer_id: stripe_customer_id.to_owned(),
        };
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

    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let mut state = self.state();
        let index = (request.user_id, request.key.clone());
        let Some(id) = state.key_index.get(&index).copied() else {
            let id = KeyId(state.next_id());
            let record = KeyRecord {
                id,
                user_id: request.user_id,
                key: request.key.clone(),
                fingerprint: request.fingerprint.clone(),
                params: request.params,
                request_ip: request.request_ip.clone(),
                recovery_point: RecoveryPoint::Started,
                locked_at: Some(now),
                lock_generation: 1,
                created_at: now,
                last_run_at: now,
                downstream_key: format!("rocket-rides-{}", uuid::Uuid::new_v4()),
                charge_attempted_at: None,
                ride_id: None,
                response: None,
            };
            state.keys.insert(id, record.clone());
            state.key_index.insert(index, id);
            return Ok(KeyPhase::Locked(record));
        };
        let record = state.keys.get_mut(&id).ok_or_else(|| {
            StoreError::Inconsistent(format!("key index points at missing key {id}"))
        })?;
        let decision = KeyDecision::for_existing(record, &request.fingerprint, now, policy);
        Ok(KeyPhase::unless_resumed(decision).unwrap_or_else(|| {
            lock_record(record, now);
            KeyPhase::Locked(record.clone())
        }))
    }

    async fn find_completable(
        &self,
        now: SystemTime,
        policy: CompleterPolicy,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let state = self.state();
        let mut eligible: Vec<&KeyRecord> = state
            .keys
            .values()
            .filter(|record| policy.is_eligible(record, now))
            .collect();
        eligible.sort_by_key(|record| (record.created_at, record.id));
        Ok(eligible.into_iter().take(limit).map(|r| r.id).collect())
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
        let record = state.leased_at(lease, RecoveryPoint::Started)?.clone();
        let ride = Ride {
            id: RideId(state.next_id()),
            user_id: record.user_id,
            idempotency_key_id: Some(record.id),
            params: record.params,
            stripe_charge_id: None,
        };
        state.audit.push(AuditRecord {
            action: "ride.created".to_owned(),
            user_id: record.user_id,
            resource_id: ride.id,
            origin_ip: record.request_ip.clone(),
            at: now,
        });
        state.rides.insert(ride.id, ride.clone());
        let record = state.leased(lease)?;
        record.recovery_point = RecoveryPoint::RideCreated;
        record.ride_id = Some(ride.id);
        Ok(record.clone())
    }

    async fn note_charge_attempt(&self, lease: Lease, now: SystemTime) -> Result<(), StoreError> {
        let mut state = self.state();
        let record = state.leased_at(lease, RecoveryPoint::RideCreated)?;
        record.charge_attempted_at.get_or_insert(now);
        Ok(())
    }

    async fn record_charge(
        &self,
        lease: Lease,
        charge_id: &str,
        _now: SystemTime,
    ) -> Result<Ride, StoreError> {
        let mut state = self.state();
        let ride_id = state
            .leased_at(lease, RecoveryPoint::RideCreated)?
            .ride_id
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} has no ride", lease.key_id)))?;
        if state.charge_ids.contains(charge_id) {
            return Err(StoreError::Inconsistent(format!(
                "charge {charge_id} is already on another ride"
            )));
        }
        let ride = state
            .rides
            .get_mut(&ride_id)
            .ok_or_else(|| StoreError::Inconsistent(format!("ride {ride_id} is gone")))?;
        ride.stripe_charge_id = Some(charge_id.to_owned());
        let ride = ride.clone();
        state.charge_ids.insert(charge_id.to_owned());
        state.leased(lease)?.recovery_point = RecoveryPoint::ChargeCreated;
        Ok(ride)
    }

    async fn finish(
        &self,
        lease: Lease,
        finish: Finish,
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let (expected, response, job) = match finish {
            Finish::Booked { response, job } => (RecoveryPoint::ChargeCreated, response, Some(job)),
            Finish::Refused { response } => (RecoveryPoint::RideCreated, response, None),
        };
        state.leased_at(lease, expected)?;
        if let Some(job) = job {
            let id = state.next_id();
            state.staged_jobs.insert(id, StagedJob { id, job });
        }
        let record = state.leased(lease)?;
        record.recovery_point = RecoveryPoint::Finished;
        record.response = Some(response);
        record.locked_at = None;
        Ok(())
    }

    async fn unlock(&self, lease: Lease) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(record) = state.keys.get_mut(&lease.key_id)
            && record.lock_generation == lease.generation
        {
            record.locked_at = None;
        }
        Ok(())
    }

    async fn find_ride(&self, id: RideId) -> Result<Option<Ride>, StoreError> {
        Ok(self.state().rides.get(&id).cloned())
    }

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
        let free: Vec<StagedJob> = state
            .staged_jobs
            .values()
            .filter(|job| {
                state
                    .job_claims
                    .get(&job.id)
                    .is_none_or(|until| *until <= now)
            })
            .take(limit)
            .cloned()
            .collect();
        for job in &free {
            state.job_claims.insert(job.id, now + claim_for);
        }
        Ok(free)
    }

    async fn delete_staged_job(&self, id: i64) -> Result<(), StoreError> {
        let mut state = self.state();
        state.staged_jobs.remove(&id);
        state.job_claims.remove(&id);
        Ok(())
    }

    async fn claim_receipt(
        &self,
        _job_id: i64,
        ride_id: RideId,
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<ReceiptClaim, StoreError> {
        let mut state = self.state();
        match state.receipts.get(&ride_id) {
            Some(receipt) if receipt.sent => return Ok(ReceiptClaim::AlreadySent),
            Some(receipt) if receipt.claimed_at + stale_after > now => {
                return Ok(ReceiptClaim::InProgress);
            }
            _ => {}
        }
        state.receipts.insert(
            ride_id,
            Receipt {
                claimed_at: now,
                sent: false,
            },
        );
        Ok(ReceiptClaim::Claimed)
    }

    async fn mark_receipt_sent(&self, ride_id: RideId, _now: SystemTime) -> Result<(), StoreError> {
        if let Some(receipt) = self.state().receipts.get_mut(&ride_id) {
            receipt.sent = true;
        }
        Ok(())
    }

    async fn release_receipt(&self, ride_id: RideId) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.receipts.get(&ride_id).is_some_and(|r| !r.sent) {
            state.receipts.remove(&ride_id);
        }
        Ok(())
    }

    async fn receipt_sent(&self, ride_id: RideId) -> Result<bool, StoreError> {
        Ok(self.state().receipts.get(&ride_id).is_some_and(|r| r.sent))
    }

    async fn reap_keys(
        &self,
        created_before: SystemTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut state = self.state();
        // Oldest first, as Postgres takes them.
        let mut old: Vec<&KeyRecord> = state
            .keys
            .values()
            .filter(|record| record.created_at < created_before && record.may_be_reaped())
            .collect();
        old.sort_by_key(|record| (record.created_at, record.id));
        let doomed: HashSet<KeyId> = old.iter().take(limit).map(|record| record.id).collect();
        for id in &doomed {
            if let Some(record) = state.keys.remove(id) {
                state.key_index.remove(&(record.user_id, record.key));
            }
            state.review_reported.remove(id);
        }
        for ride in state.rides.values_mut() {
            if ride
                .idempotency_key_id
                .is_some_and(|id| doomed.contains(&id))
            {
                ride.idempotency_key_id = None;
            }
        }
        Ok(doomed.len())
    }

    async fn keys_for_review(
        &self,
        attempted_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let state = self.state();
        Ok(for_review(&state, attempted_before)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn report_keys_for_review(
        &self,
        attempted_before: SystemTime,
        _now: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut state = self.state();
        let reported: Vec<KeyRecord> = for_review(&state, attempted_before)
            .filter(|record| !state.review_reported.contains(&record.id))
            .take(limit)
            .cloned()
            .collect();
        state
            .review_reported
            .extend(reported.iter().map(|record| record.id));
        Ok(reported)
    }
}

/// Keys at `ride_created` whose charge was first attempted before
/// `attempted_before`, oldest attempt first.
fn for_review(state: &State, attempted_before: SystemTime) -> impl Iterator<Item = &KeyRecord> {
    let mut keys: Vec<&KeyRecord> = state
        .keys
        .values()
        .filter(|record| {
            record
                .unrecorded_charge_attempt()
                .is_some_and(|at| at < attempted_before)
        })
        .collect();
    keys.sort_by_key(|record| (record.charge_attempted_at, record.id));
    keys.into_iter()
}
