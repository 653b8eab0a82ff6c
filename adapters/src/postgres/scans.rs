//! The background's scans: keys the completer may take, keys to report
//! for review, keys the reaper may delete; each an index scan in age order
//! that skips rows another process holds.

use super::*;

#[async_trait]
impl KeyScans for PostgresStore {
    async fn find_completable(
        &self,
        now: SystemTime,
        policy: CompleterPolicy,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let cutoffs = policy.cutoffs(now);
        let ids: Vec<(i64,)> = sqlx::query_as(queries::FIND_COMPLETABLE)
            .bind(timestamp(cutoffs.created_before))
            .bind(timestamp(cutoffs.run_before))
            .bind(timestamp(cutoffs.locked_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(timestamp(cutoffs.attempted_not_before))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(ids.into_iter().map(|(id,)| KeyId(id)).collect())
    }

    async fn report_keys_for_review(
        &self,
        attempted_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(queries::REPORT_KEYS_FOR_REVIEW)
            .bind(timestamp(attempted_before))
            .bind(timestamp(now))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter().map(KeyRecord::try_from).collect()
    }

    async fn claim_review_checks(
        &self,
        now: SystemTime,
        checks: ReviewChecks,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(queries::CLAIM_REVIEW_CHECKS)
            .bind(timestamp(now))
            .bind(
                checks
                    .gaps()
                    .map(|gap| gap.as_secs_f64())
                    .collect::<Vec<_>>(),
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(ids.into_iter().map(KeyId).collect())
    }

    async fn reap_keys(
        &self,
        created_before: SystemTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let deleted = sqlx::query(queries::REAP_KEYS)
            .bind(timestamp(created_before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
    }
}
