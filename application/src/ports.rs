//! The ports: what the use cases need from the outside world, as traits.
//! Adapters implement them; `bins` picks which implementation runs.
//!
//! The store is several ports, split by who uses them (`Users`; `Keys`,
//! the request's phases; `KeyScans`, the background's; `KeyViews` and
//! `Dashboard`, the operator's reads; `Probe`; `Outbox`; `Receipts`), one
//! database behind them all (`Store`). Every method's `Err` is a
//! `StoreError`: `Unavailable` when the store could not answer (retry
//! later), `LostLock` when a lease is no longer current (the write did
//! nothing), `Inconsistent` when a row the call needs is missing. Atomicity is part of the contract:
//! every method marked "one atomic phase" commits all its writes together
//! with the key's new recovery point, or nothing at all, and only for the
//! holder of the key's current lock (`Lease`). The in-memory store does it
//! under a mutex, Postgres in one statement (or one short transaction that
//! locks the key's row).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use domain::charge::ReceiptJob;
use domain::{
    ApiKeyHash, CancelDecision, CancelPolicy, Cancellation, ChargeOutcome, ChargeRequest,
    ChargeSearch, CompleterPolicy, IdempotencyKey, KeyAction, KeyDecision, KeyId, KeyRecord,
    LockPolicy, PaymentApplied, PaymentIntentState, PaymentUpdate, PhaseWrite, ReceiptFor,
    RecoveryPoint, RefundOutcome, RefundRecord, RefundRequest, RefundStatus, RefundUpdate,
    RequestFingerprint, ReviewChecks, ReviewPolicy, Ride, RideId, RideStatus, StagedJob,
    StoredResponse, TestCard, User, UserId,
};

#[cfg(any(test, feature = "mocks"))]
use mockall::automock;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is no longer where this request left it: its lock was taken
    /// over by another request, or the recovery point moved on.
    #[error("the idempotency key was taken over by another request: {0}")]
    LostLock(String),
    /// A row the phase needs is not there (a bug, or data changed by hand).
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

/// Proof of holding a ride's receipt claim, as `Lease` is of a key's lock:
/// unique to this claim (never reused, a re-claim gets a new one), so a
/// worker whose claim went stale and was taken over can neither mark the
/// receipt sent nor release the new holder's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub i64);

/// Who may send a ride's receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptClaim {
    /// This worker: send it (extending the claim while the send lasts),
    /// then mark it sent (or release it), with this token.
    Claimed(ClaimToken),
    /// Sent before: a duplicate delivery, acknowledge it.
    AlreadySent,
    /// Another worker claimed it moments ago and may still be sending:
    /// ask for the job again later, in case that worker fails.
    InProgress,
    /// The job names a ride that does not exist: it can never be worked.
    /// The other claims of the batch are answered as usual.
    NoSuchRide,
}

/// Unfinished keys, for the operator's gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Unfinished keys by recovery point (points with none left out).
    pub by_recovery_point: Vec<(RecoveryPoint, u64)>,
    /// Keys whose charge was first attempted before the review cutoff.
    pub awaiting_review: u64,
}

/// The staged-job backlog, for the operator's gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub jobs: u64,
    /// How long the oldest staged job has waited (zero when none).
    pub oldest_age: Duration,
}

/// Proof of holding a key's lock: the key and the lock generation taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub key_id: KeyId,
    pub generation: i64,
}

impl Lease {
    pub fn of(record: &KeyRecord) -> Self {
        Self {
            key_id: record.id,
            generation: record.lock_generation,
        }
    }
}

/// A request arriving at the key phase.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRequest {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    pub fingerprint: RequestFingerprint,
    /// What the request asks: a booking's parameters, or the ride a cancel
    /// names (a new cancel key is written at `started`).
    pub action: KeyAction,
    pub request_ip: Option<String>,
    /// The request's `X-Request-Id`, recorded on the key it locks.
    pub request_id: Option<String>,
    /// The request goes on to charge at once (it is not the simulator's
    /// `raise_error`): a new key is written with its charge attempt noted.
    pub charges_now: bool,
}

