//! The compose deployment (`compose.yaml`) built and run the local way, with
//! the binary under test: every process healthy, Prometheus scraping them
//! all with its alert rules loaded, a few hundred rides through the load
//! balancer with one API replica SIGKILLed mid-run, and the soak's audit.
//! See `integration_tests::compose`.

use std::time::Duration;

use integration_tests::compose::{ComposeConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_deployment_books_every_ride_through_one_address_when_a_replica_dies() {
    let report = run(ComposeConfig {
        binary: env!("CARGO_BIN_EXE_rocket-rides").into(),
        rides: 300,
        concurrency: 16,
        duration: Duration::from_secs(40),
        fault_rate: 0.1,
        drain: Duration::from_secs(90),
        ha: false,
    })
    .await
    .expect("the compose run");
    println!("{}", report.audit.table());
    println!("prometheus targets: {:?}", report.targets);
    println!("alert rules: {:?}", report.rules);
    println!("api1 killed after {} rides", report.killed_after_rides);
    let expected_targets = [
        "api1:9090",
        "api2:9090",
        "completer1:9090",
        "completer2:9090",
        "enqueuer1:9090",
        "enqueuer2:9090",
        "worker1:9090",
        "worker2:9090",
        "reaper:9090",
    ];
    for target in expected_targets {
        assert_eq!(
            report.targets.get(target).map(String::as_str),
            Some("up"),
            "{target} scraped: {:?}",
            report.targets
        );
    }
    assert!(report.rules.len() >= 10, "{:?}", report.rules);
    assert!(
        report.rules.values().all(|health| health == "ok"),
        "{:?}",
        report.rules
    );
    println!("queried metrics: {:?}", report.queried_metrics);
    assert!(
        report.queried_metrics.len() >= 15,
        "{:?}",
        report.queried_metrics
    );
    assert!(
        report.unscraped_metrics.is_empty(),
        "queried by the dashboard or an alert rule, exported by no process: {:?}",
        report.unscraped_metrics
    );
    assert!(report.killed_after_rides < 300);
    assert!(
        report.audit.violations.is_empty(),
        "{}",
        report.audit.table()
    );
}
