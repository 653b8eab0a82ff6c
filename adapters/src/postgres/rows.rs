//! Row structs: what the queries return, converted into domain types. A row
//! that does not convert is data the domain's rules forbid (written by hand,
//! or by a bug), reported as `StoreError::Inconsistent`.

use std::time::SystemTime;

use application::ports::{RecentRide, StoreError};
use domain::charge::ReceiptJob;
use domain::{
    Cancellation, Giveback, IdempotencyKey, KeyAction, KeyId, KeyProgress, KeyRecord, ReceiptKind,
    RecoveryPoint, RefundRecord, RefundStatus, RequestFingerprint, Ride, RideId, RideParams,
    RideStatus, StagedJob, StoredResponse, User, UserId,
};
use time::OffsetDateTime;

fn inconsistent(what: impl std::fmt::Display) -> StoreError {
    StoreError::Inconsistent(what.to_string())
}

fn system_time(at: OffsetDateTime) -> SystemTime {
    SystemTime::from(at)
}

/// The four coordinate columns of a key or ride row, parsed.
fn params(what: &str, id: i64, numbers: [f64; 4]) -> Result<RideParams, StoreError> {
    RideParams::from_numbers(numbers).map_err(|e| inconsistent(format!("{what} {id}: {e}")))
}

#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    id: i64,
    email: String,
    stripe_customer_id: String,
    stripe_payment_method_id: Option<String>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: UserId(row.id),
            email: row.email,
            stripe_customer_id: row.stripe_customer_id,
            stripe_payment_method_id: row.stripe_payment_method_id,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    id: i64,
    created_at: OffsetDateTime,
    idempotency_key: String,
    last_run_at: OffsetDateTime,
    locked_at: Option<OffsetDateTime>,
    lock_generation: i64,
    request_fingerprint: String,
    origin_lat: Option<f64>,
    origin_lon: Option<f64>,
    target_lat: Option<f64>,
    target_lon: Option<f64>,
    request_ip: Option<String>,
    request_id: Option<String>,
    response_code: Option<i32>,
    response_body: Option<String>,
    recovery_point: String,
    downstream_key: String,
    charge_attempted_at: Option<OffsetDateTime>,
    last_call_at: Option<OffsetDateTime>,
    action: String,
    cancels_ride_id: Option<i64>,
    cancel_reason: Option<String>,
    user_id: i64,
    ride_id: Option<i64>,
}

/// A key row with whether this statement inserted it (the key phase).
#[derive(Debug, sqlx::FromRow)]
pub struct BegunKeyRow {
    pub inserted: bool,
    #[sqlx(flatten)]
    pub key: KeyRow,
}

impl KeyRow {
    /// The progress columns as one value: a row whose recovery point lacks
    /// what it implies (a ride, a response) breaks the domain's rules.
    fn progress(&self) -> Result<KeyProgress, StoreError> {
        let id = self.id;
        let point = RecoveryPoint::parse(&self.recovery_point).ok_or_else(|| {
            inconsistent(format!("key {id}: recovery point {}", self.recovery_point))
        })?;
        let ride_id = || {
            self.ride_id
                .map(RideId)
                .ok_or_else(|| inconsistent(format!("key {id} is at {point} with no ride")))
        };
        Ok(match point {
            RecoveryPoint::Started => KeyProgress::Started,
            RecoveryPoint::RideCreated => KeyProgress::RideCreated {
                ride_id: ride_id()?,
                charge_attempted_at: self.charge_attempted_at.map(system_time),
                last_call_at: self.last_call_at.map(system_time),
            },
            RecoveryPoint::ChargeCreated => KeyProgress::ChargeCreated {
                ride_id: ride_id()?,
            },
            RecoveryPoint::CancelRecorded => KeyProgress::CancelRecorded {
                ride_id: ride_id()?,
                call_attempted_at: self.charge_attempted_at.map(system_time),
                last_call_at: self.last_call_at.map(system_time),
            },
            RecoveryPoint::RefundCreated => KeyProgress::RefundCreated {
                ride_id: ride_id()?,
            },
            RecoveryPoint::Finished => {
                let (Some(code), Some(body)) = (self.response_code, &self.response_body) else {
                    return Err(inconsistent(format!(
                        "key {id} is finished with no response"
                    )));
                };
                KeyProgress::Finished {
                    ride_id: ride_id()?,
                    response: StoredResponse {
                        status: u16::try_from(code)
                            .map_err(|_| inconsistent(format!("key {id}: status {code}")))?,
                        body: body.clone(),
                    },
                }
            }
        })
    }
}

