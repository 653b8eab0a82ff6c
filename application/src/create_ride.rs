//! Create ride: the phase machine of SPEC.md.
//!
//! The key phase locks the key; then each phase runs from the key's recovery
//! point and commits the next one, until the key is finished or a phase stops
//! it. The API runs it for a client's request, the completer for a stalled
//! key; both go through `drive`, so a key resumes the same way whoever picks
//! it up. No store transaction is open while the gateway is called.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::charge::ReceiptJob;
use domain::{
    ChargeOutcome, ChargeRequest, CompleterPolicy, IdempotencyKey, KeyId, KeyProgress, KeyRecord,
    LockPolicy, RIDE_PRICE, RequestFingerprint, ReviewPolicy, Ride, RideId, RideParams, RideStatus,
    StoredResponse, User,
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
pub enum CreateRideError {
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
}

/// Settings of the phase machine.
#[derive(Debug, Clone, Copy)]
pub struct CreateRideSettings {
    pub lock: LockPolicy,
    pub review: ReviewPolicy,
}

pub struct CreateRide {
    keys: Arc<dyn Keys>,
    users: Arc<dyn Users>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    settings: CreateRideSettings,
    /// Finished answers this process has seen, for replays (the API's).
    replays: Option<Arc<ReplayCache>>,
}

impl CreateRide {
    pub fn new(
        keys: Arc<dyn Keys>,
        users: Arc<dyn Users>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        settings: CreateRideSettings,
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

    /// Runs a client's request from the key phase to an answer.
    #[tracing::instrument(name = "create_ride", skip_all, fields(user_id = %request.user.id, key = %request.key))]
    pub async fn run(&self, request: RideRequest) -> Result<Answer, CreateRideError> {
        let started = Instant::now();
        let result = self.run_request(request).await;
        count_outcome("api", &result, started);
        result
    }

    async fn run_request(&self, request: RideRequest) -> Result<Answer, CreateRideError> {
        let fingerprint = request.fingerprint();
        if let Some(cache) = &self.replays {
            match cache.get(request.user.id, &request.key, &fingerprint) {
                Some(Cached::Replay(response)) => {
                    return Ok(Answer {
                        response,
                        replayed: true,
                    });
                }
                Some(Cached::Mismatch) => return Err(CreateRideError::KeyReused),
                None => {}
            }
        }
        let (user, key) = (request.user.id, request.key.clone());
        let answer = self.run_phases(request, fingerprint.clone()).await;
        if let (Some(cache), Ok(answer)) = (&self.replays, &answer) {
            // Only an answer the key is finished with comes back Ok.
            cache.put(user, &key, &fingerprint, &answer.response);
        }
        answer
    }

    async fn run_phases(
        &self,
        request: RideRequest,
        fingerprint: RequestFingerprint,
    ) -> Result<Answer, CreateRideError> {
        let key_request = KeyRequest {
            user_id: request.user.id,
            key: request.key.clone(),
            fingerprint,
            params: request.params,
            request_ip: request.request_ip.clone(),
            request_id: request.request_id.clone(),
            charges_now: !request.raise_error,
        };
        let now = self.clock.now();
        let begun = timed(
            "begin_request",
            self.keys
                .begin_request(&key_request, now, self.settings.lock),
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
            KeyPhase::Mismatch => return Err(CreateRideError::KeyReused),
            KeyPhase::InFlight { retry_after } => {
                return Err(CreateRideError::InFlight { retry_after });
            }
        };
        self.drive(record, &request.user, request.raise_error).await
    }

    /// Finishes a stalled key for the completer, if it is still eligible.
    /// `Ok(None)` when another process got to it first.
    #[tracing::instrument(name = "complete_key", skip_all, fields(key_id = %key_id))]
    pub async fn resume(
        &self,
        key_id: KeyId,
        policy: CompleterPolicy,
    ) -> Result<Option<Answer>, CreateRideError> {
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
    ) -> Result<Option<Answer>, CreateRideError> {
        let now = self.clock.now();
        let Some(record) = self
            .keys
            .lock_for_review(key_id, now, self.settings.review, self.settings.lock)
            .await?
        else {
            return Ok(None);
        };
        let lease = Lease::of(&record);
        let result = match resolution {
            ReviewResolution::Charged {
                charge_id,
                payment_intent_id,
            } => {
                self.book(lease, &record, charge_id, payment_intent_id)
                    .await
            }
            ReviewResolution::NotCharged => {
                self.finish_refused(lease, StoredResponse::charge_not_made())
                    .await
            }
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

    async fn resume_locked(&self, record: KeyRecord) -> Result<Answer, CreateRideError> {
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
    ) -> Result<Answer, CreateRideError> {
        let lease = Lease::of(&record);
        // A panic inside a phase must not leave the key locked until the
        // lock timeout: it becomes an error, and the key is released.
        let result = match AssertUnwindSafe(self.phases(record, user, raise_error))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(CreateRideError::Panicked(panic_message(panic.as_ref()))),
        };
        self.release_after_error(lease, &result).await;
        result
    }

    /// After an error, unlocks the key so a retry need not wait for the lock
    /// timeout; not after losing the lock, which is then someone else's.
    async fn release_after_error<T>(&self, lease: Lease, result: &Result<T, CreateRideError>) {
        match result {
            Ok(_) | Err(CreateRideError::Store(StoreError::LostLock(_))) => {}
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

    async fn phases(
        &self,
        mut record: KeyRecord,
        user: &User,
        raise_error: bool,
    ) -> Result<Answer, CreateRideError> {
        let lease = Lease::of(&record);
        loop {
            let span =
                info_span!("phase", key_id = %record.id, recovery_point = %record.recovery_point());
            let response = match &record.progress {
                KeyProgress::Started => {
                    record = timed(
                        "create_ride",
                        self.keys
                            .create_ride(lease, self.clock.now())
                            .instrument(span),
                    )
                    .await?;
                    info!(key_id = %record.id, ride_id = ?record.progress.ride_id().map(|r| r.0), "ride created");
                    continue;
                }
                KeyProgress::RideCreated { .. } => {
                    timed(
                        "charge",
                        self.charge(lease, &record, user, raise_error)
                            .instrument(span),
                    )
                    .await?
                }
                KeyProgress::ChargeCreated { ride_id } => {
                    timed(
                        "finish_booking",
                        self.finish_booking(lease, &record, *ride_id)
                            .instrument(span),
                    )
                    .await?
                }
                KeyProgress::Finished { response, .. } => {
                    return Ok(Answer {
                        response: response.clone(),
                        replayed: true,
                    });
                }
            };
            return Ok(Answer {
                response,
                replayed: false,
            });
        }
    }

    /// The `ride_created` phase: the only one that talks to the gateway.
    /// A new key arrives with its charge attempt already noted (written
    /// with the key); a resumed one notes it here.
    async fn charge(
        &self,
        lease: Lease,
        record: &KeyRecord,
        user: &User,
        raise_error: bool,
    ) -> Result<StoredResponse, CreateRideError> {
        if raise_error {
            return Err(CreateRideError::Simulated);
        }
        let now = self.clock.now();
        if self.settings.review.needs_review(record, now) {
            warn!(key_id = %record.id, "charge first attempted beyond the gateway's idempotency window; needs review");
            return Err(CreateRideError::NeedsReview);
        }
        // Every call is noted (its start, by the store's clock, under the
        // lease) before it is made, except the one the key phase noted.
        if !record.call_noted_by_this_lock() {
            self.keys.note_charge_attempt(lease, now).await?;
        }
        let request = ChargeRequest {
            customer_id: user.stripe_customer_id.clone(),
            payment_method_id: user.stripe_payment_method_id.clone(),
            amount_cents: RIDE_PRICE.amount_cents,
            currency: RIDE_PRICE.currency.to_owned(),
            description: format!("Rocket Rides ride for {}", user.email),
            idempotency_key: record.downstream_key.clone(),
        };
        let called = Instant::now();
        let outcome = self.gateway.charge(&request).await;
        let label = match &outcome {
            ChargeOutcome::Charged { .. } => "charged",
            ChargeOutcome::RequiresAuthentication { .. } => "requires_authentication",
            ChargeOutcome::Processing { .. } => "processing",
            ChargeOutcome::Declined { .. } => "declined",
            ChargeOutcome::Refused { .. } => "refused",
            ChargeOutcome::Unknown { .. } => "unknown",
        };
        metrics::counter!("rocket_rides_charge_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("rocket_rides_gateway_call_duration_seconds", "outcome" => label)
            .record(called.elapsed().as_secs_f64());
        match outcome {
            ChargeOutcome::Charged {
                charge_id,
                payment_intent_id,
            } => {
                info!(key_id = %record.id, %charge_id, ?payment_intent_id, "card charged");
                self.book(lease, record, charge_id, payment_intent_id).await
            }
            ChargeOutcome::RequiresAuthentication {
                payment_intent_id,
                client_secret,
            } => {
                info!(key_id = %record.id, %payment_intent_id, "the bank asks the rider to authenticate");
                self.await_payment(
                    lease,
                    record,
                    RideStatus::AwaitingAuthentication,
                    payment_intent_id,
                    |ride, intent| {
                        StoredResponse::authentication_required(ride, intent, &client_secret)
                    },
                )
                .await
            }
            ChargeOutcome::Processing { payment_intent_id } => {
                info!(key_id = %record.id, %payment_intent_id, "payment processing");
                self.await_payment(
                    lease,
                    record,
                    RideStatus::PaymentPending,
                    payment_intent_id,
                    |ride, _| StoredResponse::payment_pending(ride),
                )
                .await
            }
            ChargeOutcome::Declined { message } => {
                info!(key_id = %record.id, %message, "card declined");
                self.finish_refused(lease, StoredResponse::card_declined(&message))
                    .await
            }
            ChargeOutcome::Refused { message } => {
                warn!(key_id = %record.id, %message, "charge refused for good");
                self.finish_refused(lease, StoredResponse::charge_refused())
                    .await
            }
            ChargeOutcome::Unknown { reason } => {
                warn!(key_id = %record.id, %reason, "charge outcome unknown; the key stays at ride_created");
                Err(CreateRideError::GatewayUnknown { reason })
            }
        }
    }

    /// The key's ride as this request leaves it.
    fn ride_of(
        record: &KeyRecord,
        status: RideStatus,
        stripe_charge_id: Option<String>,
        stripe_payment_intent_id: Option<String>,
    ) -> Result<Ride, StoreError> {
        let id = record
            .progress
            .ride_id()
            .ok_or_else(|| StoreError::Inconsistent(format!("key {} has no ride", record.id)))?;
        Ok(Ride {
            id,
            idempotency_key_id: Some(record.id),
            params: record.params,
            stripe_charge_id,
            stripe_payment_intent_id,
            status,
            user_id: record.user_id,
        })
    }

    /// Finishes the key with its ride waiting on the PaymentIntent
    /// (`status`, one that awaits payment): the intent on the ride, and
    /// the answer `respond` renders for that ride and intent (402
    /// `authentication-required` or 202).
    async fn await_payment(
        &self,
        lease: Lease,
        record: &KeyRecord,
        status: RideStatus,
        payment_intent_id: String,
        respond: impl FnOnce(&Ride, &str) -> StoredResponse,
    ) -> Result<StoredResponse, CreateRideError> {
        let ride = Self::ride_of(record, status, None, Some(payment_intent_id.clone()))?;
        let response = respond(&ride, &payment_intent_id);
        self.keys
            .finish(
                lease,
                Finish::AwaitingPayment {
                    payment_intent_id,
                    status,
                    response: response.clone(),
                },
                self.clock.now(),
            )
            .await?;
        Ok(response)
    }

    async fn finish_refused(
        &self,
        lease: Lease,
        response: StoredResponse,
    ) -> Result<StoredResponse, CreateRideError> {
        self.keys
            .finish(
                lease,
                Finish::Refused {
                    response: response.clone(),
                },
                self.clock.now(),
            )
            .await?;
        Ok(response)
    }

    /// The `charge_created` phase, for a key an earlier version left there:
    /// reads the charge id off the ride and books it.
    async fn finish_booking(
        &self,
        lease: Lease,
        record: &KeyRecord,
        ride_id: RideId,
    ) -> Result<StoredResponse, CreateRideError> {
        let ride = self.keys.find_ride(ride_id).await?.ok_or_else(|| {
            StoreError::Inconsistent(format!("ride {ride_id} of key {} is gone", record.id))
        })?;
        let charge_id = ride.stripe_charge_id.ok_or_else(|| {
            StoreError::Inconsistent(format!(
                "key {} is at charge_created but ride {ride_id} has no charge",
                record.id
            ))
        })?;
        let payment_intent_id = ride.stripe_payment_intent_id;
        self.book(lease, record, charge_id, payment_intent_id).await
    }

    /// Records the charge and moves the key to `finished`: the charge id on
    /// the ride, the 201 and its receipt job, in one commit.
    async fn book(
        &self,
        lease: Lease,
        record: &KeyRecord,
        charge_id: String,
        payment_intent_id: Option<String>,
    ) -> Result<StoredResponse, CreateRideError> {
        let ride = Self::ride_of(
            record,
            RideStatus::Booked,
            Some(charge_id.clone()),
            payment_intent_id.clone(),
        )?;
        let response = StoredResponse::ride_created(&ride);
        let job = ReceiptJob::for_ride(ride.id, ride.user_id);
        self.keys
            .finish(
                lease,
                Finish::Booked {
                    charge_id,
                    payment_intent_id,
                    response: response.clone(),
                    job,
                },
                self.clock.now(),
            )
            .await?;
        info!(key_id = %record.id, ride_id = %ride.id, "ride booked; receipt staged");
        Ok(response)
    }
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
fn count_outcome(runner: &'static str, result: &Result<Answer, CreateRideError>, started: Instant) {
    let outcome = match result {
        Ok(answer) if answer.replayed => "replayed",
        Ok(answer) => match answer.response.status {
            201 => "created",
            202 => "pending",
            402 if answer.response.body.contains("authentication-required") => {
                "authentication_required"
            }
            402 => "declined",
            _ => "refused",
        },
        Err(CreateRideError::KeyReused) => "key_reused",
        Err(CreateRideError::InFlight { .. }) => "in_flight",
        Err(CreateRideError::GatewayUnknown { .. }) => "gateway_unknown",
        Err(CreateRideError::NeedsReview) => "needs_review",
        Err(CreateRideError::Simulated) => "simulated_error",
        Err(CreateRideError::Panicked(_)) => "panicked",
        Err(CreateRideError::Store(StoreError::LostLock(_))) => "lost_lock",
        Err(CreateRideError::Store(_)) => "internal_error",
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
