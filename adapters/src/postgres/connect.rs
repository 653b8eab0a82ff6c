//! Connecting: the pool (lazy, so a process starts before Postgres does),
//! the probe that tells a transient failure from a configuration error,
//! the deployment id, the readiness ping and `migrate`.

use super::*;

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

/// What the server says of its replication: whether a commit it
/// acknowledges is on a second node before the acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `SHOW synchronous_commit`.
    pub synchronous_commit: String,
    /// `SHOW synchronous_standby_names` (empty: none).
    pub synchronous_standby_names: String,
    /// Standbys streaming from this server now (`pg_stat_replication`).
    pub streaming_standbys: i64,
}

impl Replication {
    /// Why a commit acknowledged to us could be lost if this server died
    /// and a standby took over; `None` when it cannot (synchronous
    /// replication waiting for a remote flush or apply, or no standby to
    /// take over at all).
    ///
    /// The service's promise leans on it: a key's stored answer that a
    /// failover lost would be answered again, differently (a second
    /// charge attempt under the same downstream key is collapsed by
    /// Stripe, but the client may already hold the first answer).
    pub fn risk(&self) -> Option<String> {
        let commit = self.synchronous_commit.trim();
        let names = self.synchronous_standby_names.trim();
        if self.streaming_standbys == 0 && names.is_empty() {
            return None; // a single server: nothing to fail over to
        }
        if names.is_empty() {
            return Some(format!(
                "{} standby(s) stream from this server asynchronously (synchronous_standby_names is empty): a failover can lose commits already acknowledged",
                self.streaming_standbys
            ));
        }
        match commit {
            "on" | "remote_write" | "remote_apply" => None,
            other => Some(format!(
                "synchronous_commit is {other}: a commit is acknowledged before a standby has it, and a failover can lose it"
            )),
        }
    }
}

/// Reads the server's replication settings (see `Replication::risk`).
pub async fn replication(pool: &PgPool) -> anyhow::Result<Replication> {
    let (synchronous_commit, synchronous_standby_names, streaming_standbys): (String, String, i64) =
        sqlx::query_as(
            "SELECT current_setting('synchronous_commit'), \
             current_setting('synchronous_standby_names'), \
             (SELECT count(*) FROM pg_stat_replication)",
        )
        .fetch_one(pool)
        .await
        .context("reading the replication settings")?;
    Ok(Replication {
        synchronous_commit,
        synchronous_standby_names,
        streaming_standbys,
    })
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

impl PostgresStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
}

#[async_trait]
impl Probe for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Replication;

    fn replication(commit: &str, names: &str, standbys: i64) -> Replication {
        Replication {
            synchronous_commit: commit.into(),
            synchronous_standby_names: names.into(),
            streaming_standbys: standbys,
        }
    }

    #[test]
    fn only_synchronous_replication_waiting_for_a_standby_keeps_every_acknowledged_commit() {
        assert_eq!(replication("on", "", 0).risk(), None, "a single server");
        assert_eq!(replication("on", "ANY 1 (*)", 2).risk(), None);
        assert_eq!(replication("remote_apply", "node2", 1).risk(), None);
        assert!(
            replication("on", "", 2).risk().is_some(),
            "asynchronous standbys"
        );
        for commit in ["local", "off"] {
            assert!(
                replication(commit, "ANY 1 (*)", 2).risk().is_some(),
                "{commit}"
            );
        }
    }
}
