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

mod rows;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use application::ports::{
    Backlog, Dashboard, Finish, KeyCounts, KeyPhase, KeyRequest, Keys, Lease, Outbox, ReceiptClaim,
    Receipts, RecentRide, StoreError, Users,
};
use async_trait::async_trait;
use domain::{
    ApiKeyHash, CompleterPolicy, KeyDecision, KeyId, KeyRecord, LockPolicy, PhaseWrite,
    ReviewPolicy, Ride, RideId, StagedJob, User, UserId,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use time::OffsetDateTime;

use crate::connect::ConnectError;
use rows::{BegunKeyRow, JobRow, KeyRow, RecentRideRow, RideRow, UserRow};

/// The schema, applied by `migrate`.
pub const SCHEMA: &str = include_str!("../../../schema.sql");

/// Any constant will do: it only has to be the same for every migrating process.
const MIGRATION_LOCK: i64 = 0x5269_6465_734d_6967;

/// Connection pool settings, from flags.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Postgres aborts any statement running longer than this.
    pub statement_timeout: Duration,
}

impl PoolSettings {
    /// The defaults of the `DATABASE_*` settings.
    pub const DEFAULT: Self = Self {
        max_connections: 10,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
    };
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A pool that connects on first use: creating it never waits for the
/// server, and a connection lost later (Postgres restarted) is replaced on
/// the next acquire. Only a malformed URL fails here; `probe` tells whether
/// the server answers.
pub fn connect(url: &str, settings: &PoolSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid Postgres URL")?
        .options([(
            "statement_timeout",
            format!("{}ms", settings.statement_timeout.as_millis()),
        )]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // No ping before each use: it would double the round trips of a
        // request (two statements, each preceded by a ping). A connection
        // that died with a Postgres restart fails its next statement
        // instead, is closed and replaced; that statement's caller sees the
        // store unavailable (a 503 with Retry-After, a job given back),
        // exactly as it would for a restart mid-statement.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Is Postgres there? A transient failure (down, restarting, too many
/// connections) is worth waiting for; wrong credentials or a missing
/// database are not.
pub async fn probe(pool: &PgPool) -> Result<(), ConnectError> {
    match sqlx::query("SELECT 1").execute(pool).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let permanent = matches!(
                &error,
                sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("28P01" | "28000" | "3D000"))
            ) || matches!(&error, sqlx::Error::Configuration(_));
            let error = anyhow::Error::new(error).context("connecting to Postgres");
            Err(if permanent {
                ConnectError::Configuration(error)
            } else {
                ConnectError::Transient(error)
            })
        }
    }
}

/// Applies `schema.sql`. Idempotent; concurrent runs queue on an advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA)
        .execute(&mut *tx)
        .await
        .context("applying schema.sql")?;
    tx.commit().await?;
    Ok(())
}

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
            ", r.id AS ride_id ",
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

/// The statements of a request and of the background processes, public so
/// the plan test can EXPLAIN and the benchmark replay exactly what runs.
pub mod queries {
    /// The key phase of a request, one statement. $1 now, $2 the key, $3
    /// the fingerprint, $4..$7 origin lat/lon, target lat/lon, $8 the
    /// client's IP, $9 the user, $10 whether the request charges now, $11
    /// the request's id.
    ///
    /// An existing key is read (no lock; the caller decides, and takes the
    /// lock in a transaction only to resume). Otherwise the key is inserted
    /// locked at `ride_created`, its charge attempt noted when $10, with its
    /// ride and `ride.created` audit record: the key phase and the `started`
    /// phase in one commit. A first request racing another with the same
    /// key inserts nothing and gets no row; the caller then reads the
    /// winner's key under its row lock.
    pub const BEGIN_REQUEST: &str = concat!(
        "WITH existing AS (",
        select_key!("WHERE k.user_id = $9::bigint AND k.idempotency_key = $2::text"),
        "), new_key AS (INSERT INTO idempotency_keys (created_at, idempotency_key, last_run_at, \
         locked_at, request_fingerprint, origin_lat, origin_lon, target_lat, target_lon, \
         request_ip, request_id, recovery_point, charge_attempted_at, user_id) \
         SELECT $1::timestamptz, $2::text, $1::timestamptz, $1::timestamptz, $3::text, \
         $4::float8, $5::float8, $6::float8, $7::float8, $8::text, $11::text, 'ride_created', \
         CASE WHEN $10::bool THEN $1::timestamptz END, $9::bigint \
         WHERE NOT EXISTS (SELECT 1 FROM existing) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *), \
         new_ride AS (INSERT INTO rides (created_at, idempotency_key_id, origin_lat, origin_lon, \
         target_lat, target_lon, user_id) \
         SELECT $1::timestamptz, id, $4::float8, $5::float8, $6::float8, $7::float8, $9::bigint \
         FROM new_key RETURNING id, idempotency_key_id), \
         audit AS (INSERT INTO audit_records (action, created_at, data, origin_ip, resource_id, \
         resource_type, user_id) SELECT 'ride.created', $1::timestamptz, \
         jsonb_build_object('origin_lat', $4::float8, 'origin_lon', $5::float8, \
         'target_lat', $6::float8, 'target_lon', $7::float8), $8::text, id, 'ride', $9::bigint \
         FROM new_ride) \
         SELECT true AS inserted, ",
        key_columns!("n"),
        ", r.id AS ride_id FROM new_key n JOIN new_ride r ON r.idempotency_key_id = n.id \
         UNION ALL SELECT false AS inserted, * FROM existing"
    );

