//! The compose deployment, tried as a user would: build the images the
//! local way (a runtime image around the binary under test, haproxy and
//! Prometheus from Debian's packages on `TEST_DEBIAN_IMAGE`), bring
//! `compose.yaml` up, check that Prometheus scrapes every process and loads
//! its alert rules, send rides through the load balancer's one address with
//! the soak's retrying client, SIGKILL one API replica mid-run, let the
//! system drain, and audit charges, rides, receipts and answers as the soak
//! does. Everything is torn down however the run ends.
//!
//! Ports are published on loopback only, each picked by Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::PgPool;

use crate::soak::{
    Load, SoakReport, all_charges, all_of, audit, drain, injected_faults, replay_sample, wait_ready,
};

/// What the compose test runs.
#[derive(Debug, Clone)]
pub struct ComposeConfig {
    /// The `rocket-rides` binary the image is built around (Debian bookworm).
    pub binary: PathBuf,
    pub rides: usize,
    pub concurrency: usize,
    /// The rides start evenly over this time.
    pub duration: Duration,
    /// fake-stripe's fault rate.
    pub fault_rate: f64,
    pub drain: Duration,
    /// The replicated deployment (`compose.ha.yaml` over `compose.yaml`):
    /// instead of an API replica, the Postgres primary is killed a third
    /// of the way in, and a NATS node half way.
    pub ha: bool,
}

/// What the failover showed.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The Patroni leader killed (SIGKILL).
    pub primary: String,
    /// From its death to the first ride a fresh client got booked.
    pub first_booking_after: Duration,
    /// That client's answers meanwhile, by status (each 503 carried
    /// `Retry-After`, or the run counts a violation).
    pub probe_answers: BTreeMap<String, usize>,
    /// The NATS node killed (SIGKILL).
    pub nats_node: String,
    /// Stored answers sent again after the failover, all identical.
    pub replayed: usize,
}

/// The soak's figures for the run, plus what the deployment showed.
#[derive(Debug)]
pub struct ComposeReport {
    pub audit: SoakReport,
    /// Prometheus's targets and whether each was up, before the kill.
    pub targets: BTreeMap<String, String>,
    /// The alert rules Prometheus loaded, with their health.
    pub rules: BTreeMap<String, String>,
    /// Rides finished when the API replica was killed.
    pub killed_after_rides: usize,
    /// The metrics the Grafana dashboard and the alert rules query.
    pub queried_metrics: BTreeSet<String>,
    /// Those of them Prometheus never scraped from any process.
    pub unscraped_metrics: Vec<String>,
    /// The replicated deployment's failover, when `ha`.
    pub failover: Option<Failover>,
}

const STRIPE_KEY: &str = "sk_test_compose";
const APP_IMAGE: &str = "rocket-rides-test/app";
const HAPROXY_IMAGE: &str = "rocket-rides-test/haproxy";
const PROMETHEUS_IMAGE: &str = "rocket-rides-test/prometheus";
const PATRONI_IMAGE: &str = "rocket-rides-test/patroni";

