//! Idempotency keys and the rules around them: what a key may look like, the
//! one-way order of recovery points, when a lock is still held, which keys
//! the completer may pick up, and which must go to a person for review.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::fingerprint::RequestFingerprint;
pub use crate::ids::KeyId;
use crate::ids::{RideId, UserId};
use crate::response::StoredResponse;
use crate::ride::RideParams;

/// A client's `Idempotency-Key`: 20 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    #[error("the Idempotency-Key header is required")]
    Missing,
    #[error("the Idempotency-Key must be at least {min} characters long, it has {len}", min = IdempotencyKey::MIN_LEN)]
    TooShort { len: usize },
    #[error("the Idempotency-Key must be at most {max} characters long, it has {len}", max = IdempotencyKey::MAX_LEN)]
    TooLong { len: usize },
    #[error(
        "the Idempotency-Key may only hold visible ASCII characters (no spaces or control characters)"
    )]
    NotVisibleAscii,
}

impl IdempotencyKey {
    pub const MIN_LEN: usize = 20;
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, IdempotencyKeyError> {
        if raw.is_empty() {
            return Err(IdempotencyKeyError::Missing);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::NotVisibleAscii);
        }
        // Visible ASCII: bytes and characters are one and the same.
        let len = raw.len();
        if len < Self::MIN_LEN {
            return Err(IdempotencyKeyError::TooShort { len });
        }
        if len > Self::MAX_LEN {
            return Err(IdempotencyKeyError::TooLong { len });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far a request has got. Each atomic phase commits its writes together
/// with the next recovery point; a retry resumes from the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecoveryPoint {
    Started,
    RideCreated,
    ChargeCreated,
    /// A cancel key's: the cancellation recorded, its refund not yet made.
    CancelRecorded,
    /// A cancel key's: the refund made (or the PaymentIntent cancelled).
    RefundCreated,
    Finished,
}

impl RecoveryPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPoint::Started => "started",
            RecoveryPoint::RideCreated => "ride_created",
            RecoveryPoint::ChargeCreated => "charge_created",
            RecoveryPoint::CancelRecorded => "cancel_recorded",
            RecoveryPoint::RefundCreated => "refund_created",
            RecoveryPoint::Finished => "finished",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "started" => Some(RecoveryPoint::Started),
            "ride_created" => Some(RecoveryPoint::RideCreated),
            "charge_created" => Some(RecoveryPoint::ChargeCreated),
            "cancel_recorded" => Some(RecoveryPoint::CancelRecorded),
            "refund_created" => Some(RecoveryPoint::RefundCreated),
            "finished" => Some(RecoveryPoint::Finished),
            _ => None,
        }
    }

    /// Recovery points only move forward: a phase that would move a key back
    /// (or leave it where it is) is a bug or a lost race.
    pub fn may_advance_to(self, next: RecoveryPoint) -> bool {
        next > self
    }
}

impl fmt::Display for RecoveryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a key's request has got, with what exists at that point: the
/// ride from `ride_created` on, the stored response once finished. One
/// value, so "finished without a response" or "charged without a ride"
/// cannot be written down.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyProgress {
    /// The key alone. New keys are written at `ride_created` (the key phase
    /// and the `started` phase share one commit); a key found here was left
    /// by an earlier version and resumes from it.
    Started,
    RideCreated {
        ride_id: RideId,
        /// When a charge was first attempted, for the review rule.
        charge_attempted_at: Option<SystemTime>,
        /// When the latest gateway call for this key started, by the
        /// store's clock (the database's), written under the lease just
        /// before the call: the reconcile rule counts from it.
        last_call_at: Option<SystemTime>,
    },
    /// Charged, the charge id on the ride, not yet booked. Recording the
    /// charge and booking share one commit now; a key found here was left
    /// by an earlier version and resumes from it.
    ChargeCreated { ride_id: RideId },
    /// A cancel key: the cancellation of `ride_id` recorded (the ride
    /// `cancelling`, the amount fixed), its gateway call not yet answered.
    CancelRecorded {
        ride_id: RideId,
        /// When the refund (or the intent's cancel) was first attempted.
        call_attempted_at: Option<SystemTime>,
        /// As at `ride_created`: the latest call's start, by the store.
        last_call_at: Option<SystemTime>,
    },
    /// A cancel key: the refund made and stored on the cancellation.
    RefundCreated { ride_id: RideId },
    Finished {
        ride_id: RideId,
        response: StoredResponse,
    },
}