    /// Books a charged key, one statement: $1 key, $2 generation, $3 the
    /// recovery points booking expects, $4 the charge id, $5 the ride, $6
    /// the 201's status, $7 its body, $8 the job's name, $9 amount, $10
    /// currency, $11 user, $12 now (when the job is staged). Under the lease (the key's row locked), the
    /// charge goes on the ride (unless it carries another), and only then
    /// is the key finished and the receipt job staged. Returns whether the
    /// lease held and whether the key was booked.
    pub const BOOK: &str = concat!(
        "WITH leased AS (SELECT id FROM idempotency_keys WHERE ",
        leased!(),
        " FOR UPDATE), charged AS (UPDATE rides SET stripe_charge_id = $4::text \
         WHERE id = $5::bigint AND idempotency_key_id = (SELECT id FROM leased) \
         AND (stripe_charge_id IS NULL OR stripe_charge_id = $4::text) RETURNING id), \
         finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
         response_code = $6::int, response_body = $7::text, locked_at = NULL \
         WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM charged) RETURNING id), \
         job AS (INSERT INTO staged_jobs (job_name, job_args, created_at) SELECT $8::text, \
         jsonb_build_object('amount', $9::bigint, 'currency', $10::text, \
         'user_id', $11::bigint, 'ride_id', id), $12::timestamptz FROM charged) \
         SELECT EXISTS (SELECT 1 FROM leased) AS leased, \
         EXISTS (SELECT 1 FROM finished) AS booked"
    );

    /// Finishes a key with a refusal, nothing charged: $1 key, $2
    /// generation, $3 expected recovery points, $4 status, $5 body.
    pub const REFUSE: &str = concat!(
        "UPDATE idempotency_keys SET recovery_point = 'finished', response_code = $4, \
         response_body = $5, locked_at = NULL WHERE ",
        leased!()
    );

    /// Claims receipts, one statement: $1 rides, $2 their jobs (each ride
    /// once), $3 now, $4 claims older than this are stale. A ride is
    /// claimed if nobody holds it, or its holder's claim went stale unsent;
    /// otherwise it was sent, or another worker holds it now. One row per
    /// ride: claimed, sent.
    pub const CLAIM_RECEIPTS: &str = "WITH wanted AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
         AS w(ride_id, job_id)), \
         claimed AS (INSERT INTO sent_receipts (ride_id, job_id, claimed_at) \
         SELECT ride_id, job_id, $3 FROM wanted ORDER BY ride_id \
         ON CONFLICT (ride_id) DO UPDATE SET job_id = EXCLUDED.job_id, claimed_at = EXCLUDED.claimed_at \
         WHERE sent_receipts.sent_at IS NULL AND sent_receipts.claimed_at <= $4 RETURNING ride_id) \
         SELECT w.ride_id, c.ride_id IS NOT NULL AS claimed, s.sent_at IS NOT NULL AS sent \
         FROM wanted w LEFT JOIN claimed c ON c.ride_id = w.ride_id \
         LEFT JOIN sent_receipts s ON s.ride_id = w.ride_id";

    /// Unfinished keys by recovery point, and those at `ride_created`
    /// whose charge was attempted before $1 (review's): the partial index of
    /// unfinished keys, whose size follows the backlog.
    pub const UNFINISHED_COUNTS: &str = "SELECT recovery_point, count(*), \
         count(*) FILTER (WHERE recovery_point = 'ride_created' AND charge_attempted_at < $1) \
         FROM idempotency_keys WHERE recovery_point <> 'finished' GROUP BY recovery_point";

    /// How many jobs are staged, and when the oldest (lowest id) was.
    pub const BACKLOG: &str = "SELECT (SELECT count(*) FROM staged_jobs), \
         (SELECT created_at FROM staged_jobs ORDER BY id LIMIT 1)";

    /// $1 key, $2 generation, $3 expected recovery points, $4 now.
    pub const NOTE_CHARGE_ATTEMPT: &str = concat!(
        "UPDATE idempotency_keys SET charge_attempted_at = COALESCE(charge_attempted_at, $4) WHERE ",
        leased!()
    );

    /// $1 created before, $2 last run before, $3 locked before, $4 limit,
    /// $5 charge attempted not before (older attempts are review's).
    pub const FIND_COMPLETABLE: &str = "SELECT id FROM idempotency_keys \
         WHERE recovery_point <> 'finished' AND created_at < $1 AND last_run_at < $2 \
         AND (locked_at IS NULL OR locked_at < $3) \
         AND NOT (recovery_point = 'ride_created' AND charge_attempted_at IS NOT NULL \
              AND charge_attempted_at < $5) \
         ORDER BY created_at, id LIMIT $4";

    /// $1 created before, $2 limit, oldest first. Only keys
    /// `KeyRecord::may_be_reaped` allows: finished, or unfinished with no
    /// lock on them and no charge that may exist. A row a phase has locked
    /// this instant is skipped, not waited for.
    pub const REAP_KEYS: &str = "DELETE FROM idempotency_keys WHERE id = ANY(ARRAY(SELECT id FROM idempotency_keys \
         WHERE created_at < $1 \
         AND (recovery_point = 'finished' OR (locked_at IS NULL AND (recovery_point = 'started' \
              OR (recovery_point = 'ride_created' AND charge_attempted_at IS NULL)))) \
         ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED))";

    /// $1 limit.
    pub const STAGED_JOBS: &str = "SELECT id, job_name, (job_args->>'amount')::bigint AS amount, \
         job_args->>'currency' AS currency, (job_args->>'user_id')::bigint AS user_id, \
         (job_args->>'ride_id')::bigint AS ride_id FROM staged_jobs ORDER BY id LIMIT $1";

    /// $1 now, $2 claimed until, $3 limit. Rows another enqueuer is
    /// claiming this instant are skipped, not waited for.
    /// (`= ANY(ARRAY(..))` keeps the outer update an index scan by id; an
    /// `IN (subquery)` lets the planner hash-join over the whole table.)
    pub const CLAIM_STAGED_JOBS: &str = "UPDATE staged_jobs SET claimed_until = $2 WHERE id = ANY(ARRAY(\
         SELECT id FROM staged_jobs WHERE claimed_until IS NULL OR claimed_until <= $1 \
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)) \
         RETURNING id, job_name, (job_args->>'amount')::bigint AS amount, \
         job_args->>'currency' AS currency, (job_args->>'user_id')::bigint AS user_id, \
         (job_args->>'ride_id')::bigint AS ride_id";

    /// $1 the key's id.
    pub const FIND_KEY: &str = select_key!("WHERE k.id = $1");

    /// $1 limit. Newest rides first, with their key's request id.
    pub const RECENT_RIDES: &str = "SELECT r.id, r.idempotency_key_id, r.origin_lat, r.origin_lon, \
         r.target_lat, r.target_lon, r.stripe_charge_id, r.user_id, k.request_id, \
         k.response_code, k.created_at AS requested_at \
         FROM rides r LEFT JOIN idempotency_keys k ON k.id = r.idempotency_key_id \
         ORDER BY r.id DESC LIMIT $1";

    /// $1 since. Keys created since, by stored status (NULL: unfinished).
    pub const ANSWERS_SINCE: &str = "SELECT response_code, count(*) FROM idempotency_keys \
         WHERE created_at >= $1 GROUP BY response_code ORDER BY response_code NULLS FIRST";

    /// $1 attempted before, $2 limit.
    pub const KEYS_FOR_REVIEW: &str = select_key!(
        "WHERE k.recovery_point = 'ride_created' AND k.charge_attempted_at < $1 \
         ORDER BY k.charge_attempted_at LIMIT $2"
    );

    /// $1 attempted before, $2 now, $3 limit. Marks keys for review not yet
    /// reported and returns them; another completer marking the same keys
    /// this instant is skipped, so each key is reported once.
    pub const REPORT_KEYS_FOR_REVIEW: &str = concat!(
        "WITH reported AS (UPDATE idempotency_keys SET review_reported_at = $2 \
         WHERE id = ANY(ARRAY(SELECT id FROM idempotency_keys \
         WHERE recovery_point = 'ride_created' AND charge_attempted_at < $1 \
         AND review_reported_at IS NULL \
         ORDER BY charge_attempted_at LIMIT $3 FOR UPDATE SKIP LOCKED)) RETURNING id) ",
        select_key!("WHERE k.id IN (SELECT id FROM reported) ORDER BY k.charge_attempted_at")
    );
}

