//! The request-path benchmark: the real `rocket-rides` binary under load,
//! side by side in one run with the floor the database allows.
//!
//!     cargo run --release -p integration-tests --example bench -- [FLAGS]
//!
//! For each store, the embedded default (`rocket-rides start`, in-memory
//! store, every background loop running) and `rocket-rides api` on Postgres,
//! it sends `POST /rides` at 1, 8 and 32 concurrent clients: first each
//! request with a fresh `Idempotency-Key` (a booked ride), then one finished
//! key again and again (a replay). It prints requests/s, p50, p99 and the
//! count of unexpected answers per level, the API's peak RSS, and pgbench
//! running our own two statements per ride (and our one per replay) on the
//! same server: the floor, and our share of it. Then the plans of the
//! background queries over a filled table.
//!
//! Flags: `--seconds S` per level (5), `--binary PATH` (default: the
//! release build, built first), `--before PATH` (also measure another build
//! of `rocket-rides`, e.g. the previous commit's, in the same run),
//! `--plan-keys N` keys added before the plans are shown (1 000 000; 0
//! skips them). Needs Docker and the Postgres image (`TEST_POSTGRES_IMAGE`),
//! and `pgbench` on the PATH for the floor. The binaries log at `warn`.
//! A command that prints figures, never a test: these machines are noisy.

use std::path::PathBuf;
use std::time::Duration;

use adapters::postgres::queries;
use domain::{Ride, RideId, RideParams, StoredResponse, UserId};
use integration_tests::bench::{BODY, Keys, Level, Service, USER, load, run_once};
use integration_tests::postgres::{free_port, start_durable};

const LEVELS: [usize; 3] = [1, 8, 32];

struct Flags {
    seconds: u64,
    binary: PathBuf,
    before: Option<PathBuf>,
    plan_keys: i64,
}