impl KeyProgress {
    pub fn recovery_point(&self) -> RecoveryPoint {
        match self {
            KeyProgress::Started => RecoveryPoint::Started,
            KeyProgress::RideCreated { .. } => RecoveryPoint::RideCreated,
            KeyProgress::ChargeCreated { .. } => RecoveryPoint::ChargeCreated,
            KeyProgress::CancelRecorded { .. } => RecoveryPoint::CancelRecorded,
            KeyProgress::RefundCreated { .. } => RecoveryPoint::RefundCreated,
            KeyProgress::Finished { .. } => RecoveryPoint::Finished,
        }
    }

    pub fn ride_id(&self) -> Option<RideId> {
        match self {
            KeyProgress::Started => None,
            KeyProgress::RideCreated { ride_id, .. }
            | KeyProgress::ChargeCreated { ride_id }
            | KeyProgress::CancelRecorded { ride_id, .. }
            | KeyProgress::RefundCreated { ride_id }
            | KeyProgress::Finished { ride_id, .. } => Some(*ride_id),
        }
    }

    pub fn response(&self) -> Option<&StoredResponse> {
        match self {
            KeyProgress::Finished { response, .. } => Some(response),
            _ => None,
        }
    }

    /// When the latest gateway call started (the store's clock), at
    /// `ride_created` or `cancel_recorded` only.
    pub fn last_call_at(&self) -> Option<SystemTime> {
        match self {
            KeyProgress::RideCreated { last_call_at, .. }
            | KeyProgress::CancelRecorded { last_call_at, .. } => *last_call_at,
            _ => None,
        }
    }

    /// When the gateway call whose outcome was never recorded was first
    /// attempted: `Some` only for a key still at `ride_created` (a charge)
    /// or `cancel_recorded` (a refund) after an attempt. Such a key is the
    /// only trace of money that may have moved.
    pub fn unrecorded_charge_attempt(&self) -> Option<SystemTime> {
        match self {
            KeyProgress::RideCreated {
                charge_attempted_at,
                ..
            } => *charge_attempted_at,
            KeyProgress::CancelRecorded {
                call_attempted_at, ..
            } => *call_attempted_at,
            _ => None,
        }
    }
}

/// The writes a request makes while it holds a key's lock. Each is allowed
/// only from the recovery points it expects: the one rule both stores apply
/// (the in-memory store through `KeyRecord::check_lease`, Postgres through
/// a condition built from `expects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseWrite {
    /// `started` → `ride_created`: the ride and its audit record.
    CreateRide,
    /// At `ride_created`, before the gateway is called.
    NoteChargeAttempt,
    /// → `finished` with a 201 and the receipt job: the charge recorded on
    /// the ride in the same commit (or already there, from `charge_created`).
    Book,
    /// `ride_created` → `finished` with a refusal (402, 502), nothing charged.
    Refuse,
    /// `ride_created` → `finished` with the ride waiting on the rider or on
    /// Stripe (402 `authentication-required`, 202): the PaymentIntent on it.
    AwaitPayment,
    /// A cancel key, `started` → `cancel_recorded`: the cancellation, the
    /// ride `cancelling`, the audit record.
    RecordCancel,
    /// A cancel key, `started` → `finished`: the ride cannot be cancelled
    /// by it (409, stored); nothing else changes.
    RefuseCancel,
    /// A cancel key, `cancel_recorded` → `refund_created`: Stripe's refund.
    RecordRefund,
    /// A cancel key, `cancel_recorded` → `finished` with a 502: Stripe
    /// refused the refund for good; the ride `refund_failed`.
    FailRefund,
    /// A cancel key → `finished` with the 200 and the cancellation
    /// receipt job: the ride `cancelled`.
    FinishCancel,
}

impl PhaseWrite {
    pub fn expects(self) -> &'static [RecoveryPoint] {
        match self {
            PhaseWrite::CreateRide | PhaseWrite::RecordCancel | PhaseWrite::RefuseCancel => {
                &[RecoveryPoint::Started]
            }
            PhaseWrite::Refuse | PhaseWrite::AwaitPayment => &[RecoveryPoint::RideCreated],
            PhaseWrite::NoteChargeAttempt => {
                &[RecoveryPoint::RideCreated, RecoveryPoint::CancelRecorded]
            }
            PhaseWrite::Book => &[RecoveryPoint::RideCreated, RecoveryPoint::ChargeCreated],
            PhaseWrite::RecordRefund | PhaseWrite::FailRefund => &[RecoveryPoint::CancelRecorded],
            PhaseWrite::FinishCancel => {
                &[RecoveryPoint::CancelRecorded, RecoveryPoint::RefundCreated]
            }
        }
    }
}

