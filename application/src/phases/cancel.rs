//! Cancelling (`POST /rides/{id}/cancel`): the steps of a `CancelRide`
//! key. `started` → `cancel_recorded` (the ride `cancelling`, the amount
//! fixed by `CancelPolicy`) → `refund_created` (Stripe's refund stored) →
//! `finished` (the 200 and the cancellation receipt job, one commit). The
//! refund (or the PaymentIntent's cancel) is the one gateway call, noted
//! before it is made and sent under the key's downstream key, exactly as a
//! booking's charge is.

use std::time::{Duration, Instant};

use domain::{
    CancelDecision, Cancellation, Giveback, IdempotencyKey, KeyAction, KeyProgress, KeyRecord,
    ReceiptJob, RefundOutcome, RefundRequest, RequestFingerprint, Ride, RideId, RideStatus,
    StoredResponse, User,
};
use tracing::{info, warn};

use super::{Answer, PhaseError, PhaseMachine, Step, count_outcome, timed};
use crate::ports::{CancelRecording, Finish, KeyRequest, Lease, StoreError};

/// A client's `POST /rides/{id}/cancel`, parsed.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub user: User,
    pub key: IdempotencyKey,
    pub ride_id: RideId,
    /// At most `MAX_CANCEL_REASON_CHARS` (checked at the edge).
    pub reason: Option<String>,
    pub request_ip: Option<String>,
    pub request_id: Option<String>,
}

impl CancelRequest {
    pub const METHOD: &'static str = "POST";

    pub fn path(&self) -> String {
        format!("/rides/{}/cancel", self.ride_id)
    }

    pub fn fingerprint(&self) -> RequestFingerprint {
        RequestFingerprint::for_cancel(Self::METHOD, &self.path(), self.reason.as_deref())
    }
}

/// How long a cancel of a ride still being charged should wait: about
/// one charge with its retries.
const PAYMENT_IN_PROGRESS_RETRY: Duration = Duration::from_secs(5);

impl PhaseMachine {
    /// Runs a client's cancel from the key phase to an answer. A ride that
    /// does not exist or is someone else's is a 404 before any key is
    /// written.
    #[tracing::instrument(name = "cancel_ride", skip_all, fields(user_id = %request.user.id, key = %request.key, ride_id = %request.ride_id))]
    pub async fn cancel(&self, request: CancelRequest) -> Result<Answer, PhaseError> {
        let started = Instant::now();
        let result = self.run_cancel(request).await;
        count_outcome("api", &result, started);
        result
    }

    async fn run_cancel(&self, request: CancelRequest) -> Result<Answer, PhaseError> {
        let fingerprint = request.fingerprint();
        // A replay this process holds was the caller's own ride: its
        // fingerprint names the ride and its key is the caller's.
        if let Some(answer) = self.cached(request.user.id, &request.key, &fingerprint) {
            return answer;
        }
        let ride = self.keys.find_ride(request.ride_id).await?;
        if ride.is_none_or(|ride| ride.user_id != request.user.id) {
            return Err(PhaseError::RideNotFound);
        }
        let key_request = KeyRequest {
            user_id: request.user.id,
            key: request.key,
            fingerprint,
            action: KeyAction::CancelRide {
                ride_id: request.ride_id,
                reason: request.reason,
            },
            request_ip: request.request_ip,
            request_id: request.request_id,
            charges_now: false,
        };
        self.run_request(key_request, &request.user, false).await
    }

    /// One step of a cancel key.
    pub(super) async fn cancel_step(
        &self,
        lease: Lease,
        record: KeyRecord,
        user: &User,
    ) -> Result<Step, PhaseError> {
        match &record.progress {
            KeyProgress::Started => timed("record_cancel", self.record_cancel(lease)).await,
            KeyProgress::CancelRecorded { ride_id, .. } => {
                timed("refund", self.give_back(lease, record.clone(), *ride_id)).await
            }
            KeyProgress::RefundCreated { ride_id } => Ok(Step::Done(
                timed(
                    "finish_cancel",
                    self.finish_cancel(lease, &record, user, *ride_id),
                )
                .await?,
            )),
            KeyProgress::RideCreated { .. }
            | KeyProgress::ChargeCreated { .. }
            | KeyProgress::Finished { .. } => Err(Self::wrong_point(&record)),
        }
    }

