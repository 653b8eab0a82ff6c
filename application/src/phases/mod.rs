//! The phase machine of SPEC.md, for every endpoint that takes an
//! `Idempotency-Key`: booking (`book`) and cancelling (`cancel`).
//!
//! The key phase locks the key; then each phase runs from the key's recovery
//! point and commits the next one, until the key is finished or a phase stops
//! it. The API runs it for a client's request, the completer for a stalled
//! key; both go through `drive`, so a key resumes the same way whoever picks
//! it up. No store transaction is open while the gateway is called.
//!
//! This file is the driver, the same for every action: the replay cache,
//! the key phase, the lock (released on every error but a lost lock, a
//! panic included), the completer's and a person's entry points, and the
//! loop that runs the action's steps. An action is a `KeyAction` variant
//! with its recovery points, its `PhaseWrite`s and a step function in a
//! file of its own.

mod book;
mod cancel;

pub use cancel::CancelRequest;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{
    CancelPolicy, CompleterPolicy, IdempotencyKey, KeyAction, KeyId, KeyProgress, KeyRecord,
    LockPolicy, RequestFingerprint, ReviewPolicy, RideId, RideParams, StoredResponse, User,
};
use futures_util::FutureExt as _;
use tracing::{Instrument, info, info_span, warn};

use crate::ports::{
    Clock, Finish, KeyPhase, KeyRequest, Keys, Lease, PaymentGateway, StoreError, Users,
};
use crate::replay_cache::{Cached, ReplayCache};

/// A client's `POST /rides`, parsed.
#[derive(Debug, Clone)]
pub struct RideRequest {
    pub user: User,
    pub key: IdempotencyKey,
    pub params: RideParams,
    pub request_ip: Option<String>,
    /// The request's `X-Request-Id`, recorded on the key it locks.
    pub request_id: Option<String>,
    /// The simulator's switch: fail the charge phase with an internal error.
    /// Not part of the fingerprint.
    pub raise_error: bool,
}

impl RideRequest {
    pub const METHOD: &'static str = "POST";
    pub const PATH: &'static str = "/rides";

    pub fn fingerprint(&self) -> RequestFingerprint {
        RequestFingerprint::for_ride(Self::METHOD, Self::PATH, &self.params)
    }
}

/// A finished request's answer, fresh or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub response: StoredResponse,
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is in flight")]
    InFlight { retry_after: Duration },
    #[error("the payment processor did not answer definitively: {reason}")]
    GatewayUnknown { reason: String },
    #[error(
        "the charge was first attempted longer ago than the payment processor remembers idempotency keys; a person must review it"
    )]
    NeedsReview,
    /// A cancel named a ride that does not exist or is not the caller's.
    #[error("no such ride")]
    RideNotFound,
    /// A cancel named a ride whose booking is still being charged.
    #[error("the ride's payment is still in progress")]
    PaymentInProgress { retry_after: Duration },
    #[error("simulated failure in the charge phase (raise_error)")]
    Simulated,
    /// A phase panicked (a bug); caught so the key is unlocked like after
    /// any other internal error.
    #[error("a phase panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a person found at the payment processor for a key awaiting review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewResolution {
    /// The charge exists: record it and book the ride (201, receipt staged).
    Charged {
        charge_id: String,
        payment_intent_id: Option<String>,
    },
    /// No charge exists: finish the request without one (a stored 502).
    NotCharged,
    /// A cancel's refund exists (`None`: its PaymentIntent is cancelled):
    /// record it and finish the cancel (200, receipt staged).
    Refunded {
        refund: Option<domain::RefundRecord>,
    },
    /// A cancel's refund was never made: a stored 502, the ride
    /// `refund_failed` for a person to refund by hand.
    NotRefunded,
}

/// Settings of the phase machine.
#[derive(Debug, Clone, Copy)]
pub struct PhaseSettings {
    pub lock: LockPolicy,
    pub review: ReviewPolicy,
    /// The refund rule of a cancel.
    pub cancel: CancelPolicy,
}