impl KeyRow {
    /// What the key asks: a booking's coordinates or the ride a cancel
    /// names (the table's check keeps the two apart).
    fn action(&self) -> Result<KeyAction, StoreError> {
        let id = self.id;
        match (self.action.as_str(), self.cancels_ride_id) {
            ("book_ride", None) => {
                let (Some(a), Some(b), Some(c), Some(d)) = (
                    self.origin_lat,
                    self.origin_lon,
                    self.target_lat,
                    self.target_lon,
                ) else {
                    return Err(inconsistent(format!(
                        "key {id}: a booking without coordinates"
                    )));
                };
                Ok(KeyAction::BookRide(params("key", id, [a, b, c, d])?))
            }
            ("cancel_ride", Some(ride_id)) => Ok(KeyAction::CancelRide {
                ride_id: RideId(ride_id),
                reason: self.cancel_reason.clone(),
            }),
            (action, ride) => Err(inconsistent(format!(
                "key {id}: action {action:?} with cancelled ride {ride:?}"
            ))),
        }
    }
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        let progress = row.progress()?;
        let action = row.action()?;
        Ok(KeyRecord {
            id: KeyId(row.id),
            user_id: UserId(row.user_id),
            key: IdempotencyKey::parse(&row.idempotency_key)
                .map_err(|e| inconsistent(format!("key {}: {e}", row.id)))?,
            fingerprint: RequestFingerprint::from_stored(row.request_fingerprint),
            action,
            request_ip: row.request_ip,
            request_id: row.request_id,
            progress,
            locked_at: row.locked_at.map(system_time),
            lock_generation: row.lock_generation,
            created_at: system_time(row.created_at),
            last_run_at: system_time(row.last_run_at),
            downstream_key: row.downstream_key,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct RideRow {
    id: i64,
    idempotency_key_id: Option<i64>,
    origin_lat: f64,
    origin_lon: f64,
    target_lat: f64,
    target_lon: f64,
    stripe_charge_id: Option<String>,
    stripe_payment_intent_id: Option<String>,
    status: String,
    user_id: i64,
}

/// A ride with its key's request id, stored status and creation time.
#[derive(sqlx::FromRow)]
pub struct RecentRideRow {
    #[sqlx(flatten)]
    ride: RideRow,
    request_id: Option<String>,
    response_code: Option<i32>,
    requested_at: Option<OffsetDateTime>,
}

impl TryFrom<RecentRideRow> for RecentRide {
    type Error = StoreError;

    fn try_from(row: RecentRideRow) -> Result<Self, StoreError> {
        Ok(RecentRide {
            ride: Ride::try_from(row.ride)?,
            request_id: row.request_id,
            status: row.response_code.and_then(|code| u16::try_from(code).ok()),
            requested_at: row.requested_at.map(system_time),
        })
    }
}

impl TryFrom<RideRow> for Ride {
    type Error = StoreError;

    fn try_from(row: RideRow) -> Result<Self, StoreError> {
        Ok(Ride {
            id: RideId(row.id),
            user_id: UserId(row.user_id),
            idempotency_key_id: row.idempotency_key_id.map(KeyId),
            params: params(
                "ride",
                row.id,
                [
                    row.origin_lat,
                    row.origin_lon,
                    row.target_lat,
                    row.target_lon,
                ],
            )?,
            stripe_charge_id: row.stripe_charge_id,
            stripe_payment_intent_id: row.stripe_payment_intent_id,
            status: RideStatus::parse(&row.status).ok_or_else(|| {
                StoreError::Inconsistent(format!("ride {} has status {:?}", row.id, row.status))
            })?,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    id: i64,
    job_name: String,
    amount: Option<i64>,
    currency: Option<String>,
    user_id: Option<i64>,
    ride_id: Option<i64>,
}

impl JobRow {
    pub fn id(&self) -> i64 {
        self.id
    }
}

impl TryFrom<JobRow> for StagedJob {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let kind = ReceiptKind::of_job_name(&row.job_name).ok_or_else(|| {
            inconsistent(format!(
                "staged job {}: unknown job {}",
                row.id, row.job_name
            ))
        })?;
        let missing = || inconsistent(format!("staged job {}: incomplete arguments", row.id));
        Ok(StagedJob {
            id: row.id,
            job: ReceiptJob {
                ride_id: RideId(row.ride_id.ok_or_else(missing)?),
                user_id: UserId(row.user_id.ok_or_else(missing)?),
                amount_cents: row.amount.ok_or_else(missing)?,
                currency: row.currency.ok_or_else(missing)?,
                kind,
            },
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct CancellationRow {
    ride_id: i64,
    reason: Option<String>,
    giveback: String,
    refund_amount_cents: i64,
    stripe_refund_id: Option<String>,
    refund_status: Option<String>,
}

impl TryFrom<CancellationRow> for Cancellation {
    type Error = StoreError;

    fn try_from(row: CancellationRow) -> Result<Self, StoreError> {
        let ride = row.ride_id;
        let giveback =
            Giveback::from_stored(&row.giveback, row.refund_amount_cents).ok_or_else(|| {
                inconsistent(format!(
                    "ride {ride}: cancellation {:?} of {} cents",
                    row.giveback, row.refund_amount_cents
                ))
            })?;
        let refund = match (row.stripe_refund_id, row.refund_status) {
            (Some(refund_id), Some(status)) => Some(RefundRecord {
                refund_id,
                status: RefundStatus::parse(&status).ok_or_else(|| {
                    inconsistent(format!("ride {ride}: refund status {status:?}"))
                })?,
            }),
            (None, _) => None,
            (Some(id), None) => {
                return Err(inconsistent(format!(
                    "ride {ride}: refund {id} without a status"
                )));
            }
        };
        Ok(Cancellation {
            ride_id: RideId(ride),
            reason: row.reason,
            giveback,
            refund,
        })
    }
}
