//! Postgres for the suites: one container per test binary (testcontainers,
//! image from `TEST_POSTGRES_IMAGE` when set), a fresh database per test.
//! Without a Docker engine the suites fail, saying so: they are never
//! skipped silently.

use std::sync::Arc;

use adapters::postgres::{self, PoolSettings, PostgresStore};
use sqlx::PgPool;
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::postgres::Postgres;
use tokio::sync::OnceCell;

use crate::Inspect;

/// Containers the suites start carry this label; `scripts/test` removes
/// them when the run ends.
pub const CONTAINER_LABEL: &str = "rocket-rides-tests";

static CONTAINER: OnceCell<(ContainerAsync<Postgres>, String)> = OnceCell::const_new();

/// An image as `(name, tag)`: `$variable` (`name:tag`, split at the last
/// colon) when set, else the default.
pub fn image_from_env(variable: &str, default_name: &str, default_tag: &str) -> (String, String) {
    match std::env::var(variable) {
        Ok(image) if !image.is_empty() => match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
            _ => (image, "latest".to_owned()),
        },
        _ => (default_name.to_owned(), default_tag.to_owned()),
    }
}

async fn server_url() -> &'static str {
    let (_, url) = CONTAINER
        .get_or_init(|| async {
            let (name, tag) = image_from_env("TEST_POSTGRES_IMAGE", "postgres", "15");
            let container = Postgres::default()
                .with_name(name.clone())
                .with_tag(tag.clone())
                .with_cmd(["-c", "fsync=off", "-c", "max_connections=400"])
                .with_label(CONTAINER_LABEL, "true")
                .start()
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "could not start Postgres ({name}:{tag}) with testcontainers: {error}. \
                         These suites need a Docker engine (DOCKER_HOST or /var/run/docker.sock) \
                         and the image: on a machine with no registry, run \
                         `eval \"$(../shared/ci/offline-images)\"` first, or use ./scripts/test."
                    )
                });
            let host = container.get_host().await.expect("container host");
            let port = container
                .get_host_port_ipv4(5432.tcp())
                .await
                .expect("Postgres port mapped");
            let url = format!("postgres://postgres:postgres@{host}:{port}");
            (container, url)
        })
        .await;
    url
}

