//! The request fingerprint: what makes two requests under one idempotency key
//! "the same request". Method, path and the parsed parameters, in canonical
//! form, so `0`, `0.0` and `-0` sent as a form or as JSON all compare equal.
//! `raise_error` is deliberately left out: a retry without it is the same
//! request, and is expected to succeed.

use crate::ride::{RideParams, RideParamsField};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    pub fn for_ride(method: &str, path: &str, params: &RideParams) -> Self {
        let mut text = format!("{} {}", method.to_ascii_uppercase(), path);
        for (i, (field, value)) in RideParamsField::ALL
            .into_iter()
            .zip(params.numbers())
            .enumerate()
        {
            text.push(if i == 0 { ' ' } else { '&' });
            // Debug formatting of f64 is the shortest text that reads back to
            // the same value, so equal numbers give equal text.
            text.push_str(&format!("{}={:?}", field.name(), value));
        }
        Self(text)
    }

    /// A cancel request: method, path (which names the ride) and the
    /// reason given, if any (quoted, so no reason reads as another).
    pub fn for_cancel(method: &str, path: &str, reason: Option<&str>) -> Self {
        let reason = serde_json::to_string(&reason).unwrap_or_default();
        Self(format!(
            "{} {} reason={reason}",
            method.to_ascii_uppercase(),
            path
        ))
    }

    /// Rebuilds a fingerprint read back from storage.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_numbers_give_equal_fingerprints() {
        let a = RideParams::from_numbers([0.0, -0.0, 1.5, 10.0]).expect("valid");
        let b = RideParams::from_numbers([-0.0, 0.0, 1.50, 1e1]).expect("valid");
        assert_eq!(
            RequestFingerprint::for_ride("POST", "/rides", &a),
            RequestFingerprint::for_ride("post", "/rides", &b)
        );
        assert_eq!(
            RequestFingerprint::for_ride("POST", "/rides", &a).as_str(),
            "POST /rides origin_lat=0.0&origin_lon=0.0&target_lat=1.5&target_lon=10.0"
        );
    }

    #[test]
    fn body_method_and_path_all_count() {
        let a = RideParams::from_numbers([0.0; 4]).expect("valid");
        let b = RideParams::from_numbers([0.0, 0.0, 0.0, 0.000001]).expect("valid");
        let base = RequestFingerprint::for_ride("POST", "/rides", &a);
        assert_ne!(base, RequestFingerprint::for_ride("POST", "/rides", &b));
        assert_ne!(base, RequestFingerprint::for_ride("PUT", "/rides", &a));
        assert_ne!(base, RequestFingerprint::for_ride("POST", "/rides/1", &a));
    }

    #[test]
    fn a_cancel_is_told_apart_by_its_ride_and_reason_and_never_equals_a_booking() {
        let cancel = |path, reason| RequestFingerprint::for_cancel("post", path, reason);
        assert_eq!(
            cancel("/rides/1/cancel", Some("late")),
            cancel("/rides/1/cancel", Some("late"))
        );
        assert_ne!(
            cancel("/rides/1/cancel", None),
            cancel("/rides/2/cancel", None)
        );
        assert_ne!(
            cancel("/rides/1/cancel", None),
            cancel("/rides/1/cancel", Some("null"))
        );
        assert_ne!(
            cancel("/rides/1/cancel", Some("a")),
            cancel("/rides/1/cancel", Some("b"))
        );
        let params = RideParams::from_numbers([0.0; 4]).expect("valid");
        assert_ne!(
            cancel("/rides", None),
            RequestFingerprint::for_ride("POST", "/rides", &params)
        );
    }
}
