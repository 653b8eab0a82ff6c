//! Responses: the ones stored on a finished key (201, 402, 502), replayed
//! byte for byte, and the RFC 9457 problem documents every error uses.
//! Rendering lives here, next to the rules, so one request always gets one
//! body whichever process (API or completer) finished it. The shapes are
//! serde types, written once; the HTTP adapter documents the same types in
//! its OpenAPI schemas (feature `openapi`).
//!
//! A stored body is bytes: a replay sends what was stored, whatever version
//! of this file rendered it.

use serde::Serialize;

use crate::cancel::{Cancellation, RefundStatus};
use crate::charge::RIDE_PRICE;
use crate::payment::RideStatus;
use crate::ride::Ride;

/// What a finished key answers with, forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// A ride as the API shows it: in the 201 body and by `GET /rides/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Ride))]
pub struct RideView {
    pub id: i64,
    pub origin_lat: f64,
    pub origin_lon: f64,
    pub target_lat: f64,
    pub target_lon: f64,
    /// The Stripe charge, once the ride is charged.
    pub stripe_charge_id: Option<String>,
    /// The PaymentIntent paying for it (PaymentIntents only).
    pub stripe_payment_intent_id: Option<String>,
    pub status: RideStatus,
}

impl From<&Ride> for RideView {
    fn from(ride: &Ride) -> Self {
        let [origin_lat, origin_lon, target_lat, target_lon] = ride.params.numbers();
        Self {
            id: ride.id.0,
            origin_lat,
            origin_lon,
            target_lat,
            target_lon,
            stripe_charge_id: ride.stripe_charge_id.clone(),
            stripe_payment_intent_id: ride.stripe_payment_intent_id.clone(),
            status: ride.status,
        }
    }
}

/// The 201 answer, stored and replayed byte for byte to every retry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RideCreated {
    pub message: String,
    pub ride: RideView,
}

/// The 402 `authentication-required` answer: the problem, and what the
/// rider's app needs to authenticate on-session (Stripe.js
/// `handleNextAction` with the `client_secret`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthenticationRequired {
    #[serde(flatten)]
    pub problem: ProblemBody,
    pub ride: RideView,
    /// The PaymentIntent's id.
    pub payment_intent: String,
    pub client_secret: String,
}

/// What a cancellation gave back, in the 200 of `POST /rides/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundView {
    /// Stripe's refund (none when the PaymentIntent was cancelled instead,
    /// or nothing was due).
    pub id: Option<String>,
    /// Cents refunded: 0 when nothing was.
    pub amount: i64,
    pub currency: String,
    /// Stripe's status of the refund; none when there is no refund.
    pub status: Option<RefundStatus>,
}

impl RefundView {
    /// What `cancellation` gave back (or is giving back: its refund's
    /// status is Stripe's latest).
    pub fn of(cancellation: &Cancellation) -> Self {
        let refund = cancellation.refund.as_ref();
        Self {
            id: refund.map(|r| r.refund_id.clone()),
            amount: cancellation.giveback.refund_cents(),
            currency: RIDE_PRICE.currency.to_owned(),
            status: refund.map(|r| r.status),
        }
    }
}

/// A ride as `GET /rides/{id}` shows it: the ride, and once it was
/// cancelled, what went back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RideShown {
    #[serde(flatten)]
    pub ride: RideView,
    /// Once the ride is cancelled: its refund (amount 0 and no id when its
    /// PaymentIntent was cancelled instead or nothing was due).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundView>,
}

/// The 200 answer to a cancel, stored and replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RideCancelled {
    pub message: String,
    pub ride: RideView,
    pub refund: RefundView,
}

