//! A short run of the fault soak (`integration_tests::soak`) on the binary
//! under test, in every test run: about two minutes of load with a process
//! SIGKILLed every two seconds, Postgres and NATS restarted once each, and
//! the audit of charges, rides, receipts and answers at the end. The long
//! run is `cargo run --release -p integration-tests --example soak`.

use std::time::Duration;

use integration_tests::soak::{SoakConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_under_kills_and_restarts_keeps_every_promise() {
    let config = SoakConfig {
        rides: 1200,
        duration: Duration::from_secs(90),
        concurrency: 16,
        kill_every: Duration::from_secs(2),
        drain: Duration::from_secs(120),
        ..SoakConfig::new(env!("CARGO_BIN_EXE_rocket-rides").into())
    };
    let report = run(config).await.expect("the soak ran");
    println!("{}", report.table());
    assert!(report.kills >= 20, "{}", report.table());
    assert!(
        report.log_lines_searched >= 1000,
        "the secrets search read the processes' logs: {}",
        report.table()
    );
    assert!(report.violations.is_empty(), "{}", report.table());
}
