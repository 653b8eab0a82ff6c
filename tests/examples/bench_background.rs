//! The background benchmark: do the completer, the enqueuer and the worker
//! keep pace with the API? Real `rocket-rides` processes on Postgres and
//! NATS JetStream (containers), side by side in one run:
//!
//! - completer keys/s, 1 and 2 completers, the in-process gateway at 0,
//!   200 and 500 ms: `--keys` keys left at `ride_created`, then the time
//!   until none is left unfinished;
//! - enqueue and receipt rates, 1 and 2 enqueuers with as many workers:
//!   `--jobs` staged receipt jobs, then the time until none is staged and
//!   until every receipt is marked sent;
//! - the API's booked rides/s at 32 clients on the same machine;
//! - from these, how long one completer needs to clear the keys a
//!   ten-minute gateway outage leaves at the API's rate.
//!
//!     cargo run --release -p integration-tests --example bench_background -- [FLAGS]
//!
//! Flags: `--keys N` (3000), `--jobs N` (20000), `--binary PATH` (default:
//! the release build, built first). Needs Docker and the Postgres and NATS
//! images (`TEST_POSTGRES_IMAGE`, `TEST_NATS_IMAGE`). Processes log at
//! `warn`. Prints figures; asserts nothing about time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::bench::{Keys, Service, load, run_once};
use integration_tests::nats::start_nats_on;
use integration_tests::postgres::{free_port, start_durable};
use sqlx::PgPool;

/// A process that runs until dropped (killed on drop).
struct Running {
    _child: tokio::process::Child,
}

fn spawn(binary: &Path, command: &str, env: &[(&str, &str)]) -> Running {
    let child = tokio::process::Command::new(binary)
        .arg(command)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rocket-rides starts");
    Running { _child: child }
}