pub struct PhaseMachine {
    keys: Arc<dyn Keys>,
    users: Arc<dyn Users>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    settings: PhaseSettings,
    /// Finished answers this process has seen, for replays (the API's).
    replays: Option<Arc<ReplayCache>>,
}

impl PhaseMachine {
    pub fn new(
        keys: Arc<dyn Keys>,
        users: Arc<dyn Users>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        settings: PhaseSettings,
    ) -> Self {
        Self {
            keys,
            users,
            gateway,
            clock,
            settings,
            replays: None,
        }
    }

    /// Answers replays of keys this process has seen finished from
    /// `cache`, without a statement (the API's; the completer needs none).
    pub fn with_replay_cache(mut self, cache: Arc<ReplayCache>) -> Self {
        self.replays = Some(cache);
        self
    }

    /// Runs a client's booking from the key phase to an answer.
    #[tracing::instrument(name = "create_ride", skip_all, fields(user_id = %request.user.id, key = %request.key))]
    pub async fn run(&self, request: RideRequest) -> Result<Answer, PhaseError> {
        let started = Instant::now();
        let fingerprint = request.fingerprint();
        let result = match self.cached(request.user.id, &request.key, &fingerprint) {
            Some(answer) => answer,
            None => {
                let key_request = KeyRequest {
                    user_id: request.user.id,
                    key: request.key,
                    fingerprint,
                    action: KeyAction::BookRide(request.params),
                    request_ip: request.request_ip,
                    request_id: request.request_id,
                    charges_now: !request.raise_error,
                };
                self.run_request(key_request, &request.user, request.raise_error)
                    .await
            }
        };
        count_outcome("api", &result, started);
        result
    }

    /// What this process's replay cache answers for the request, if it
    /// holds the key finished: without a statement, before anything else.
    fn cached(
        &self,
        user_id: domain::UserId,
        key: &IdempotencyKey,
        fingerprint: &RequestFingerprint,
    ) -> Option<Result<Answer, PhaseError>> {
        match self.replays.as_ref()?.get(user_id, key, fingerprint)? {
            Cached::Replay(response) => Some(Ok(Answer {
                response,
                replayed: true,
            })),
            Cached::Mismatch => Some(Err(PhaseError::KeyReused)),
        }
    }

    /// A client request the replay cache could not answer, from the key
    /// phase to an answer; a finished one is kept in the cache.
    async fn run_request(
        &self,
        request: KeyRequest,
        user: &User,
        raise_error: bool,
    ) -> Result<Answer, PhaseError> {
        let answer = self.run_phases(&request, user, raise_error).await;
        if let (Some(cache), Ok(answer)) = (&self.replays, &answer) {
            // Only an answer the key is finished with comes back Ok.
            cache.put(
                request.user_id,
                &request.key,
                &request.fingerprint,
                &answer.response,
            );
        }
        answer
    }

    async fn run_phases(
        &self,
        request: &KeyRequest,
        user: &User,
        raise_error: bool,
    ) -> Result<Answer, PhaseError> {
        let now = self.clock.now();
        let begun = timed(
            "begin_request",
            self.keys.begin_request(request, now, self.settings.lock),
        )
        .await?;
        let record = match begun {
            KeyPhase::Locked(record) => record,
            KeyPhase::Replay(response) => {
                info!(status = response.status, "replaying the stored response");
                return Ok(Answer {
                    response,
                    replayed: true,
                });
            }
            KeyPhase::Mismatch => return Err(PhaseError::KeyReused),
            KeyPhase::InFlight { retry_after } => {
                return Err(PhaseError::InFlight { retry_after });
            }
        };
        self.drive(record, user, raise_error).await
    }

    /// Finishes a stalled key for the completer, if it is still eligible.
    /// `Ok(None)` when another process got to it first.
    #[tracing::instrument(name = "complete_key", skip_all, fields(key_id = %key_id))]
    pub async fn resume(
        &self,
        key_id: KeyId,
        policy: CompleterPolicy,
    ) -> Result<Option<Answer>, PhaseError> {
        let now = self.clock.now();
        let Some(record) = self.keys.lock_for_completion(key_id, now, policy).await? else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = self.resume_locked(record).await;
        count_outcome("completer", &result, started);
        result.map(Some)
    }