impl fmt::Display for PhaseWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhaseWrite::CreateRide => "create the ride",
            PhaseWrite::NoteChargeAttempt => "note a charge attempt",
            PhaseWrite::Book => "book the ride",
            PhaseWrite::Refuse => "finish with a refusal",
            PhaseWrite::AwaitPayment => "finish awaiting the payment",
            PhaseWrite::RecordCancel => "record the cancellation",
            PhaseWrite::RefuseCancel => "refuse the cancellation",
            PhaseWrite::RecordRefund => "record the refund",
            PhaseWrite::FailRefund => "finish with the refund refused",
            PhaseWrite::FinishCancel => "finish the cancellation",
        })
    }
}

/// What a key's request asks for: each endpoint that takes an
/// `Idempotency-Key` is one kind, run by its own phases over the one
/// driver (`application::phases`).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAction {
    /// `POST /rides`: book and charge a ride.
    BookRide(RideParams),
    /// `POST /rides/{id}/cancel`: cancel the caller's ride and give back
    /// what the refund rule says.
    CancelRide {
        ride_id: RideId,
        reason: Option<String>,
    },
}

impl KeyAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyAction::BookRide(_) => "book_ride",
            KeyAction::CancelRide { .. } => "cancel_ride",
        }
    }
}

/// An idempotency key as stored: the request it stands for and how far that
/// request has got.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub user_id: UserId,
    pub key: IdempotencyKey,
    pub fingerprint: RequestFingerprint,
    /// What the key's request asks, so the completer can finish it without
    /// the client.
    pub action: KeyAction,
    /// The client's address, recorded in the ride's audit record.
    pub request_ip: Option<String>,
    /// The `X-Request-Id` of the request that last took the lock through
    /// the API (created the key or resumed it); `None` once the completer
    /// or a person took it. A stored response names the request that made it.
    pub request_id: Option<String>,
    pub progress: KeyProgress,
    pub locked_at: Option<SystemTime>,
    /// Bumped each time a request takes the lock; a phase only commits for
    /// the holder of the current generation, so a request whose lock timed
    /// out and was taken over cannot write behind its successor's back.
    pub lock_generation: i64,
    pub created_at: SystemTime,
    pub last_run_at: SystemTime,
    /// The key passed to Stripe with every charge attempt: unique to this key
    /// forever, so Stripe collapses retries into one charge.
    pub downstream_key: String,
}

impl KeyRecord {
    pub fn recovery_point(&self) -> RecoveryPoint {
        self.progress.recovery_point()
    }

    /// The ride the key's request is about: its booked ride once created,
    /// or the ride a cancel names (from the start).
    pub fn ride_id(&self) -> Option<RideId> {
        match &self.action {
            KeyAction::BookRide(_) => self.progress.ride_id(),
            KeyAction::CancelRide { ride_id, .. } => Some(*ride_id),
        }
    }

    /// See [`KeyProgress::unrecorded_charge_attempt`].
    pub fn unrecorded_charge_attempt(&self) -> Option<SystemTime> {
        self.progress.unrecorded_charge_attempt()
    }

    /// May the holder of lock `generation` make `write` now? Only if that is
    /// the key's current lock and the key is where `write` expects it: a
    /// request whose lock was taken over, or whose phase another request
    /// already ran, writes nothing. The reason, when not.
    pub fn check_lease(&self, generation: i64, write: PhaseWrite) -> Result<(), String> {
        if self.lock_generation != generation || self.locked_at.is_none() {
            return Err(format!(
                "key {} is held by lock generation {} (unlocked: {}), not {generation}",
                self.id,
                self.lock_generation,
                self.locked_at.is_none()
            ));
        }
        if !write.expects().contains(&self.recovery_point()) {
            return Err(format!(
                "key {} is at {}: too late to {write}",
                self.id,
                self.recovery_point()
            ));
        }
        Ok(())
    }

    /// Has the holder of this lock already noted its gateway call? Only the
    /// request that created the key holds generation 1 (every later lock
    /// bumps it), and it noted its call in the key phase when it charges at
    /// once; every other holder notes its own call before making it.
    pub fn call_noted_by_this_lock(&self) -> bool {
        self.lock_generation == 1 && self.progress.last_call_at().is_some()
    }

