//! Cancelling a ride: whether a ride may be cancelled, and what goes back
//! to the rider. Decided once, when the cancellation is recorded
//! (`cancel_recorded`), from the ride as it stands under its row lock and
//! the instant the rider asked (the key's creation, so a cancel resumed
//! later by the completer gives back what it would have given at once).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::charge::RIDE_PRICE;
use crate::payment::RideStatus;

/// The refund rule's two settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelPolicy {
    /// Cancelled within this long of being booked: refunded in full.
    pub free_window: Duration,
    /// Cancelled later: the fare less this, never below zero.
    pub fee_cents: i64,
}

/// A cancellation reason may be this long at most (characters).
pub const MAX_CANCEL_REASON_CHARS: usize = 500;

/// How the money of a cancelled ride goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Giveback {
    /// A refund of this much (cents, at most the fare) against the ride's
    /// PaymentIntent or charge.
    Refund { amount_cents: i64 },
    /// The ride was never paid (awaiting authentication, or pending): its
    /// PaymentIntent is cancelled, nothing refunded.
    CancelPaymentIntent,
    /// Paid, but nothing is due back (the fee takes the whole fare).
    Nothing,
}

impl Giveback {
    /// The amount refunded (zero when none is).
    pub fn refund_cents(self) -> i64 {
        match self {
            Giveback::Refund { amount_cents } => amount_cents,
            Giveback::CancelPaymentIntent | Giveback::Nothing => 0,
        }
    }

    /// As stored: the method, and the amount.
    pub fn method(self) -> &'static str {
        match self {
            Giveback::Refund { .. } => "refund",
            Giveback::CancelPaymentIntent => "cancel_payment_intent",
            Giveback::Nothing => "nothing",
        }
    }

    /// Read back from `method` and the amount.
    pub fn from_stored(method: &str, amount_cents: i64) -> Option<Self> {
        match method {
            "refund" if (1..=RIDE_PRICE.amount_cents).contains(&amount_cents) => {
                Some(Giveback::Refund { amount_cents })
            }
            "cancel_payment_intent" if amount_cents == 0 => Some(Giveback::CancelPaymentIntent),
            "nothing" if amount_cents == 0 => Some(Giveback::Nothing),
            _ => None,
        }
    }
}

/// What a cancel request may do with a ride in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Record the cancellation and give back this.
    Cancel(Giveback),
    /// Cancelled before, under another key (409, stored).
    AlreadyCancelled,
    /// Its payment failed: there is nothing to cancel (409, stored).
    NotCancellable,
    /// Its booking is still being charged: ask again shortly (409 with
    /// `Retry-After`, not stored).
    PaymentInProgress,
}

impl CancelPolicy {
    /// The defaults: five minutes free, then 5.00 off the fare.
    pub const DEFAULT: Self = Self {
        free_window: Duration::from_secs(300),
        fee_cents: 500,
    };

    /// What cancelling a ride in `status`, paid for at `paid_at` (when it
    /// was booked), asked for at `asked_at`, gives. The fare is the ride's
    /// price: a refund never exceeds it and is never negative.
    pub fn decide(
        &self,
        status: RideStatus,
        paid_at: SystemTime,
        asked_at: SystemTime,
    ) -> CancelDecision {
        match status {
            RideStatus::Charging => CancelDecision::PaymentInProgress,
            RideStatus::AwaitingAuthentication | RideStatus::PaymentPending => {
                CancelDecision::Cancel(Giveback::CancelPaymentIntent)
            }
            RideStatus::PaymentFailed => CancelDecision::NotCancellable,
            RideStatus::Cancelling | RideStatus::Cancelled | RideStatus::RefundFailed => {
                CancelDecision::AlreadyCancelled
            }
            RideStatus::Booked => {
                let fare = RIDE_PRICE.amount_cents;
                let waited = asked_at.duration_since(paid_at).unwrap_or(Duration::ZERO);
                let amount_cents = if waited <= self.free_window {
                    fare
                } else {
                    fare.saturating_sub(self.fee_cents.max(0)).clamp(0, fare)
                };
                CancelDecision::Cancel(if amount_cents == 0 {
                    Giveback::Nothing
                } else {
                    Giveback::Refund { amount_cents }
                })
            }
        }
    }
}

/// A refund's status as Stripe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 5] = [
        RefundStatus::Pending,
        RefundStatus::RequiresAction,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Canceled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::RequiresAction => "requires_action",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The money did not go back, and will not under this refund.
    pub const fn is_failure(self) -> bool {
        matches!(self, RefundStatus::Failed | RefundStatus::Canceled)
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The refund Stripe made for a cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub refund_id: String,
    pub status: RefundStatus,
}

/// A ride's cancellation as recorded: at most one per ride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub ride_id: crate::ids::RideId,
    pub reason: Option<String>,
    pub giveback: Giveback,
    /// Once `refund_created`: Stripe's refund (none for a cancelled
    /// PaymentIntent or when nothing was due).
    pub refund: Option<RefundRecord>,
}

