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
        let rows: Vec<(i64, bool, bool)> = sqlx::query_as(queries::CLAIM_RECEIPTS)
            .bind(unique.iter().map(|(_, ride)| ride.0).collect::<Vec<_>>())
            .bind(unique.iter().map(|(job, _)| *job).collect::<Vec<_>>())
            .bind(timestamp(now))
            .bind(timestamp(stale_before))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let answers: std::collections::HashMap<i64, ReceiptClaim> = rows
            .into_iter()
            .map(|(ride, claimed, sent)| {
                let answer = match (claimed, sent) {
                    (true, _) => ReceiptClaim::Claimed,
                    (false, true) => ReceiptClaim::AlreadySent,
                    (false, false) => ReceiptClaim::InProgress,
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
                Ok(if answered.insert(*ride_id) {
                    answer
                } else {
                    ReceiptClaim::InProgress
                })
            })
            .collect()
    }

    /// Tried again for about fifteen seconds: the receipts have gone out,
    /// and giving up would let another delivery send them a second time
    /// once the claims go stale. A restarting Postgres is back well within
    /// that.
    async fn mark_receipts_sent(
        &self,
        rides: &[RideId],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let rides: Vec<i64> = rides.iter().map(|ride| ride.0).collect();
        persist(Duration::from_secs(15), || {
            sqlx::query(
                "UPDATE sent_receipts SET sent_at = $2 WHERE ride_id = ANY($1) AND sent_at IS NULL",
            )
            .bind(&rides)
            .bind(timestamp(now))
            .execute(&self.pool)
        })
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn release_receipt(&self, ride_id: RideId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sent_receipts WHERE ride_id = $1 AND sent_at IS NULL")
            .bind(ride_id.0)
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
