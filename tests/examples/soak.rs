//! The fault soak (see `integration_tests::soak`): the production shape
//! attacked while it works, then audited. Prints one table of figures and
//! exits non-zero when an invariant broke.
//!
//!     cargo run --release -p integration-tests --example soak -- --rides 10000 --duration 10m
//!
//! Flags: `--rides N` (10000), `--duration D` (10m), `--concurrency N` (32),
//! `--kill-every D` (3s), `--fault-rate R` (0.2), `--drain D` (3m),
//! `--binary PATH` (default: `target/release/rocket-rides`, built first).
//! Needs Docker and the Postgres and NATS images (`TEST_POSTGRES_IMAGE`,
//! `TEST_NATS_IMAGE`; `eval "$(../shared/ci/offline-images)"` here).

use std::path::PathBuf;

use integration_tests::bench::duration;
use integration_tests::soak::{SoakConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut binary: Option<PathBuf> = None;
    let mut config = SoakConfig::new(PathBuf::new());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rides" => config.rides = value.parse().expect("--rides N"),
            "--duration" => config.duration = duration(&value),
            "--concurrency" => config.concurrency = value.parse().expect("--concurrency N"),
            "--kill-every" => config.kill_every = duration(&value),
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
            print!("{}", report.table());
            if report.violations.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("soak: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
