//! The Postgres store (sqlx). A request's path is two statements: the key
//! phase (a new key written at `ride_created` with its ride, audit record
//! and charge attempt, or an existing key read) and, after the charge, the
//! booking (the charge on the ride, the 201, the receipt job, the key
//! finished). Each is one atomic statement whose writes are conditioned on
//! the lease (`leased!`: the key's current lock generation, at a recovery
//! point the write expects); a replay is one read that takes no lock and
//! commits nothing. The rare paths (resuming a key, a key left at
//! `started`) are short READ COMMITTED transactions that lock the key's row.
//! Requests for one key queue on that row; requests for different keys
//! never touch the same rows, so nothing aborts with a serialization
//! failure. No transaction is open while the gateway is called.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use application::ports::{
    AwaitingPayment, Backlog, CancelRecording, ClaimToken, Dashboard, FailedRefund, Finish,
    KeyCounts, KeyPhase, KeyRequest, KeyScans, KeyViews, Keys, Lease, Outbox, PendingRefund, Probe,
    ReceiptClaim, Receipts, RecentRide, RidePayments, SavedCustomer, StoreError, Users,
};
use async_trait::async_trait;
use domain::{
    ApiKeyHash, CancelDecision, CancelPolicy, Cancellation, CompleterPolicy, KeyAction,
    KeyDecision, KeyId, KeyRecord, LockPolicy, PhaseWrite, ReceiptFor, ReceiptKind, RefundRecord,
    ReviewChecks, ReviewPolicy, Ride, RideId, StagedJob, User, UserId,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use time::OffsetDateTime;

use crate::connect::ConnectError;
use rows::{BegunKeyRow, CancellationRow, JobRow, KeyRow, RecentRideRow, RideRow, UserRow};

/// Runs an idempotent statement again while it fails, with backoff, for
/// about `budget`. For the writes that follow an effect outside the store,
/// where giving up leaves a key to its lock timeout or repeats the effect.
async fn persist<T, F, Fut>(budget: Duration, mut statement: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match statement().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() + pause > budget => return Err(error),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(Duration::from_secs(2));
            }
        }
    }
}

fn timestamp(at: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(at)
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(anyhow::Error::new(error))
}

/// Maps a unique violation on `constraint` to `to`; anything else is the
/// store being unavailable.
fn on_constraint(
    error: sqlx::Error,
    constraint: &str,
    to: impl FnOnce() -> StoreError,
) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("23505")
        && db.constraint() == Some(constraint)
    {
        return to();
    }
    unavailable(error)
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// The columns of a `KeyRow` but its ride's id, of the key table aliased
/// `$t`.
macro_rules! key_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".id, ",
            $t,
            ".created_at, ",
            $t,
            ".idempotency_key, ",
            $t,
            ".last_run_at, ",
            $t,
            ".locked_at, ",
            $t,
            ".lock_generation, ",
            $t,
            ".request_fingerprint, ",
            $t,
            ".origin_lat, ",
            $t,
            ".origin_lon, ",
            $t,
            ".target_lat, ",
            $t,
            ".target_lon, ",
            $t,
            ".request_ip, ",
            $t,
            ".request_id, ",
            $t,
            ".response_code, ",
            $t,
            ".response_body, ",
            $t,
            ".recovery_point, ",
            $t,
            ".downstream_key, ",
            $t,
            ".charge_attempted_at, ",
            $t,
            ".last_call_at, ",
            $t,
            ".action, ",
            $t,
            ".cancels_ride_id, ",
            $t,
            ".cancel_reason, ",
            $t,
            ".user_id"
        )
    };
}

/// The key columns and its ride's id, for `KeyRow`; `$where` completes it.
macro_rules! select_key {
    ($where:literal) => {
        concat!(
            "SELECT ",
            key_columns!("k"),
            ", coalesce(k.cancels_ride_id, r.id) AS ride_id ",
            "FROM idempotency_keys k LEFT JOIN rides r ON r.idempotency_key_id = k.id ",
            $where
        )
    };
}

/// The lease rule of `KeyRecord::check_lease` as a condition on the key
/// row: $1 the key's id, $2 the lease's generation, $3 the recovery points
/// the write expects (`PhaseWrite::expects`). Every phase write is
/// conditioned on it.
macro_rules! leased {
    () => {
        "id = $1 AND lock_generation = $2 AND locked_at IS NOT NULL \
         AND recovery_point = ANY($3::text[])"
    };
}

mod connect;
mod keys;
mod locks;
mod outbox;
mod payments;
/// The statements of a request and of the background processes, public so
/// the plan test can EXPLAIN and the benchmark replay exactly what runs.
pub mod queries;
mod receipts;
mod rows;
mod scans;
mod users;
mod views;

pub use connect::{PoolSettings, Replication, SCHEMA, connect, migrate, probe, replication};
