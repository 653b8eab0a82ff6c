//! Charges and what the payment processor can answer. The four outcomes are
//! the whole point of the phase machine: only a definitive answer finishes a
//! key; an unknown one leaves it to be retried under the same downstream key.

use crate::ride::RideId;
use crate::user::UserId;

/// What one ride costs: 20.00 USD, in cents.
pub const RIDE_PRICE: Price = Price {
    amount_cents: 2000,
    currency: "usd",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub amount_cents: i64,
    pub currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub customer_id: String,
    /// The customer's saved PaymentMethod, charged off-session through a
    /// PaymentIntent (`None` on the Charges API, or for a user saved
    /// before PaymentMethods: a PaymentIntent is then refused for good).
    pub payment_method_id: Option<String>,
    pub amount_cents: i64,
    pub currency: String,
    pub description: String,
    /// Sent as Stripe's `Idempotency-Key`: the same for every attempt of one key.
    pub idempotency_key: String,
}

/// How the payment processor answered a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The card was charged: the charge's id, and the PaymentIntent's
    /// when it was made through one.
    Charged {
        charge_id: String,
        payment_intent_id: Option<String>,
    },
    /// The bank asks the rider to authenticate (3-D Secure): the
    /// PaymentIntent waits for them, its `client_secret` for their app.
    RequiresAuthentication {
        payment_intent_id: String,
        client_secret: String,
    },
    /// Stripe is still processing the payment; it ends in a webhook.
    Processing { payment_intent_id: String },
    /// The card was declined (`card_error`), with the processor's message.
    Declined { message: String },
    /// Refused for good for another reason, in a way that proves no charge
    /// was made (an invalid request: no card, a bad amount): retrying won't
    /// help. The message is the processor's, for the log only.
    Refused { message: String },
    /// No definitive answer (timeout, connection error, 5xx, 429, 401/403,
    /// 409 for a key in use, anything unexpected): the charge may or may not
    /// exist, so the request must be retried, never finished.
    Unknown { reason: String },
}

/// The job staged when a ride is booked: email the rider a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptJob {
    pub ride_id: RideId,
    pub user_id: UserId,
    pub amount_cents: i64,
    pub currency: String,
}

impl ReceiptJob {
    pub const NAME: &'static str = "send_ride_receipt";

    pub fn for_ride(ride_id: RideId, user_id: UserId) -> Self {
        Self {
            ride_id,
            user_id,
            amount_cents: RIDE_PRICE.amount_cents,
            currency: RIDE_PRICE.currency.to_owned(),
        }
    }
}

/// A job written in the same transaction as the 201 that caused it, waiting
/// for the enqueuer to move it into the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedJob {
    pub id: i64,
    pub job: ReceiptJob,
}