    /// May the reaper delete this key (once it is old enough)? A finished
    /// key, yes: its answer was given. An unfinished one only if no request
    /// holds or held its lock (a lock, even a stale one, means someone is or
    /// was working it: the completer finishes it) and no charge can exist
    /// for it: it never reached a charge attempt. A key whose charge may
    /// exist (`charge_created`, or attempted at `ride_created`) stays, or a
    /// retry with it would start over with a new downstream key and charge
    /// again; so does a cancel key past `started` (its ride is cancelling
    /// and owed what the rule fixed).
    pub fn may_be_reaped(&self) -> bool {
        match &self.progress {
            KeyProgress::Finished { .. } => true,
            KeyProgress::Started => self.locked_at.is_none(),
            KeyProgress::RideCreated {
                charge_attempted_at,
                ..
            } => self.locked_at.is_none() && charge_attempted_at.is_none(),
            // A recorded cancellation is owed its refund: the completer
            // finishes it, however old.
            KeyProgress::ChargeCreated { .. }
            | KeyProgress::CancelRecorded { .. }
            | KeyProgress::RefundCreated { .. } => false,
        }
    }
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// How long a lock protects a request that has stopped answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub lock_timeout: Duration,
}

impl LockPolicy {
    /// The seed's 90 s: longer than any charge with its retries.
    pub const DEFAULT: Self = Self {
        lock_timeout: Duration::from_secs(90),
    };

    /// A lock is fresh until it is older than the lock timeout.
    pub fn is_fresh(&self, locked_at: Option<SystemTime>, now: SystemTime) -> bool {
        locked_at.is_some_and(|at| age(now, at) <= self.lock_timeout)
    }

    /// When a client told 409 may expect the lock to be free, at the latest.
    pub fn retry_after(&self, locked_at: Option<SystemTime>, now: SystemTime) -> Duration {
        let held = locked_at.map(|at| age(now, at)).unwrap_or(Duration::ZERO);
        self.lock_timeout.saturating_sub(held).clamp(
            Duration::from_secs(1),
            self.lock_timeout.max(Duration::from_secs(1)),
        )
    }
}

/// What the key phase does with a request whose key already exists.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDecision {
    /// Same key, different request: never mix two requests under one key.
    Mismatch,
    /// Finished earlier: answer with what was stored.
    Replay(StoredResponse),
    /// Another request holds a fresh lock on this key.
    InFlight { retry_after: Duration },
    /// Take the lock and resume from the key's recovery point.
    Resume,
}

impl KeyDecision {
    pub fn for_existing(
        record: &KeyRecord,
        fingerprint: &RequestFingerprint,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Self {
        if record.fingerprint != *fingerprint {
            return KeyDecision::Mismatch;
        }
        if let KeyProgress::Finished { response, .. } = &record.progress {
            return KeyDecision::Replay(response.clone());
        }
        if policy.is_fresh(record.locked_at, now) {
            return KeyDecision::InFlight {
                retry_after: policy.retry_after(record.locked_at, now),
            };
        }
        KeyDecision::Resume
    }
}

/// Which unfinished keys the completer picks up: old enough that the client
/// had its chance, idle for a while, and not held by a live request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompleterPolicy {
    pub min_age: Duration,
    pub min_idle: Duration,
    pub lock: LockPolicy,
    /// Keys past the gateway's idempotency window are a person's to decide,
    /// not the completer's: it leaves them out, so they never fill a batch.
    pub review: ReviewPolicy,
}

/// The bounds of the completer's query, as instants: a store turns them into
/// index range scans and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompleterCutoffs {
    /// An eligible key was created before this...
    pub created_before: SystemTime,
    /// ...last run before this...
    pub run_before: SystemTime,
    /// ...is unlocked or was locked before this...
    pub locked_before: SystemTime,
    /// ...and, if it sits at `ride_created`, first attempted its charge at or
    /// after this (or never).
    pub attempted_not_before: SystemTime,
}

impl CompleterPolicy {
    /// The seed's: keys 300 s old, idle for 60 s, with the default lock and
    /// review rules.
    pub const DEFAULT: Self = Self {
        min_age: Duration::from_secs(300),
        min_idle: Duration::from_secs(60),
        lock: LockPolicy::DEFAULT,
        review: ReviewPolicy::DEFAULT,
    };

    pub fn is_eligible(&self, record: &KeyRecord, now: SystemTime) -> bool {
        record.recovery_point() != RecoveryPoint::Finished
            && age(now, record.created_at) > self.min_age
            && age(now, record.last_run_at) > self.min_idle
            && !self.lock.is_fresh(record.locked_at, now)
            && !self.review.needs_review(record, now)
    }