fn flags() -> Flags {
    let mut seconds = 5;
    let mut binary = None;
    let mut before = None;
    let mut plan_keys = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            "--binary" => binary = Some(PathBuf::from(value)),
            "--before" => before = Some(PathBuf::from(value)),
            "--plan-keys" => plan_keys = value.parse().expect("--plan-keys N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let binary = binary.unwrap_or_else(integration_tests::bench::release_binary);
    Flags {
        seconds,
        binary,
        before,
        plan_keys,
    }
}

/// Our two statements per booked ride, and our one per replay, as pgbench
/// scripts: the statements the store runs, with literals for the values.
fn pgbench_scripts(user_id: i64, replay_key: &str) -> (String, String) {
    let params = RideParams::from_numbers([0.0; 4]).expect("valid");
    let ride = Ride {
        id: RideId(1),
        user_id: UserId(user_id),
        idempotency_key_id: None,
        params,
        stripe_charge_id: Some("ch_0000000000000000000000000".to_owned()),
        stripe_payment_intent_id: Some("pi_0000000000000000000000000".to_owned()),
        status: domain::RideStatus::Booked,
    };
    let body = StoredResponse::ride_created(&ride).body.replace('\'', "''");
    let fingerprint = domain::RequestFingerprint::for_ride("POST", "/rides", &params);
    let begin = |key: &str| {
        substitute(
            queries::BEGIN_REQUEST,
            &[
                "now()".to_owned(),
                key.to_owned(),
                format!("'{}'", fingerprint.as_str()),
                "0.0".to_owned(),
                "0.0".to_owned(),
                "0.0".to_owned(),
                "0.0".to_owned(),
                "'127.0.0.1'".to_owned(),
                user_id.to_string(),
                "true".to_owned(),
                "'pgbench'".to_owned(),
            ],
        )
    };
    let book = substitute(
        queries::BOOK,
        &[
            ":id".to_owned(),
            ":lock_generation".to_owned(),
            "ARRAY['ride_created','charge_created']".to_owned(),
            "('ch_' || :k)".to_owned(),
            ":ride_id".to_owned(),
            "201".to_owned(),
            format!("'{body}'"),
            "'send_ride_receipt'".to_owned(),
            "2000".to_owned(),
            "'usd'".to_owned(),
            user_id.to_string(),
            "now()".to_owned(),
            "('pi_' || :k)".to_owned(),
        ],
    );
    let new_key = format!(
        "\\set k random(1, 1000000000000000)\n{} \\gset\n{};\n",
        one_line(&begin("('pgbench-key-' || :k)")),
        one_line(&book)
    );
    let replay = format!("{};\n", one_line(&begin(&format!("'{replay_key}'"))));
    (new_key, replay)
}

/// `$n` replaced by `values[n - 1]`, highest first so `$1` never eats `$10`.
fn substitute(sql: &str, values: &[String]) -> String {
    let mut sql = sql.to_owned();
    for (n, value) in values.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", n + 1), value);
    }
    sql
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// pgbench's transactions/s and mean latency, or why there are none.
fn pgbench(url: &str, script: &str, clients: usize, seconds: u64) -> Result<(f64, f64), String> {
    let path =
        std::env::temp_dir().join(format!("rocket-rides-bench-{}.sql", uuid::Uuid::new_v4()));
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&path)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
            url,
        ])
        .output();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number_after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    match (number_after("tps ="), number_after("latency average =")) {
        (Some(tps), Some(latency)) if output.status.success() => Ok((tps, latency)),
        _ => Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

struct Row {
    target: String,
    work: &'static str,
    clients: usize,
    level: Level,
}

fn print_header() {
    println!(
        "{:<22} {:<8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "target",
        "work",
        "clients",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "unexpected",
        "floor/s",
        "of floor"
    );
}

fn print_row(row: &Row, floor: Option<f64>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<22} {:<8} {:>7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>10} {:>10} {:>9}",
        row.target,
        row.work,
        row.clients,
        row.level.requests,
        row.level.per_second,
        ms(row.level.p50),
        ms(row.level.p99),
        row.level.unexpected,
        floor.map_or("-".to_owned(), |f| format!("{f:.0}")),
        floor.map_or("-".to_owned(), |f| format!(
            "{:.0}%",
            100.0 * row.level.per_second / f
        )),
    );
}