/// The long-running rocket-rides services and their load balancer: what
/// must never exit during a run.
const APP_SERVICES: [&str; 10] = [
    "api1",
    "api2",
    "lb",
    "completer1",
    "completer2",
    "enqueuer1",
    "enqueuer2",
    "worker1",
    "worker2",
    "reaper",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn run_command(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Builds the three images (and Patroni's, for `ha`); `TEST_DEBIAN_IMAGE`
/// is their base when set.
pub fn build_images(binary: &Path, ha: bool) -> anyhow::Result<()> {
    let root = repo_root();
    let base = std::env::var("TEST_DEBIAN_IMAGE").unwrap_or_else(|_| "debian:bookworm-slim".into());
    let context = scratch_path("image");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(binary, context.join("rocket-rides")).context("copying the binary")?;
    let mut builds: Vec<(&str, PathBuf, Option<PathBuf>)> = vec![
        (
            APP_IMAGE,
            context.clone(),
            Some(root.join("deploy/runtime.Dockerfile")),
        ),
        (HAPROXY_IMAGE, root.join("deploy/haproxy"), None),
        (PROMETHEUS_IMAGE, root.join("deploy/prometheus"), None),
    ];
    if ha {
        builds.push((PATRONI_IMAGE, root.join("deploy/patroni"), None));
    }
    for (tag, context, dockerfile) in builds {
        let mut command = Command::new("docker");
        command.args(["build", "-q", "-t", tag, "--build-arg"]);
        command.arg(format!("BASE={base}"));
        if let Some(dockerfile) = dockerfile {
            command.arg("-f").arg(dockerfile);
        }
        command.arg(context);
        run_command(&mut command, &format!("docker build {tag}"))?;
    }
    let _ = std::fs::remove_dir_all(&context);
    Ok(())
}

/// A new path under the temporary directory.
fn scratch_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "rocket-rides-compose-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// A compose project brought up from the repository's `compose.yaml`; taken
/// down with its volumes when dropped.
pub struct Deployment {
    project: String,
    override_file: PathBuf,
    env: Vec<(String, String)>,
    /// `compose.ha.yaml` laid over `compose.yaml`.
    ha: bool,
}

impl Deployment {
    pub fn up(env: &[(&str, String)], ha: bool) -> anyhow::Result<Self> {
        let project = format!("rrtest{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        // Loopback ports for what the test reads from outside, and the label
        // the test command's cleanup removes containers by.
        let services = [
            "postgres",
            "nats",
            "fake-stripe",
            "migrate",
            "up",
            "prometheus",
        ];
        let replicated = ["etcd", "pg1", "pg2", "pg3", "nats2", "nats3"];
        let mut yaml = String::from("services:\n");
        for service in services
            .into_iter()
            .chain(APP_SERVICES)
            .chain(replicated.into_iter().filter(|_| ha))
        {
            yaml.push_str(&format!(
                "  {service}:\n    labels:\n      rocket-rides-tests: \"compose\"\n"
            ));
            match service {
                "postgres" => yaml.push_str("    ports: [\"127.0.0.1::5432\"]\n"),
                "fake-stripe" => yaml.push_str("    ports: [\"127.0.0.1::12111\"]\n"),
                _ => {}
            }
        }
        let override_file = scratch_path("override").with_extension("yaml");
        std::fs::write(&override_file, yaml)?;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        env.extend(
            [
                ("ROCKET_RIDES_IMAGE", APP_IMAGE),
                ("HAPROXY_IMAGE", HAPROXY_IMAGE),
                ("PROMETHEUS_IMAGE", PROMETHEUS_IMAGE),
                ("PATRONI_IMAGE", PATRONI_IMAGE),
                ("ROCKET_RIDES_PORT", "127.0.0.1:"),
                ("PROMETHEUS_PORT", "127.0.0.1:"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        for (name, var) in [
            ("POSTGRES_IMAGE", "TEST_POSTGRES_IMAGE"),
            ("NATS_IMAGE", "TEST_NATS_IMAGE"),
        ] {
            if let Ok(image) = std::env::var(var) {
                env.push((name.to_owned(), image));
            }
        }
        let deployment = Self {
            project,
            override_file,
            env,
            ha,
        };
        // A port Docker picks from the ephemeral range can be taken by a
        // client socket between its pick and its bind; `up` again picks anew.
        let mut attempt = 1;
        while let Err(error) = deployment.compose(&["up", "-d"]) {
            if attempt == 3 || !format!("{error:#}").contains("address already in use") {
                return Err(error);
            }
            eprintln!("compose: a published port was taken meanwhile; up again");
            attempt += 1;
        }
        Ok(deployment)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .current_dir(repo_root())
            .args(["-p", &self.project, "--profile", "monitoring"])
            .args(["-f", "compose.yaml"]);
        if self.ha {
            command.args(["-f", "compose.ha.yaml"]);
        }
        command
            .arg("-f")
            .arg(&self.override_file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `docker-compose <args>` on this project; its standard output.
    pub fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = run_command(
            &mut self.command(args),
            &format!("docker-compose {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The loopback address Docker published `service`'s `port` on.
    pub fn address(&self, service: &str, port: u16) -> anyhow::Result<String> {
        let published = self.compose(&["port", service, &port.to_string()])?;
        let published = published.trim();
        if published.is_empty() {
            bail!("{service}:{port} is not published");
        }
        Ok(format!("http://{published}"))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.override_file);
    }
}

/// The `rocket_rides_*` metric names a dashboard or rule file queries.
pub fn queried_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("rocket_rides_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// One answer of Prometheus's HTTP API, as JSON.
async fn prometheus_api(
    http: &reqwest::Client,
    prometheus: &str,
    path: &str,
) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{prometheus}{path}"))
        .send()
        .await?
        .json()
        .await?)
}

/// Polls Prometheus until it has scraped every one of `wanted` (or `max`
/// passed); those it has not.
async fn unscraped(
    http: &reqwest::Client,
    prometheus: &str,
    wanted: &BTreeSet<String>,
    max: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + max;
    loop {
        let answer: Value =
            prometheus_api(http, prometheus, "/api/v1/label/__name__/values").await?;
        let scraped: BTreeSet<&str> = answer["data"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|name| !scraped.contains(name.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Polls Prometheus until every target is up (or `max` passed); the targets
/// with their health, and the loaded rules with theirs.
async fn prometheus_view(
    http: &reqwest::Client,
    prometheus: &str,
    max: Duration,
) -> anyhow::Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let deadline = Instant::now() + max;
    let targets = loop {
        let answer: Value = prometheus_api(http, prometheus, "/api/v1/targets").await?;
        let targets: BTreeMap<String, String> = answer["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["labels"]["instance"].as_str().unwrap_or("").to_owned(),
                    t["health"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if (!targets.is_empty() && targets.values().all(|h| h == "up")) || Instant::now() > deadline
        {
            break targets;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let answer: Value = prometheus_api(http, prometheus, "/api/v1/rules").await?;
    let rules = answer["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_owned(),
                r["health"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    Ok((targets, rules))
}

pub async fn run(config: ComposeConfig) -> anyhow::Result<ComposeReport> {
    eprintln!("compose: building the images");
    build_images(&config.binary, config.ha)?;
    eprintln!("compose: bringing the stack up");
    let deployment = Deployment::up(
        &[
            // The soak's riders are named by email; compose's own default
            // is api-key (its README shows a rider with a key).
            ("AUTH_MODE", "email".into()),
            ("FAKE_STRIPE_FAULT_RATE", config.fault_rate.to_string()),
            ("STRIPE_TIMEOUT", "2s".into()),
            ("STRIPE_MAX_RETRIES", "1".into()),
            ("LOCK_TIMEOUT", "10s".into()),
            ("COMPLETER_MIN_AGE", "3s".into()),
            ("COMPLETER_MIN_IDLE", "2s".into()),
            ("POLL_INTERVAL", "300ms".into()),
        ],
        config.ha,
    )?;
    let lb = deployment.address("lb", 8080)?;
    let prometheus = deployment.address("prometheus", 9090)?;
    let stripe = deployment.address("fake-stripe", 12111)?;
    let postgres = deployment
        .address("postgres", 5432)?
        .replace("http://", "postgres://rocket:rocket@")
        + "/rocket_rides";

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let apis = Arc::new(vec![lb.clone()]);
    wait_ready(&http, &apis, Duration::from_secs(180)).await?;
    let (targets, rules) = prometheus_view(&http, &prometheus, Duration::from_secs(60)).await?;

    eprintln!(
        "compose: {} rides through {} over {:?}",
        config.rides, apis[0], config.duration
    );
    let mut load = Load::start(
        http.clone(),
        apis,
        None,
        config.rides,
        config.concurrency,
        config.duration,
    );
    let mut killed_after_rides = None;
    let mut primary_killed = None;
    let mut nats_killed = None;
    while load.running() {
        let elapsed = load.started.elapsed();
        if killed_after_rides.is_none() && elapsed > config.duration / 3 {
            let done = load.rides_done();
            if config.ha {
                let primary = deployment.patroni_leader()?;
                eprintln!("compose: SIGKILL to the Postgres primary {primary} after {done} rides");
                deployment.compose(&["kill", "-s", "SIGKILL", &primary])?;
                let probe = tokio::spawn(first_booking(http.clone(), lb.clone()));
                primary_killed = Some((primary, probe));
            } else {
                eprintln!("compose: SIGKILL to api1 after {done} rides");
                deployment.compose(&["kill", "-s", "SIGKILL", "api1"])?;
            }
            killed_after_rides = Some(done);
        }
        if config.ha && nats_killed.is_none() && elapsed > config.duration / 2 {
            eprintln!("compose: SIGKILL to the NATS node nats3");
            deployment.compose(&["kill", "-s", "SIGKILL", "nats3"])?;
            nats_killed = Some("nats3".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = load.finish().await;
    let Some(killed_after_rides) = killed_after_rides else {
        bail!("the load ended before a process was killed");
    };
    let mut failover = None;
    let mut replay_violations = Vec::new();
    if let (Some((primary, probe)), Some(nats_node)) = (primary_killed, nats_killed) {
        let (first_booking_after, probe_answers, missing_retry_after) = probe.await??;
        let (replayed, differences) = replay_sample(&http, &lb, &client, 200).await;
        replay_violations = differences;
        if missing_retry_after > 0 {
            replay_violations.push(format!(
                "{missing_retry_after} answers 503 without Retry-After during the failover"
            ));
        }
        failover = Some(Failover {
            primary,
            first_booking_after,
            probe_answers,
            nats_node,
            replayed,
        });
    } else if config.ha {
        bail!("the load ended before the primary and a NATS node were killed");
    }

    let pool = PgPool::connect(&postgres).await?;
    let drained_in = match drain(&pool, config.drain, || Ok(())).await {
        Ok(drained_in) => drained_in,
        Err(error) => {
            // Keep what the processes said before the deployment goes.
            let logs = scratch_path("logs").with_extension("txt");
            let said = deployment
                .compose(&["logs", "--no-color", "--timestamps"])
                .unwrap_or_default();
            let _ = std::fs::write(&logs, said);
            return Err(error.context(format!("the processes' logs: {}", logs.display())));
        }
    };
    let charges = all_charges(&http, &stripe, STRIPE_KEY)
        .await
        .context("listing fake-stripe's charges")?;
    let refunds = all_of(&http, &stripe, STRIPE_KEY, "refunds")
        .await
        .context("listing fake-stripe's refunds")?;
    let faults = injected_faults(&http, &stripe).await?;
    let worker_log = deployment.compose(&["logs", "--no-color", "worker1", "worker2"])?;
    let killed: Vec<&str> = match &failover {
        Some(failover) => vec![failover.nats_node.as_str()],
        None => vec!["api1"],
    };
    let exits = deployment.exits(&killed)?;
    for exit in &exits {
        eprintln!("compose: a process exited: {exit}");
    }
    let mut report = SoakReport {
        faults,
        kills: killed.len() + usize::from(failover.is_some()),
        drained_in,
        unexpected_exits: exits.len(),
        ..SoakReport::default()
    };
    let mut violations = replay_violations;
    audit(
        &pool,
        &charges,
        &refunds,
        &worker_log,
        client,
        &mut report,
        &mut violations,
    )
    .await?;
    if !violations.is_empty() {
        // Keep what the processes said before the deployment goes.
        let logs = scratch_path("logs").with_extension("txt");
        let said = deployment
            .compose(&["logs", "--no-color", "--timestamps"])
            .unwrap_or_default();
        let _ = std::fs::write(&logs, said);
        report.logs = logs;
    }
    if report.gave_up > 0 {
        violations.push(format!(
            "{} rides never got a definitive answer",
            report.gave_up
        ));
    }
    if report.booked_rides == 0 {
        violations.push("no ride was booked".into());
    }
    report.violations = violations;

    let mut queried = BTreeSet::new();
    for file in [
        "deploy/grafana/rocket-rides.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file))
            .with_context(|| format!("reading {file}"))?;
        queried.extend(queried_metrics(&text));
    }
    let unscraped_metrics =
        unscraped(&http, &prometheus, &queried, Duration::from_secs(30)).await?;
    Ok(ComposeReport {
        audit: report,
        targets,
        rules,
        killed_after_rides,
        queried_metrics: queried,
        unscraped_metrics,
        failover,
    })
}

/// A fresh client booking rides, each with a new key, every 200 ms from
/// the primary's death until one is booked (or 120 s pass): how long that
/// took, its answers by status, and how many 503s lacked `Retry-After`.
async fn first_booking(
    http: reqwest::Client,
    lb: String,
) -> anyhow::Result<(Duration, BTreeMap<String, usize>, usize)> {
    let started = Instant::now();
    let mut answers = BTreeMap::new();
    let mut missing_retry_after = 0;
    while started.elapsed() < Duration::from_secs(120) {
        let answer = http
            .post(format!("{lb}/rides"))
            .header("Authorization", "user@example.com")
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("origin_lat=0&origin_lon=0&target_lat=0&target_lon=0")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let label = match &answer {
            Ok(response) => {
                if response.status().as_u16() == 503
                    && !response.headers().contains_key("retry-after")
                {
                    missing_retry_after += 1;
                }
                response.status().as_u16().to_string()
            }
            Err(_) => "no answer".to_owned(),
        };
        *answers.entry(label.clone()).or_insert(0) += 1;
        if label == "201" {
            return Ok((started.elapsed(), answers, missing_retry_after));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no ride was booked within 120 s of the primary's death: {answers:?}")
}

impl Deployment {
    /// The rocket-rides services (and the load balancer) that exited or
    /// were restarted during the run, with what Docker says of them; the
    /// services in `killed` were killed on purpose and are left out.
    pub fn exits(&self, killed: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut exits = Vec::new();
        for service in APP_SERVICES {
            if killed.contains(&service) {
                continue;
            }
            let id = self.compose(&["ps", "-q", service])?;
            let output = run_command(
                Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{.RestartCount}} {{.State.Status}}",
                    id.trim(),
                ]),
                "docker inspect",
            )?;
            let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if state != "0 running" {
                exits.push(format!("{service}: restarts and state {state}"));
            }
        }
        Ok(exits)
    }

    /// The Patroni member that leads now (asked of the first node that
    /// answers).
    pub fn patroni_leader(&self) -> anyhow::Result<String> {
        for node in ["pg1", "pg2", "pg3"] {
            let Ok(list) = self.compose(&[
                "exec",
                "-T",
                node,
                "patronictl",
                "-c",
                "/etc/patroni/patroni.yml",
                "list",
                "-f",
                "json",
            ]) else {
                continue;
            };
            let members: Value = serde_json::from_str(&list).unwrap_or_default();
            if let Some(leader) = members
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["Role"] == "Leader")
                .and_then(|m| m["Member"].as_str())
            {
                return Ok(leader.to_owned());
            }
        }
        bail!("no Patroni node names a leader")
    }
}

#[cfg(test)]
mod tests {
    use super::queried_metrics;

    #[test]
    fn queried_metrics_are_the_rocket_rides_names_in_a_query() {
        let names = queried_metrics(
            r#"{"expr": "histogram_quantile(0.99, sum by (le) (rate(rocket_rides_x_seconds_bucket[5m]))) / up", "b": "max(rocket_rides_y2)"}"#,
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["rocket_rides_x_seconds_bucket", "rocket_rides_y2"]
        );
    }
}
