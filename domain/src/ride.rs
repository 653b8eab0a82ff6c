//! Rides and the parameters a client books one with.
//!
//! Coordinates are parsed, not validated: a `Latitude` is always finite and
//! within [-90, 90], so nothing downstream has to check again.

pub use crate::ids::RideId;
use crate::ids::{KeyId, UserId};
use crate::payment::RideStatus;

/// The four request fields, named as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RideParamsField {
    OriginLat,
    OriginLon,
    TargetLat,
    TargetLon,
}

impl RideParamsField {
    pub const ALL: [RideParamsField; 4] = [
        RideParamsField::OriginLat,
        RideParamsField::OriginLon,
        RideParamsField::TargetLat,
        RideParamsField::TargetLon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RideParamsField::OriginLat => "origin_lat",
            RideParamsField::OriginLon => "origin_lon",
            RideParamsField::TargetLat => "target_lat",
            RideParamsField::TargetLon => "target_lon",
        }
    }

    fn is_latitude(self) -> bool {
        matches!(
            self,
            RideParamsField::OriginLat | RideParamsField::TargetLat
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RideParamsError {
    #[error("{} is required", .0.name())]
    Missing(RideParamsField),
    #[error("{} must be a number", .0.name())]
    NotANumber(RideParamsField),
    #[error("{} must be a finite number", .0.name())]
    NotFinite(RideParamsField),
    #[error("{} must be between {min} and {max}", field.name())]
    OutOfRange {
        field: RideParamsField,
        min: f64,
        max: f64,
    },
}

impl RideParamsError {
    pub fn field(&self) -> RideParamsField {
        match self {
            RideParamsError::Missing(field)
            | RideParamsError::NotANumber(field)
            | RideParamsError::NotFinite(field)
            | RideParamsError::OutOfRange { field, .. } => *field,
        }
    }
}

fn checked(field: RideParamsField, value: f64, limit: f64) -> Result<f64, RideParamsError> {
    if !value.is_finite() {
        return Err(RideParamsError::NotFinite(field));
    }
    if !(-limit..=limit).contains(&value) {
        return Err(RideParamsError::OutOfRange {
            field,
            min: -limit,
            max: limit,
        });
    }
    // -0.0 and 0.0 are one place; normalising keeps fingerprints equal.
    Ok(if value == 0.0 { 0.0 } else { value })
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Latitude(f64);

impl Latitude {
    pub fn new(value: f64) -> Result<Self, RideParamsError> {
        Self::for_field(RideParamsField::OriginLat, value)
    }

    fn for_field(field: RideParamsField, value: f64) -> Result<Self, RideParamsError> {
        checked(field, value, 90.0).map(Self)
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Longitude(f64);

impl Longitude {
    pub fn new(value: f64) -> Result<Self, RideParamsError> {
        Self::for_field(RideParamsField::OriginLon, value)
    }

    fn for_field(field: RideParamsField, value: f64) -> Result<Self, RideParamsError> {
        checked(field, value, 180.0).map(Self)
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinate {
    pub lat: Latitude,
    pub lon: Longitude,
}

/// What a client asks for: where from and where to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RideParams {
    pub origin: Coordinate,
    pub target: Coordinate,
}

impl RideParams {
    /// Parses the four fields from their raw text, in the API's field order,
    /// so the first problem reported is the first field a client would look at.
    /// `lookup` returns the raw value of a field, `None` when it is absent.
    pub fn parse<'a>(
        mut lookup: impl FnMut(RideParamsField) -> Option<&'a str>,
    ) -> Result<Self, RideParamsError> {
        let mut values = [0.0_f64; 4];
        for (slot, field) in values.iter_mut().zip(RideParamsField::ALL) {
            let raw = lookup(field).ok_or(RideParamsError::Missing(field))?;
            *slot = parse_number(field, raw)?;
        }
        Self::from_numbers(values)
    }

    /// Builds parameters from numbers in the API's field order.
    pub fn from_numbers(values: [f64; 4]) -> Result<Self, RideParamsError> {
        let mut lats = [Latitude(0.0); 2];
        let mut lons = [Longitude(0.0); 2];
        for (field, value) in RideParamsField::ALL.into_iter().zip(values) {
            let index = match field {
                RideParamsField::OriginLat | RideParamsField::OriginLon => 0,
                RideParamsField::TargetLat | RideParamsField::TargetLon => 1,
            };
            if field.is_latitude() {
                lats[index] = Latitude::for_field(field, value)?;
            } else {
                lons[index] = Longitude::for_field(field, value)?;
            }
        }
        Ok(Self {
            origin: Coordinate {
                lat: lats[0],
                lon: lons[0],
            },
            target: Coordinate {
                lat: lats[1],
                lon: lons[1],
            },
        })
    }

    pub fn numbers(&self) -> [f64; 4] {
        [
            self.origin.lat.value(),
            self.origin.lon.value(),
            self.target.lat.value(),
            self.target.lon.value(),
        ]
    }
}

/// Decimal text only: Rust's `f64::from_str` also takes "inf", "NaN" and
/// "infinity", which are not numbers a client can mean here.
fn parse_number(field: RideParamsField, raw: &str) -> Result<f64, RideParamsError> {
    let text = raw.trim();
    // Text of these characters with no digit ("." or "e") is refused by
    // `parse` below; this only keeps out the words.
    let looks_decimal = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if !looks_decimal {
        return Err(RideParamsError::NotANumber(field));
    }
    let value: f64 = text
        .parse()
        .map_err(|_| RideParamsError::NotANumber(field))?;
    if !value.is_finite() {
        return Err(RideParamsError::NotFinite(field));
    }
    Ok(value)
}

/// A ride. `idempotency_key_id` becomes `None` when the reaper deletes
/// the key the ride was created under; the ride itself stays.
#[derive(Debug, Clone, PartialEq)]
pub struct Ride {
    pub id: RideId,
    pub user_id: UserId,
    pub idempotency_key_id: Option<KeyId>,
    pub params: RideParams,
    pub stripe_charge_id: Option<String>,
    /// The PaymentIntent that pays for it (PaymentIntents only).
    pub stripe_payment_intent_id: Option<String>,
    pub status: RideStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: [&str; 4]) -> Result<RideParams, RideParamsError> {
        RideParams::parse(|field| {
            let index = RideParamsField::ALL.iter().position(|f| *f == field)?;
            Some(values[index])
        })
    }

    #[test]
    fn the_seed_request_parses() {
        let params = parse(["0.0", "0.0", "0.0", "0.0"]).expect("valid");
        assert_eq!(params.numbers(), [0.0; 4]);
    }

    #[test]
    fn bounds_are_inclusive() {
        let params = parse(["-90", "180", "90", "-180"]).expect("valid");
        assert_eq!(params.numbers(), [-90.0, 180.0, 90.0, -180.0]);
    }

    #[test]
    fn out_of_range_names_the_field() {
        let error = parse(["0", "0", "90.0001", "0"]).unwrap_err();
        assert_eq!(error.field(), RideParamsField::TargetLat);
        assert_eq!(error.to_string(), "target_lat must be between -90 and 90");
        let error = parse(["0", "-180.5", "0", "0"]).unwrap_err();
        assert_eq!(error.to_string(), "origin_lon must be between -180 and 180");
    }

    #[test]
    fn a_ride_id_displays_as_its_number() {
        assert_eq!(RideId(42).to_string(), "42");
    }

    #[test]
    fn words_that_rust_reads_as_floats_are_not_numbers() {
        for raw in [
            "NaN",
            "inf",
            "-infinity",
            "",
            " ",
            "1,5",
            "0x10",
            "abc",
            ".",
            "+e",
            "-",
        ] {
            let error = parse([raw, "0", "0", "0"]).unwrap_err();
            assert_eq!(
                error,
                RideParamsError::NotANumber(RideParamsField::OriginLat),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn overflowing_numbers_are_not_finite() {
        let error = parse(["0", "0", "0", "1e999"]).unwrap_err();
        assert_eq!(
            error,
            RideParamsError::NotFinite(RideParamsField::TargetLon)
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let error = RideParams::parse(|field| match field {
            RideParamsField::TargetLon => None,
            _ => Some("1"),
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "target_lon is required");
    }

    #[test]
    fn from_numbers_rejects_nan_and_names_the_field() {
        let error = RideParams::from_numbers([0.0, f64::NAN, 0.0, 0.0]).unwrap_err();
        assert_eq!(
            error,
            RideParamsError::NotFinite(RideParamsField::OriginLon)
        );
    }

    #[test]
    fn negative_zero_is_zero() {
        let params = RideParams::from_numbers([-0.0, 0.0, 0.0, 0.0]).expect("valid");
        assert!(params.origin.lat.value().is_sign_positive());
    }
}
