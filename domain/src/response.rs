//! Responses: the ones stored on a finished key (201, 402, 502), replayed
//! byte for byte, and the RFC 9457 problem documents every error uses.
//! Rendering lives here, next to the rules, so one request always gets one
//! body whichever process (API or completer) finished it.

use crate::json::JsonObject;
use crate::ride::Ride;

/// What a finished key answers with, forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

impl StoredResponse {
    pub fn ride_created(ride: &Ride) -> Self {
        Self {
            status: 201,
            body: JsonObject::new()
                .string("message", "Ride booked and charged; enjoy the flight.")
                .object("ride", ride_json(ride))
                .finish(),
        }
    }

    /// Stripe declined the card (`card_error`): the rider must use another card.
    pub fn card_declined(processor_message: &str) -> Self {
        Problem::new(
            402,
            "card-declined",
            "Card declined",
            format!("The card was declined: {processor_message}"),
        )
        .into_stored()
    }

    /// Stripe refused the charge for good for another reason, in a way that
    /// proves no charge was made. Our own words only: Stripe's text names
    /// customer and charge ids, which is logged, never shown to the client.
    pub fn charge_refused() -> Self {
        Problem::new(
            502,
            "charge-refused",
            "Payment processor refused the charge",
            "The payment processor refused the charge for good (for example, the account has no usable card); no charge was made. Update the payment method, then send a new request with a new Idempotency-Key.".to_owned(),
        )
        .into_stored()
    }

    /// A person reviewed a charge whose outcome was never known and found
    /// that no charge was made: the request ends without one.
    pub fn charge_not_made() -> Self {
        Problem::new(
            502,
            "charge-not-made",
            "No charge was made",
            "The payment processor's answer to this charge was lost, and a review found that no charge was made; the ride was not booked. Send a new request with a new Idempotency-Key to book it.".to_owned(),
        )
        .into_stored()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The JSON object a ride is shown as, in the 201 body and by `GET /rides/{id}`.
pub fn ride_json(ride: &Ride) -> JsonObject {
    let [origin_lat, origin_lon, target_lat, target_lon] = ride.params.numbers();
    JsonObject::new()
        .integer("id", ride.id.0)
        .number("origin_lat", origin_lat)
        .number("origin_lon", origin_lon)
        .number("target_lat", target_lat)
        .number("target_lon", target_lon)
        .optional_string("stripe_charge_id", ride.stripe_charge_id.as_deref())
}

/// An `application/problem+json` document (RFC 9457) that also carries the
/// seed's `error` field, so clients of either style read the same message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
}

impl Problem {
    /// Problem types are entries of the API's OpenAPI document.
    pub const TYPE_BASE: &'static str = "/openapi.json#/components/responses/";

    pub fn new(status: u16, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
        }
    }

    pub fn body(&self) -> String {
        JsonObject::new()
            .string("type", &format!("{}{}", Self::TYPE_BASE, self.slug))
            .string("title", self.title)
            .integer("status", i64::from(self.status))
            .string("detail", &self.detail)
            .string("error", &self.detail)
            .finish()
    }

    pub fn into_stored(self) -> StoredResponse {
        StoredResponse {
            status: self.status,
            body: self.body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride::{RideId, RideParams};
    use crate::user::UserId;

    #[test]
    fn the_201_body_holds_the_message_and_the_ride() {
        let ride = Ride {
            id: RideId(3),
            user_id: UserId(1),
            idempotency_key_id: None,
            params: RideParams::from_numbers([1.5, -2.0, 0.0, 0.25]).expect("valid"),
            stripe_charge_id: Some("ch_123".into()),
        };
        let response = StoredResponse::ride_created(&ride);
        assert_eq!(response.status, 201);
        assert!(response.is_success());
        assert!(response.body.ends_with(
            r#""ride":{"id":3,"origin_lat":1.5,"origin_lon":-2.0,"target_lat":0.0,"target_lon":0.25,"stripe_charge_id":"ch_123"}}"#
        ));
        assert!(response.body.starts_with(r#"{"message":""#));
    }

    #[test]
    fn problems_carry_type_title_status_detail_and_error() {
        let stored = StoredResponse::card_declined("Your card was declined.");
        assert_eq!(stored.status, 402);
        assert_eq!(
            stored.body,
            r#"{"type":"/openapi.json#/components/responses/card-declined","title":"Card declined","status":402,"detail":"The card was declined: Your card was declined.","error":"The card was declined: Your card was declined."}"#
        );
        assert!(!stored.is_success());
    }
}