/// New keys then replays at every level against one running service.
async fn measure(target: &str, service: &Service, seconds: u64) -> Vec<Row> {
    // Warm up: connections, caches, the allocator.
    load(&service.base, 8, 1, Keys::Fresh).await;
    let replay_key = integration_tests::new_key();
    let mut rows = Vec::new();
    for clients in LEVELS {
        let level = load(&service.base, clients, seconds, Keys::Fresh).await;
        rows.push(Row {
            target: target.to_owned(),
            work: "new key",
            clients,
            level,
        });
    }
    let first = reqwest::Client::new()
        .post(format!("{}/rides", service.base))
        .header("Authorization", USER)
        .header("Idempotency-Key", &replay_key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(BODY)
        .send()
        .await
        .expect("answered");
    assert_eq!(first.status().as_u16(), 201, "the key to replay is booked");
    for clients in LEVELS {
        let level = load(
            &service.base,
            clients,
            seconds,
            Keys::Replay(replay_key.clone()),
        )
        .await;
        rows.push(Row {
            target: target.to_owned(),
            work: "replay",
            clients,
            level,
        });
    }
    rows
}

#[tokio::main]
async fn main() {
    let flags = flags();
    let server = start_durable(free_port(), "bench").await;
    let url = server.url.clone();
    let mut builds = vec![("", flags.binary.clone())];
    if let Some(before) = &flags.before {
        builds.push(("before: ", before.clone()));
    }
    println!(
        "POST /rides, {} s per level, in-process fake gateway; Postgres 15 in a container (fsync on)\n",
        flags.seconds
    );
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    let mut replay_key = None;
    for (label, binary) in &builds {
        let memory = Service::start(binary, &["start"], &[]).await;
        rows.extend(measure(&format!("{label}memory (start)"), &memory, flags.seconds).await);
        rss.push((format!("{label}memory (start)"), memory.peak_rss_mib()));
        drop(memory);

        // A database of its own per build, so each starts empty.
        let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&admin)
            .await
            .expect("a database");
        let db_url = format!("{}/{database}", url.trim_end_matches("/postgres"));
        run_once(binary, &["migrate"], &[("DATABASE_URL", &db_url)]).await;
        run_once(binary, &["up"], &[("DATABASE_URL", &db_url)]).await;
        let api = Service::start(binary, &["api"], &[("DATABASE_URL", &db_url)]).await;
        let measured = measure(&format!("{label}postgres (api)"), &api, flags.seconds).await;
        rss.push((format!("{label}postgres (api)"), api.peak_rss_mib()));
        drop(api);
        if label.is_empty() {
            // pgbench replays a key this build finished.
            let pool = sqlx::PgPool::connect(&db_url).await.expect("connection");
            let (user_id, key): (i64, String) = sqlx::query_as(
                "SELECT user_id, idempotency_key FROM idempotency_keys \
                 WHERE recovery_point = 'finished' ORDER BY id DESC LIMIT 1",
            )
            .fetch_one(&pool)
            .await
            .expect("a finished key");
            replay_key = Some((db_url.clone(), user_id, key));
        }
        rows.extend(measured);
    }

    let mut floors = Vec::new();
    if let Some((db_url, user_id, key)) = &replay_key {
        let (new_key, replay) = pgbench_scripts(*user_id, key);
        for (work, script) in [("new key", &new_key), ("replay", &replay)] {
            for clients in LEVELS {
                match pgbench(db_url, script, clients, flags.seconds) {
                    Ok((tps, latency)) => floors.push((work, clients, tps, latency)),
                    Err(why) => println!("floor ({work}, {clients} clients) not measured: {why}"),
                }
            }
        }
    }
    let floor = |work: &str, clients: usize| {
        floors
            .iter()
            .find(|(w, c, _, _)| *w == work && *c == clients)
            .map(|(_, _, tps, _)| *tps)
    };
    print_header();
    for row in &rows {
        let of = row
            .target
            .starts_with("postgres")
            .then(|| floor(row.work, row.clients))
            .flatten();
        print_row(row, of);
    }
    for (work, clients, tps, latency) in &floors {
        println!(
            "{:<22} {:<8} {:>7} {:>9} {:>9.0} {:>8} {:>8} {:>10} {:>10} {:>9}",
            "pgbench (floor)",
            work,
            clients,
            "-",
            tps,
            format!("~{latency:.2}"),
            "-",
            "-",
            "-",
            "-"
        );
    }
    println!(
        "\n(pgbench: our statements per ride, prepared, over TCP to the same server; its column p50 is its mean latency)"
    );
    println!("\nPeak RSS (VmHWM) of the process under the load above:");
    for (target, mib) in &rss {
        println!("  {target:<22} {mib:.1} MiB");
    }
    let per_second = |target: &str, work: &str, clients: usize| {
        rows.iter()
            .find(|r| r.target == target && r.work == work && r.clients == clients)
            .map(|r| r.level.per_second)
    };
    if let (Some(replays), Some(new)) = (
        per_second("postgres (api)", "replay", 32),
        per_second("postgres (api)", "new key", 32),
    ) {
        println!(
            "\nReplays per new key at 32 clients on Postgres: {:.1}x",
            replays / new
        );
    }

    if flags.plan_keys > 0 {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect(&url)
            .await
            .expect("a connection");
        adapters::postgres::migrate(&pool).await.expect("migrated");
        println!(
            "\nBackground queries' plans after adding {} keys (1 in 500 unfinished):",
            flags.plan_keys
        );
        integration_tests::plans::fill(&pool, flags.plan_keys).await;
        for (process, plan) in integration_tests::plans::plans(&pool).await {
            println!("-- {process}\n{plan}\n");
        }
    }
}
