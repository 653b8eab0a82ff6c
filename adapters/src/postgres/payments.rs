//! Rides settled after their request answered: a webhook's or the sync
//! pass's update applied in one short transaction that locks the ride's
//! row, so two deliveries of news about one PaymentIntent queue on it and
//! the second sees what the first did.

use domain::{
    PaymentApplied, PaymentIntentState, PaymentUpdate, ReceiptJob, RefundUpdate, RideStatus,
};

use super::*;

#[async_trait]
impl RidePayments for PostgresStore {
    async fn apply_payment(
        &self,
        update: &PaymentUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let ride: Option<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, user_id, status, stripe_charge_id FROM rides \
             WHERE stripe_payment_intent_id = $1 FOR UPDATE",
        )
        .bind(&update.payment_intent_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((ride_id, user_id, status, charge_id)) = ride else {
            return Ok(PaymentApplied::UnknownIntent);
        };
        let status = RideStatus::parse(&status).ok_or_else(|| {
            StoreError::Inconsistent(format!("ride {ride_id} has status {status:?}"))
        })?;
        if !first_time(&mut tx, update.event_id.as_deref(), &update.event_type, now).await? {
            return Ok(PaymentApplied::Duplicate);
        }
        let Some(next) = status.after(&update.state) else {
            if update.event_id.is_none() && status.awaits_payment() {
                // Checked and still waiting: next check a sync period later.
                sqlx::query("UPDATE rides SET status_changed_at = $2 WHERE id = $1")
                    .bind(ride_id)
                    .bind(timestamp(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            return Ok(PaymentApplied::Unchanged { status });
        };
        let new_charge = match (&update.state, &charge_id) {
            (
                PaymentIntentState::Succeeded {
                    charge_id: Some(id),
                },
                None,
            ) => Some(id.clone()),
            _ => None,
        };
        sqlx::query(
            "UPDATE rides SET status = $2, status_changed_at = $3, \
             stripe_charge_id = coalesce(stripe_charge_id, $4) WHERE id = $1",
        )
        .bind(ride_id)
        .bind(next.as_str())
        .bind(timestamp(now))
        .bind(&new_charge)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            on_constraint(e, "rides_stripe_charge_id_unique", || {
                StoreError::Inconsistent(format!(
                    "charge {new_charge:?} is already on another ride"
                ))
            })
        })?;
        if next == RideStatus::Booked {
            let job = ReceiptJob::for_ride(RideId(ride_id), UserId(user_id));
            sqlx::query(
                "INSERT INTO staged_jobs (job_name, job_args, created_at) VALUES ($1, \
                 jsonb_build_object('amount', $2::bigint, 'currency', $3::text, \
                 'user_id', $4::bigint, 'ride_id', $5::bigint), $6)",
            )
            .bind(ReceiptJob::NAME)
            .bind(job.amount_cents)
            .bind(&job.currency)
            .bind(job.user_id.0)
            .bind(job.ride_id.0)
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(PaymentApplied::Moved {
            from: status,
            to: next,
        })
    }

    async fn apply_refund(
        &self,
        update: &RefundUpdate,
        now: SystemTime,
    ) -> Result<PaymentApplied, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let ride: Option<(i64, String)> = sqlx::query_as(
            "SELECT r.id, r.status FROM ride_cancellations c JOIN rides r ON r.id = c.ride_id \
             WHERE c.stripe_refund_id = $1 FOR UPDATE OF r, c",
        )
        .bind(&update.refund_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((ride_id, status)) = ride else {
            return Ok(PaymentApplied::UnknownIntent);
        };
        let status = RideStatus::parse(&status).ok_or_else(|| {
            StoreError::Inconsistent(format!("ride {ride_id} has status {status:?}"))
        })?;
        if !first_time(&mut tx, update.event_id.as_deref(), &update.event_type, now).await? {
            return Ok(PaymentApplied::Duplicate);
        }
        sqlx::query(
            "UPDATE ride_cancellations SET refund_status = $2, refund_checked_at = $3 \
             WHERE ride_id = $1",
        )
        .bind(ride_id)
        .bind(update.status.as_str())
        .bind(timestamp(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let next = status
            .after_refund_failed()
            .filter(|_| update.status.is_failure());
        if let Some(next) = next {
            sqlx::query("UPDATE rides SET status = $2, status_changed_at = $3 WHERE id = $1")
                .bind(ride_id)
                .bind(next.as_str())
                .bind(timestamp(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(match next {
            Some(to) => PaymentApplied::Moved { from: status, to },
            None => PaymentApplied::Unchanged { status },
        })
    }

    async fn refunds_pending(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingRefund>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(queries::REFUNDS_PENDING)
            .bind(timestamp(stale_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(ride, refund_id)| PendingRefund {
                ride_id: RideId(ride),
                refund_id,
            })
            .collect())
    }

    async fn rides_awaiting_payment(
        &self,
        stale_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<AwaitingPayment>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(queries::RIDES_AWAITING_PAYMENT)
            .bind(timestamp(stale_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|(id, payment_intent_id, status)| {
                Ok(AwaitingPayment {
                    ride_id: RideId(id),
                    payment_intent_id,
                    status: RideStatus::parse(&status).ok_or_else(|| {
                        StoreError::Inconsistent(format!("ride {id} has status {status:?}"))
                    })?,
                })
            })
            .collect()
    }
}

/// Records a webhook's event id in the transaction that applies it:
/// whether this is its first delivery (`true` for a sync pass's update,
/// which has no id).
async fn first_time(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event_id: Option<&str>,
    event_type: &str,
    now: SystemTime,
) -> Result<bool, StoreError> {
    let Some(event_id) = event_id else {
        return Ok(true);
    };
    let recorded = sqlx::query(
        "INSERT INTO stripe_events (id, type, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(timestamp(now))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(recorded.rows_affected() > 0)
}
