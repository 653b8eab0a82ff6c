//! The request's phases: the key phase, the ride, the charge attempt, the
//! finish (booking or refusal) and the unlock, each one statement or one
//! short transaction fenced by the lease.

use domain::RecoveryPoint;

use super::*;

#[async_trait]
impl Keys for PostgresStore {
    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let row: Option<BegunKeyRow> = match &request.action {
            KeyAction::BookRide(params) => {
                let [origin_lat, origin_lon, target_lat, target_lon] = params.numbers();
                sqlx::query_as(queries::BEGIN_REQUEST)
                    .bind(timestamp(now))
                    .bind(request.key.as_str())
                    .bind(request.fingerprint.as_str())
                    .bind(origin_lat)
                    .bind(origin_lon)
                    .bind(target_lat)
                    .bind(target_lon)
                    .bind(request.request_ip.as_deref())
                    .bind(request.user_id.0)
                    .bind(request.charges_now)
                    .bind(request.request_id.as_deref())
                    .fetch_optional(&self.pool)
                    .await
            }
            KeyAction::CancelRide { ride_id, reason } => {
                sqlx::query_as(queries::BEGIN_CANCEL)
                    .bind(timestamp(now))
                    .bind(request.key.as_str())
                    .bind(request.fingerprint.as_str())
                    .bind(request.request_ip.as_deref())
                    .bind(request.request_id.as_deref())
                    .bind(request.user_id.0)
                    .bind(ride_id.0)
                    .bind(reason.as_deref())
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(unavailable)?;
        let Some(row) = row else {
            // Another first request with this key won the insert.
            return self.begin_existing(request, now, policy).await;
        };
        let record = KeyRecord::try_from(row.key)?;
        if row.inserted {
            return Ok(KeyPhase::Locked(record));
        }
        let decision = KeyDecision::for_existing(&record, &request.fingerprint, now, policy);
        match KeyPhase::unless_resumed(decision) {
            // A replay, a mismatch or a 409: read, nothing locked or written.
            Some(phase) => Ok(phase),
            None => self.begin_existing(request, now, policy).await,
        }
    }

    async fn lock_for_completion(
        &self,
        key_id: KeyId,
        now: SystemTime,
        policy: CompleterPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.lock_if(key_id, now, |record| policy.is_eligible(record, now))
            .await
    }

    async fn lock_for_review(
        &self,
        key_id: KeyId,
        now: SystemTime,
        review: ReviewPolicy,
        lock: LockPolicy,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.lock_if(key_id, now, |record| {
            review.can_be_resolved(record, now, lock)
        })
        .await
    }

    async fn create_ride(&self, lease: Lease, now: SystemTime) -> Result<KeyRecord, StoreError> {
        let mut tx = self.begin().await?;
        let record = Self::lock_leased(&mut tx, lease, PhaseWrite::CreateRide).await?;
        let KeyAction::BookRide(params) = &record.action else {
            return Err(StoreError::Inconsistent(format!(
                "key {} books no ride",
                record.id
            )));
        };
        let [origin_lat, origin_lon, target_lat, target_lon] = params.numbers();
        let (ride_id,): (i64,) = sqlx::query_as(
            "INSERT INTO rides (created_at, idempotency_key_id, origin_lat, origin_lon, \
             target_lat, target_lon, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(timestamp(now))
        .bind(record.id.0)
        .bind(origin_lat)
        .bind(origin_lon)
        .bind(target_lat)
        .bind(target_lon)
        .bind(record.user_id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            on_constraint(e, "rides_idempotency_key_unique", || {
                StoreError::LostLock(format!("key {} already has a ride", lease.key_id))
            })
        })?;
        sqlx::query(
            "INSERT INTO audit_records (action, created_at, data, origin_ip, resource_id, \
             resource_type, user_id) VALUES ('ride.created', $1, \
             jsonb_build_object('origin_lat', $2::float8, 'origin_lon', $3::float8, \
             'target_lat', $4::float8, 'target_lon', $5::float8), $6, $7, 'ride', $8)",
        )
        .bind(timestamp(now))
        .bind(origin_lat)
        .bind(origin_lon)
        .bind(target_lat)
        .bind(target_lon)
        .bind(record.request_ip.as_deref())
        .bind(ride_id)
        .bind(record.user_id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let moved = Self::move_key(
            &mut tx,
            record.id,
            RecoveryPoint::RideCreated,
            RideId(ride_id),
        )
        .await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(moved)
    }

    async fn note_charge_attempt(&self, lease: Lease, now: SystemTime) -> Result<(), StoreError> {
        let write = PhaseWrite::NoteChargeAttempt;
        let updated = sqlx::query(queries::NOTE_CHARGE_ATTEMPT)
            .bind(lease.key_id.0)
            .bind(lease.generation)
            .bind(Self::expected(write))
            .bind(timestamp(now))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if updated.rows_affected() == 0 {
            return Err(self.lost_lock(lease, write).await);
        }
        Ok(())
    }

    async fn record_cancellation(
        &self,
        lease: Lease,
        policy: CancelPolicy,
        now: SystemTime,
    ) -> Result<CancelRecording, StoreError> {
        let mut tx = self.begin().await?;
        let record = Self::lock_leased(&mut tx, lease, PhaseWrite::RecordCancel).await?;
        let KeyAction::CancelRide { ride_id, reason } = &record.action else {
            return Err(StoreError::Inconsistent(format!(
                "key {} cancels no ride",
                record.id
            )));
        };
        // The ride's row lock: a webhook settling it, or another key
        // cancelling it, waits for this decision.
        let ride: Option<(String, OffsetDateTime, bool)> = sqlx::query_as(
            "SELECT r.status, coalesce(r.status_changed_at, r.created_at), \
             EXISTS (SELECT 1 FROM ride_cancellations c WHERE c.ride_id = r.id) \
             FROM rides r WHERE r.id = $1 AND r.user_id = $2 FOR UPDATE",
        )
        .bind(ride_id.0)
        .bind(record.user_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((status, changed_at, cancelled)) = ride else {
            return Err(StoreError::Inconsistent(format!(
                "key {}: no ride {ride_id} of its user",
                record.id
            )));
        };
        let status = domain::RideStatus::parse(&status).ok_or_else(|| {
            StoreError::Inconsistent(format!("ride {ride_id} has status {status:?}"))
        })?;
        let decision = if cancelled {
            CancelDecision::AlreadyCancelled
        } else {
            policy.decide(status, SystemTime::from(changed_at), record.created_at)
        };
        let CancelDecision::Cancel(giveback) = decision else {
            return Ok(CancelRecording::Refused(decision));
        };
        let inserted = sqlx::query(
            "INSERT INTO ride_cancellations (ride_id, idempotency_key_id, reason, giveback, \
             refund_amount_cents, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (ride_id) DO NOTHING",
        )
        .bind(ride_id.0)
        .bind(record.id.0)
        .bind(reason.as_deref())
        .bind(giveback.method())
        .bind(giveback.refund_cents())
        .bind(timestamp(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if inserted.rows_affected() == 0 {
            return Ok(CancelRecording::Refused(CancelDecision::AlreadyCancelled));
        }
        sqlx::query("UPDATE rides SET status = 'cancelling', status_changed_at = $2 WHERE id = $1")
            .bind(ride_id.0)
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO audit_records (action, created_at, data, origin_ip, resource_id, \
             resource_type, user_id) VALUES ('ride.cancelled', $1, \
             jsonb_build_object('reason', $2::text, 'giveback', $3::text, \
             'refund_amount_cents', $4::bigint), $5, $6, 'ride', $7)",
        )
        .bind(timestamp(now))
        .bind(reason.as_deref())
        .bind(giveback.method())
        .bind(giveback.refund_cents())
        .bind(record.request_ip.as_deref())
        .bind(ride_id.0)
        .bind(record.user_id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let moved =
            Self::move_key(&mut tx, record.id, RecoveryPoint::CancelRecorded, *ride_id).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(CancelRecording::Recorded {
            record: moved,
            cancellation: Cancellation {
                ride_id: *ride_id,
                reason: reason.clone(),
                giveback,
                refund: None,
            },
        })
    }

    async fn find_cancellation(&self, ride_id: RideId) -> Result<Option<Cancellation>, StoreError> {
        let row: Option<CancellationRow> = sqlx::query_as(
            "SELECT ride_id, reason, giveback, refund_amount_cents, stripe_refund_id, \
             refund_status FROM ride_cancellations WHERE ride_id = $1",
        )
        .bind(ride_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(Cancellation::try_from).transpose()
    }

    async fn record_refund(
        &self,
        lease: Lease,
        refund: Option<RefundRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let write = PhaseWrite::RecordRefund;
        let (leased, moved): (bool, bool) = sqlx::query_as(queries::RECORD_REFUND)
            .bind(lease.key_id.0)
            .bind(lease.generation)
            .bind(Self::expected(write))
            .bind(refund.as_ref().map(|r| r.refund_id.as_str()))
            .bind(refund.as_ref().map(|r| r.status.as_str()))
            .bind(timestamp(now))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                on_constraint(e, "ride_cancellations_refund_unique", || {
                    StoreError::Inconsistent(format!(
                        "refund {:?} is already on another cancellation",
                        refund.as_ref().map(|r| &r.refund_id)
                    ))
                })
            })?;
        match (leased, moved) {
            (true, true) => Ok(()),
            (true, false) => Err(StoreError::Inconsistent(format!(
                "key {}: its cancellation is missing or already has a refund",
                lease.key_id
            ))),
            (false, _) => Err(self.lost_lock(lease, write).await),
        }
    }

    async fn finish(
        &self,
        lease: Lease,
        finish: Finish,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let write = finish.write();
        match finish {
            Finish::Booked {
                charge_id,
                payment_intent_id,
                response,
                job,
            } => {
                let (leased, booked): (bool, bool) = sqlx::query_as(queries::BOOK)
                    .bind(lease.key_id.0)
                    .bind(lease.generation)
                    .bind(Self::expected(write))
                    .bind(&charge_id)
                    .bind(job.ride_id.0)
                    .bind(i32::from(response.status))
                    .bind(&response.body)
                    .bind(domain::charge::ReceiptJob::NAME)
                    .bind(job.amount_cents)
                    .bind(&job.currency)
                    .bind(job.user_id.0)
                    .bind(timestamp(now))
                    .bind(&payment_intent_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| {
                        on_constraint(e, "rides_stripe_charge_id_unique", || {
                            StoreError::Inconsistent(format!(
                                "charge {charge_id} is already on another ride"
                            ))
                        })
                    })?;
                match (leased, booked) {
                    (true, true) => Ok(()),
                    (true, false) => Err(StoreError::Inconsistent(format!(
                        "key {}: ride {} is not its ride or carries another charge than {charge_id}",
                        lease.key_id, job.ride_id
                    ))),
                    (false, _) => Err(self.lost_lock(lease, write).await),
                }
            }
            // A cancel refused at `started` changes no ride: REFUSE fails
            // only a ride the key itself created.
            Finish::Refused { response } | Finish::CancelRefused { response } => {
                self.finish_with_response(queries::REFUSE, lease, write, &response, now)
                    .await
            }
            Finish::AwaitingPayment {
                payment_intent_id,
                status,
                response,
            } => {
                let leased: bool = sqlx::query_scalar(queries::AWAIT_PAYMENT)
                    .bind(lease.key_id.0)
                    .bind(lease.generation)
                    .bind(Self::expected(write))
                    .bind(i32::from(response.status))
                    .bind(&response.body)
                    .bind(timestamp(now))
                    .bind(&payment_intent_id)
                    .bind(status.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| {
                        on_constraint(e, "rides_stripe_payment_intent_id_unique", || {
                            StoreError::Inconsistent(format!(
                                "PaymentIntent {payment_intent_id} is already on another ride"
                            ))
                        })
                    })?;
                if !leased {
                    return Err(self.lost_lock(lease, write).await);
                }
                Ok(())
            }
            Finish::RefundFailed { response } => {
                self.finish_with_response(queries::FAIL_REFUND, lease, write, &response, now)
                    .await
            }
            Finish::Cancelled { response, job } => {
                let (leased, finished): (bool, bool) = sqlx::query_as(queries::FINISH_CANCEL)
                    .bind(lease.key_id.0)
                    .bind(lease.generation)
                    .bind(Self::expected(write))
                    .bind(i32::from(response.status))
                    .bind(&response.body)
                    .bind(timestamp(now))
                    .bind(job.kind.job_name())
                    .bind(job.amount_cents)
                    .bind(&job.currency)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                match (leased, finished) {
                    (true, true) => Ok(()),
                    (true, false) => Err(StoreError::Inconsistent(format!(
                        "key {}: ride {} is not being cancelled",
                        lease.key_id, job.ride_id
                    ))),
                    (false, _) => Err(self.lost_lock(lease, write).await),
                }
            }
        }
    }

    /// Tried again for about two seconds: an unlock comes after an error,
    /// often Postgres going away for a moment (a restart), and a key left
    /// locked would answer 409 until the lock timeout.
    async fn unlock(&self, lease: Lease) -> Result<(), StoreError> {
        persist(Duration::from_secs(2), || {
            sqlx::query(
                "UPDATE idempotency_keys SET locked_at = NULL WHERE id = $1 AND lock_generation = $2",
            )
            .bind(lease.key_id.0)
            .bind(lease.generation)
            .execute(&self.pool)
        })
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn find_ride(&self, id: RideId) -> Result<Option<Ride>, StoreError> {
        let row: Option<RideRow> = sqlx::query_as(
            "SELECT id, idempotency_key_id, origin_lat, origin_lon, target_lat, target_lon, \
             stripe_charge_id, stripe_payment_intent_id, status, user_id FROM rides WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(Ride::try_from).transpose()
    }
}

impl PostgresStore {
    /// Moves a key whose row `tx` holds locked to `point` and reads it back
    /// as it now is, with its ride.
    async fn move_key(
        tx: &mut Transaction<'static, Postgres>,
        key_id: KeyId,
        point: RecoveryPoint,
        ride_id: RideId,
    ) -> Result<KeyRecord, StoreError> {
        let row: KeyRow = sqlx::query_as(concat!(
            "WITH moved AS (UPDATE idempotency_keys SET recovery_point = $2 \
             WHERE id = $1 RETURNING *) SELECT ",
            key_columns!("m"),
            ", $3::bigint AS ride_id FROM moved m"
        ))
        .bind(key_id.0)
        .bind(point.as_str())
        .bind(ride_id.0)
        .fetch_one(&mut **tx)
        .await
        .map_err(unavailable)?;
        KeyRecord::try_from(row)
    }

    /// Finishes a key with a stored answer and nothing more to bind: one
    /// of the statements that take $1 key, $2 generation, $3 expected
    /// recovery points, $4 status, $5 body, $6 now, and return whether the
    /// lease held.
    async fn finish_with_response(
        &self,
        statement: &'static str,
        lease: Lease,
        write: PhaseWrite,
        response: &domain::StoredResponse,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let leased: bool = sqlx::query_scalar(statement)
            .bind(lease.key_id.0)
            .bind(lease.generation)
            .bind(Self::expected(write))
            .bind(i32::from(response.status))
            .bind(&response.body)
            .bind(timestamp(now))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if !leased {
            return Err(self.lost_lock(lease, write).await);
        }
        Ok(())
    }
}