/// What the key phase decided.
#[allow(clippy::large_enum_variant)] // one per request, moved once
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPhase {
    /// The key is locked for this request; go on from its recovery point.
    /// A new key arrives at `ride_created`, its ride and audit record
    /// written in the same commit (and its charge attempt noted if the
    /// request `charges_now`); a resumed one wherever it was left.
    Locked(KeyRecord),
    Mismatch,
    Replay(StoredResponse),
    InFlight {
        retry_after: Duration,
    },
}

impl KeyPhase {
    /// What a decision on an existing key answers without taking its lock;
    /// `None` for `Resume`, where the store takes the lock (its own way).
    pub fn unless_resumed(decision: KeyDecision) -> Option<Self> {
        match decision {
            KeyDecision::Mismatch => Some(KeyPhase::Mismatch),
            KeyDecision::Replay(response) => Some(KeyPhase::Replay(response)),
            KeyDecision::InFlight { retry_after } => Some(KeyPhase::InFlight { retry_after }),
            KeyDecision::Resume => None,
        }
    }
}

/// How a finished key ends. A receipt job is staged exactly when a 201 is.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// From `ride_created` (or `charge_created`, left by an earlier
    /// version): the charge recorded on the ride, the 201 and its receipt
    /// job, in one commit. One charge id books one ride at most.
    Booked {
        charge_id: String,
        payment_intent_id: Option<String>,
        response: StoredResponse,
        job: ReceiptJob,
    },
    /// From `ride_created`: a definitive refusal (402, 502); nothing
    /// charged, the ride `payment_failed`.
    Refused { response: StoredResponse },
    /// From `ride_created`: the ride waits on the rider or on Stripe
    /// (`status`, one that `awaits_payment`), its PaymentIntent recorded
    /// on it so a webhook or the sync pass can settle it; the answer is
    /// the 402 `authentication-required` or the 202.
    AwaitingPayment {
        payment_intent_id: String,
        status: RideStatus,
        response: StoredResponse,
    },
    /// A cancel key from `started`: the ride cannot be cancelled by it
    /// (409 `ride-already-cancelled` or `ride-not-cancellable`); nothing
    /// else changes.
    CancelRefused { response: StoredResponse },
    /// A cancel key from `cancel_recorded`: Stripe refused the refund for
    /// good (502); the ride `refund_failed`.
    RefundFailed { response: StoredResponse },
    /// A cancel key from `cancel_recorded` (nothing to call Stripe for was
    /// left) or `refund_created`: the ride `cancelled`, the 200 and the
    /// cancellation receipt job, in one commit.
    Cancelled {
        response: StoredResponse,
        job: ReceiptJob,
    },
}

impl Finish {
    pub fn write(&self) -> PhaseWrite {
        match self {
            Finish::Booked { .. } => PhaseWrite::Book,
            Finish::Refused { .. } => PhaseWrite::Refuse,
            Finish::AwaitingPayment { .. } => PhaseWrite::AwaitPayment,
            Finish::CancelRefused { .. } => PhaseWrite::RefuseCancel,
            Finish::RefundFailed { .. } => PhaseWrite::FailRefund,
            Finish::Cancelled { .. } => PhaseWrite::FinishCancel,
        }
    }

    pub fn response(&self) -> &StoredResponse {
        match self {
            Finish::Booked { response, .. }
            | Finish::Refused { response }
            | Finish::AwaitingPayment { response, .. }
            | Finish::CancelRefused { response }
            | Finish::RefundFailed { response }
            | Finish::Cancelled { response, .. } => response,
        }
    }
}

/// What recording a cancellation did.
#[allow(clippy::large_enum_variant)] // one per cancel, moved once
#[derive(Debug, Clone, PartialEq)]
pub enum CancelRecording {
    /// `cancel_recorded`: the key as it now is, and the cancellation.
    Recorded {
        record: KeyRecord,
        cancellation: Cancellation,
    },
    /// The ride as it stands cannot be cancelled by this key (what
    /// `CancelPolicy::decide` said, anything but `Cancel`); nothing was
    /// written.
    Refused(CancelDecision),
}

/// Riders and their credentials.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Users: Send + Sync {
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    async fn find_user_by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<User>, StoreError>;
    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Creates the user, or updates the customer (and saved PaymentMethod)
    /// of the user with this email.
    async fn upsert_user(&self, email: &str, customer: &SavedCustomer) -> Result<User, StoreError>;
    async fn add_api_key(&self, user_id: UserId, hash: &ApiKeyHash) -> Result<(), StoreError>;
}

