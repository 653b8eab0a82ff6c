//! The failover run (see `integration_tests::compose`, `ha`): the
//! replicated deployment (`compose.ha.yaml` over `compose.yaml`) under a
//! retrying load with Stripe faults, its Postgres primary SIGKILLed a third
//! of the way in and a NATS node half way, then audited and a sample of
//! stored answers replayed. Prints the soak's table and the failover's
//! figures; exits non-zero when an invariant broke.
//!
//!     cargo run -p integration-tests --example failover -- --rides 3000 --duration 5m
//!
//! Flags: `--rides N` (3000), `--duration D` (5m), `--concurrency N` (16),
//! `--fault-rate R` (0.2), `--drain D` (3m), `--binary PATH` (default:
//! `target/release/rocket-rides`, built first). Needs Docker,
//! `docker-compose` and the local images (`eval
//! "$(../shared/ci/offline-images)"` here).

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::bench::duration;
use integration_tests::compose::{ComposeConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut binary: Option<PathBuf> = None;
    let mut config = ComposeConfig {
        binary: PathBuf::new(),
        rides: 3000,
        concurrency: 16,
        duration: Duration::from_secs(300),
        fault_rate: 0.2,
        drain: Duration::from_secs(180),
        ha: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rides" => config.rides = value.parse().expect("--rides N"),
            "--duration" => config.duration = duration(&value),
            "--concurrency" => config.concurrency = value.parse().expect("--concurrency N"),
            "--fault-rate" => config.fault_rate = value.parse().expect("--fault-rate R"),
            "--drain" => config.drain = duration(&value),
            "--binary" => binary = Some(PathBuf::from(value)),
            other => panic!("unknown flag {other}"),
        }
    }
    config.binary = match binary {
        Some(path) => path,
        None => integration_tests::bench::release_binary(),
    };
    match run(config).await {
        Ok(report) => {
            print!("{}", report.audit.table());
            if let Some(failover) = &report.failover {
                println!(
                    "Postgres primary {} killed after {} rides; first ride booked {:.1} s after its death; a fresh client's answers meanwhile {:?}; NATS node {} killed; {} stored answers replayed after the failover, every one identical unless listed above",
                    failover.primary,
                    report.killed_after_rides,
                    failover.first_booking_after.as_secs_f64(),
                    failover.probe_answers,
                    failover.nats_node,
                    failover.replayed
                );
            }
            if report.audit.violations.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("failover: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
