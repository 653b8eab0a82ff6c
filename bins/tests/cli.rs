//! The real binary, as a user runs it: `start` with nothing configured
//! serves the seed's request, counts it on `/metrics` and stops cleanly on
//! SIGTERM; `migrate` and
//! `up` are safe to run twice against Postgres (testcontainers).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rocket-rides");

use integration_tests::postgres::free_port;

fn command() -> Command {
    integration_tests::rocket_rides(BIN)
}

/// Reads the child's stdout as it comes, so a full pipe never blocks it.
fn collect_stdout(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut output = String::new();
        let _ = stdout.read_to_string(&mut output);
        output
    })
}

/// `rocket-rides start` on `port` with `args`, its log read as it comes.
fn start(port: u16, args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = command()
        .args(["start", "--api-port", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let log = collect_stdout(&mut child);
    (child, log)
}

fn stop(mut child: Child, log: std::thread::JoinHandle<String>) -> (bool, String) {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), log.join().expect("log reader"))
}

#[tokio::test]
async fn start_with_nothing_configured_serves_the_seed_request_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let (child, log) = start(
        port,
        &[
            "--poll-interval",
            "500ms",
            "--completer-min-age",
            "2s",
            "--completer-min-idle",
            "1s",
            "--max-pause",
            "200ms",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = format!("{:032x}", fastrand::u128(..));
    let request_id = format!("cli-seed-{key}");
    let seed = |key: String| {
        client
            .post(format!("{base}/rides"))
            .header("Authorization", "user@example.com")
            .header("Idempotency-Key", key)
            .header("X-Request-Id", &request_id)
            .form(&[
                ("origin_lat", "0.0"),
                ("origin_lon", "0.0"),
                ("target_lat", "0.0"),
                ("target_lon", "0.0"),
            ])
            .send()
    };
    let first = seed(key.clone()).await.expect("answered");
    assert_eq!(first.status().as_u16(), 201);
    assert_eq!(
        first.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(request_id.as_bytes())
    );
    let first_body = first.text().await.expect("body");
    let second = seed(key).await.expect("answered");
    assert_eq!(second.status().as_u16(), 201);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(second.text().await.expect("body"), first_body);

    // Until the simulator's failures have aged past the completer's minimum
    // and been finished, and the enqueuer and worker have sent a receipt:
    // read from the process's own counters, not waited for by the clock.
    let counted = |metrics: &str, name: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("answered")
            .text()
            .await
            .expect("body");
        let completed = counted(
            &metrics,
            "rocket_rides_ride_requests_total{",
            &[r#"runner="completer""#],
        );
        let receipts = counted(&metrics, "rocket_rides_receipts_sent_total", &[]);
        if (completed >= 1.0 && receipts >= 1.0) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (clean, log) = stop(child, log);
    let counted = |name: &str, labels: &[&str]| counted(&metrics, name, labels);
    assert!(
        counted(
            "rocket_rides_ride_requests_total{",
            &[r#"runner="api""#, r#"outcome="replayed""#]
        ) >= 1.0,
        "the replay is counted:\n{metrics}"
    );
    assert!(
        counted(
            "rocket_rides_ride_requests_total{",
            &[r#"outcome="simulated_error""#]
        ) >= 1.0,
        "the simulator's failures are counted:\n{metrics}"
    );
    assert!(
        counted("rocket_rides_receipts_sent_total", &[]) >= 1.0,
        "receipts are counted:\n{metrics}"
    );
    assert!(clean, "exit status 0 after SIGTERM:\n{log}");
    for expected in [
        "demo user created",
        "simulated request",
        "status=201",
        "status=500",
        "receipt sent ride_id=",
        "completer finished key",
        "shutdown signal received",
        "API stopped",
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    // The request's log lines name it: the request's own and its answer.
    let traced = format!("request_id={request_id}");
    assert!(
        log.lines()
            .any(|line| line.contains(&traced) && line.contains("status=201")),
        "no answer logged with {traced}:\n{log}"
    );
}

#[tokio::test]
async fn migrate_and_up_run_twice_against_postgres() {
    let url = integration_tests::postgres::fresh_database_url().await;
    let keys_dir = std::env::temp_dir().join(format!("rr-keys-{}", uuid::Uuid::new_v4().simple()));
    // The first `up` saves the users as a version before PaymentIntents
    // did (Charges: no PaymentMethod); the second adds what is missing.
    for (subcommand, payments) in [
        ("migrate", "payment_intents"),
        ("migrate", "payment_intents"),
        ("up", "charges"),
        ("up", "payment_intents"),
    ] {
        let output = command()
            .arg(subcommand)
            .env("DATABASE_URL", &url)
            .env("STRIPE_PAYMENTS", payments)
            .envs((subcommand == "up").then_some(("UP_API_KEYS_DIR", &keys_dir)))
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{subcommand}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if subcommand == "up" {
            let printed = String::from_utf8_lossy(&output.stdout);
            assert!(printed.contains("user@example.com"), "{printed}");
            assert!(printed.contains("api key rr_"), "{printed}");
            // The key printed is the one left for the simulator, readable
            // by its owner only.
            use std::os::unix::fs::PermissionsExt as _;
            let file = keys_dir.join("user@example.com");
            let written = std::fs::read_to_string(&file).expect("key file");
            let key = printed
                .lines()
                .find(|line| line.starts_with("user@example.com\t"))
                .and_then(|line| line.split("api key ").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .expect("a key printed");
            assert_eq!(written, format!("Bearer {key}\n"));
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let (users,): (i64,) = sqlx::query_as("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(users, 4, "up is an upsert");
    let saved: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT email, stripe_payment_method_id FROM users ORDER BY email")
            .fetch_all(&pool)
            .await
            .expect("users");
    let with_cards: Vec<&str> = saved
        .iter()
        .filter(|(_, pm)| pm.as_deref().is_some_and(|pm| pm.starts_with("pm_")))
        .map(|(email, _)| email.as_str())
        .collect();
    assert_eq!(
        with_cards,
        [
            "user-3ds@example.com",
            "user-bad-source@example.com",
            "user@example.com"
        ],
        "the second up saved a PaymentMethod for each user with a card: {saved:?}"
    );
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(keys, 8, "each run issues one key per user");
}

/// The README's settings table is generated: `rocket-rides settings-table`
/// prints it from the flags' definitions, and this fails when the copy
/// between the README's markers differs.
#[test]
fn the_readme_lists_every_setting_as_the_flags_define_it() {
    let output = command()
        .arg("settings-table")
        .output()
        .expect("runs settings-table");
    assert!(output.status.success(), "{output:?}");
    let generated = String::from_utf8(output.stdout).expect("UTF-8");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let (begin, end) = (
        "<!-- settings-table:begin -->\n",
        "<!-- settings-table:end -->",
    );
    let from = readme.find(begin).expect("the README's begin marker") + begin.len();
    let to = readme.find(end).expect("the README's end marker");
    assert!(
        readme[from..to].trim() == generated.trim(),
        "README.md's settings table differs from the flags: replace it with the output of `cargo run -q -- settings-table`"
    );
    for name in [
        "DATABASE_URL",
        "SIMULATOR_RETRIES",
        "FAKE_STRIPE_SEARCH_DELAY",
    ] {
        assert!(generated.contains(&format!("`{name}`")), "{name} is listed");
    }
}

/// Each subcommand's `--help` lists the settings it reads and no others.
#[test]
fn each_command_lists_only_the_settings_it_reads() {
    let help = |command: &str| {
        let output = self::command()
            .args([command, "--help"])
            .output()
            .expect("runs --help");
        assert!(output.status.success(), "{command} --help: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let fake_stripe = help("fake-stripe");
    for absent in [
        "--database-url",
        "--nats-url",
        "--lock-timeout",
        "--completer-min-age",
    ] {
        assert!(!fake_stripe.contains(absent), "fake-stripe shows {absent}");
    }
    assert!(fake_stripe.contains("--search-delay"));
    let migrate = help("migrate");
    let flags: Vec<&str> = migrate
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .collect();
    assert_eq!(
        flags,
        [
            "--log-format",
            "--help",
            "--database-url",
            "--database-max-connections",
            "--database-acquire-timeout",
            "--database-statement-timeout",
        ],
        "{migrate}"
    );
    let api = help("api");
    assert!(!api.contains("--worker-batch"), "{api}");
    for present in [
        "--api-port",
        "--lock-timeout",
        "--console-token",
        "--database-url",
    ] {
        assert!(api.contains(present), "api lacks {present}");
    }
}

/// A process that has counted nothing yet already exports every series it
/// can count, at zero and with `# HELP` (so `rate()` and `absent()` read the
/// same after a restart), its build and its process figures.
#[tokio::test]
async fn a_fresh_process_exports_every_series_it_can_count_with_help_build_and_process_metrics() {
    use application::telemetry::{Exporter, METRICS};
    let port = free_port();
    let (child, log) = start(
        port,
        &[
            // The simulator all but idle (what it counts is beside the
            // series checked at zero below).
            "--max-pause",
            "1h",
        ],
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Every loop registers its series as it starts: wait for the last.
    let metrics = loop {
        if let Ok(response) = client.get(&url).send().await {
            let text = response.text().await.expect("body");
            if text.contains("rocket_rides_keys_reaped_total")
                && text.contains("rocket_rides_receipts_sent_total")
                && text.contains("rocket_rides_completer_keys_total")
                && text.contains("rocket_rides_staged_jobs")
            {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no full /metrics within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (clean, log) = stop(child, log);
    assert!(clean, "{log}");
    for metric in METRICS.iter().filter(|metric| {
        metric
            .exported_by
            .iter()
            .any(|by| *by != Exporter::Postgres)
    }) {
        assert!(
            metrics.contains(&format!("# HELP {} {}", metric.name, metric.help)),
            "{} has no help:\n{metrics}",
            metric.name
        );
        for (label, values) in metric.labels {
            for value in *values {
                assert!(
                    metrics.lines().any(|line| line.starts_with(metric.name)
                        && line.contains(&format!("{label}=\"{value}\""))),
                    "{} has no series with {label}={value}:\n{metrics}",
                    metric.name
                );
            }
        }
    }
    for zero in [
        r#"rocket_rides_ride_requests_total{runner="api",outcome="internal_error"} 0"#,
        r#"rocket_rides_ride_requests_total{runner="completer",outcome="lost_lock"} 0"#,
        "rocket_rides_keys_reaped_total 0",
    ] {
        assert!(
            metrics.lines().any(|line| line == zero),
            "no {zero:?}:\n{metrics}"
        );
    }
    for present in [
        "# HELP rocket_rides_build_info",
        r#"rocket_rides_build_info{version=""#,
        "# HELP process_cpu_seconds_total",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(metrics.contains(present), "no {present:?}:\n{metrics}");
    }
}

/// The simulator sends the Authorization its file holds (as `up
/// --api-keys-dir` leaves one), and a file it cannot read stops it at once,
/// named.
#[tokio::test]
async fn the_simulator_authorizes_as_its_file_says() {
    let file = std::env::temp_dir().join(format!("rr-auth-{}", uuid::Uuid::new_v4().simple()));
    let missing = command()
        .args(["simulator", "--authorization-file"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    let said = String::from_utf8_lossy(&missing.stdout).to_string()
        + &String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains(&file.display().to_string()), "{said}");
    // The declined rider's email: every ride it sends is refused 402.
    std::fs::write(&file, "user-bad-source@example.com\n").expect("written");
    let port = free_port();
    let file_arg = file.to_str().expect("a UTF-8 path");
    let (child, log) = start(
        port,
        &[
            "--max-pause",
            "50ms",
            "--error-rate",
            "0",
            "--authorization-file",
            file_arg,
        ],
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let declined = r#"rocket_rides_ride_requests_total{runner="api",outcome="declined"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Ok(response) = client.get(&url).send().await {
            let text = response.text().await.expect("body");
            let counted = text
                .lines()
                .find(|line| line.starts_with(declined))
                .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
            if counted.is_some_and(|n| n >= 1.0) {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no declined ride within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (clean, log) = stop(child, log);
    assert!(clean, "{log}");
    let created = r#"rocket_rides_ride_requests_total{runner="api",outcome="created"} 0"#;
    assert!(
        metrics.lines().any(|line| line == created),
        "no ride for the default rider:\n{metrics}"
    );
}