/// A Postgres server of one's own on a fixed host port, so that it is found
/// at the same address after a restart (`docker stop`/`start`), or so that
/// processes can be pointed at it before it exists.
pub struct DedicatedPostgres {
    pub container: ContainerAsync<Postgres>,
    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`
    pub url: String,
}

pub async fn start_dedicated(port: u16, password: &str) -> DedicatedPostgres {
    start_server(port, password, false).await
}

/// As [`start_dedicated`], with every commit flushed to disk as in
/// production (fsync on): for benchmarks, where commit cost matters.
pub async fn start_durable(port: u16, password: &str) -> DedicatedPostgres {
    start_server(port, password, true).await
}

async fn start_server(port: u16, password: &str, durable: bool) -> DedicatedPostgres {
    let (name, tag) = image_from_env("TEST_POSTGRES_IMAGE", "postgres", "15");
    let fsync = if durable { "fsync=on" } else { "fsync=off" };
    let container = Postgres::default()
        .with_password(password)
        .with_name(name.clone())
        .with_tag(tag.clone())
        .with_cmd(["-c", fsync, "-c", "max_connections=400"])
        // The password is checked (the local image trusts every host
        // connection unless told otherwise).
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256")
        .with_mapped_port(port, 5432.tcp())
        .with_label(CONTAINER_LABEL, "true")
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!("could not start Postgres ({name}:{tag}) on port {port}: {error}")
        });
    DedicatedPostgres {
        container,
        url: format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres"),
    }
}

/// A port nobody listens on right now (for a server started later).
///
/// Taken below Linux's ephemeral range (32768-60999), never from it: a
/// port the kernel hands out for `:0` is also the one it picks for the
/// local end of an outgoing connection and for Docker's own mappings, so a
/// port reserved that way for a server started later was seen taken by a
/// process's connection to Postgres in the meantime ("address already in
/// use" when the NATS container started). Each call takes the next port of
/// a sequence that starts at a place of its own per process, and checks
/// that nothing listens there on any address.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        uuid::Uuid::new_v4().as_u128() as u32 % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let free = ["0.0.0.0", "127.0.0.1"]
            .iter()
            .all(|host| std::net::TcpListener::bind((*host, port)).is_ok());
        if free {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN)
}

/// A URL to a new, empty database of its own, schema not yet applied.
pub async fn fresh_database_url() -> String {
    let server = server_url().await;
    let admin = PgPool::connect(&format!("{server}/postgres"))
        .await
        .expect("connecting to the test server");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("creating a test database");
    admin.close().await;
    format!("{server}/{name}")
}

/// A migrated database of its own and the store over it.
pub async fn fresh_store() -> Arc<PostgresStore> {
    fresh_store_with(PoolSettings::default()).await
}

pub async fn fresh_store_with(settings: PoolSettings) -> Arc<PostgresStore> {
    let url = fresh_database_url().await;
    let pool = postgres::connect(&url, &settings).expect("a valid URL");
    postgres::migrate(&pool).await.expect("migrating");
    Arc::new(PostgresStore::new(pool))
}

async fn count(pool: &PgPool, sql: &'static str) -> usize {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect("count");
    usize::try_from(n).expect("a count")
}

#[async_trait::async_trait]
impl Inspect for PostgresStore {
    async fn key_count(&self) -> usize {
        count(self.pool(), "SELECT count(*) FROM idempotency_keys").await
    }

    async fn ride_count(&self) -> usize {
        count(self.pool(), "SELECT count(*) FROM rides").await
    }

    async fn recovery_points(&self) -> Vec<(String, domain::RecoveryPoint)> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT idempotency_key, recovery_point FROM idempotency_keys")
                .fetch_all(self.pool())
                .await
                .expect("keys");
        rows.into_iter()
            .map(|(key, point)| {
                let point = domain::RecoveryPoint::parse(&point)
                    .unwrap_or_else(|| panic!("unknown recovery point {point}"));
                (key, point)
            })
            .collect()
    }

    async fn request_id(&self, key: &str) -> Option<String> {
        sqlx::query_scalar("SELECT request_id FROM idempotency_keys WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .expect("the key's request id")
            .flatten()
    }

    async fn store_earlier_answer(&self, key: &str, body: &str) {
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET response_body = $2 \
             WHERE idempotency_key = $1 AND recovery_point = 'finished'",
        )
        .bind(key)
        .bind(body)
        .execute(self.pool())
        .await
        .expect("the key's answer rewritten");
        assert_eq!(updated.rows_affected(), 1, "one finished key");
    }
}

#[async_trait::async_trait]
impl crate::Legacy for PostgresStore {
    async fn leave_at_started(&self, key: domain::KeyId) {
        let mut tx = self.pool().begin().await.expect("begin");
        sqlx::query(
            "DELETE FROM audit_records WHERE resource_type = 'ride' \
             AND resource_id IN (SELECT id FROM rides WHERE idempotency_key_id = $1)",
        )
        .bind(key.0)
        .execute(&mut *tx)
        .await
        .expect("audit records removed");
        sqlx::query("DELETE FROM rides WHERE idempotency_key_id = $1")
            .bind(key.0)
            .execute(&mut *tx)
            .await
            .expect("ride removed");
        sqlx::query("UPDATE idempotency_keys SET recovery_point = 'started' WHERE id = $1")
            .bind(key.0)
            .execute(&mut *tx)
            .await
            .expect("key rewound");
        tx.commit().await.expect("commit");
    }

    async fn leave_at_charge_created(&self, key: domain::KeyId, charge_id: &str) {
        let mut tx = self.pool().begin().await.expect("begin");
        sqlx::query("UPDATE rides SET stripe_charge_id = $2 WHERE idempotency_key_id = $1")
            .bind(key.0)
            .bind(charge_id)
            .execute(&mut *tx)
            .await
            .expect("charge recorded");
        sqlx::query("UPDATE idempotency_keys SET recovery_point = 'charge_created' WHERE id = $1")
            .bind(key.0)
            .execute(&mut *tx)
            .await
            .expect("key moved");
        tx.commit().await.expect("commit");
    }
}