    /// `started`: the store decides under the ride's lock and records the
    /// cancellation, or says why this key cannot cancel the ride.
    async fn record_cancel(&self, lease: Lease) -> Result<Step, PhaseError> {
        let recording = self
            .keys
            .record_cancellation(lease, self.settings.cancel, self.clock.now())
            .await?;
        let response = match recording {
            CancelRecording::Recorded {
                record,
                cancellation,
            } => {
                info!(key_id = %record.id, ride_id = %cancellation.ride_id, giveback = ?cancellation.giveback, "cancellation recorded");
                return Ok(Step::Next(record));
            }
            CancelRecording::Refused(CancelDecision::AlreadyCancelled) => {
                StoredResponse::ride_already_cancelled()
            }
            CancelRecording::Refused(CancelDecision::NotCancellable) => {
                StoredResponse::ride_not_cancellable()
            }
            CancelRecording::Refused(CancelDecision::PaymentInProgress) => {
                return Err(PhaseError::PaymentInProgress {
                    retry_after: PAYMENT_IN_PROGRESS_RETRY,
                });
            }
            CancelRecording::Refused(CancelDecision::Cancel(giveback)) => {
                return Err(StoreError::Inconsistent(format!(
                    "key {}: the store refused a cancellation the rule allows ({giveback:?})",
                    lease.key_id
                ))
                .into());
            }
        };
        Ok(Step::Done(
            self.finish_with(lease, Finish::CancelRefused { response })
                .await?,
        ))
    }

    async fn cancellation_of(&self, ride_id: RideId) -> Result<(Cancellation, Ride), PhaseError> {
        let missing = |what: &str| StoreError::Inconsistent(format!("ride {ride_id}: no {what}"));
        let cancellation = self
            .keys
            .find_cancellation(ride_id)
            .await?
            .ok_or_else(|| missing("cancellation"))?;
        let ride = self
            .keys
            .find_ride(ride_id)
            .await?
            .ok_or_else(|| missing("ride"))?;
        Ok((cancellation, ride))
    }

