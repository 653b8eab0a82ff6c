//! Filling a database the way production does, and the plans of the
//! background processes' queries over it: shared by the plan test and the
//! benchmark.

use std::time::{Duration, SystemTime};

use adapters::postgres::queries;
use sqlx::{AssertSqlSafe, PgPool};
use time::OffsetDateTime;

/// Fills idempotency_keys with `keys` rows over 30 days (1 in 500
/// unfinished) and staged_jobs with 20 000 rows, then ANALYZEs.
pub async fn fill(pool: &PgPool, keys: i64) {
    sqlx::query(
        "INSERT INTO users (email, stripe_customer_id) VALUES ('plan@example.com', 'cus_plan')",
    )
    .execute(pool)
    .await
    .expect("user");
    // In chunks, so no statement outlives a statement timeout.
    const CHUNK: i64 = 500_000;
    for first in (1..=keys).step_by(CHUNK as usize) {
        sqlx::query(
            "INSERT INTO idempotency_keys (created_at, idempotency_key, last_run_at, locked_at, \
             request_fingerprint, origin_lat, origin_lon, target_lat, target_lon, response_code, \
             response_body, recovery_point, user_id) \
             SELECT now() - (n * interval '30 days' / $1), 'plan-key-' || lpad(n::text, 16, '0'), \
             now() - (n * interval '30 days' / $1), NULL, 'POST /rides', 0, 0, 0, 0, \
             CASE WHEN n % 500 = 0 THEN NULL ELSE 201 END, \
             CASE WHEN n % 500 = 0 THEN NULL ELSE '{}' END, \
             CASE WHEN n % 500 = 0 THEN 'ride_created' ELSE 'finished' END, \
             (SELECT id FROM users LIMIT 1) FROM generate_series($2, $3) AS n",
        )
        .bind(keys)
        .bind(first)
        .bind((first + CHUNK - 1).min(keys))
        .execute(pool)
        .await
        .expect("keys");
    }
    sqlx::query(
        "INSERT INTO staged_jobs (job_name, job_args) SELECT 'send_ride_receipt', \
         jsonb_build_object('amount', 2000, 'currency', 'usd', 'user_id', 1, 'ride_id', n) \
         FROM generate_series(1, 20000) AS n",
    )
    .execute(pool)
    .await
    .expect("jobs");
    sqlx::raw_sql("ANALYZE")
        .execute(pool)
        .await
        .expect("analyze");
}

fn ago(seconds: u64) -> OffsetDateTime {
    OffsetDateTime::from(SystemTime::now() - Duration::from_secs(seconds))
}

/// The plans of the completer's, reaper's, enqueuer's and review queries
/// (the list, and the completer's report of new keys).
pub async fn plans(pool: &PgPool) -> Vec<(&'static str, String)> {
    let explain = |sql: &'static str| AssertSqlSafe(format!("EXPLAIN {sql}"));
    let text = |rows: Vec<(String,)>| {
        rows.into_iter()
            .map(|(l,)| l)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let completer: Vec<(String,)> = sqlx::query_as(explain(queries::FIND_COMPLETABLE))
        .bind(ago(300))
        .bind(ago(60))
        .bind(ago(90))
        .bind(1000_i64)
        .bind(ago(24 * 3600))
        .fetch_all(pool)
        .await
        .expect("explain completer");
    let reaper: Vec<(String,)> = sqlx::query_as(explain(queries::REAP_KEYS))
        .bind(ago(72 * 3600))
        .bind(1000_i64)
        .fetch_all(pool)
        .await
        .expect("explain reaper");
    let enqueuer: Vec<(String,)> = sqlx::query_as(explain(queries::CLAIM_STAGED_JOBS))
        .bind(ago(0))
        .bind(OffsetDateTime::from(
            SystemTime::now() + Duration::from_secs(60),
        ))
        .bind(1000_i64)
        .fetch_all(pool)
        .await
        .expect("explain enqueuer");
    let review: Vec<(String,)> = sqlx::query_as(explain(queries::KEYS_FOR_REVIEW))
        .bind(ago(24 * 3600))
        .bind(100_i64)
        .fetch_all(pool)
        .await
        .expect("explain review");
    let review_report: Vec<(String,)> = sqlx::query_as(explain(queries::REPORT_KEYS_FOR_REVIEW))
        .bind(ago(24 * 3600))
        .bind(ago(0))
        .bind(1000_i64)
        .fetch_all(pool)
        .await
        .expect("explain review report");
    let review_checks: Vec<(String,)> = sqlx::query_as(explain(queries::CLAIM_REVIEW_CHECKS))
        .bind(ago(0))
        .bind(vec![150.0_f64, 300.0, 600.0, 1200.0, 2400.0, 4800.0])
        .bind(1000_i64)
        .fetch_all(pool)
        .await
        .expect("explain review checks");
    vec![
        ("completer", text(completer)),
        ("reaper", text(reaper)),
        ("enqueuer", text(enqueuer)),
        ("review", text(review)),
        ("review report", text(review_report)),
        ("review checks", text(review_checks)),
    ]
}