/// A migrated, seeded database of its own on the server.
async fn fresh_database(binary: &Path, server_url: &str) -> (String, PgPool) {
    let admin = PgPool::connect(server_url).await.expect("admin connection");
    let name = format!("bg_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("a database");
    let url = format!("{}/{name}", server_url.trim_end_matches("/postgres"));
    run_once(binary, &["migrate"], &[("DATABASE_URL", &url)]).await;
    run_once(binary, &["up"], &[("DATABASE_URL", &url)]).await;
    let pool = PgPool::connect(&url).await.expect("a connection");
    (url, pool)
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect("a count");
    n
}

/// Waits until `sql` counts `target`, or `limit` passes; how long it took
/// and how far it got.
async fn until_count(
    pool: &PgPool,
    sql: &'static str,
    target: i64,
    limit: Duration,
) -> (Duration, i64) {
    let started = Instant::now();
    loop {
        let n = count(pool, sql).await;
        if n == target || started.elapsed() > limit {
            return (started.elapsed(), n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `keys` keys at `ride_created` with their rides, as requests that failed
/// before their charge leave them, old enough for any completer.
async fn stall_keys(pool: &PgPool, keys: i64) {
    sqlx::query(
        "WITH rider AS (SELECT id FROM users WHERE email = 'user@example.com'), \
         k AS (INSERT INTO idempotency_keys (created_at, idempotency_key, last_run_at, \
         request_fingerprint, origin_lat, origin_lon, target_lat, target_lon, recovery_point, user_id) \
         SELECT now() - interval '1 hour', 'bench-stalled-' || lpad(n::text, 12, '0'), \
         now() - interval '1 hour', 'POST /rides bench', 0, 0, 0, 0, 'ride_created', rider.id \
         FROM generate_series(1, $1) n, rider RETURNING id, user_id) \
         INSERT INTO rides (idempotency_key_id, origin_lat, origin_lon, target_lat, target_lon, user_id) \
         SELECT id, 0, 0, 0, 0, user_id FROM k",
    )
    .bind(keys)
    .execute(pool)
    .await
    .expect("stalled keys");
}

/// `jobs` rides, each with its receipt job staged.
async fn stage_jobs(pool: &PgPool, jobs: i64) {
    sqlx::query(
        "WITH rider AS (SELECT id FROM users WHERE email = 'user@example.com'), \
         r AS (INSERT INTO rides (origin_lat, origin_lon, target_lat, target_lon, user_id, stripe_charge_id) \
         SELECT 0, 0, 0, 0, rider.id, 'ch_bench_' || n FROM generate_series(1, $1) n, rider \
         RETURNING id, user_id) \
         INSERT INTO staged_jobs (job_name, job_args) SELECT 'send_ride_receipt', \
         jsonb_build_object('amount', 2000, 'currency', 'usd', 'user_id', user_id, 'ride_id', id) \
         FROM r ORDER BY id",
    )
    .bind(jobs)
    .execute(pool)
    .await
    .expect("staged jobs");
}

#[tokio::main]
async fn main() {
    let mut keys: i64 = 3000;
    let mut jobs: i64 = 20_000;
    let mut binary = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--keys" => keys = value.parse().expect("--keys N"),
            "--jobs" => jobs = value.parse().expect("--jobs N"),
            "--binary" => binary = Some(PathBuf::from(value)),
            other => panic!("unknown flag {other}"),
        }
    }
    let binary = binary.unwrap_or_else(integration_tests::bench::release_binary);
    let postgres = start_durable(free_port(), "bench").await;
    let nats = start_nats_on(free_port()).await;
    let limit = Duration::from_secs(120);
    let fast = [("POLL_INTERVAL", "200ms")];

    println!(
        "Completer: {keys} keys left at ride_created, the in-process gateway's latency as given"
    );
    println!(
        "{:>10} {:>11} {:>9} {:>10} {:>8}",
        "latency", "completers", "finished", "seconds", "keys/s"
    );
    let mut one_at_200 = None;
    for latency in ["0ms", "200ms", "500ms"] {
        for completers in [1, 2] {
            let (url, pool) = fresh_database(&binary, &postgres.url).await;
            stall_keys(&pool, keys).await;
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("FAKE_GATEWAY_LATENCY", latency),
                ("COMPLETER_MIN_AGE", "0s"),
                ("COMPLETER_MIN_IDLE", "0s"),
                fast[0],
            ];
            let running: Vec<Running> = (0..completers)
                .map(|_| spawn(&binary, "completer", &env))
                .collect();
            let (took, left) = until_count(
                &pool,
                "SELECT count(*) FROM idempotency_keys WHERE recovery_point <> 'finished'",
                0,
                limit,
            )
            .await;
            drop(running);
            let finished = keys - left;
            let rate = finished as f64 / took.as_secs_f64();
            if latency == "200ms" && completers == 1 {
                one_at_200 = Some(rate);
            }
            println!(
                "{latency:>10} {completers:>11} {finished:>9} {:>10.1} {rate:>8.0}",
                took.as_secs_f64()
            );
        }
    }

    println!("\nEnqueuer and worker: {jobs} staged receipt jobs, NATS JetStream");
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "enqueuers", "workers", "enqueued s", "enqueued/s", "receipts s", "receipts/s"
    );
    let mut one_each = None;
    for processes in [1, 2] {
        let (url, pool) = fresh_database(&binary, &postgres.url).await;
        stage_jobs(&pool, jobs).await;
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("NATS_URL", nats.url.as_str()),
            fast[0],
        ];
        // The workers first, attached and waiting: the clock starts with
        // the enqueuers.
        let mut running: Vec<Running> = (0..processes)
            .map(|_| spawn(&binary, "worker", &env))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        running.extend((0..processes).map(|_| spawn(&binary, "enqueuer", &env)));
        let (_, staged) = until_count(&pool, "SELECT count(*) FROM staged_jobs", 0, limit).await;
        let enqueued_in = started.elapsed();
        let (_, sent) = until_count(
            &pool,
            "SELECT count(*) FROM sent_receipts WHERE sent_at IS NOT NULL",
            jobs,
            limit,
        )
        .await;
        let sent_in = started.elapsed();
        drop(running);
        let enqueued_rate = (jobs - staged) as f64 / enqueued_in.as_secs_f64();
        let receipt_rate = sent as f64 / sent_in.as_secs_f64();
        if processes == 1 {
            one_each = Some(receipt_rate);
        }
        println!(
            "{processes:>10} {processes:>10} {:>12.1} {enqueued_rate:>12.0} {:>14.1} {receipt_rate:>14.0}",
            enqueued_in.as_secs_f64(),
            sent_in.as_secs_f64()
        );
    }

    let (url, _pool) = fresh_database(&binary, &postgres.url).await;
    let api = Service::start(&binary, &["api"], &[("DATABASE_URL", &url)]).await;
    load(&api.base, 8, 1, Keys::Fresh).await;
    let booked = load(&api.base, 32, 5, Keys::Fresh).await;
    drop(api);
    println!(
        "\nThe API on the same machine: {:.0} booked rides/s at 32 clients ({} unexpected answers)",
        booked.per_second, booked.unexpected
    );
    if let Some(rate) = one_each {
        println!(
            "One enqueuer and one worker: {rate:.0} receipts/s, {:.1}x the API's booking rate",
            rate / booked.per_second
        );
    }
    if let Some(rate) = one_at_200 {
        let outage_keys = booked.per_second * 600.0;
        println!(
            "A ten-minute gateway outage at that rate leaves {outage_keys:.0} keys: one completer \
             at 200 ms clears them in {:.0} s ({:.1} min)",
            outage_keys / rate,
            outage_keys / rate / 60.0
        );
    }
}