/// Idempotency keys as a request (or the completer, or a person resolving
/// one) works them: the phases written under their locks, and the rides
/// they book. Every phase write names the lease it holds and commits only
/// for the key's current lock at a recovery point the write expects
/// (`KeyRecord::check_lease`, `PhaseWrite::expects`); otherwise it changes
/// nothing and answers `LostLock`.
///
/// # Errors
///
/// `StoreError::LostLock` when the lease is no longer current or the key is
/// not at a recovery point the write expects (nothing was written);
/// `StoreError::Inconsistent` when a row the phase needs is missing;
/// `StoreError::Unavailable` when the store cannot answer (the write may or
/// may not have committed: the key stays at a recovery point either way).
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Keys: Send + Sync {
    /// The key phase, one atomic phase. A new key is inserted locked at
    /// `ride_created` with its ride and `ride.created` audit record (the
    /// `started` phase shares the commit), its charge attempt noted when the
    /// request `charges_now`. An existing key is decided with
    /// `KeyDecision::for_existing`: a replay, mismatch or in-flight answer
    /// takes no lock and writes nothing; on resume the store takes the lock
    /// (new generation) and sets `last_run_at`.
    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError>;

    /// Takes the lock of a key for the completer if, checked again under the
    /// key's lock, it is still eligible. `None` when it no longer is.
    async fn lock_for_completion(
        &self,
        key_id: KeyId,
        now: SystemTime,
        policy: CompleterPolicy,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Takes the lock of a key for a person resolving it if, checked again
    /// under the key's lock, it awaits review (`review.needs_review`) and no
    /// request holds a fresh lock on it. `None` otherwise.
    async fn lock_for_review(
        &self,
        key_id: KeyId,
        now: SystemTime,
        review: ReviewPolicy,
        lock: LockPolicy,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// One atomic phase, `started` → `ride_created`, for a key left at
    /// `started`: the ride (one per key) and its `ride.created` audit record.
    async fn create_ride(&self, lease: Lease, now: SystemTime) -> Result<KeyRecord, StoreError>;

    /// A cancel key's one atomic phase `started` → `cancel_recorded`, or
    /// nothing: under the ride's lock, `policy` decides from the ride's
    /// status, when it was booked and when the key was created (the
    /// rider's asking). To cancel, the ride goes `cancelling`, the
    /// cancellation (one per ride, by a database constraint: a second key
    /// racing gets `Refused(AlreadyCancelled)`) and its `ride.cancelled`
    /// audit record are written with the amount fixed. `Inconsistent` if
    /// the ride is gone or not the key's user's.
    async fn record_cancellation(
        &self,
        lease: Lease,
        policy: CancelPolicy,
        now: SystemTime,
    ) -> Result<CancelRecording, StoreError>;

    /// A ride's cancellation, if it has one.
    async fn find_cancellation(&self, ride_id: RideId) -> Result<Option<Cancellation>, StoreError>;

    /// A cancel key's one atomic phase `cancel_recorded` →
    /// `refund_created`: Stripe's refund (none for a cancelled
    /// PaymentIntent) on the cancellation; one refund id per ride and
    /// across rides.
    async fn record_refund(
        &self,
        lease: Lease,
        refund: Option<RefundRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Notes that a gateway call (a charge, or a cancel's refund) is about
    /// to start: the first attempt's
    /// time (`now`, once; the review rule reads it) and this call's start by
    /// the store's own clock (every call; the reconcile rule reads it).
    /// Does not move the recovery point.
    async fn note_charge_attempt(&self, lease: Lease, now: SystemTime) -> Result<(), StoreError>;

    /// One atomic phase → `finished`: the response stored, the key unlocked,
    /// and for a booking the charge on the ride and its receipt job staged.
    async fn finish(&self, lease: Lease, finish: Finish, now: SystemTime)
    -> Result<(), StoreError>;

    /// Releases the lock after an error, so a retry need not wait for the
    /// lock timeout. Does nothing if the lease is no longer current.
    async fn unlock(&self, lease: Lease) -> Result<(), StoreError>;

    async fn find_ride(&self, id: RideId) -> Result<Option<Ride>, StoreError>;
}

/// Whether the store answers at all.
///
/// # Errors
///
/// `StoreError::Unavailable` when the store does not answer.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Probe: Send + Sync {
    /// Is the store reachable? For `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The background's scans over keys: the completer's and the reaper's.
/// Each reads an index in age order and takes a batch, skipping keys
/// another process holds.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer;
/// nothing is half done (a batch is one statement or one transaction).
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait KeyScans: Send + Sync {
    /// Unfinished keys the completer may pick up, oldest first.
    async fn find_completable(
        &self,
        now: SystemTime,
        policy: CompleterPolicy,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// Up to `limit` unfinished keys whose first charge attempt is older
    /// than `attempted_before` and that were never reported, marked
    /// reported at `now` and returned: however many completers run, each
    /// key is reported once.
    async fn report_keys_for_review(
        &self,
        attempted_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Up to `limit` keys reported for review, still unfinished, whose next
    /// check is due at `now` and that were checked fewer than
    /// `checks.max_checks` times, most overdue first; each is counted
    /// checked once more and its next check set `checks.gap_after` that
    /// count from `now`, and their ids returned in id order. A key is due at once when
    /// reported; another completer claiming the same keys this instant is
    /// skipped, so each check is made by one completer.
    async fn claim_review_checks(
        &self,
        now: SystemTime,
        checks: ReviewChecks,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// Deletes up to `limit` keys created before `created_before`, oldest
    /// first; their rides stay, with no key. Only keys
    /// `KeyRecord::may_be_reaped` allows: a key whose charge may exist stays
    /// until it is resolved. Returns how many went.
    async fn reap_keys(
        &self,
        created_before: SystemTime,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// What a process holds in its own memory beside a store's keys (the
/// embedded store's settled rides, the in-process gateway's payments): the
/// reaper has it forget what was made before the keys it reaps, so a long
/// run's memory stays flat. Postgres and Stripe keep their own records and
/// have no such part.
pub trait Retention: Send + Sync {
    /// Forgets, oldest first, what was made before `before` and nothing
    /// can still ask about, looking at `limit` records at most (one short
    /// hold of a lock); how many it forgot.
    fn forget_before(&self, before: SystemTime, limit: usize) -> usize;
}

/// A cancellation's refund still pending at Stripe, for the sync pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefund {
    pub ride_id: RideId,
    pub refund_id: String,
}

/// A ride waiting on its payment, for the sync pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingPayment {
    pub ride_id: RideId,
    pub payment_intent_id: String,
    pub status: RideStatus,
}

/// Rides whose PaymentIntent settles after the request answered: the
/// webhook's and the sync pass's writes.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer
/// (nothing was written).
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait RidePayments: Send + Sync {
    /// In one commit: the event id recorded (once: a repeat is
    /// `Duplicate`), the ride carrying the PaymentIntent moved by
    /// `RideStatus::after` (only forward), and for a ride now `booked` its
    /// charge noted and its receipt job staged. A PaymentIntent no ride
    /// carries stores nothing (`UnknownIntent`). A sync update with no
    /// event id that moves nothing notes the ride as checked at `now`.
    async fn apply_payment(
        &self,
        update: &PaymentUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError>;

    /// In one commit: the event id recorded (once: a repeat is
    /// `Duplicate`), the refund's status noted on its cancellation, and
    /// for a refund that failed (or was canceled) its ride moved to
    /// `refund_failed` (`RideStatus::after_refund_failed`). A refund no
    /// cancellation carries stores nothing (`UnknownIntent`). A sync
    /// update (no event id) notes the refund as checked at `now`.
    async fn apply_refund(
        &self,
        update: &RefundUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError>;

    /// Up to `limit` cancellations whose refund is still pending at Stripe
    /// (`pending`, `requires_action`) and was last recorded or checked
    /// before `stale_before`, oldest first: the sync pass retrieves them.
    async fn refunds_pending(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingRefund>, StoreError>;

    /// Up to `limit` rides awaiting authentication or pending since before
    /// `stale_before` and not checked since then, oldest first.
    async fn rides_awaiting_payment(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<AwaitingPayment>, StoreError>;
}

/// The operator's reads of keys: one key, the keys awaiting review, the
/// counts behind the gauges. None takes a lock.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait KeyViews: Send + Sync {
    /// The key as stored, locked or not (for reading only).
    async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Unfinished keys whose first charge attempt is older than `before`:
    /// the ones the completer must not charge again blindly. Oldest attempt
    /// first.
    async fn keys_for_review(
        &self,
        attempted_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// How many keys are unfinished, by recovery point, and how many of
    /// them attempted their charge before `attempted_before` (review's).
    async fn unfinished_counts(
        &self,
        attempted_before: SystemTime,
    ) -> Result<KeyCounts, StoreError>;
}

/// The job outbox: jobs staged in the same commit as the 201 that caused
/// them, until an enqueuer hands them to the job queue.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Staged jobs in id order, at most `limit`, claimed or not (a read).
    async fn staged_jobs(&self, limit: usize) -> Result<Vec<StagedJob>, StoreError>;
    /// Claims up to `limit` staged jobs in id order for one enqueuer until
    /// `now + claim_for`, skipping jobs another enqueuer holds a live claim
    /// on: two enqueuers never publish one job at once. A crashed
    /// enqueuer's claims run out and its jobs are claimed again.
    async fn claim_staged_jobs(
        &self,
        limit: usize,
        now: SystemTime,
        claim_for: Duration,
    ) -> Result<Vec<StagedJob>, StoreError>;
    /// How many jobs are staged, and how long the oldest has waited.
    async fn backlog(&self, now: SystemTime) -> Result<Backlog, StoreError>;
    /// Removes jobs the queue accepted, in one write.
    async fn delete_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError>;
    /// Gives up the claims on jobs the queue refused, so the next pass
    /// (of any enqueuer) publishes them again at once rather than after
    /// the claim runs out. A repeat the queue did accept is dropped by
    /// its message id.
    async fn release_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError>;
}

/// One receipt per ride, whoever delivers its job.
///
/// # Errors
///
/// `StoreError::Unavailable` when the store cannot answer; a claim that
/// failed so is not held, and the job is given back to the queue.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Receipts: Send + Sync {
    /// Takes the right to send each receipt (a ride's booking or
    /// cancellation receipt), before sending it: one answer per `(job id,
    /// receipt)`, in order, in one write. A receipt listed twice is claimed
    /// once; its later entries are `InProgress`.
    async fn claim_receipts(
        &self,
        claims: &[(i64, ReceiptFor)],
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<Vec<ReceiptClaim>, StoreError>;
    /// The claims are still held, the sends still going: each claim's age
    /// starts again at `now`, so no other worker takes it over. Only for
    /// the claims these tokens still hold; the others are left alone.
    async fn extend_receipt_claims(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        now: SystemTime,
    ) -> Result<(), StoreError>;
    /// The receipts went out; nobody sends them again. Only for the claims
    /// these tokens still hold: the rides returned. A ride left out was
    /// taken over by another worker (its claim had gone stale), which may
    /// have sent it too.
    async fn mark_receipts_sent(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        now: SystemTime,
    ) -> Result<Vec<ReceiptFor>, StoreError>;
    /// Sending failed; the next delivery may claim it at once. Only if
    /// `token` still holds the claim: another worker's is never released.
    async fn release_receipt(
        &self,
        receipt: ReceiptFor,
        token: ClaimToken,
    ) -> Result<(), StoreError>;
    async fn receipt_sent(&self, receipt: ReceiptFor) -> Result<bool, StoreError>;

    /// `claim_receipts` for one receipt.
    async fn claim_receipt(
        &self,
        job_id: i64,
        receipt: ReceiptFor,
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<ReceiptClaim, StoreError> {
        let mut claims = self
            .claim_receipts(&[(job_id, receipt)], now, stale_after)
            .await?;
        claims
            .pop()
            .ok_or_else(|| StoreError::Inconsistent("a claim without an answer".into()))
    }

    /// `mark_receipts_sent` for one receipt: whether it was marked.
    async fn mark_receipt_sent(
        &self,
        receipt: ReceiptFor,
        token: ClaimToken,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        Ok(!self
            .mark_receipts_sent(&[(receipt, token)], now)
            .await?
            .is_empty())
    }
}

/// A cancelled ride whose refund failed, as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRefund {
    pub ride_id: RideId,
    pub user_id: UserId,
    /// What the cancellation owed.
    pub amount_cents: i64,
    /// Stripe's refund, when one was made (and failed later).
    pub refund_id: Option<String>,
}

/// A ride as the operator's console lists it, with the request that made
/// it (while its key is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct RecentRide {
    pub ride: Ride,
    /// The `X-Request-Id` of the request that last ran the key.
    pub request_id: Option<String>,
    /// The key's stored answer, once finished.
    pub status: Option<u16>,
    /// When the key was created (the request arrived).
    pub requested_at: Option<SystemTime>,
}

/// Read-only views for the operator's console. Each reads an index, never
/// every key.
///
/// # Errors
///
/// Every method: `StoreError::Unavailable` when the store cannot answer.
#[async_trait]
pub trait Dashboard: Send + Sync {
    /// The newest rides, newest first.
    async fn recent_rides(&self, limit: usize) -> Result<Vec<RecentRide>, StoreError>;
    /// Cancelled rides whose refund Stripe refused or reported failed
    /// (`refund_failed`), most recent first: a person's to refund by hand.
    async fn failed_refunds(&self, limit: usize) -> Result<Vec<FailedRefund>, StoreError>;
    /// Keys created at or after `since`, counted by their stored answer's
    /// status (`None`: not finished), by status.
    async fn answers_since(&self, since: SystemTime)
    -> Result<Vec<(Option<u16>, u64)>, StoreError>;
}

/// Every port over one database: what `bins` builds and hands out, each
/// use case taking only the ports it needs.
pub trait Store:
    Users + Keys + KeyScans + KeyViews + Probe + Outbox + Receipts + Dashboard + RidePayments
{
}

impl<T> Store for T where
    T: Users + Keys + KeyScans + KeyViews + Probe + Outbox + Receipts + Dashboard + RidePayments
{
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the payment processor refused: {0}")]
    Refused(String),
    #[error("the payment processor did not answer definitively: {0}")]
    Unknown(String),
}

///
/// # Errors
///
/// `create_customer`: `GatewayError::Refused` for a definitive refusal,
/// `GatewayError::Unknown` when the answer was lost. `charge` and
/// `find_charges` never fail: their outcomes classify every answer.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Creates a customer paying with `card` (saved the way this gateway
    /// charges: a default source for Charges, an attached default
    /// PaymentMethod for PaymentIntents).
    async fn create_customer(
        &self,
        email: &str,
        card: TestCard,
    ) -> Result<SavedCustomer, GatewayError>;
    /// Saves `card` for an existing customer that has no PaymentMethod
    /// (one created before PaymentIntents): the PaymentMethod's id, or
    /// `None` where this gateway charges without one.
    async fn save_payment_method(
        &self,
        customer_id: &str,
        card: TestCard,
    ) -> Result<Option<String>, GatewayError> {
        let _ = (customer_id, card);
        Ok(None)
    }
    /// Charges a customer. Never fails: every answer is classified.
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome;
    /// The charges whose metadata names `downstream_key`, as the gateway's
    /// (possibly lagging) search finds them. A gateway that cannot search
    /// answers `Unknown`, so nothing is ever decided from it.
    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        let _ = downstream_key;
        ChargeSearch::Unknown {
            reason: "this payment gateway cannot search its charges".to_owned(),
        }
    }
    /// Gives money back for a cancellation: a refund, or a PaymentIntent's
    /// cancel. Never fails: every answer is classified.
    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let _ = request;
        RefundOutcome::Unknown {
            reason: "this payment gateway cannot refund".to_owned(),
        }
    }
    /// For a cancel awaiting review: the refunds made under the request's
    /// idempotency key (listed by its PaymentIntent or charge, matched by
    /// metadata; `ChargeSearch::Refunds`), or the state of the
    /// PaymentIntent it was to cancel (`ChargeSearch::Intent`). A gateway
    /// that cannot tell answers `Unknown`, so nothing is decided from it.
    async fn find_refund(&self, request: &RefundRequest) -> ChargeSearch {
        let _ = request;
        ChargeSearch::Unknown {
            reason: "this payment gateway cannot list its refunds".to_owned(),
        }
    }
    /// A refund's status now (read-after-write consistent).
    async fn refund_status(&self, refund_id: &str) -> Result<RefundStatus, GatewayError> {
        Err(GatewayError::Unknown(format!(
            "this payment gateway cannot retrieve refund {refund_id}"
        )))
    }
    /// A PaymentIntent's state now (read-after-write consistent).
    async fn payment_intent_state(&self, id: &str) -> Result<PaymentIntentState, GatewayError> {
        Err(GatewayError::Unknown(format!(
            "this payment gateway cannot retrieve PaymentIntent {id}"
        )))
    }
}

/// A customer as saved at the payment processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCustomer {
    pub customer_id: String,
    /// The PaymentMethod charged off-session (PaymentIntents only).
    pub payment_method_id: Option<String>,
}

impl SavedCustomer {
    /// A customer with no PaymentMethod (charged through Charges).
    pub fn without_payment_method(customer_id: impl Into<String>) -> Self {
        Self {
            customer_id: customer_id.into(),
            payment_method_id: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("job queue: {0}")]
pub struct QueueError(#[from] pub anyhow::Error);

/// One job handed to a worker; acknowledge it or ask for it again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub job: StagedJob,
    /// Identifies this delivery to the queue (not the job).
    pub tag: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
}

///
/// # Errors
///
/// Every method: `QueueError` when the queue cannot be reached; a
/// publish that failed so may still have been accepted (ids deduplicate).
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Returns once the queue has accepted the job. Publishing one job id
    /// twice delivers it once where the queue can tell (dedup by id).
    async fn publish(&self, job: &StagedJob) -> Result<(), QueueError>;
    /// Publishes a batch, its acknowledgements awaited together rather than
    /// one after another: one result per job, in order. A job with an error
    /// was not accepted. (By default, one `publish` after another.)
    async fn publish_batch(&self, jobs: &[StagedJob]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            results.push(self.publish(job).await);
        }
        results
    }
    /// The next job, waiting up to `max_wait`.
    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, QueueError>;
    /// Up to `max` jobs: every one ready now, or else the first to arrive
    /// within `max_wait`. (By default, `receive` until none is ready.)
    async fn receive_batch(
        &self,
        max: usize,
        max_wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let Some(first) = self.receive(max_wait).await? else {
            return Ok(Vec::new());
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match self.receive(Duration::ZERO).await? {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
        }
        Ok(batch)
    }
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;
    /// The job failed: gives it back, to be delivered again after `delay`,
    /// or moves it to the dead letters after its last allowed delivery.
    async fn retry_later(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError>;
    /// The job could not be worked for a reason outside it (the store is
    /// unavailable): gives it back for `delay`, never to the dead letters.
    /// Either way the delivery is no longer in hand.
    async fn postpone(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError>;
    /// The job can never be worked (it names a ride that does not exist):
    /// moved to the dead letters at once with `reason`, where the queue
    /// keeps them (the in-memory queue keeps none: it drops the job, and
    /// says so). The delivery is no longer in hand.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;
}

/// A job the queue gave up on, or a message in the dead letters that is
/// not a job at all (shown as it is, never requeued; a person deletes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// Its place in the dead letters (what a requeue or a delete removes).
    pub sequence: u64,
    /// The job; `None` when the message cannot be read as one.
    pub job: Option<StagedJob>,
    /// The message as stored, for a person to read when it is not a job
    /// (UTF-8 where it is, bytes escaped where not; at most 1 KiB).
    pub payload: String,
    /// Why it was given up on, as the worker said.
    pub reason: String,
}

/// The jobs the queue gave up on, for a person to look at and, once the
/// cause is fixed, put back. A queue that keeps none (the in-memory one)
/// has no such port.
///
/// # Errors
///
/// Every method answers `QueueError` when the queue cannot be reached.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead jobs, oldest first.
    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, QueueError>;
    /// Puts up to `limit` dead jobs back in the job queue, oldest first,
    /// each removed from the dead letters once the queue accepted it; the
    /// jobs requeued. A ride whose receipt went out meanwhile gets no
    /// second one (the worker's receipt claim). Messages that are not jobs
    /// stay where they are.
    async fn requeue_dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, QueueError>;
    /// Deletes one dead letter (a message that is not a job, or a job a
    /// person decided against); whether it was there.
    async fn delete_dead_job(&self, sequence: u64) -> Result<bool, QueueError>;
    /// How many dead jobs there are.
    async fn dead_job_count(&self) -> Result<u64, QueueError>;
}

///
/// # Errors
///
/// An error when the receipt could not be sent; the worker releases its
/// claim and the job is retried with backoff.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ReceiptSender: Send + Sync {
    async fn send(&self, job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()>;
}

/// Time, for the use cases: what time it is, and waiting for some of it to
/// pass (a manual clock in tests, so no test sleeps).
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Returns once `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);
}