/// JSON of a shape made of strings, integers and finite numbers: it cannot
/// fail to serialize.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl StoredResponse {
    pub fn ride_created(ride: &Ride) -> Self {
        Self {
            status: 201,
            body: to_json(&RideCreated {
                message: "Ride booked and charged; enjoy the flight.".to_owned(),
                ride: RideView::from(ride),
            }),
        }
    }

    /// Stripe is still processing the payment (202): the ride is
    /// `payment_pending` until a webhook or the sync pass settles it.
    pub fn payment_pending(ride: &Ride) -> Self {
        Self {
            status: 202,
            body: to_json(&RideCreated {
                message:
                    "Ride reserved; the payment is being processed. GET the ride to see it booked."
                        .to_owned(),
                ride: RideView::from(ride),
            }),
        }
    }

    /// The bank asks the rider to authenticate the payment (3-D Secure).
    pub fn authentication_required(
        ride: &Ride,
        payment_intent_id: &str,
        client_secret: &str,
    ) -> Self {
        let kind = ProblemKind::AuthenticationRequired;
        Self {
            status: kind.status(),
            body: to_json(&AuthenticationRequired {
                problem: Problem::body_of(
                    kind,
                    "The card's bank asks the rider to authenticate this payment. Confirm the PaymentIntent on-session with its client_secret; the ride is booked once Stripe reports it paid.",
                ),
                ride: RideView::from(ride),
                payment_intent: payment_intent_id.to_owned(),
                client_secret: client_secret.to_owned(),
            }),
        }
    }

    /// The ride is cancelled (`ride` as it now stands) and what went back.
    pub fn ride_cancelled(ride: &Ride, cancellation: &Cancellation) -> Self {
        Self {
            status: 200,
            body: to_json(&RideCancelled {
                message: "Ride cancelled.".to_owned(),
                ride: RideView::from(ride),
                refund: RefundView::of(cancellation),
            }),
        }
    }

    /// The ride was cancelled before, under another key.
    pub fn ride_already_cancelled() -> Self {
        Problem::new(
            ProblemKind::RideAlreadyCancelled,
            "This ride was already cancelled by another request. GET the ride to see it.",
        )
        .into_stored()
    }

    /// The ride's payment failed: there is nothing to cancel.
    pub fn ride_not_cancellable() -> Self {
        Problem::new(
            ProblemKind::RideNotCancellable,
            "This ride's payment failed, so there is nothing to cancel or refund.",
        )
        .into_stored()
    }

    /// Stripe refused the refund for good: the ride is `refund_failed`,
    /// listed for a person to review.
    pub fn refund_refused() -> Self {
        Problem::new(
            ProblemKind::RefundRefused,
            "The ride is cancelled, but the payment processor refused its refund; the ride is marked refund_failed for our team to settle by hand.",
        )
        .into_stored()
    }

    /// Stripe declined the card (`card_error`): the rider must use another card.
    pub fn card_declined(processor_message: &str) -> Self {
        Problem::new(
            ProblemKind::CardDeclined,
            format!("The card was declined: {processor_message}"),
        )
        .into_stored()
    }

    /// Stripe refused the charge for good for another reason, in a way that
    /// proves no charge was made. Our own words only: Stripe's text names
    /// customer and charge ids, which is logged, never shown to the client.
    pub fn charge_refused() -> Self {
        Problem::new(
            ProblemKind::ChargeRefused,
            "The payment processor refused the charge for good (for example, the account has no usable card); no charge was made. Update the payment method, then send a new request with a new Idempotency-Key.",
        )
        .into_stored()
    }

    /// A person reviewed a charge whose outcome was never known and found
    /// that no charge was made: the request ends without one.
    pub fn charge_not_made() -> Self {
        Problem::new(
            ProblemKind::ChargeNotMade,
            "The payment processor's answer to this charge was lost, and a review found that no charge was made; the ride was not booked. Send a new request with a new Idempotency-Key to book it.",
        )
        .into_stored()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Every kind of problem the API answers with: its `type` slug, status and
/// title, whether it comes with `Retry-After`, and whether it is stored on
/// the key. The one list: the stored answers, the HTTP adapter's errors and
/// the OpenAPI document all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    Unauthorized,
    InvalidIdempotencyKey,
    BodyUnreadable,
    UnsupportedMediaType,
    BodyTooLarge,
    BodyTimeout,
    InvalidRideParameters,
    IdempotencyKeyReused,
    RequestInFlight,
    CardDeclined,
    AuthenticationRequired,
    ChargeRefused,
    ChargeNotMade,
    PaymentProcessorUnavailable,
    StoreUnavailable,
    Overloaded,
    NeedsReview,
    InternalError,
    NotFound,
    MethodNotAllowed,
    NotReady,
    InvalidWebhook,
    InvalidCancelReason,
    RideAlreadyCancelled,
    RideNotCancellable,
    PaymentInProgress,
    RefundRefused,
    /// Answered by the compose deployment's load balancer when no API
    /// replica could (`deploy/haproxy/unavailable.http`), never by us.
    ReplicaUnavailable,
}