/// What the gateway is asked to give back for a cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRequest {
    /// `POST /v1/refunds` against the ride's PaymentIntent (or its charge
    /// on the Charges API), with the key's downstream key as
    /// `Idempotency-Key` and in metadata.
    Refund {
        payment_intent_id: Option<String>,
        charge_id: Option<String>,
        amount_cents: i64,
        idempotency_key: String,
    },
    /// `POST /v1/payment_intents/{id}/cancel`.
    CancelPaymentIntent {
        payment_intent_id: String,
        idempotency_key: String,
    },
}

/// How the payment processor answered a refund or a PaymentIntent's cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The refund exists (whatever its status: a pending one may still
    /// fail later, reported by a webhook).
    Refunded(RefundRecord),
    /// The PaymentIntent is cancelled: no money moved.
    IntentCanceled,
    /// Refused for good (already refunded, more than is left, an intent
    /// that can no longer be cancelled): retrying won't help.
    Refused { message: String },
    /// No definitive answer: the refund may or may not exist; retry with
    /// the same key.
    Unknown { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    #[test]
    fn a_booked_ride_is_refunded_in_full_within_the_window_and_less_the_fee_after() {
        let policy = CancelPolicy::DEFAULT;
        let fare = RIDE_PRICE.amount_cents;
        assert_eq!(
            policy.decide(RideStatus::Booked, at(0), at(300)),
            CancelDecision::Cancel(Giveback::Refund { amount_cents: fare })
        );
        assert_eq!(
            policy.decide(RideStatus::Booked, at(0), at(301)),
            CancelDecision::Cancel(Giveback::Refund {
                amount_cents: fare - 500
            })
        );
        // A clock that went backwards is inside the window, not a panic.
        assert_eq!(
            policy.decide(RideStatus::Booked, at(10), at(0)),
            CancelDecision::Cancel(Giveback::Refund { amount_cents: fare })
        );
    }

    #[test]
    fn the_refund_is_never_negative_nor_above_the_fare() {
        let fare = RIDE_PRICE.amount_cents;
        for fee in [fare, fare + 1, i64::MAX] {
            let policy = CancelPolicy {
                free_window: Duration::ZERO,
                fee_cents: fee,
            };
            assert_eq!(
                policy.decide(RideStatus::Booked, at(0), at(1)),
                CancelDecision::Cancel(Giveback::Nothing),
                "fee {fee}"
            );
        }
        let negative = CancelPolicy {
            free_window: Duration::ZERO,
            fee_cents: -100,
        };
        assert_eq!(
            negative.decide(RideStatus::Booked, at(0), at(1)),
            CancelDecision::Cancel(Giveback::Refund { amount_cents: fare })
        );
    }

    #[test]
    fn each_status_has_one_answer() {
        let policy = CancelPolicy::DEFAULT;
        let decide = |status| policy.decide(status, at(0), at(0));
        assert_eq!(
            decide(RideStatus::AwaitingAuthentication),
            CancelDecision::Cancel(Giveback::CancelPaymentIntent)
        );
        assert_eq!(
            decide(RideStatus::PaymentPending),
            CancelDecision::Cancel(Giveback::CancelPaymentIntent)
        );
        assert_eq!(
            decide(RideStatus::PaymentFailed),
            CancelDecision::NotCancellable
        );
        assert_eq!(
            decide(RideStatus::Charging),
            CancelDecision::PaymentInProgress
        );
        for status in RideStatus::ALL {
            assert_eq!(
                decide(status) == CancelDecision::AlreadyCancelled,
                status.has_cancellation(),
                "{status}: already cancelled exactly when a cancellation is recorded"
            );
        }
    }

    #[test]
    fn givebacks_read_back_as_stored_and_refuse_what_the_rule_never_writes() {
        for giveback in [
            Giveback::Refund { amount_cents: 1 },
            Giveback::Refund {
                amount_cents: RIDE_PRICE.amount_cents,
            },
            Giveback::CancelPaymentIntent,
            Giveback::Nothing,
        ] {
            assert_eq!(
                Giveback::from_stored(giveback.method(), giveback.refund_cents()),
                Some(giveback)
            );
        }
        assert_eq!(Giveback::from_stored("refund", 0), None);
        assert_eq!(
            Giveback::from_stored("refund", RIDE_PRICE.amount_cents + 1),
            None
        );
        assert_eq!(Giveback::from_stored("nothing", 5), None);
        assert_eq!(Giveback::from_stored("cancel_payment_intent", 5), None);
        assert_eq!(Giveback::from_stored("cash", 0), None);
    }

    #[test]
    fn refund_statuses_read_back_and_only_failed_or_canceled_are_failures() {
        for status in RefundStatus::ALL {
            assert_eq!(RefundStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                status.to_string(),
                status.as_str(),
                "shown as Stripe names it"
            );
        }
        assert_eq!(RefundStatus::parse("refunded"), None);
        let failures: Vec<_> = RefundStatus::ALL
            .into_iter()
            .filter(|s| s.is_failure())
            .collect();
        assert_eq!(failures, [RefundStatus::Failed, RefundStatus::Canceled]);
    }
}
