//! What the benchmarks share: `rocket-rides` processes started from a
//! binary, a load of `POST /rides` at a number of clients, and their
//! figures.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
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
    try_duration(text).unwrap_or_else(|| panic!("{text} is not a duration like 90s, 10m"))
}

fn try_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => return None,
    })
}

/// `duration`, as a flag's parser: `0` for none, an error for the rest.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    std::panic::catch_unwind(|| duration(text))
        .map_err(|_| format!("{text}: a duration like 4ms or 5m"))
}

pub const USER: &str = "user@example.com";
pub const BODY: &str = "origin_lat=0.0&origin_lon=0.0&target_lat=0.0&target_lon=0.0";

/// One level's figures.
pub struct Level {
    pub requests: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// The slowest answer: a pause that p99 averages away shows here.
    pub max: Duration,
    pub unexpected: usize,
}

/// What the clients send: a fresh key each time, or one key again.
#[derive(Clone)]
pub enum Keys {
    Fresh,
    Replay(String),
}

/// A bar counting a load's seconds (on a terminal; hidden otherwise),
/// with what it measures and how many requests so far.
pub fn progress(label: &str, seconds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{prefix:<34} [{bar:30}] {pos}/{len} s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// A spinner for a step of unknown length (pgbench, a fill, a soak).
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `clients` clients sending for `seconds`, each request right after the
/// last one's answer.
pub async fn load(base: &str, clients: usize, seconds: u64, keys: Keys) -> Level {
    load_paced(base, clients, seconds, keys, Duration::ZERO, "load").await
}

/// `clients` clients sending for `seconds`, each pausing `pause` before
/// every request (a paced load: the rate a pause allows, not the most the
/// server takes), with a progress bar under `label`.
pub async fn load_paced(
    base: &str,
    clients: usize,
    seconds: u64,
    keys: Keys,
    pause: Duration,
    label: &str,
) -> Level {
    let bar = progress(label, seconds);
    let sent = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let (bar, sent) = (bar.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(bar.elapsed().as_secs());
                bar.set_message(format!("{} requests", sent.load(Ordering::Relaxed)));
            }
        })
    };
    let level = send_load(base, clients, seconds, keys, pause, sent).await;
    ticker.abort();
    bar.finish_and_clear();
    level
}

async fn send_load(
    base: &str,
    clients: usize,
    seconds: u64,
    keys: Keys,
    pause: Duration,
    sent_count: Arc<AtomicUsize>,
) -> Level {
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
        let sent_count = sent_count.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut unexpected = 0usize;
            while Instant::now() < until {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
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
                sent_count.fetch_add(1, Ordering::Relaxed);
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
        max: at(1.0),
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
        self.status_mib("VmHWM:")
    }

    /// The resident set size now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    fn status_mib(&self, field: &str) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// CPU seconds (user and system) the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.child
            .id()
            .and_then(|pid| proc_cpu_seconds(&format!("/proc/{pid}/stat"), false))
            .unwrap_or(f64::NAN)
    }
}

/// Linux reports `/proc` times in USER_HZ, 100 a second on every platform
/// Rust targets.
const USER_HZ: f64 = 100.0;

/// utime + stime of a `/proc/…/stat` file, and with `children` those of
/// the children it waited for (cutime + cstime: wrk, pgbench).
fn proc_cpu_seconds(path: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<f64>().ok();
    let mut ticks = field(14)? + field(15)?;
    if children {
        ticks += field(16)? + field(17)?;
    }
    Some(ticks / USER_HZ)
}

/// CPU seconds this process (the load client) and the children it waited
/// for have used so far.
pub fn client_cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/self/stat", true).unwrap_or(f64::NAN)
}

/// CPU seconds a container's processes have used so far, read inside it
/// from its cgroup (v2's `cpu.stat` `usage_usec`, or v1's
/// `cpuacct.usage` in nanoseconds): Postgres's share of a ride.
pub fn container_cpu_seconds(container_id: &str) -> Option<f64> {
    let output = std::process::Command::new("docker")
        .args(["exec", container_id, "sh", "-c"])
        .arg("cat /sys/fs/cgroup/cpu.stat 2>/dev/null || echo v1 $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage)")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|n| n.trim().parse::<f64>().ok())
    };
    number("usage_usec ")
        .map(|usec| usec / 1e6)
        .or_else(|| number("v1 ").map(|nsec| nsec / 1e9))
}

/// What the same load costs through wrk instead of our client: its
/// figures (latencies from wrk's own histogram) or why there are none.
/// wrk counts answers other than 2xx/3xx as unexpected, and cannot tell a
/// replay from a new booking.
pub fn wrk(
    base: &str,
    clients: usize,
    seconds: u64,
    keys: &Keys,
    pause: Duration,
) -> Result<Level, String> {
    let key = match keys {
        Keys::Fresh => "nil".to_owned(),
        Keys::Replay(key) => format!("\"{key}\""),
    };
    let delay = if pause.is_zero() {
        String::new()
    } else {
        format!(
            "delay = function() return {} end\n",
            pause.as_millis().max(1)
        )
    };
    let script = format!(
        r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local sent = 0
local replay = {key}
request = function()
  sent = sent + 1
  local key = replay or ("wrk-{run}-" .. tid .. "-" .. sent)
  return wrk.format("POST", "/rides", {{
    ["Authorization"] = "{user}",
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }}, "{body}")
end
{delay}done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("rr-figures %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors, latency.max))
end
"#,
        run = uuid::Uuid::new_v4().simple(),
        user = USER,
        body = BODY,
    );
    let path = std::env::temp_dir().join(format!("rocket-rides-wrk-{}.lua", uuid::Uuid::new_v4()));
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let output = std::process::Command::new("wrk")
        .args([
            "-t",
            &clients.min(2).to_string(),
            "-c",
            &clients.to_string(),
        ])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
        .arg(&path)
        .arg(base)
        .output();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = text
        .lines()
        .find_map(|line| line.strip_prefix("rr-figures "))
        .ok_or_else(|| format!("wrk printed no figures: {text}"))?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [requests, duration_us, p50_us, p99_us, errors, max_us] = figures[..] else {
        return Err(format!("wrk's figures unreadable: {text}"));
    };
    Ok(Level {
        requests: requests as usize,
        per_second: requests / (duration_us / 1e6),
        p50: Duration::from_micros(p50_us as u64),
        p99: Duration::from_micros(p99_us as u64),
        max: Duration::from_micros(max_us as u64),
        unexpected: errors as usize,
    })
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
