//! Does the embedded default's memory stay flat over a long run?
//! `rocket-rides start` under its own simulator at full speed (no pause
//! between rides, half of them asking for a simulated failure, so the
//! completer resumes them), its resident set sampled every `--every` for
//! `--duration`. The reaper's horizon (`REAPER_MAX_AGE`) and the queue's
//! dedup window are set to `--horizon`, so the run passes them many times:
//! from then on, what the store, the in-process gateway and the queue hold
//! is one horizon's worth, and the RSS should stop growing.
//!
//!     cargo run --release -p integration-tests --example memory -- --help
//!
//! Prints one line per sample (the RSS, the ride requests handled, the keys
//! reaped and the records forgotten so far) and the change from the first
//! sample at or after `--from` to the last. A command that prints figures,
//! never a test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use integration_tests::bench::{Service, parse_duration, progress};
use integration_tests::postgres::free_port;

/// `rocket-rides start` under its simulator at full speed, its RSS sampled
/// over a long run, with the reaper's horizon short enough to be passed
/// many times: does its memory stay flat?
#[derive(Debug, Parser)]
struct Flags {
    /// How long to run.
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    duration: Duration,
    /// Compare the RSS from this point of the run to the end.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    from: Duration,
    /// How often to sample.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    every: Duration,
    /// REAPER_MAX_AGE and NATS_DUPLICATE_WINDOW for the run.
    #[arg(long, default_value = "2m")]
    horizon: String,
    /// The build to run (default: the release build, built first).
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// The sum of a counter's series in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let binary = flags
        .binary
        .clone()
        .unwrap_or_else(integration_tests::bench::release_binary);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let service = Service::start(
        &binary,
        &["start"],
        &[
            ("SIMULATOR_RIDES", "1000000000000"),
            ("SIMULATOR_MAX_PAUSE", "0s"),
            ("REAPER_MAX_AGE", &flags.horizon),
            ("NATS_DUPLICATE_WINDOW", &flags.horizon),
            ("METRICS_ADDR", &metrics_addr),
        ],
    )
    .await;
    println!(
        "rocket-rides start, simulator at full speed, REAPER_MAX_AGE={h} NATS_DUPLICATE_WINDOW={h}, {:?} sampled every {:?}\n",
        flags.duration,
        flags.every,
        h = flags.horizon
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12}",
        "minute", "RSS MiB", "requests", "keys reaped", "forgotten"
    );
    let client = reqwest::Client::new();
    let bar = progress("memory run", flags.duration.as_secs());
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        tokio::time::sleep(flags.every).await;
        let at = started.elapsed();
        let page = match client
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let rss = service.rss_mib();
        bar.suspend(|| {
            println!(
                "{:>8.1} {:>10.1} {:>12.0} {:>12.0} {:>12.0}",
                at.as_secs_f64() / 60.0,
                rss,
                counter(&page, "rocket_rides_ride_requests_total"),
                counter(&page, "rocket_rides_keys_reaped_total"),
                counter(&page, "rocket_rides_memory_records_forgotten_total"),
            )
        });
        bar.set_position(at.as_secs());
        samples.push((at, rss));
        if at >= flags.duration {
            break;
        }
    }
    bar.finish_and_clear();
    if let (Some((from_at, from)), Some((to_at, to))) = (
        samples.iter().find(|(at, _)| *at >= flags.from),
        samples.last(),
    ) {
        println!(
            "\nRSS at minute {:.1}: {from:.1} MiB; at minute {:.1}: {to:.1} MiB ({:+.1}%)",
            from_at.as_secs_f64() / 60.0,
            to_at.as_secs_f64() / 60.0,
            100.0 * (to - from) / from
        );
    }
}
