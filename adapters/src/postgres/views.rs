//! The operator's reads: one key, the keys awaiting review, the gauges'
//! counts, and the console's dashboard (recent rides, answers by status).

use super::*;

#[async_trait]
impl KeyViews for PostgresStore {
    async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(queries::FIND_KEY)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn keys_for_review(
        &self,
        attempted_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(queries::KEYS_FOR_REVIEW)
            .bind(timestamp(attempted_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter().map(KeyRecord::try_from).collect()
    }

    async fn unfinished_counts(
        &self,
        attempted_before: SystemTime,
    ) -> Result<KeyCounts, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(queries::UNFINISHED_COUNTS)
            .bind(timestamp(attempted_before))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut counts = KeyCounts::default();
        for (point, keys, review) in rows {
            let point = domain::RecoveryPoint::parse(&point).ok_or_else(|| {
                StoreError::Inconsistent(format!("unknown recovery point {point}"))
            })?;
            let count = |n: i64| u64::try_from(n).unwrap_or_default();
            counts.by_recovery_point.push((point, count(keys)));
            counts.awaiting_review += count(review);
        }
        counts.by_recovery_point.sort();
        Ok(counts)
    }
}

#[async_trait]
impl Dashboard for PostgresStore {
    async fn failed_refunds(&self, limit: usize) -> Result<Vec<FailedRefund>, StoreError> {
        let rows: Vec<(i64, i64, i64, Option<String>)> = sqlx::query_as(queries::FAILED_REFUNDS)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(ride, user, amount_cents, refund_id)| FailedRefund {
                ride_id: RideId(ride),
                user_id: UserId(user),
                amount_cents,
                refund_id,
            })
            .collect())
    }

    async fn recent_rides(&self, limit: usize) -> Result<Vec<RecentRide>, StoreError> {
        let rows: Vec<RecentRideRow> = sqlx::query_as(queries::RECENT_RIDES)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter().map(RecentRide::try_from).collect()
    }

    async fn answers_since(
        &self,
        since: SystemTime,
    ) -> Result<Vec<(Option<u16>, u64)>, StoreError> {
        let rows: Vec<(Option<i32>, i64)> = sqlx::query_as(queries::ANSWERS_SINCE)
            .bind(timestamp(since))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(code, n)| {
                (
                    code.and_then(|c| u16::try_from(c).ok()),
                    u64::try_from(n).unwrap_or(0),
                )
            })
            .collect())
    }
}
