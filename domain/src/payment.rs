//! Where a ride's payment stands, and the one rule that moves it.
//!
//! A ride is created `charging`; the charge phase's answer puts it
//! `booked`, `payment_failed`, `awaiting_authentication` (the bank wants
//! the rider to authenticate, 3-D Secure) or `payment_pending` (Stripe is
//! still processing). The last two are settled later, by a webhook or by
//! the completer's sync pass retrieving the PaymentIntent; both apply
//! `RideStatus::after`, so a status only ever moves forward and a
//! duplicate or late event changes nothing.

use serde::Serialize;

/// A ride's payment status, as `GET /rides/{id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RideStatus {
    /// Created; its charge not yet answered.
    Charging,
    /// The PaymentIntent needs the rider to authenticate on-session.
    AwaitingAuthentication,
    /// Stripe is processing the payment.
    PaymentPending,
    /// Paid. Final.
    Booked,
    /// Declined, refused or cancelled: nothing charged. Final.
    PaymentFailed,
    /// A cancellation is recorded; its refund (or the PaymentIntent's
    /// cancel) not yet answered.
    Cancelling,
    /// Cancelled: the refund made (or the PaymentIntent cancelled).
    Cancelled,
    /// Cancelled, but Stripe refused the refund or reported it failed: a
    /// person must look. Final.
    RefundFailed,
}

impl RideStatus {
    pub const ALL: [RideStatus; 8] = [
        RideStatus::Charging,
        RideStatus::AwaitingAuthentication,
        RideStatus::PaymentPending,
        RideStatus::Booked,
        RideStatus::PaymentFailed,
        RideStatus::Cancelling,
        RideStatus::Cancelled,
        RideStatus::RefundFailed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RideStatus::Charging => "charging",
            RideStatus::AwaitingAuthentication => "awaiting_authentication",
            RideStatus::PaymentPending => "payment_pending",
            RideStatus::Booked => "booked",
            RideStatus::PaymentFailed => "payment_failed",
            RideStatus::Cancelling => "cancelling",
            RideStatus::Cancelled => "cancelled",
            RideStatus::RefundFailed => "refund_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// How far along: a status moves only to a higher stage. A
    /// cancellation is past every payment stage, so no payment news moves
    /// a ride being cancelled or cancelled.
    const fn stage(self) -> u8 {
        match self {
            RideStatus::Charging => 0,
            RideStatus::AwaitingAuthentication => 1,
            RideStatus::PaymentPending => 2,
            RideStatus::Booked | RideStatus::PaymentFailed => 3,
            RideStatus::Cancelling => 4,
            RideStatus::Cancelled => 5,
            RideStatus::RefundFailed => 6,
        }
    }

    /// The status a cancelled ride takes when its refund is reported
    /// failed: `refund_failed`, from `cancelling` or `cancelled` only.
    pub const fn after_refund_failed(self) -> Option<RideStatus> {
        match self {
            RideStatus::Cancelling | RideStatus::Cancelled => Some(RideStatus::RefundFailed),
            _ => None,
        }
    }

    /// A cancellation is recorded for the ride (being refunded, refunded,
    /// or its refund failed): the stage past every payment stage.
    pub const fn has_cancellation(self) -> bool {
        self.stage() >= RideStatus::Cancelling.stage()
    }

    /// Waits on the rider or on Stripe: a webhook or the sync pass settles it.
    pub const fn awaits_payment(self) -> bool {
        matches!(
            self,
            RideStatus::AwaitingAuthentication | RideStatus::PaymentPending
        )
    }

    /// The status a ride in this one takes when its PaymentIntent is in
    /// `state`: `None` when that would not move it forward (the same
    /// status, an earlier one, or a ride already settled).
    pub fn after(self, state: &PaymentIntentState) -> Option<RideStatus> {
        let next = state.ride_status();
        (next.stage() > self.stage()).then_some(next)
    }
}

impl std::fmt::Display for RideStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Stripe says of a PaymentIntent, by what it means for the ride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentIntentState {
    /// The money moved; the charge Stripe made for it, when given.
    Succeeded { charge_id: Option<String> },
    /// `requires_action` (or `requires_confirmation`), or an off-session
    /// attempt refused for want of authentication: the rider must act.
    RequiresAction,
    /// `processing`.
    Processing,
    /// `requires_payment_method` (the attempt failed) or `canceled`: no
    /// money moved, and none will under this intent.
    Failed,
}

impl PaymentIntentState {
    /// From a PaymentIntent's `status`, `latest_charge` and
    /// `last_payment_error.code`; `None` for a status this service never
    /// leaves an intent in (`requires_capture`: we never authorise without
    /// capturing) or does not know. An off-session attempt that needs the
    /// rider's authentication leaves the intent `requires_payment_method`
    /// with the code `authentication_required`: the rider can still
    /// authenticate it, so it waits on them rather than failing.
    pub fn from_stripe(
        status: &str,
        latest_charge: Option<String>,
        last_error_code: Option<&str>,
    ) -> Option<Self> {
        Some(match status {
            "succeeded" => PaymentIntentState::Succeeded {
                charge_id: latest_charge,
            },
            "requires_action" | "requires_confirmation" => PaymentIntentState::RequiresAction,
            "requires_payment_method" if last_error_code == Some(Self::AUTHENTICATION_REQUIRED) => {
                PaymentIntentState::RequiresAction
            }
            "processing" => PaymentIntentState::Processing,
            "requires_payment_method" | "canceled" => PaymentIntentState::Failed,
            _ => return None,
        })
    }

