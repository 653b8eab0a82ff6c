//! What the benchmarks share: `rocket-rides` processes started from a
//! binary, a load of `POST /rides` at a number of clients, and their
//! figures.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::postgres::free_port;

/// The release build of `rocket-rides`, built first (for the benchmarks
/// and the soak, which run the real binary).
pub fn release_binary() -> std::path::PathBuf {
    let built = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "rocket-rides",
            "--bin",
            "rocket-rides",
        ])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "building rocket-rides failed");
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/rocket-rides")
}

/// `500ms`, `90s`, `10m`, `1h`: enough of a duration syntax for the
/// examples' flags.
pub fn duration(text: &str) -> std::time::Duration {
    let parsed = text.find(|c: char| !c.is_ascii_digit()).and_then(|split| {
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        Some(match unit {
            "ms" => std::time::Duration::from_millis(number),
            "s" => std::time::Duration::from_secs(number),
            "m" => std::time::Duration::from_secs(number * 60),
            "h" => std::time::Duration::from_secs(number * 3600),
            _ => return None,
        })
    });
    parsed.unwrap_or_else(|| panic!("{text} is not a duration like 90s, 10m"))
}

pub const USER: &str = "user@example.com";
pub const BODY: &str = "origin_lat=0.0&origin_lon=0.0&target_lat=0.0&target_lon=0.0";

/// One level's figures.
pub struct Level {
    pub requests: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub unexpected: usize,
}

/// What the clients send: a fresh key each time, or one key again.
#[derive(Clone)]
pub enum Keys {
    Fresh,
    Replay(String),
}

pub async fn load(base: &str, clients: usize, seconds: u64, keys: Keys) -> Level {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("a client");
    let url = format!("{base}/rides");
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (client, url, keys) = (client.clone(), url.clone(), keys.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut unexpected = 0usize;
            while Instant::now() < until {
                let key = match &keys {
                    Keys::Fresh => crate::new_key(),
                    Keys::Replay(key) => key.clone(),
                };
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("Authorization", USER)
                    .header("Idempotency-Key", &key)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(BODY)
                    .send()
                    .await;
                let ok = match answer {
                    Ok(response) => {
                        let replayed = response.headers().contains_key("idempotent-replayed");
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status == 201 && replayed == matches!(keys, Keys::Replay(_))
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed());
                unexpected += usize::from(!ok);
            }
            (latencies, unexpected)
        });
    }
    let mut latencies = Vec::new();
    let mut unexpected = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mut l, u) = joined.expect("a client task");
        latencies.append(&mut l);
        unexpected += u;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Level {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        unexpected,
    }
}

/// A `rocket-rides` process, killed when dropped.
pub struct Service {
    pub child: Child,
    pub base: String,
}

impl Service {
    pub async fn start(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(args)
            .env("API_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .env("SIMULATOR_RIDES", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command.envs(env.iter().copied());
        let child = command.spawn().expect("rocket-rides starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                binary.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, base }
    }

    /// The peak resident set size so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

pub async fn run_once(binary: &Path, args: &[&str], env: &[(&str, &str)]) {
    let status = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .await
        .expect("rocket-rides runs");
    assert!(status.success(), "rocket-rides {args:?} failed");
}
