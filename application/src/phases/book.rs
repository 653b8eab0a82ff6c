//! Booking (`POST /rides`): the steps from `started` to `finished` of a
//! `BookRide` key. The key phase writes a new key at `ride_created` with
//! its ride; the charge is the one gateway call; recording it and booking
//! share one commit.

use std::time::Instant;

use domain::charge::ReceiptJob;
use domain::{
    ChargeOutcome, ChargeRequest, KeyProgress, KeyRecord, RIDE_PRICE, Ride, RideId, RideStatus,
    StoredResponse, User,
};
use tracing::{info, warn};

use super::{PhaseError, PhaseMachine, Step, timed};
use crate::ports::{Finish, Lease, StoreError};

impl PhaseMachine {
    /// One step of a booking key.
    pub(super) async fn book_step(
        &self,
        lease: Lease,
        record: KeyRecord,
        user: &User,
        raise_error: bool,
    ) -> Result<Step, PhaseError> {
        Ok(match &record.progress {
            KeyProgress::Started => {
                let record = timed(
                    "create_ride",
                    self.keys.create_ride(lease, self.clock.now()),
                )
                .await?;
                info!(key_id = %record.id, ride_id = ?record.progress.ride_id().map(|r| r.0), "ride created");
                Step::Next(record)
            }
            KeyProgress::RideCreated { .. } => {
                Step::Done(timed("charge", self.charge(lease, &record, user, raise_error)).await?)
            }
            KeyProgress::ChargeCreated { ride_id } => Step::Done(
                timed(
                    "finish_booking",
                    self.finish_booking(lease, &record, *ride_id),
                )
                .await?,
            ),
            KeyProgress::CancelRecorded { .. }
            | KeyProgress::RefundCreated { .. }
            | KeyProgress::Finished { .. } => return Err(Self::wrong_point(&record)),
        })
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
    ) -> Result<StoredResponse, PhaseError> {
        if raise_error {
            return Err(PhaseError::Simulated);
        }
        let now = self.clock.now();
        if self.settings.review.needs_review(record, now) {
            warn!(key_id = %record.id, "charge first attempted beyond the gateway's idempotency window; needs review");
            return Err(PhaseError::NeedsReview);
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
                Err(PhaseError::GatewayUnknown { reason })
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
        let id = Self::ride_id_of(record)?;
        let domain::KeyAction::BookRide(params) = &record.action else {
            return Err(StoreError::Inconsistent(format!(
                "key {} books no ride",
                record.id
            )));
        };
        Ok(Ride {
            id,
            idempotency_key_id: Some(record.id),
            params: *params,
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
    ) -> Result<StoredResponse, PhaseError> {
        let ride = Self::ride_of(record, status, None, Some(payment_intent_id.clone()))?;
        let response = respond(&ride, &payment_intent_id);
        self.finish_with(
            lease,
            Finish::AwaitingPayment {
                payment_intent_id,
                status,
                response,
            },
        )
        .await
    }

    pub(super) async fn finish_refused(
        &self,
        lease: Lease,
        response: StoredResponse,
    ) -> Result<StoredResponse, PhaseError> {
        self.finish_with(lease, Finish::Refused { response }).await
    }

    /// The `charge_created` phase, for a key an earlier version left there:
    /// reads the charge id off the ride and books it.
    async fn finish_booking(
        &self,
        lease: Lease,
        record: &KeyRecord,
        ride_id: RideId,
    ) -> Result<StoredResponse, PhaseError> {
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
    pub(super) async fn book(
        &self,
        lease: Lease,
        record: &KeyRecord,
        charge_id: String,
        payment_intent_id: Option<String>,
    ) -> Result<StoredResponse, PhaseError> {
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