    /// Stripe's error code for a payment the bank wants authenticated.
    pub const AUTHENTICATION_REQUIRED: &'static str = "authentication_required";

    /// The ride status this state means.
    pub fn ride_status(&self) -> RideStatus {
        match self {
            PaymentIntentState::Succeeded { .. } => RideStatus::Booked,
            PaymentIntentState::RequiresAction => RideStatus::AwaitingAuthentication,
            PaymentIntentState::Processing => RideStatus::PaymentPending,
            PaymentIntentState::Failed => RideStatus::PaymentFailed,
        }
    }
}

/// A change of a PaymentIntent to apply to its ride: from a webhook event
/// (which takes effect once per event id) or from the sync pass (no id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentUpdate {
    /// Stripe's event id (`evt_…`); `None` from the sync pass.
    pub event_id: Option<String>,
    /// The event's type, recorded with its id (`sync` from the sync pass).
    pub event_type: String,
    pub payment_intent_id: String,
    pub state: PaymentIntentState,
}

/// News of a cancellation's refund: from a webhook event (once per id),
/// or from the sync pass retrieving a refund still pending (no id). A
/// refund that failed or was canceled marks its ride `refund_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundUpdate {
    /// Stripe's event id (`evt_…`); `None` from the sync pass.
    pub event_id: Option<String>,
    pub event_type: String,
    pub refund_id: String,
    pub status: crate::cancel::RefundStatus,
}

/// What applying a `PaymentUpdate` (or a `RefundUpdate`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentApplied {
    /// No ride carries this PaymentIntent (or refund): nothing stored.
    UnknownIntent,
    /// This event id was applied before: nothing changed.
    Duplicate,
    /// The ride is where it was (already further along, or the same).
    Unchanged { status: RideStatus },
    /// The ride moved on; a ride now `booked` had its receipt job staged
    /// in the same commit.
    Moved { from: RideStatus, to: RideStatus },
}

impl PaymentApplied {
    /// One word for logs and metrics.
    pub fn result(&self) -> &'static str {
        match self {
            PaymentApplied::UnknownIntent => "unknown_intent",
            PaymentApplied::Duplicate => "duplicate",
            PaymentApplied::Unchanged { .. } => "unchanged",
            PaymentApplied::Moved { .. } => "applied",
        }
    }
}

/// Which of Stripe's APIs takes the money (`STRIPE_PAYMENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentsApi {
    /// PaymentIntents confirmed off-session with the saved PaymentMethod.
    #[default]
    PaymentIntents,
    /// The seed's Charges against the customer's default source.
    Charges,
}

impl PaymentsApi {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentsApi::PaymentIntents => "payment_intents",
            PaymentsApi::Charges => "charges",
        }
    }
}

/// The cards the demo users pay with, as Stripe's test mode names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// Charges.
    Visa,
    /// Declined (`card_declined`).
    Declined,
    /// Asks for 3-D Secure on every payment, off-session included.
    AuthenticationRequired,
    /// No card at all.
    None,
}

