//! The request-path benchmark: the real `rocket-rides` binary under load,
//! side by side in one run with the floor the database allows.
//!
//!     cargo run --release -p integration-tests --example bench -- --help
//!
//! For each target (the embedded default, `rocket-rides start`, with every
//! background loop running; `rocket-rides api` on Postgres; optionally
//! `api` alone on the in-memory store) it sends `POST /rides` at 1, 8 and
//! 32 concurrent clients: first each request with a fresh
//! `Idempotency-Key` (a booked ride), then 32 clients paced by a fixed
//! pause before each request (the latency below saturation, where the
//! scheduler is not the bottleneck), then one finished key again and again
//! (a replay). Per level it prints requests/s, p50, p99, max, the unexpected
//! answers and the CPU milliseconds per request of the API, of Postgres
//! and of the load client; per target the RSS after the load and at its
//! peak; and pgbench running our own two statements per ride (and our one
//! per replay) on the same server with its own p50/p99 (its
//! per-transaction log): the floor, and our share of it. Then the plans of
//! the background queries over a filled table.
//!
//! `--before PATH` measures another build of `rocket-rides` in the same
//! run; `--load wrk` drives the same targets with wrk instead of our
//! client. Needs Docker and the Postgres image (`TEST_POSTGRES_IMAGE`),
//! `pgbench` for the floor and `wrk` for `--load wrk`. Progress shows on a
//! terminal, and a line per level on stderr. A command that prints
//! figures, never a test: these machines are noisy.

use std::path::PathBuf;
use std::time::Duration;

use adapters::postgres::queries;
use clap::{Parser, ValueEnum};
use domain::{Ride, RideId, RideParams, StoredResponse, UserId};
use integration_tests::bench::{
    BODY, Keys, Level, Service, USER, client_cpu_seconds, container_cpu_seconds, load_paced,
    parse_duration, run_once, spinner, wrk,
};
use integration_tests::postgres::{free_port, start_durable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadClient {
    /// Our own client (reqwest), which also checks each answer's replay header.
    Ours,
    /// wrk with a Lua script (fresh keys or one replayed).
    Wrk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// `rocket-rides start`: the in-memory store with every background loop.
    Start,
    /// `rocket-rides api` alone on the in-memory store.
    ApiMemory,
    /// `rocket-rides api` on Postgres, with the floor beside it.
    Postgres,
    /// `rocket-rides api` on Postgres charging through `rocket-rides
    /// fake-stripe` over HTTP, as deployed against Stripe: the API's memory
    /// without the in-process fake's record of every charge.
    PostgresFakeStripe,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Start => "memory (start)",
            Target::ApiMemory => "memory (api)",
            Target::Postgres => "postgres (api)",
            Target::PostgresFakeStripe => "postgres (api, fake-stripe)",
        }
    }
}

/// POST /rides against `rocket-rides` (the embedded default, `api` on
/// Postgres, `api` through fake-stripe) at 1, 8 and 32 clients, paced, and
/// replayed, beside pgbench running the same statements (the floor):
/// requests/s, p50, p99, max, CPU per request of the API, Postgres and the
/// load client, and each target's RSS after the load.
#[derive(Debug, Parser)]
struct Flags {
    /// Seconds per level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The build to measure (default: the release build, built first).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Another build of `rocket-rides` to measure in the same run.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Keys added before the background queries' plans are shown (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    plan_keys: i64,
    /// What to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "start,postgres,postgres-fake-stripe"
    )]
    targets: Vec<Target>,
    /// Concurrent clients per level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// The paced level's pause before each request (32 clients; 0 skips it).
    #[arg(long, value_parser = parse_duration, default_value = "4ms")]
    pause: Duration,
    /// Seconds of new keys at 32 clients before the levels (a row of its
    /// own): the levels then run on a store that already holds that many
    /// keys, where a pause that grows with the store would show.
    #[arg(long, default_value_t = 0)]
    prefill_seconds: u64,
    /// Who sends the load.
    #[arg(long, value_enum, default_value = "ours")]
    load: LoadClient,
}

