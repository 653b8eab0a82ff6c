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

/// Which receipt a job sends: each ride gets at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReceiptKind {
    /// Staged with the 201 that books the ride.
    Ride,
    /// Staged with the 200 that cancels it: what was refunded.
    Cancellation,
}

impl ReceiptKind {
    pub const ALL: [ReceiptKind; 2] = [ReceiptKind::Ride, ReceiptKind::Cancellation];

    /// The job's name, as staged and queued.
    pub const fn job_name(self) -> &'static str {
        match self {
            ReceiptKind::Ride => "send_ride_receipt",
            ReceiptKind::Cancellation => "send_cancellation_receipt",
        }
    }

    pub fn of_job_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.job_name() == name)
    }

    /// As stored beside a sent receipt.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Ride => "ride",
            ReceiptKind::Cancellation => "cancellation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One receipt of one ride: what a worker claims before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiptFor {
    pub ride_id: RideId,
    pub kind: ReceiptKind,
}

impl ReceiptFor {
    pub const fn ride(ride_id: RideId) -> Self {
        Self {
            ride_id,
            kind: ReceiptKind::Ride,
        }
    }
}

/// A ride's booking receipt.
impl From<RideId> for ReceiptFor {
    fn from(ride_id: RideId) -> Self {
        Self::ride(ride_id)
    }
}

impl std::fmt::Display for ReceiptFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} receipt of ride {}", self.kind.as_str(), self.ride_id)
    }
}

/// A job staged with the answer that caused it: email the rider a receipt
/// of the booking (the fare) or of the cancellation (the refund).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptJob {
    pub ride_id: RideId,
    pub user_id: UserId,
    pub amount_cents: i64,
    pub currency: String,
    pub kind: ReceiptKind,
}

impl ReceiptJob {
    /// The booking receipt's job name.
    pub const NAME: &'static str = ReceiptKind::Ride.job_name();

    pub fn for_ride(ride_id: RideId, user_id: UserId) -> Self {
        Self {
            ride_id,
            user_id,
            amount_cents: RIDE_PRICE.amount_cents,
            currency: RIDE_PRICE.currency.to_owned(),
            kind: ReceiptKind::Ride,
        }
    }

    /// A cancellation's receipt: what was refunded (0 when nothing was).
    pub fn for_cancellation(ride_id: RideId, user_id: UserId, refunded_cents: i64) -> Self {
        Self {
            ride_id,
            user_id,
            amount_cents: refunded_cents,
            currency: RIDE_PRICE.currency.to_owned(),
            kind: ReceiptKind::Cancellation,
        }
    }

    /// The receipt this job sends.
    pub fn receipt(&self) -> ReceiptFor {
        ReceiptFor {
            ride_id: self.ride_id,
            kind: self.kind,
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