    /// Finishes a key awaiting review the way a person decided, from the
    /// `ride_created` phase: the charge they found is recorded and the ride
    /// booked, or the request ends with no charge. `Ok(None)` when the key
    /// does not await review (finished, never attempted, inside the
    /// gateway's window) or a request holds it right now.
    #[tracing::instrument(name = "resolve_review", skip_all, fields(key_id = %key_id))]
    pub async fn resolve_review(
        &self,
        key_id: KeyId,
        resolution: ReviewResolution,
    ) -> Result<Option<Answer>, PhaseError> {
        let now = self.clock.now();
        let Some(record) = self
            .keys
            .lock_for_review(key_id, now, self.settings.review, self.settings.lock)
            .await?
        else {
            return Ok(None);
        };
        let lease = Lease::of(&record);
        let booking = matches!(record.action, KeyAction::BookRide(_));
        let result = match resolution {
            ReviewResolution::Charged {
                charge_id,
                payment_intent_id,
            } if booking => {
                self.book(lease, &record, charge_id, payment_intent_id)
                    .await
            }
            ReviewResolution::NotCharged if booking => {
                self.finish_refused(lease, StoredResponse::charge_not_made())
                    .await
            }
            ReviewResolution::Refunded { refund } if !booking => {
                self.settle_cancel(lease, &record, Some(refund)).await
            }
            ReviewResolution::NotRefunded if !booking => {
                self.settle_cancel(lease, &record, None).await
            }
            other => Err(StoreError::Inconsistent(format!(
                "key {key_id} ({}) cannot be settled as {other:?}",
                record.action.as_str()
            ))
            .into()),
        };
        if let Ok(response) = &result {
            info!(%key_id, status = response.status, "review resolved");
        }
        self.release_after_error(lease, &result).await;
        result.map(|response| {
            Some(Answer {
                response,
                replayed: false,
            })
        })
    }

    async fn resume_locked(&self, record: KeyRecord) -> Result<Answer, PhaseError> {
        let key_id = record.id;
        let lease = Lease::of(&record);
        let user = match self.users.find_user(record.user_id).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                self.release(lease).await;
                return Err(StoreError::Inconsistent(format!(
                    "key {key_id} belongs to user {} who does not exist",
                    record.user_id
                ))
                .into());
            }
            Err(error) => {
                self.release(lease).await;
                return Err(error.into());
            }
        };
        self.drive(record, &user, false).await
    }

    /// Runs phases from the record's recovery point while holding its lock.
    /// Every way out that is not `finished` releases the lock, except losing
    /// it to another request (then it is not ours to release).
    async fn drive(
        &self,
        record: KeyRecord,
        user: &User,
        raise_error: bool,
    ) -> Result<Answer, PhaseError> {
        let lease = Lease::of(&record);
        // A panic inside a phase must not leave the key locked until the
        // lock timeout: it becomes an error, and the key is released.
        let result = match AssertUnwindSafe(self.phases(record, user, raise_error))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(PhaseError::Panicked(panic_message(panic.as_ref()))),
        };
        self.release_after_error(lease, &result).await;
        result
    }

    /// After an error, unlocks the key so a retry need not wait for the lock
    /// timeout; not after losing the lock, which is then someone else's.
    async fn release_after_error<T>(&self, lease: Lease, result: &Result<T, PhaseError>) {
        match result {
            Ok(_) | Err(PhaseError::Store(StoreError::LostLock(_))) => {}
            Err(error) => {
                warn!(key_id = %lease.key_id, %error, "request stopped; unlocking its key");
                self.release(lease).await;
            }
        }
    }

    async fn release(&self, lease: Lease) {
        if let Err(error) = self.keys.unlock(lease).await {
            // The lock timeout frees the key in the end.
            warn!(key_id = %lease.key_id, %error, "could not unlock the key");
        }
    }

    /// The driver: runs the steps of the key's action from its recovery
    /// point until one finishes it. Each action's steps live in their own
    /// file (`book`, `cancel`); a step either moves the key to its next
    /// recovery point (one commit) or finishes it.
    async fn phases(
        &self,
        mut record: KeyRecord,
        user: &User,
        raise_error: bool,
    ) -> Result<Answer, PhaseError> {
        let lease = Lease::of(&record);
        loop {
            if let KeyProgress::Finished { response, .. } = &record.progress {
                return Ok(Answer {
                    response: response.clone(),
                    replayed: true,
                });
            }
            let span =
                info_span!("phase", key_id = %record.id, recovery_point = %record.recovery_point());
            let step = match &record.action {
                KeyAction::BookRide(_) => {
                    self.book_step(lease, record, user, raise_error)
                        .instrument(span)
                        .await?
                }
                KeyAction::CancelRide { .. } => {
                    self.cancel_step(lease, record, user)
                        .instrument(span)
                        .await?
                }
            };
            match step {
                Step::Next(next) => record = next,
                Step::Done(response) => {
                    return Ok(Answer {
                        response,
                        replayed: false,
                    });
                }
            }
        }
    }

    /// The key's ride, which every point past `started` has.
    fn ride_id_of(record: &KeyRecord) -> Result<RideId, StoreError> {
        record
            .progress
            .ride_id()
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} has no ride", record.id)))
    }

    /// A step found the key at a recovery point its action never reaches.
    fn wrong_point(record: &KeyRecord) -> PhaseError {
        StoreError::Inconsistent(format!(
            "key {} ({}) is at {}, which its action never reaches",
            record.id,
            record.action.as_str(),
            record.recovery_point()
        ))
        .into()
    }

    async fn finish_with(
        &self,
        lease: Lease,
        finish: Finish,
    ) -> Result<StoredResponse, PhaseError> {
        let response = finish.response().clone();
        self.keys.finish(lease, finish, self.clock.now()).await?;
        Ok(response)
    }
}

