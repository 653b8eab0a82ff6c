//! The real binary with its dependencies away: every long-running process
//! started while Postgres and NATS are down waits for them (logging once
//! that it waits and once that they answer, the API serving `/healthz` and
//! a not-ready `/readyz` meanwhile), then does its work when they come up;
//! settings that contradict each other stop a process at once, naming both;
//! and no credential reaches a log line.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::nats::start_nats_on;
use integration_tests::postgres::{free_port, start_dedicated};

const BIN: &str = env!("CARGO_BIN_EXE_rocket-rides");
const PASSWORD: &str = "pw-never-logged-7f3a";

fn command() -> Command {
    integration_tests::rocket_rides(BIN)
}

/// A process and everything it logs (stdout and stderr, read as it comes).
struct Process {
    name: &'static str,
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    fn spawn(name: &'static str, mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for mut stream in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .expect("log")
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
        }
        Self { name, child, log }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits (up to 60 s) until the log contains `text`.
    async fn logged(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{} never logged {text:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// SIGTERM, then the exit status within 30 s.
    async fn stop(mut self) -> (bool, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.success(), self.log());
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_started_before_postgres_and_nats_waits_for_them_then_works() {
    let (pg_port, nats_port, api_port) = (free_port(), free_port(), free_port());
    let health_ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let database_url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{pg_port}/postgres");
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let configured = |subcommand: &str| {
        let mut command = command();
        command
            .arg(subcommand)
            .env("DATABASE_URL", &database_url)
            .env("NATS_URL", &nats_url)
            // The credentials from settings (the soak passes them in the URL).
            .env("NATS_USER", integration_tests::nats::USER)
            .env("NATS_PASSWORD", integration_tests::nats::PASSWORD)
            .env("API_PORT", api_port.to_string())
            .env("POLL_INTERVAL", "200ms");
        command
    };
    let api_ops = free_port();
    let mut api_command = configured("api");
    api_command.env("METRICS_ADDR", format!("127.0.0.1:{api_ops}"));
    let mut processes = vec![Process::spawn("api", api_command)];
    for (name, port) in ["completer", "enqueuer", "worker", "reaper"]
        .into_iter()
        .zip(&health_ports)
    {
        let mut command = configured(name);
        // Both names of the endpoint's setting.
        if matches!(name, "completer" | "enqueuer") {
            command.env("METRICS_ADDR", format!("127.0.0.1:{port}"));
        } else {
            command.env("HEALTH_PORT", port.to_string());
        }
        processes.push(Process::spawn(name, command));
    }
    let migrate = Process::spawn("migrate", configured("migrate"));
    for process in &processes {
        process.logged("waiting for Postgres").await;
    }
    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{api_port}");
    let health = client
        .get(format!("{api}/healthz"))
        .send()
        .await
        .expect("up");
    assert_eq!(health.status(), 200, "alive while waiting");
    let ready = client
        .get(format!("{api}/readyz"))
        .send()
        .await
        .expect("up");
    assert_eq!(ready.status(), 503, "not ready while Postgres is down");
    for port in &health_ports {
        let probe = |path: &str| client.get(format!("http://127.0.0.1:{port}{path}")).send();
        assert_eq!(probe("/healthz").await.expect("up").status(), 200);
        assert_eq!(
            probe("/readyz").await.expect("up").status(),
            503,
            "port {port}: not ready"
        );
    }
    for process in &mut processes {
        assert!(
            process.running(),
            "{} gave up:\n{}",
            process.name,
            process.log()
        );
    }

    // The dependencies come up, on the addresses the processes wait on.
    let _postgres = start_dedicated(pg_port, PASSWORD).await;
    let _nats = start_nats_on(nats_port).await;
    let (migrated, log) = wait_exit(migrate).await;
    assert!(migrated, "migrate waited and ran:\n{log}");
    let up = configured("up").output().expect("up runs");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    // A ride is booked, and its receipt goes out through NATS.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ride = loop {
        let answer = client
            .post(format!("{api}/rides"))
            .header("Authorization", "user@example.com")
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .body("origin_lat=0&origin_lon=0&target_lat=0&target_lon=0")
            .send()
            .await
            .expect("answered");
        if answer.status() == 201 {
            let body: serde_json::Value = answer.json().await.expect("json");
            break body["ride"]["id"].as_i64().expect("ride id");
        }
        assert!(
            Instant::now() < deadline,
            "no 201 within 60 s: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent: Option<(i64,)> = sqlx::query_as(
            "SELECT ride_id FROM sent_receipts WHERE ride_id = $1 AND sent_at IS NOT NULL",
        )
        .bind(ride)
        .fetch_optional(&pool)
        .await
        .expect("query");
        if sent.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no receipt for ride {ride} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every process serves its metrics on its own address, each with what
    // it measures; the API's public port serves none.
    let expected = [
        (api_ops, "rocket_rides_ride_request_duration_seconds_bucket"),
        (
            health_ports[0],
            "rocket_rides_unfinished_keys{recovery_point=\"ride_created\"}",
        ),
        (health_ports[1], "rocket_rides_staged_jobs"),
        (health_ports[2], "rocket_rides_receipts_sent_total"),
        (health_ports[3], "rocket_rides_keys_reaped_total"),
    ];
    for (port, metric) in expected {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("up");
            assert_eq!(page.status(), 200, "port {port}");
            let text = page.text().await.expect("text");
            if text.contains(metric) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port}: no {metric} in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let public = client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .expect("up");
    assert_eq!(public.status(), 404, "metrics stay off the public port");

    // Each becomes ready at its next try (its backoff is 5 s at most).
    for port in health_ports.iter().chain([&api_ops]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .expect("up");
            if ready.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "port {port}: never ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for process in processes {
        process.logged("Postgres answers").await;
        let name = process.name;
        let (clean, log) = process.stop().await;
        assert!(clean, "{name} exits 0 on SIGTERM:\n{log}");
        assert_eq!(
            log.matches("waiting for Postgres").count(),
            1,
            "{name} logs the wait once:\n{log}"
        );
        assert!(
            !log.contains(PASSWORD),
            "{name} logged the database password:\n{log}"
        );
    }
}

async fn wait_exit(mut process: Process) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            return (status.success(), process.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not finish:\n{}",
            process.name,
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_malformed_database_url_stops_a_process_at_once_saying_so() {
    let output = command()
        .arg("completer")
        .env("DATABASE_URL", "postgres://u:pw-in-a-bad-url@[::1:5432/db")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DATABASE_URL is not a valid Postgres URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw-in-a-bad-url"), "{stderr}");
}

#[test]
fn contradictory_settings_stop_a_process_at_start_naming_both() {
    type Case<'a> = (&'a [(&'a str, &'a str)], [&'a str; 2]);
    let cases: [Case; 3] = [
        (
            &[
                ("STRIPE_API_KEY", "sk_test_never_logged_91c2"),
                ("STRIPE_TIMEOUT", "30s"),
                ("STRIPE_MAX_RETRIES", "2"),
                ("LOCK_TIMEOUT", "90s"),
            ],
            ["STRIPE_TIMEOUT", "LOCK_TIMEOUT"],
        ),
        (
            &[
                ("REVIEW_AFTER", "24h"),
                ("GATEWAY_IDEMPOTENCY_WINDOW", "24h"),
            ],
            ["REVIEW_AFTER", "GATEWAY_IDEMPOTENCY_WINDOW"],
        ),
        (
            &[
                ("STRIPE_API_KEY", "sk_test_never_logged_91c2"),
                ("STRIPE_SEARCH_LAG", "10s"),
            ],
            ["STRIPE_SEARCH_LAG", "1m"],
        ),
    ];
    for (settings, named) in cases {
        let mut command = command();
        command.arg("completer").env(
            "DATABASE_URL",
            format!("postgres://u:{PASSWORD}@127.0.0.1:1/db"),
        );
        for (name, value) in settings {
            command.env(name, value);
        }
        let output = command.output().expect("runs");
        assert!(!output.status.success(), "{settings:?} were accepted");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for name in named {
            assert!(
                all.contains(name),
                "{settings:?}: the message names {name}:\n{all}"
            );
        }
        assert!(
            !all.contains(PASSWORD) && !all.contains("sk_test_never_logged"),
            "{all}"
        );
        assert!(
            !all.contains("waiting for"),
            "stopped before waiting: {all}"
        );
    }
}