    pub fn cutoffs(&self, now: SystemTime) -> CompleterCutoffs {
        CompleterCutoffs {
            created_before: back(now, self.min_age),
            run_before: back(now, self.min_idle),
            locked_before: back(now, self.lock.lock_timeout),
            attempted_not_before: self.review.attempted_before(now),
        }
    }
}

fn back(now: SystemTime, by: Duration) -> SystemTime {
    now.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Stripe remembers a downstream idempotency key for a limited time. A charge
/// first attempted longer ago than that may exist without Stripe recognising
/// the key again, so charging again could charge twice: a person decides.
/// `review_after` is shorter than the gateway's window by at least one
/// gateway call with its retries (checked where settings are read), so the
/// last charge the completer sends still reaches Stripe inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewPolicy {
    pub review_after: Duration,
}

impl ReviewPolicy {
    /// 23 h: a last retry still reaches Stripe inside the 24 h it keeps
    /// idempotency keys.
    pub const DEFAULT: Self = Self {
        review_after: Duration::from_secs(23 * 3600),
    };

    pub fn needs_review(&self, record: &KeyRecord, now: SystemTime) -> bool {
        record
            .unrecorded_charge_attempt()
            .is_some_and(|at| age(now, at) > self.review_after)
    }

    /// A person may take the key to resolve it: it needs review, and no
    /// request holds a lock on it younger than the lock timeout.
    pub fn can_be_resolved(&self, record: &KeyRecord, now: SystemTime, lock: LockPolicy) -> bool {
        self.needs_review(record, now) && !lock.is_fresh(record.locked_at, now)
    }