/// What one step did: moved the key on, or finished it with this answer.
#[allow(clippy::large_enum_variant)] // one per step, moved once
enum Step {
    Next(KeyRecord),
    Done(StoredResponse),
}

/// Runs one phase of a request and records how long it took, by phase:
/// `begin_request` (the key, and for a new key its ride and charge attempt),
/// `create_ride` (a resumed key at `started`), `charge` (from `ride_created`:
/// the gateway call and the booking after it), `finish_booking` (from
/// `charge_created`).
async fn timed<T>(phase: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = work.await;
    metrics::histogram!("rocket_rides_phase_duration_seconds", "phase" => phase)
        .record(started.elapsed().as_secs_f64());
    output
}

/// Counts how requests end, by who ran them (`api`, `completer`), and how
/// long they took.
fn count_outcome(runner: &'static str, result: &Result<Answer, PhaseError>, started: Instant) {
    let outcome = match result {
        Ok(answer) if answer.replayed => "replayed",
        Ok(answer) => match answer.response.status {
            200 => "cancelled",
            409 => "not_cancellable",
            201 => "created",
            202 => "pending",
            402 if answer.response.body.contains("authentication-required") => {
                "authentication_required"
            }
            402 => "declined",
            _ => "refused",
        },
        Err(PhaseError::KeyReused) => "key_reused",
        Err(PhaseError::InFlight { .. }) => "in_flight",
        Err(PhaseError::RideNotFound) => "ride_not_found",
        Err(PhaseError::PaymentInProgress { .. }) => "payment_in_progress",
        Err(PhaseError::GatewayUnknown { .. }) => "gateway_unknown",
        Err(PhaseError::NeedsReview) => "needs_review",
        Err(PhaseError::Simulated) => "simulated_error",
        Err(PhaseError::Panicked(_)) => "panicked",
        Err(PhaseError::Store(StoreError::LostLock(_))) => "lost_lock",
        Err(PhaseError::Store(_)) => "internal_error",
    };
    metrics::counter!("rocket_rides_ride_requests_total", "runner" => runner, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("rocket_rides_ride_request_duration_seconds", "runner" => runner, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// The text a panic was raised with, if it was a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
