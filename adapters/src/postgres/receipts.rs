//! One receipt per ride: claims taken before sending, marked after.

use super::*;

#[async_trait]
impl Receipts for PostgresStore {
    async fn claim_receipts(
        &self,
        claims: &[(i64, RideId)],
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<Vec<ReceiptClaim>, StoreError> {
        // Each ride once (an upsert may not touch one row twice), in ride
        // order, so two workers claiming overlapping batches take the rows'
        // locks in the same order.
        let mut unique: Vec<(i64, RideId)> = Vec::with_capacity(claims.len());
        let mut seen = std::collections::HashSet::new();
        for &(job_id, ride_id) in claims {
            if seen.insert(ride_id) {
                unique.push((job_id, ride_id));
            }
        }
        unique.sort_by_key(|(_, ride_id)| *ride_id);
        let stale_before = now
            .checked_sub(stale_after)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let rows: Vec<(i64, Option<i64>, bool, bool)> = sqlx::query_as(queries::CLAIM_RECEIPTS)
            .bind(unique.iter().map(|(_, ride)| ride.0).collect::<Vec<_>>())
            .bind(unique.iter().map(|(job, _)| *job).collect::<Vec<_>>())
            .bind(timestamp(now))
            .bind(timestamp(stale_before))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let answers: std::collections::HashMap<i64, ReceiptClaim> = rows
            .into_iter()
            .map(|(ride, token, sent, known)| {
                let answer = match (token, sent, known) {
                    (_, _, false) => ReceiptClaim::NoSuchRide,
                    (Some(token), _, true) => ReceiptClaim::Claimed(ClaimToken(token)),
                    (None, true, true) => ReceiptClaim::AlreadySent,
                    (None, false, true) => ReceiptClaim::InProgress,
                };
                (ride, answer)
            })
            .collect();
        let mut answered = std::collections::HashSet::new();
        claims
            .iter()
            .map(|(_, ride_id)| {
                let answer = answers.get(&ride_id.0).copied().ok_or_else(|| {
                    StoreError::Inconsistent(format!("no claim answer for ride {ride_id}"))
                })?;
                // A ride listed again: its first entry holds the claim.
                Ok(
                    if answered.insert(*ride_id) || answer == ReceiptClaim::NoSuchRide {
                        answer
                    } else {
                        ReceiptClaim::InProgress
                    },
                )
            })
            .collect()
    }

    async fn extend_receipt_claims(
        &self,
        claims: &[(RideId, ClaimToken)],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (rides, tokens) = columns(claims);
        sqlx::query(queries::EXTEND_RECEIPT_CLAIMS)
            .bind(&rides)
            .bind(&tokens)
            .bind(timestamp(now))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Tried again for about fifteen seconds: the receipts have gone out,
    /// and giving up would let another delivery send them a second time
    /// once the claims go stale. A restarting Postgres is back well within
    /// that.
    async fn mark_receipts_sent(
        &self,
        claims: &[(RideId, ClaimToken)],
        now: SystemTime,
    ) -> Result<Vec<RideId>, StoreError> {
        let (rides, tokens) = columns(claims);
        let marked: Vec<(i64,)> = persist(Duration::from_secs(15), || {
            sqlx::query_as(queries::MARK_RECEIPTS_SENT)
                .bind(&rides)
                .bind(&tokens)
                .bind(timestamp(now))
                .fetch_all(&self.pool)
        })
        .await
        .map_err(unavailable)?;
        Ok(marked.into_iter().map(|(ride,)| RideId(ride)).collect())
    }

    async fn release_receipt(&self, ride_id: RideId, token: ClaimToken) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM sent_receipts WHERE ride_id = $1 AND claim_token = $2 AND sent_at IS NULL",
        )
        .bind(ride_id.0)
        .bind(token.0)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn receipt_sent(&self, ride_id: RideId) -> Result<bool, StoreError> {
        let (sent,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM sent_receipts WHERE ride_id = $1 AND sent_at IS NOT NULL)",
        )
        .bind(ride_id.0)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(sent)
    }
}

/// Claims as the two arrays the statements unnest: rides, tokens.
fn columns(claims: &[(RideId, ClaimToken)]) -> (Vec<i64>, Vec<i64>) {
    claims.iter().map(|(ride, token)| (ride.0, token.0)).unzip()
}