    /// What a cancel key asks of the gateway: its cancellation, its ride
    /// and the call that gives the money back (`None` when nothing is
    /// due). The refund step makes the call; reconciliation asks the
    /// gateway what became of it.
    pub(crate) async fn refund_request(
        &self,
        record: &KeyRecord,
    ) -> Result<(Cancellation, Ride, Option<RefundRequest>), PhaseError> {
        let ride_id = Self::ride_id_of(record)?;
        let (cancellation, ride) = self.cancellation_of(ride_id).await?;
        let idempotency_key = record.downstream_key.clone();
        let request = match cancellation.giveback {
            Giveback::Nothing => None,
            Giveback::Refund { amount_cents } => Some(RefundRequest::Refund {
                payment_intent_id: ride.stripe_payment_intent_id.clone(),
                charge_id: ride.stripe_charge_id.clone(),
                amount_cents,
                idempotency_key,
            }),
            Giveback::CancelPaymentIntent => Some(RefundRequest::CancelPaymentIntent {
                payment_intent_id: ride.stripe_payment_intent_id.clone().ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "ride {ride_id} awaits a payment but has no PaymentIntent"
                    ))
                })?,
                idempotency_key,
            }),
        };
        Ok((cancellation, ride, request))
    }

    /// `cancel_recorded`: the only cancel step that talks to the gateway.
    async fn give_back(
        &self,
        lease: Lease,
        record: KeyRecord,
        ride_id: RideId,
    ) -> Result<Step, PhaseError> {
        let (cancellation, ride, request) = self.refund_request(&record).await?;
        let Some(request) = request else {
            // Nothing to give back: no call, straight to the answer.
            return Ok(Step::Done(
                self.finish_cancel_with(lease, &record, ride, cancellation)
                    .await?,
            ));
        };
        let now = self.clock.now();
        if self.settings.review.needs_review(&record, now) {
            warn!(key_id = %record.id, "refund first attempted beyond the gateway's idempotency window; needs review");
            return Err(PhaseError::NeedsReview);
        }
        self.keys.note_charge_attempt(lease, now).await?;
        let called = Instant::now();
        let outcome = self.gateway.refund(&request).await;
        let label = match &outcome {
            RefundOutcome::Refunded(_) => "refunded",
            RefundOutcome::IntentCanceled => "intent_canceled",
            RefundOutcome::Refused { .. } => "refused",
            RefundOutcome::Unknown { .. } => "unknown",
        };
        metrics::counter!("rocket_rides_refund_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("rocket_rides_gateway_call_duration_seconds", "outcome" => label)
            .record(called.elapsed().as_secs_f64());
        let refund = match outcome {
            RefundOutcome::Refunded(refund) if refund.status.is_failure() => {
                warn!(key_id = %record.id, refund_id = %refund.refund_id, status = %refund.status, "refund made but failed at once");
                return self.refund_failed(lease).await;
            }
            RefundOutcome::Refunded(refund) => {
                info!(key_id = %record.id, refund_id = %refund.refund_id, status = %refund.status, "refund made");
                Some(refund)
            }
            RefundOutcome::IntentCanceled => {
                info!(key_id = %record.id, "PaymentIntent cancelled");
                None
            }
            RefundOutcome::Refused { message } => {
                warn!(key_id = %record.id, %message, "refund refused for good");
                return self.refund_failed(lease).await;
            }
            RefundOutcome::Unknown { reason } => {
                warn!(key_id = %record.id, %reason, "refund outcome unknown; the key stays at cancel_recorded");
                return Err(PhaseError::GatewayUnknown { reason });
            }
        };
        self.keys
            .record_refund(lease, refund, self.clock.now())
            .await?;
        Ok(Step::Next(KeyRecord {
            progress: KeyProgress::RefundCreated { ride_id },
            ..record
        }))
    }

    /// A person's (or a reconciling completer's) settlement of a cancel
    /// key awaiting review, under its lease: the refund found recorded and
    /// the cancel finished (200), or none made: 502, the ride
    /// `refund_failed`.
    pub(super) async fn settle_cancel(
        &self,
        lease: Lease,
        record: &KeyRecord,
        refunded: Option<Option<domain::RefundRecord>>,
    ) -> Result<StoredResponse, PhaseError> {
        let Some(refund) = refunded else {
            return self
                .finish_with(
                    lease,
                    Finish::RefundFailed {
                        response: StoredResponse::refund_refused(),
                    },
                )
                .await;
        };
        self.keys
            .record_refund(lease, refund, self.clock.now())
            .await?;
        let ride_id = Self::ride_id_of(record)?;
        let (cancellation, ride) = self.cancellation_of(ride_id).await?;
        self.finish_cancel_with(lease, record, ride, cancellation)
            .await
    }

    async fn refund_failed(&self, lease: Lease) -> Result<Step, PhaseError> {
        let response = StoredResponse::refund_refused();
        Ok(Step::Done(
            self.finish_with(lease, Finish::RefundFailed { response })
                .await?,
        ))
    }

    /// `refund_created`: the 200 and the receipt job.
    async fn finish_cancel(
        &self,
        lease: Lease,
        record: &KeyRecord,
        user: &User,
        ride_id: RideId,
    ) -> Result<StoredResponse, PhaseError> {
        let (cancellation, ride) = self.cancellation_of(ride_id).await?;
        if ride.user_id != user.id {
            return Err(StoreError::Inconsistent(format!(
                "key {} cancels ride {ride_id} of another user",
                record.id
            ))
            .into());
        }
        self.finish_cancel_with(lease, record, ride, cancellation)
            .await
    }

    async fn finish_cancel_with(
        &self,
        lease: Lease,
        record: &KeyRecord,
        ride: Ride,
        cancellation: Cancellation,
    ) -> Result<StoredResponse, PhaseError> {
        let ride = Ride {
            status: RideStatus::Cancelled,
            ..ride
        };
        let response = StoredResponse::ride_cancelled(&ride, &cancellation);
        let job = ReceiptJob::for_cancellation(
            ride.id,
            ride.user_id,
            cancellation.giveback.refund_cents(),
        );
        let response = self
            .finish_with(lease, Finish::Cancelled { response, job })
            .await?;
        info!(key_id = %record.id, ride_id = %ride.id, "ride cancelled; receipt staged");
        Ok(response)
    }
}