/// What a client can rely on about one kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemFacts {
    pub slug: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// Sent with `Retry-After` (seconds): retry with the same key.
    pub retry_after: bool,
    /// Stored on the key and replayed to every retry.
    pub stored: bool,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 28] = [
        ProblemKind::Unauthorized,
        ProblemKind::InvalidIdempotencyKey,
        ProblemKind::BodyUnreadable,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::BodyTooLarge,
        ProblemKind::BodyTimeout,
        ProblemKind::InvalidRideParameters,
        ProblemKind::IdempotencyKeyReused,
        ProblemKind::RequestInFlight,
        ProblemKind::CardDeclined,
        ProblemKind::AuthenticationRequired,
        ProblemKind::ChargeRefused,
        ProblemKind::ChargeNotMade,
        ProblemKind::PaymentProcessorUnavailable,
        ProblemKind::StoreUnavailable,
        ProblemKind::Overloaded,
        ProblemKind::NeedsReview,
        ProblemKind::InternalError,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::NotReady,
        ProblemKind::InvalidWebhook,
        ProblemKind::InvalidCancelReason,
        ProblemKind::RideAlreadyCancelled,
        ProblemKind::RideNotCancellable,
        ProblemKind::PaymentInProgress,
        ProblemKind::RefundRefused,
        ProblemKind::ReplicaUnavailable,
    ];

    pub const fn facts(self) -> ProblemFacts {
        use ProblemKind::*;
        let (slug, status, title, retry_after, stored) = match self {
            Unauthorized => ("unauthorized", 401, "Unauthorized", false, false),
            InvalidIdempotencyKey => (
                "invalid-idempotency-key",
                400,
                "Invalid Idempotency-Key",
                false,
                false,
            ),
            BodyUnreadable => ("body-unreadable", 400, "Body unreadable", false, false),
            UnsupportedMediaType => (
                "unsupported-media-type",
                415,
                "Unsupported media type",
                false,
                false,
            ),
            BodyTooLarge => ("body-too-large", 413, "Body too large", false, false),
            BodyTimeout => ("body-timeout", 408, "Request timeout", false, false),
            InvalidRideParameters => (
                "invalid-ride-parameters",
                422,
                "Invalid ride parameters",
                false,
                false,
            ),
            IdempotencyKeyReused => (
                "idempotency-key-reused",
                422,
                "Idempotency-Key reused",
                false,
                false,
            ),
            RequestInFlight => ("request-in-flight", 409, "Request in flight", true, false),
            CardDeclined => ("card-declined", 402, "Card declined", false, true),
            AuthenticationRequired => (
                "authentication-required",
                402,
                "Authentication required",
                false,
                true,
            ),
            ChargeRefused => (
                "charge-refused",
                502,
                "Payment processor refused the charge",
                false,
                true,
            ),
            ChargeNotMade => ("charge-not-made", 502, "No charge was made", false, true),
            PaymentProcessorUnavailable => (
                "payment-processor-unavailable",
                503,
                "Payment processor unavailable",
                true,
                false,
            ),
            StoreUnavailable => (
                "store-unavailable",
                503,
                "Temporarily unavailable",
                true,
                false,
            ),
            Overloaded => (
                "overloaded",
                503,
                "Too many requests in progress",
                true,
                false,
            ),
            NeedsReview => ("needs-review", 500, "Needs review", false, false),
            InternalError => ("internal-error", 500, "Internal error", false, false),
            NotFound => ("not-found", 404, "Not found", false, false),
            MethodNotAllowed => (
                "method-not-allowed",
                405,
                "Method not allowed",
                false,
                false,
            ),
            NotReady => ("not-ready", 503, "Not ready", true, false),
            InvalidWebhook => ("invalid-webhook", 400, "Invalid webhook", false, false),
            InvalidCancelReason => (
                "invalid-cancel-reason",
                422,
                "Invalid cancellation reason",
                false,
                false,
            ),
            RideAlreadyCancelled => (
                "ride-already-cancelled",
                409,
                "Ride already cancelled",
                false,
                true,
            ),
            RideNotCancellable => (
                "ride-not-cancellable",
                409,
                "Ride not cancellable",
                false,
                true,
            ),
            PaymentInProgress => (
                "payment-in-progress",
                409,
                "The ride's payment is in progress",
                true,
                false,
            ),
            RefundRefused => (
                "refund-refused",
                502,
                "Payment processor refused the refund",
                false,
                true,
            ),
            ReplicaUnavailable => (
                "replica-unavailable",
                503,
                "Temporarily unavailable",
                true,
                false,
            ),
        };
        ProblemFacts {
            slug,
            status,
            title,
            retry_after,
            stored,
        }
    }

    pub const fn slug(self) -> &'static str {
        self.facts().slug
    }

    pub const fn status(self) -> u16 {
        self.facts().status
    }

    pub const fn title(self) -> &'static str {
        self.facts().title
    }

    /// The kind whose `type` URI is `uri` (`Problem::TYPE_BASE` + slug).
    pub fn of_type(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(Problem::TYPE_BASE)?;
        Self::ALL.into_iter().find(|kind| kind.slug() == slug)
    }
}

