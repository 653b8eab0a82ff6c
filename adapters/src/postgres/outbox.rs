//! The job outbox: staged jobs claimed by enqueuers and deleted once the queue took them.

use super::*;

#[async_trait]
impl Outbox for PostgresStore {
    async fn staged_jobs(&self, limit: usize) -> Result<Vec<StagedJob>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(queries::STAGED_JOBS)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter().map(StagedJob::try_from).collect()
    }

    async fn claim_staged_jobs(
        &self,
        limit: usize,
        now: SystemTime,
        claim_for: Duration,
    ) -> Result<Vec<StagedJob>, StoreError> {
        let mut rows: Vec<JobRow> = sqlx::query_as(queries::CLAIM_STAGED_JOBS)
            .bind(timestamp(now))
            .bind(timestamp(now + claim_for))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.sort_by_key(JobRow::id);
        rows.into_iter().map(StagedJob::try_from).collect()
    }

    async fn backlog(&self, now: SystemTime) -> Result<Backlog, StoreError> {
        let (jobs, oldest): (i64, Option<OffsetDateTime>) = sqlx::query_as(queries::BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(Backlog {
            jobs: u64::try_from(jobs).unwrap_or_default(),
            oldest_age: oldest
                .and_then(|at| now.duration_since(SystemTime::from(at)).ok())
                .unwrap_or_default(),
        })
    }

    async fn release_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("UPDATE staged_jobs SET claimed_until = NULL WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM staged_jobs WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