const PACED_CLIENTS: usize = 32;

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

/// pgbench's transactions/s and its own p50/p99 (from its per-transaction
/// log), or why there are none.
fn pgbench(url: &str, script: &str, clients: usize, seconds: u64) -> Result<Floor, String> {
    let dir = std::env::temp_dir().join(format!("rocket-rides-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("script.sql");
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-l", "--log-prefix"])
        .arg(dir.join("log"))
        .arg("-f")
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
        .current_dir(&dir)
        .output();
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("log") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // client transaction latency_us script epoch epoch_us
        latencies.extend(text.lines().filter_map(|line| {
            line.split_whitespace()
                .nth(2)
                .and_then(|us| us.parse::<u64>().ok())
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps ="))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    latencies.sort_unstable();
    match tps {
        Some(tps) if output.status.success() && !latencies.is_empty() => {
            let at = |q: f64| {
                Duration::from_micros(
                    latencies[((latencies.len() as f64 - 1.0) * q).round() as usize],
                )
            };
            Ok(Floor {
                per_second: tps,
                p50: at(0.50),
                p99: at(0.99),
            })
        }
        _ => Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

struct Floor {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// CPU milliseconds per request of the API, Postgres and the load client.
#[derive(Default, Clone, Copy)]
struct Cost {
    api: f64,
    postgres: Option<f64>,
    client: f64,
}

struct Row {
    target: String,
    work: &'static str,
    clients: usize,
    level: Level,
    cost: Cost,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_header() {
    println!(
        "{:<24} {:<8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "target",
        "work",
        "clients",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "unexpected",
        "floor/s",
        "of floor",
        "cpu ms/req api+pg+client"
    );
}

fn print_row(row: &Row, floor: Option<&Floor>) {
    let cost = row.cost;
    println!(
        "{:<24} {:<8} {:>7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>9} {:>9} {:.3}+{}+{:.3}",
        row.target,
        row.work,
        row.clients,
        row.level.requests,
        row.level.per_second,
        ms(row.level.p50),
        ms(row.level.p99),
        ms(row.level.max),
        row.level.unexpected,
        floor.map_or("-".to_owned(), |f| format!("{:.0}", f.per_second)),
        floor.map_or("-".to_owned(), |f| format!(
            "{:.0}%",
            100.0 * row.level.per_second / f.per_second
        )),
        cost.api,
        cost.postgres
            .map_or("-".to_owned(), |pg| format!("{pg:.3}")),
        cost.client,
    );
}

/// One level through the chosen client, with what it cost.
#[allow(clippy::too_many_arguments)]
async fn level(
    flags: &Flags,
    service: &Service,
    postgres: Option<&str>,
    label: &str,
    clients: usize,
    keys: Keys,
    pause: Duration,
    seconds: u64,
) -> (Level, Cost) {
    let api_before = service.cpu_seconds();
    let pg_before = postgres.and_then(container_cpu_seconds);
    let client_before = client_cpu_seconds();
    let level = match flags.load {
        LoadClient::Ours => load_paced(&service.base, clients, seconds, keys, pause, label).await,
        LoadClient::Wrk => {
            let bar = spinner(label);
            let base = service.base.clone();
            let level =
                tokio::task::spawn_blocking(move || wrk(&base, clients, seconds, &keys, pause))
                    .await
                    .expect("wrk ran")
                    .unwrap_or_else(|why| panic!("{why}"));
            bar.finish_and_clear();
            level
        }
    };
    let per_request = |used: f64| 1000.0 * used / level.requests.max(1) as f64;
    let cost = Cost {
        api: per_request(service.cpu_seconds() - api_before),
        postgres: postgres
            .and_then(container_cpu_seconds)
            .zip(pg_before)
            .map(|(after, before)| per_request(after - before)),
        client: per_request(client_cpu_seconds() - client_before),
    };
    eprintln!(
        "{label}: {} requests, {:.0}/s, p99 {:.2} ms, max {:.2} ms",
        level.requests,
        level.per_second,
        ms(level.p99),
        ms(level.max)
    );
    (level, cost)
}

/// One level of one target, as a row of the table.
#[allow(clippy::too_many_arguments)]
async fn step(
    flags: &Flags,
    target: &str,
    service: &Service,
    postgres: Option<&str>,
    work: &'static str,
    clients: usize,
    keys: Keys,
    pause: Duration,
) -> Row {
    let label = format!("{target} {work} x{clients}");
    let seconds = match work {
        "prefill" => flags.prefill_seconds,
        _ => flags.seconds,
    };
    let (level, cost) = level(
        flags, service, postgres, &label, clients, keys, pause, seconds,
    )
    .await;
    Row {
        target: target.to_owned(),
        work,
        clients,
        level,
        cost,
    }
}

/// New keys at every level, then the paced level, then replays, against
/// one running service.
async fn measure(
    flags: &Flags,
    target: &str,
    service: &Service,
    postgres: Option<&str>,
) -> Vec<Row> {
    // Warm up: connections, caches, the allocator.
    load_paced(&service.base, 8, 1, Keys::Fresh, Duration::ZERO, "warm-up").await;
    let at = |work, clients, keys, pause| {
        step(flags, target, service, postgres, work, clients, keys, pause)
    };
    let mut rows = Vec::new();
    if flags.prefill_seconds > 0 {
        rows.push(at("prefill", PACED_CLIENTS, Keys::Fresh, Duration::ZERO).await);
    }
    for &clients in &flags.clients {
        rows.push(at("new key", clients, Keys::Fresh, Duration::ZERO).await);
    }
    if !flags.pause.is_zero() {
        rows.push(at("paced", PACED_CLIENTS, Keys::Fresh, flags.pause).await);
    }
    let replay_key = integration_tests::new_key();
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
    for &clients in &flags.clients {
        let keys = Keys::Replay(replay_key.clone());
        rows.push(at("replay", clients, keys, Duration::ZERO).await);
    }
    rows
}

/// `rocket-rides fake-stripe` on a port of its own, killed when dropped.
struct FakeStripe {
    _child: tokio::process::Child,
    base: String,
}

impl FakeStripe {
    async fn start(binary: &std::path::Path) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(binary)
            .args(["fake-stripe", "--port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("fake-stripe starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "fake-stripe never listened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// A target's memory: after its load (two seconds idle) and at its peak.
struct Memory {
    target: String,
    after: f64,
    peak: f64,
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let binary = flags
        .binary
        .clone()
        .unwrap_or_else(integration_tests::bench::release_binary);
    let bar = spinner("starting Postgres");
    let server = start_durable(free_port(), "bench").await;
    bar.finish_and_clear();
    let container = server.container.id().to_owned();
    let url = server.url.clone();
    let mut builds = vec![("", binary)];
    if let Some(before) = &flags.before {
        builds.push(("before: ", before.clone()));
    }
    println!(
        "POST /rides, {} s per level, paced level: {} clients pausing {:?}, load: {:?}; in-process fake gateway; Postgres 15 in a container (fsync on)\n",
        flags.seconds, PACED_CLIENTS, flags.pause, flags.load
    );
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    let mut replay_key = None;
    let mut fake_stripe: Option<FakeStripe> = None;
    for (label, binary) in &builds {
        for &target in &flags.targets {
            let name = format!("{label}{}", target.label());
            let (service, db_url) = match target {
                Target::Start => (Service::start(binary, &["start"], &[]).await, None),
                Target::ApiMemory => (Service::start(binary, &["api"], &[]).await, None),
                Target::Postgres | Target::PostgresFakeStripe => {
                    // A database of its own per build, so each starts empty.
                    let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
                    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                        .execute(&admin)
                        .await
                        .expect("a database");
                    let db_url = format!("{}/{database}", url.trim_end_matches("/postgres"));
                    let mut env = vec![("DATABASE_URL", db_url.clone())];
                    if target == Target::PostgresFakeStripe {
                        let stripe = fake_stripe.get_or_insert(FakeStripe::start(binary).await);
                        env.push(("STRIPE_API_KEY", "sk_test_bench".to_owned()));
                        env.push(("STRIPE_API_BASE", stripe.base.clone()));
                    }
                    let env: Vec<(&str, &str)> =
                        env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    run_once(binary, &["migrate"], &env).await;
                    run_once(binary, &["up"], &env).await;
                    (Service::start(binary, &["api"], &env).await, Some(db_url))
                }
            };
            let postgres = db_url.as_ref().map(|_| container.as_str());
            let measured = measure(&flags, &name, &service, postgres).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            memory.push(Memory {
                target: name,
                after: service.rss_mib(),
                peak: service.peak_rss_mib(),
            });
            drop(service);
            if let (Some(db_url), true) = (db_url, label.is_empty() && target == Target::Postgres) {
                // pgbench replays a key this build finished.
                let pool = sqlx::PgPool::connect(&db_url).await.expect("connection");
                let (user_id, key): (i64, String) = sqlx::query_as(
                    "SELECT user_id, idempotency_key FROM idempotency_keys \
                     WHERE recovery_point = 'finished' ORDER BY id DESC LIMIT 1",
                )
                .fetch_one(&pool)
                .await
                .expect("a finished key");
                replay_key = Some((db_url, user_id, key));
            }
            rows.extend(measured);
        }
    }

    let mut floors = Vec::new();
    if let Some((db_url, user_id, key)) = &replay_key {
        let (new_key, replay) = pgbench_scripts(*user_id, key);
        for (work, script) in [("new key", &new_key), ("replay", &replay)] {
            for &clients in &flags.clients {
                let bar = spinner(&format!("pgbench (floor) {work} x{clients}"));
                match pgbench(db_url, script, clients, flags.seconds) {
                    Ok(floor) => floors.push((work, clients, floor)),
                    Err(why) => println!("floor ({work}, {clients} clients) not measured: {why}"),
                }
                bar.finish_and_clear();
            }
        }
    }
    let floor = |work: &str, clients: usize| {
        floors
            .iter()
            .find(|(w, c, _)| *w == work && *c == clients)
            .map(|(_, _, floor)| floor)
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
    for (work, clients, floor) in &floors {
        println!(
            "{:<24} {:<8} {:>7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>10} {:>9} {:>9}",
            "pgbench (floor)",
            work,
            clients,
            "-",
            floor.per_second,
            ms(floor.p50),
            ms(floor.p99),
            "-",
            "-",
            "-",
            "-"
        );
    }
    println!(
        "\n(pgbench: our statements per ride, prepared, over TCP to the same server; p50/p99 from its per-transaction log)"
    );
    println!("\nRSS of each target: two seconds after its load (VmRSS), and its peak (VmHWM):");
    for m in &memory {
        println!(
            "  {:<26} {:>7.1} MiB after, {:>7.1} MiB peak",
            m.target, m.after, m.peak
        );
    }
    let find = |target: &str, work: &str, clients: usize| {
        rows.iter()
            .find(|r| r.target == target && r.work == work && r.clients == clients)
    };
    if let (Some(replays), Some(new)) = (
        find("postgres (api)", "replay", 32),
        find("postgres (api)", "new key", 32),
    ) {
        println!(
            "\nReplays per new key at 32 clients on Postgres: {:.1}x",
            replays.level.per_second / new.level.per_second
        );
    }
    if let (Some(ours), Some(floor)) = (find("postgres (api)", "new key", 32), floor("new key", 32))
    {
        println!(
            "New keys at 32 clients on Postgres: {:.0}% of the floor, p99 {:.2}x the floor's own",
            100.0 * ours.level.per_second / floor.per_second,
            ours.level.p99.as_secs_f64() / floor.p99.as_secs_f64()
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
        let bar = spinner(&format!("adding {} keys", flags.plan_keys));
        integration_tests::plans::fill(&pool, flags.plan_keys).await;
        bar.finish_and_clear();
        for (process, plan) in integration_tests::plans::plans(&pool).await {
            println!("-- {process}\n{plan}\n");
        }
    }
}