/// An `application/problem+json` document (RFC 9457) of one kind, with
/// what happened in its `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

/// A problem as sent (RFC 9457); `error` repeats `detail` for clients of
/// the original demo, so clients of either style read the same message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Problem))]
pub struct ProblemBody {
    /// `/openapi.json#/components/responses/<slug>`: this problem's entry
    /// in the API's document.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub error: String,
}

impl Problem {
    /// Problem types are entries of the API's OpenAPI document.
    pub const TYPE_BASE: &'static str = "/openapi.json#/components/responses/";

    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The document as sent, for any kind and detail.
    pub fn body_of(kind: ProblemKind, detail: &str) -> ProblemBody {
        ProblemBody {
            type_uri: format!("{}{}", Self::TYPE_BASE, kind.slug()),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: detail.to_owned(),
            error: detail.to_owned(),
        }
    }

    pub fn body(&self) -> String {
        to_json(&Self::body_of(self.kind, &self.detail))
    }

    pub fn into_stored(self) -> StoredResponse {
        StoredResponse {
            status: self.status(),
            body: self.body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride::{RideId, RideParams};
    use crate::user::UserId;

    /// Bodies byte for byte: the ones the version before serde rendered
    /// (hand-written JSON), the ride's view since grown by its PaymentIntent
    /// and status at the end. A key finished earlier replays its own bytes.
    #[test]
    fn bodies_are_the_bytes_earlier_versions_stored() {
        let ride = Ride {
            id: RideId(3),
            user_id: UserId(1),
            idempotency_key_id: None,
            params: RideParams::from_numbers([1.5, -2.0, 0.0, 0.25]).expect("valid"),
            stripe_charge_id: Some("ch_123".into()),
            stripe_payment_intent_id: Some("pi_123".into()),
            status: RideStatus::Booked,
        };
        let response = StoredResponse::ride_created(&ride);
        assert_eq!(response.status, 201);
        assert!(response.is_success());
        assert_eq!(
            response.body,
            r#"{"message":"Ride booked and charged; enjoy the flight.","ride":{"id":3,"origin_lat":1.5,"origin_lon":-2.0,"target_lat":0.0,"target_lon":0.25,"stripe_charge_id":"ch_123","stripe_payment_intent_id":"pi_123","status":"booked"}}"#
        );
        let stored = StoredResponse::card_declined("Your card was \"declined\".\n");
        assert_eq!(stored.status, 402);
        assert_eq!(
            stored.body,
            r#"{"type":"/openapi.json#/components/responses/card-declined","title":"Card declined","status":402,"detail":"The card was declined: Your card was \"declined\".\n","error":"The card was declined: Your card was \"declined\".\n"}"#
        );
        assert!(!stored.is_success());
        assert_eq!(
            StoredResponse::charge_refused().body,
            r#"{"type":"/openapi.json#/components/responses/charge-refused","title":"Payment processor refused the charge","status":502,"detail":"The payment processor refused the charge for good (for example, the account has no usable card); no charge was made. Update the payment method, then send a new request with a new Idempotency-Key.","error":"The payment processor refused the charge for good (for example, the account has no usable card); no charge was made. Update the payment method, then send a new request with a new Idempotency-Key."}"#
        );
    }

    #[test]
    fn a_ride_not_charged_yet_shows_a_null_charge() {
        let ride = Ride {
            id: RideId(9),
            user_id: UserId(1),
            idempotency_key_id: None,
            params: RideParams::from_numbers([0.0, 0.0, 45.0, -120.125]).expect("valid"),
            stripe_charge_id: None,
            stripe_payment_intent_id: None,
            status: RideStatus::Charging,
        };
        assert_eq!(
            to_json(&RideView::from(&ride)),
            r#"{"id":9,"origin_lat":0.0,"origin_lon":0.0,"target_lat":45.0,"target_lon":-120.125,"stripe_charge_id":null,"stripe_payment_intent_id":null,"status":"charging"}"#
        );
    }

    #[test]
    fn a_ride_waiting_on_its_payment_answers_with_what_the_rider_needs() {
        let mut ride = Ride {
            id: RideId(4),
            user_id: UserId(1),
            idempotency_key_id: None,
            params: RideParams::from_numbers([0.0; 4]).expect("valid"),
            stripe_charge_id: None,
            stripe_payment_intent_id: Some("pi_4".into()),
            status: RideStatus::AwaitingAuthentication,
        };
        let stored = StoredResponse::authentication_required(&ride, "pi_4", "pi_4_secret_x");
        assert_eq!(stored.status, 402);
        let body: serde_json::Value = serde_json::from_str(&stored.body).expect("json");
        assert_eq!(
            body["type"],
            "/openapi.json#/components/responses/authentication-required"
        );
        assert_eq!(body["status"], 402);
        assert_eq!(body["payment_intent"], "pi_4");
        assert_eq!(body["client_secret"], "pi_4_secret_x");
        assert_eq!(body["ride"]["status"], "awaiting_authentication");
        assert_eq!(body["ride"]["id"], 4);
        assert_eq!(body["error"], body["detail"]);
        ride.status = RideStatus::PaymentPending;
        let pending = StoredResponse::payment_pending(&ride);
        assert_eq!(pending.status, 202);
        assert!(pending.is_success());
        let body: serde_json::Value = serde_json::from_str(&pending.body).expect("json");
        assert_eq!(body["ride"]["status"], "payment_pending");
        assert_eq!(body["ride"]["stripe_payment_intent_id"], "pi_4");
    }

    #[test]
    fn every_kind_has_its_own_slug_and_its_type_leads_back_to_it() {
        let mut slugs: Vec<&str> = ProblemKind::ALL.iter().map(|kind| kind.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemKind::ALL.len());
        for kind in ProblemKind::ALL {
            let body = Problem::body_of(kind, "x");
            assert_eq!(ProblemKind::of_type(&body.type_uri), Some(kind));
            assert!((400..600).contains(&kind.status()), "{kind:?}");
        }
    }
}