impl TestCard {
    /// The test PaymentMethod (`pm_card_…`), for PaymentIntents.
    pub const fn payment_method(self) -> Option<&'static str> {
        match self {
            TestCard::Visa => Some("pm_card_visa"),
            TestCard::Declined => Some("pm_card_chargeDeclined"),
            TestCard::AuthenticationRequired => Some("pm_card_authenticationRequired"),
            TestCard::None => None,
        }
    }

    /// The test token (`tok_…`), a customer's default source for Charges.
    pub const fn source(self) -> Option<&'static str> {
        match self {
            TestCard::Visa => Some("tok_visa"),
            TestCard::Declined => Some("tok_chargeCustomerFail"),
            // Charges has no authentication step: Stripe declines such a
            // card there (`authentication_required`), as this token is.
            TestCard::AuthenticationRequired => Some("tok_chargeCustomerFail"),
            TestCard::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn succeeded() -> PaymentIntentState {
        PaymentIntentState::Succeeded {
            charge_id: Some("ch_1".to_owned()),
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in RideStatus::ALL {
            assert_eq!(RideStatus::parse(status.as_str()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(RideStatus::parse("Booked"), None);
    }

    #[test]
    fn a_waiting_ride_settles_forward_only() {
        use RideStatus::*;
        let failed = PaymentIntentState::Failed;
        assert_eq!(AwaitingAuthentication.after(&succeeded()), Some(Booked));
        assert_eq!(AwaitingAuthentication.after(&failed), Some(PaymentFailed));
        assert_eq!(
            AwaitingAuthentication.after(&PaymentIntentState::Processing),
            Some(PaymentPending)
        );
        assert_eq!(PaymentPending.after(&succeeded()), Some(Booked));
        assert_eq!(PaymentPending.after(&failed), Some(PaymentFailed));
        // Late or repeated news moves nothing back.
        assert_eq!(
            PaymentPending.after(&PaymentIntentState::RequiresAction),
            None
        );
        assert_eq!(PaymentPending.after(&PaymentIntentState::Processing), None);
        assert_eq!(
            AwaitingAuthentication.after(&PaymentIntentState::RequiresAction),
            None
        );
        // Settled rides stay settled: a failure after a success (or the
        // other way round) is news of another attempt, not of this one.
        assert_eq!(Booked.after(&failed), None);
        assert_eq!(Booked.after(&succeeded()), None);
        assert_eq!(PaymentFailed.after(&succeeded()), None);
        assert_eq!(Charging.after(&succeeded()), Some(Booked));
        // No payment news moves a ride being cancelled, or cancelled.
        for status in [Cancelling, Cancelled, RefundFailed] {
            for state in [succeeded(), failed.clone(), PaymentIntentState::Processing] {
                assert_eq!(status.after(&state), None, "{status} after {state:?}");
            }
        }
    }

    #[test]
    fn only_a_cancellation_can_have_its_refund_fail() {
        use RideStatus::*;
        for status in RideStatus::ALL {
            let expected = matches!(status, Cancelling | Cancelled).then_some(RefundFailed);
            assert_eq!(status.after_refund_failed(), expected, "{status}");
        }
    }

    #[test]
    fn only_the_two_waiting_statuses_await_payment() {
        let waiting: Vec<RideStatus> = RideStatus::ALL
            .into_iter()
            .filter(|s| s.awaits_payment())
            .collect();
        assert_eq!(
            waiting,
            [
                RideStatus::AwaitingAuthentication,
                RideStatus::PaymentPending
            ]
        );
    }

    #[test]
    fn stripe_statuses_map_to_what_they_mean_for_the_ride() {
        let state = |status| PaymentIntentState::from_stripe(status, Some("ch_9".to_owned()), None);
        assert_eq!(
            state("succeeded"),
            Some(PaymentIntentState::Succeeded {
                charge_id: Some("ch_9".to_owned())
            })
        );
        assert_eq!(
            state("requires_action"),
            Some(PaymentIntentState::RequiresAction)
        );
        assert_eq!(
            state("requires_confirmation"),
            Some(PaymentIntentState::RequiresAction)
        );
        assert_eq!(state("processing"), Some(PaymentIntentState::Processing));
        assert_eq!(
            state("requires_payment_method"),
            Some(PaymentIntentState::Failed)
        );
        assert_eq!(state("canceled"), Some(PaymentIntentState::Failed));
        assert_eq!(state("requires_capture"), None);
        assert_eq!(
            PaymentIntentState::from_stripe(
                "requires_payment_method",
                None,
                Some("authentication_required")
            ),
            Some(PaymentIntentState::RequiresAction),
            "an off-session attempt the rider can still authenticate"
        );
        assert_eq!(
            PaymentIntentState::from_stripe("requires_payment_method", None, Some("card_declined")),
            Some(PaymentIntentState::Failed)
        );
        assert_eq!(state(""), None);
    }

    #[test]
    fn results_name_what_happened() {
        assert_eq!(PaymentApplied::UnknownIntent.result(), "unknown_intent");
        assert_eq!(PaymentApplied::Duplicate.result(), "duplicate");
        assert_eq!(
            PaymentApplied::Unchanged {
                status: RideStatus::Booked
            }
            .result(),
            "unchanged"
        );
        assert_eq!(
            PaymentApplied::Moved {
                from: RideStatus::PaymentPending,
                to: RideStatus::Booked
            }
            .result(),
            "applied"
        );
    }

    #[test]
    fn test_cards_name_stripe_test_ids() {
        assert_eq!(TestCard::Visa.payment_method(), Some("pm_card_visa"));
        assert_eq!(
            TestCard::Declined.payment_method(),
            Some("pm_card_chargeDeclined")
        );
        assert_eq!(
            TestCard::AuthenticationRequired.payment_method(),
            Some("pm_card_authenticationRequired")
        );
        assert_eq!(TestCard::None.payment_method(), None);
        assert_eq!(TestCard::Visa.source(), Some("tok_visa"));
        assert_eq!(TestCard::Declined.source(), Some("tok_chargeCustomerFail"));
        assert_eq!(TestCard::None.source(), None);
        assert_eq!(PaymentsApi::default(), PaymentsApi::PaymentIntents);
        assert_eq!(PaymentsApi::Charges.as_str(), "charges");
    }
}
