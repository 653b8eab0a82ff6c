//! The key row's lock: taking it (a new generation) for a resumed key,
//! checking a lease under it, and telling why a leased write changed
//! nothing. Used by the phases in `keys.rs`.

use super::*;

impl PostgresStore {
    /// Takes the key's lock (a new generation) if `takes` says so, checked
    /// under the key's row lock. A key another process (a completer, a
    /// request) is row-locking right now is theirs: skipped, not waited for.
    pub(super) async fn lock_if(
        &self,
        key_id: KeyId,
        now: SystemTime,
        takes: impl FnOnce(&KeyRecord) -> bool + Send,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let mut tx = self.begin().await?;
        let row: Option<KeyRow> =
            sqlx::query_as(select_key!("WHERE k.id = $1 FOR UPDATE OF k SKIP LOCKED"))
                .bind(key_id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        if !takes(&KeyRecord::try_from(row)?) {
            return Ok(None);
        }
        let record = Self::take_lock(&mut tx, key_id, now, None).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(record))
    }

    pub(super) async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(unavailable)
    }

    /// Loads and row-locks the key a lease names, checking that the lease
    /// may make `write` now.
    pub(super) async fn lock_leased(
        conn: &mut PgConnection,
        lease: Lease,
        write: PhaseWrite,
    ) -> Result<KeyRecord, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(select_key!("WHERE k.id = $1 FOR UPDATE OF k"))
            .bind(lease.key_id.0)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
        let record = KeyRecord::try_from(
            row.ok_or_else(|| StoreError::LostLock(format!("key {} is gone", lease.key_id)))?,
        )?;
        record
            .check_lease(lease.generation, write)
            .map_err(StoreError::LostLock)?;
        Ok(record)
    }

    /// Why a write conditioned on `leased!` changed nothing, read after the
    /// fact for the error's message (the write itself is what decided).
    pub(super) async fn lost_lock(&self, lease: Lease, write: PhaseWrite) -> StoreError {
        let row: Result<Option<KeyRow>, _> = sqlx::query_as(select_key!("WHERE k.id = $1"))
            .bind(lease.key_id.0)
            .fetch_optional(&self.pool)
            .await;
        let reason = match row.map(|row| row.map(KeyRecord::try_from)) {
            Ok(None) => format!("key {} is gone", lease.key_id),
            Ok(Some(Ok(record))) => match record.check_lease(lease.generation, write) {
                Err(reason) => reason,
                Ok(()) => format!("key {} changed hands while writing", lease.key_id),
            },
            Ok(Some(Err(error))) => return error,
            Err(error) => return unavailable(error),
        };
        StoreError::LostLock(reason)
    }

    /// The recovery points `write` expects, as the `leased!` condition's $3.
    pub(super) fn expected(write: PhaseWrite) -> Vec<&'static str> {
        write.expects().iter().map(|point| point.as_str()).collect()
    }

    /// The key phase's slow path, for a key that exists: decides under the
    /// key's row lock and takes the lock to resume.
    pub(super) async fn begin_existing(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let mut tx = self.begin().await?;
        let existing = Self::find_key_for_update(&mut tx, request).await?;
        let record = existing.ok_or_else(|| {
            StoreError::Inconsistent("a conflicting key insert left no row".into())
        })?;
        let decision = KeyDecision::for_existing(&record, &request.fingerprint, now, policy);
        let phase = match KeyPhase::unless_resumed(decision) {
            Some(phase) => phase,
            None => KeyPhase::Locked(
                Self::take_lock(&mut tx, record.id, now, request.request_id.as_deref()).await?,
            ),
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(phase)
    }

    pub(super) async fn find_key_for_update(
        conn: &mut PgConnection,
        request: &KeyRequest,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(select_key!(
            "WHERE k.user_id = $1 AND k.idempotency_key = $2 FOR UPDATE OF k"
        ))
        .bind(request.user_id.0)
        .bind(request.key.as_str())
        .fetch_optional(conn)
        .await
        .map_err(unavailable)?;
        row.map(KeyRecord::try_from).transpose()
    }

    /// Takes the key's lock for a new generation, recording the request
    /// that took it (`None`: the completer or a person).
    pub(super) async fn take_lock(
        conn: &mut PgConnection,
        key_id: KeyId,
        now: SystemTime,
        request_id: Option<&str>,
    ) -> Result<KeyRecord, StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET locked_at = $2, last_run_at = $2, \
             lock_generation = lock_generation + 1, request_id = $3 WHERE id = $1",
        )
        .bind(key_id.0)
        .bind(timestamp(now))
        .bind(request_id)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        let row: KeyRow = sqlx::query_as(select_key!("WHERE k.id = $1"))
            .bind(key_id.0)
            .fetch_one(conn)
            .await
            .map_err(unavailable)?;
        KeyRecord::try_from(row)
    }
}
