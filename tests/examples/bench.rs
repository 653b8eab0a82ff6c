//! The benchmark: `POST /rides` against Postgres at 1, 8 and 32 concurrent
//! clients, each request with a fresh key. Prints requests/s, p50, p99 and
//! the count of non-201 answers per level, then the plans of the background
//! queries over the table it filled. A command that prints figures, not a
//! test: these machines are too noisy for timing assertions.
//!
//!     cargo run --release -p integration-tests --example bench [-- REQUESTS_PER_LEVEL [EXTRA_KEYS]]
//!
//! EXTRA_KEYS (default 1 000 000) keys are added before the plans are shown.
//!
//! Starts its own Postgres with testcontainers (`TEST_POSTGRES_IMAGE` when set)
//! and the real router over loopback, with the in-process fake gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::postgres::PoolSettings;
use integration_tests::{AppOptions, Backend, GOOD_USER, SEED_BODY, new_key, spawn_app_on};
use tokio::task::JoinSet;

#[tokio::main]
async fn main() {
    let per_level: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let store = integration_tests::postgres::fresh_store_with(PoolSettings {
        max_connections: 40,
        // Filling a million keys for the plans takes longer than a request may.
        statement_timeout: Duration::from_secs(600),
        ..PoolSettings::default()
    })
    .await;
    let app = Arc::new(
        spawn_app_on(
            store.clone(),
            store.clone(),
            AppOptions::on(Backend::Postgres),
        )
        .await,
    );

    println!(
        "POST /rides against Postgres, a fresh Idempotency-Key per request, {per_level} requests per level"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "clients", "requests", "req/s", "p50 ms", "p99 ms", "non-201"
    );
    for clients in [1usize, 8, 32] {
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for worker in 0..clients {
            let app = app.clone();
            let share = per_level / clients + usize::from(worker < per_level % clients);
            workers.spawn(async move {
                let mut latencies = Vec::with_capacity(share);
                let mut failures = 0usize;
                for _ in 0..share {
                    let key = new_key();
                    let sent = Instant::now();
                    let response = app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await;
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    latencies.push(sent.elapsed());
                    if status != 201 {
                        failures += 1;
                    }
                }
                (latencies, failures)
            });
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(per_level);
        let mut failures = 0;
        while let Some(joined) = workers.join_next().await {
            let (mut l, f) = joined.expect("client task");
            latencies.append(&mut l);
            failures += f;
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{:>8} {:>10} {:>10.0} {:>10.2} {:>10.2} {:>8}",
            clients,
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0,
            failures
        );
    }

    let extra: i64 = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    println!("\nBackground queries' plans after adding {extra} keys (1 in 500 unfinished):");
    integration_tests::plans::fill(store.pool(), extra).await;
    for (process, plan) in integration_tests::plans::plans(store.pool()).await {
        println!("-- {process}\n{plan}\n");
    }
}