impl PostgresStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes the key's lock (a new generation) if `takes` says so, checked
    /// under the key's row lock. A key another process (a completer, a
    /// request) is row-locking right now is theirs: skipped, not waited for.
    async fn lock_if(
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

    /// This database's identity (made by `migrate`), which names the job
    /// queue's streams so that databases sharing a NATS server stay apart.
    /// Does Postgres answer? See [`probe`].
    pub async fn probe(&self) -> Result<(), ConnectError> {
        probe(&self.pool).await
    }

    /// The id `migrate` stored. Until `migrate` has run (the table or its
    /// row is missing) the failure is transient: a deployment starts its
    /// processes and its one-shot `migrate` together.
    pub async fn deployment_id(&self) -> Result<String, ConnectError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM deployment")
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| {
                ConnectError::Transient(
                    anyhow::Error::new(error)
                        .context("reading the deployment id: has `rocket-rides migrate` run?"),
                )
            })?;
        row.map(|(id,)| id).ok_or_else(|| {
            ConnectError::Transient(anyhow::anyhow!(
                "no deployment id yet: waiting for `rocket-rides migrate`"
            ))
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(unavailable)
    }

    /// Loads and row-locks the key a lease names, checking that the lease
    /// may make `write` now.
    async fn lock_leased(
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
    async fn lost_lock(&self, lease: Lease, write: PhaseWrite) -> StoreError {
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
    fn expected(write: PhaseWrite) -> Vec<&'static str> {
        write.expects().iter().map(|point| point.as_str()).collect()
    }

    /// The key phase's slow path, for a key that exists: decides under the
    /// key's row lock and takes the lock to resume.
    async fn begin_existing(
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

    async fn find_key_for_update(
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
    async fn take_lock(
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

#[async_trait]
impl Users for PostgresStore {
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, email, stripe_customer_id FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn find_user_by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT u.id, u.email, u.stripe_customer_id FROM users u \
             JOIN api_keys a ON a.user_id = u.id WHERE a.key_hash = $1",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, email, stripe_customer_id FROM users WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn upsert_user(&self, email: &str, stripe_customer_id: &str) -> Result<User, StoreError> {
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (email, stripe_customer_id) VALUES ($1, $2) \
             ON CONFLICT (email) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id \
             RETURNING id, email, stripe_customer_id",
        )
        .bind(email)
        .bind(stripe_customer_id)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(User::from(row))
    }

    async fn add_api_key(&self, user_id: UserId, hash: &ApiKeyHash) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (user_id, key_hash) VALUES ($1, $2) \
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(user_id.0)
        .bind(hash.as_str())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Keys for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn begin_request(
        &self,
        request: &KeyRequest,
        now: SystemTime,
        policy: LockPolicy,
    ) -> Result<KeyPhase, StoreError> {
        let [origin_lat, origin_lon, target_lat, target_lon] = request.params.numbers();
        let row: Option<BegunKeyRow> = sqlx::query_as(queries::BEGIN_REQUEST)
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
        let [origin_lat, origin_lon, target_lat, target_lon] = record.params.numbers();
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
        let row: KeyRow = sqlx::query_as(concat!(
            "WITH moved AS (UPDATE idempotency_keys SET recovery_point = 'ride_created' \
             WHERE id = $1 RETURNING *) SELECT ",
            key_columns!("m"),
            ", $2::bigint AS ride_id FROM moved m"
        ))
        .bind(record.id.0)
        .bind(ride_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        KeyRecord::try_from(row)
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
            Finish::Refused { response } => {
                let updated = sqlx::query(queries::REFUSE)
                    .bind(lease.key_id.0)
                    .bind(lease.generation)
                    .bind(Self::expected(write))
                    .bind(i32::from(response.status))
                    .bind(&response.body)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                if updated.rows_affected() == 0 {
                    return Err(self.lost_lock(lease, write).await);
                }
                Ok(())
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
             stripe_charge_id, user_id FROM rides WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(Ride::try_from).transpose()
    }

    async fn find_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(queries::FIND_KEY)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(KeyRecord::try_from).transpose()
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
}

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

    async fn delete_staged_jobs(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM staged_jobs WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Dashboard for PostgresStore {
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