    /// A key at `ride_created` whose charge was first attempted before this
    /// instant needs review.
    pub fn attempted_before(&self, now: SystemTime) -> SystemTime {
        back(now, self.review_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride::RideParams;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    fn record() -> KeyRecord {
        let params = RideParams::from_numbers([0.0; 4]).expect("valid");
        KeyRecord {
            id: KeyId(1),
            user_id: UserId(1),
            key: IdempotencyKey::parse("k-0123456789abcdef0123").expect("valid"),
            fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
            action: KeyAction::BookRide(params),
            request_ip: None,
            request_id: None,
            progress: KeyProgress::Started,
            locked_at: None,
            lock_generation: 1,
            created_at: at(0),
            last_run_at: at(0),
            downstream_key: "rr-1".into(),
        }
    }

    /// At `ride_created`, a charge first attempted at `attempted`, if any.
    fn ride_created(attempted: Option<SystemTime>) -> KeyProgress {
        KeyProgress::RideCreated {
            ride_id: RideId(1),
            charge_attempted_at: attempted,
            last_call_at: attempted,
        }
    }

    fn finished() -> KeyProgress {
        KeyProgress::Finished {
            ride_id: RideId(1),
            response: StoredResponse {
                status: 201,
                body: "{}".into(),
            },
        }
    }

    #[test]
    fn key_length_bounds_are_20_and_255() {
        assert_eq!(
            IdempotencyKey::parse(&"a".repeat(19)),
            Err(IdempotencyKeyError::TooShort { len: 19 })
        );
        assert!(IdempotencyKey::parse(&"a".repeat(20)).is_ok());
        assert!(IdempotencyKey::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"a".repeat(256)),
            Err(IdempotencyKeyError::TooLong { len: 256 })
        );
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Missing));
    }

    #[test]
    fn keys_are_visible_ascii_only() {
        for bad in [
            "aaaaaaaaaa aaaaaaaaaa",
            "aaaaaaaaaa\taaaaaaaaaa",
            "aaaaaaaaaaéaaaaaaaaaa",
            "aaaaaaaaaa\u{7f}aaaaaaaaa",
        ] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::NotVisibleAscii),
                "{bad:?}"
            );
        }
        assert!(IdempotencyKey::parse("!~\"#$%&'()*+,-./0123456789:;<=>?@").is_ok());
    }

    #[test]
    fn recovery_points_only_move_forward() {
        use RecoveryPoint::*;
        let order = [Started, RideCreated, ChargeCreated, Finished];
        for (i, from) in order.iter().enumerate() {
            for (j, to) in order.iter().enumerate() {
                assert_eq!(from.may_advance_to(*to), j > i, "{from} -> {to}");
            }
            assert_eq!(RecoveryPoint::parse(from.as_str()), Some(*from));
        }
        assert_eq!(RecoveryPoint::parse("charged"), None);
    }

    #[test]
    fn a_lock_is_fresh_up_to_the_timeout_and_stale_after() {
        let policy = LockPolicy {
            lock_timeout: Duration::from_secs(90),
        };
        assert!(!policy.is_fresh(None, at(0)));
        assert!(policy.is_fresh(Some(at(0)), at(90)));
        assert!(!policy.is_fresh(Some(at(0)), at(91)));
        assert_eq!(
            policy.retry_after(Some(at(0)), at(30)),
            Duration::from_secs(60)
        );
        assert_eq!(
            policy.retry_after(Some(at(0)), at(90)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_key_phase_checks_fingerprint_then_finished_then_lock() {
        let policy = LockPolicy {
            lock_timeout: Duration::from_secs(90),
        };
        let mut key = record();
        let same = key.fingerprint.clone();
        let other_params = RideParams::from_numbers([1.0, 0.0, 0.0, 0.0]).expect("valid");
        let other = RequestFingerprint::for_ride("POST", "/rides", &other_params);

        key.locked_at = Some(at(10));
        assert_eq!(
            KeyDecision::for_existing(&key, &other, at(20), policy),
            KeyDecision::Mismatch
        );
        assert_eq!(
            KeyDecision::for_existing(&key, &same, at(20), policy),
            KeyDecision::InFlight {
                retry_after: Duration::from_secs(80)
            }
        );
        assert_eq!(
            KeyDecision::for_existing(&key, &same, at(101), policy),
            KeyDecision::Resume
        );

        key.progress = finished();
        key.locked_at = None;
        assert_eq!(
            KeyDecision::for_existing(&key, &same, at(20), policy),
            KeyDecision::Replay(StoredResponse {
                status: 201,
                body: "{}".into()
            })
        );
        assert_eq!(
            KeyDecision::for_existing(&key, &other, at(20), policy),
            KeyDecision::Mismatch
        );
    }

    #[test]
    fn keys_ids_and_recovery_points_display_as_stored() {
        let key = IdempotencyKey::parse("k-0123456789abcdef0123").expect("valid");
        assert_eq!(key.as_str(), "k-0123456789abcdef0123");
        assert_eq!(key.to_string(), "k-0123456789abcdef0123");
        assert_eq!(KeyId(12).to_string(), "12");
        for point in [
            RecoveryPoint::Started,
            RecoveryPoint::RideCreated,
            RecoveryPoint::ChargeCreated,
            RecoveryPoint::Finished,
        ] {
            assert_eq!(point.to_string(), point.as_str());
            assert_eq!(RecoveryPoint::parse(&point.to_string()), Some(point));
        }
    }

    /// The reaper's rule, point by point: a finished key goes; an unfinished
    /// one only with no lock on it and no charge that may exist.
    #[test]
    fn only_finished_keys_and_untouched_unfinished_ones_may_be_reaped() {
        let with = |progress: KeyProgress, locked: bool| {
            let mut key = record();
            key.progress = progress;
            key.locked_at = locked.then_some(at(0));
            key.may_be_reaped()
        };
        let charged = KeyProgress::ChargeCreated { ride_id: RideId(1) };
        assert!(with(finished(), false));
        assert!(with(finished(), true), "finished: its lock is moot");
        assert!(with(KeyProgress::Started, false));
        assert!(
            !with(KeyProgress::Started, true),
            "held, or left by a crash"
        );
        assert!(with(ride_created(None), false), "never reached Stripe");
        assert!(
            !with(ride_created(None), true),
            "held: may reach Stripe now"
        );
        assert!(
            !with(ride_created(Some(at(0))), false),
            "a charge may exist"
        );
        assert!(!with(charged.clone(), false), "charged, not yet booked");
        assert!(!with(charged, true));
        assert!(
            !with(cancel_recorded(None), false),
            "a recorded cancellation is owed its refund"
        );
        assert!(
            !with(cancel_recorded(Some(at(0))), false),
            "a refund may exist"
        );
        let refunded = KeyProgress::RefundCreated { ride_id: RideId(1) };
        assert!(!with(refunded, false), "refunded, not yet finished");
    }

    fn cancel_recorded(attempted: Option<SystemTime>) -> KeyProgress {
        KeyProgress::CancelRecorded {
            ride_id: RideId(1),
            call_attempted_at: attempted,
            last_call_at: attempted,
        }
    }

    /// A cancel key's writes, each from the recovery points of its phase
    /// only, and none of booking's from a cancel's points.
    #[test]
    fn a_cancel_keys_writes_follow_its_own_recovery_points() {
        let mut key = record();
        key.locked_at = Some(at(0));
        let allowed = |key: &KeyRecord| -> Vec<PhaseWrite> {
            [
                PhaseWrite::CreateRide,
                PhaseWrite::NoteChargeAttempt,
                PhaseWrite::Book,
                PhaseWrite::Refuse,
                PhaseWrite::AwaitPayment,
                PhaseWrite::RecordCancel,
                PhaseWrite::RefuseCancel,
                PhaseWrite::RecordRefund,
                PhaseWrite::FailRefund,
                PhaseWrite::FinishCancel,
            ]
            .into_iter()
            .filter(|write| key.check_lease(1, *write).is_ok())
            .collect()
        };
        key.progress = cancel_recorded(Some(at(0)));
        assert_eq!(
            allowed(&key),
            [
                PhaseWrite::NoteChargeAttempt,
                PhaseWrite::RecordRefund,
                PhaseWrite::FailRefund,
                PhaseWrite::FinishCancel
            ]
        );
        key.progress = KeyProgress::RefundCreated { ride_id: RideId(1) };
        assert_eq!(allowed(&key), [PhaseWrite::FinishCancel]);
        key.progress = finished();
        assert_eq!(allowed(&key), []);
        assert!(RecoveryPoint::CancelRecorded.may_advance_to(RecoveryPoint::RefundCreated));
        assert!(!RecoveryPoint::RefundCreated.may_advance_to(RecoveryPoint::CancelRecorded));
        for point in [RecoveryPoint::CancelRecorded, RecoveryPoint::RefundCreated] {
            assert_eq!(RecoveryPoint::parse(point.as_str()), Some(point));
        }
        assert_eq!(
            cancel_recorded(Some(at(7))).unrecorded_charge_attempt(),
            Some(at(7)),
            "a refund attempted and not recorded goes to review like a charge"
        );
    }

    /// The lease rule: the current generation, locked, at a recovery point
    /// the write expects; anything else is refused.
    #[test]
    fn a_phase_write_needs_the_current_lock_at_an_expected_recovery_point() {
        let mut key = record();
        key.locked_at = Some(at(0));
        key.lock_generation = 3;
        assert!(key.check_lease(3, PhaseWrite::CreateRide).is_ok());
        assert!(key.check_lease(2, PhaseWrite::CreateRide).is_err(), "stale");
        assert!(key.check_lease(4, PhaseWrite::CreateRide).is_err());
        for write in [
            PhaseWrite::NoteChargeAttempt,
            PhaseWrite::Book,
            PhaseWrite::Refuse,
        ] {
            assert!(key.check_lease(3, write).is_err(), "{write} at started");
        }
        key.progress = ride_created(None);
        for write in [
            PhaseWrite::NoteChargeAttempt,
            PhaseWrite::Book,
            PhaseWrite::Refuse,
        ] {
            assert!(key.check_lease(3, write).is_ok(), "{write}");
        }
        assert!(key.check_lease(3, PhaseWrite::CreateRide).is_err());
        key.progress = KeyProgress::ChargeCreated { ride_id: RideId(1) };
        assert!(key.check_lease(3, PhaseWrite::Book).is_ok());
        assert!(key.check_lease(3, PhaseWrite::Refuse).is_err());
        assert!(key.check_lease(3, PhaseWrite::NoteChargeAttempt).is_err());
        key.progress = finished();
        for write in [
            PhaseWrite::CreateRide,
            PhaseWrite::NoteChargeAttempt,
            PhaseWrite::Book,
            PhaseWrite::Refuse,
        ] {
            assert!(key.check_lease(3, write).is_err(), "{write} when finished");
        }
        key.progress = ride_created(None);
        key.locked_at = None;
        assert!(
            key.check_lease(3, PhaseWrite::Book).is_err(),
            "unlocked: the lease ended"
        );
    }

    #[test]
    fn progress_carries_the_ride_and_the_response_where_they_exist() {
        assert_eq!(KeyProgress::Started.ride_id(), None);
        assert_eq!(ride_created(None).ride_id(), Some(RideId(1)));
        assert_eq!(
            KeyProgress::ChargeCreated { ride_id: RideId(2) }.ride_id(),
            Some(RideId(2))
        );
        assert_eq!(finished().ride_id(), Some(RideId(1)));
        assert_eq!(ride_created(None).response(), None);
        assert_eq!(finished().response().map(|r| r.status), Some(201));
        assert_eq!(
            ride_created(Some(at(5))).unrecorded_charge_attempt(),
            Some(at(5))
        );
        assert_eq!(finished().unrecorded_charge_attempt(), None);
        assert_eq!(
            KeyProgress::ChargeCreated { ride_id: RideId(1) }.recovery_point(),
            RecoveryPoint::ChargeCreated
        );
        assert_eq!(PhaseWrite::Book.to_string(), "book the ride");
    }

    /// 300 s minimum age, 60 s idle, 90 s lock timeout, a one-hour window.
    fn completer_policy() -> CompleterPolicy {
        CompleterPolicy {
            min_age: Duration::from_secs(300),
            min_idle: Duration::from_secs(60),
            lock: LockPolicy {
                lock_timeout: Duration::from_secs(90),
            },
            review: ReviewPolicy {
                review_after: Duration::from_secs(3600),
            },
        }
    }

    #[test]
    fn the_completer_takes_old_idle_unlocked_unfinished_keys_only() {
        let policy = completer_policy();
        let key = record();
        assert!(!policy.is_eligible(&key, at(300)), "not over 300 s old");
        assert!(policy.is_eligible(&key, at(301)));

        let mut recently_run = key.clone();
        recently_run.last_run_at = at(250);
        assert!(!policy.is_eligible(&recently_run, at(301)));
        assert!(
            !policy.is_eligible(&recently_run, at(310)),
            "idle exactly 60 s: not over it"
        );
        assert!(policy.is_eligible(&recently_run, at(311)));

        let mut locked = key.clone();
        locked.locked_at = Some(at(250));
        locked.last_run_at = at(0);
        assert!(!policy.is_eligible(&locked, at(320)));
        assert!(policy.is_eligible(&locked, at(341)));

        let mut attempted = key.clone();
        attempted.progress = ride_created(Some(at(100)));
        assert!(
            policy.is_eligible(&attempted, at(3700)),
            "inside the window"
        );
        assert!(
            !policy.is_eligible(&attempted, at(3701)),
            "past the window: review's, not the completer's"
        );

        let mut finished = key;
        finished.progress = self::finished();
        assert!(!policy.is_eligible(&finished, at(10_000)));
    }

    #[test]
    fn the_completer_cutoffs_agree_with_its_eligibility_rule() {
        let policy = completer_policy();
        let cutoffs = policy.cutoffs(at(5000));
        assert_eq!(cutoffs.created_before, at(4700));
        assert_eq!(cutoffs.run_before, at(4940));
        assert_eq!(cutoffs.locked_before, at(4910));
        assert_eq!(cutoffs.attempted_not_before, at(1400));
        let mut key = record();
        key.progress = ride_created(Some(at(1400)));
        assert!(policy.is_eligible(&key, at(5000)), "at the cutoff: kept");
        key.progress = ride_created(Some(at(1399)));
        assert!(!policy.is_eligible(&key, at(5000)), "before it: left out");
    }

    #[test]
    fn review_is_needed_only_past_the_gateway_window_at_ride_created() {
        let policy = ReviewPolicy {
            review_after: Duration::from_secs(24 * 3600),
        };
        let mut key = record();
        key.progress = ride_created(None);
        assert!(!policy.needs_review(&key, at(100_000)), "never attempted");
        key.progress = ride_created(Some(at(0)));
        assert!(!policy.needs_review(&key, at(24 * 3600)));
        assert!(policy.needs_review(&key, at(24 * 3600 + 1)));
        key.progress = KeyProgress::ChargeCreated { ride_id: RideId(1) };
        assert!(!policy.needs_review(&key, at(100_000)), "already charged");
    }

    #[test]
    fn a_person_takes_a_key_awaiting_review_unless_a_request_holds_it() {
        let policy = ReviewPolicy {
            review_after: Duration::from_secs(100),
        };
        let lock = LockPolicy {
            lock_timeout: Duration::from_secs(90),
        };
        let mut key = record();
        key.progress = ride_created(Some(at(0)));
        key.locked_at = Some(at(150));
        assert!(
            !policy.can_be_resolved(&key, at(50), lock),
            "inside the window"
        );
        assert!(
            !policy.can_be_resolved(&key, at(200), lock),
            "freshly locked"
        );
        assert!(
            policy.can_be_resolved(&key, at(241), lock),
            "the lock is stale"
        );
        key.locked_at = None;
        assert!(policy.can_be_resolved(&key, at(200), lock));
    }
}
