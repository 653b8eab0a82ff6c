//! The replicated deployment (`compose.ha.yaml` over `compose.yaml`: three
//! Postgres nodes under Patroni behind HAProxy, three NATS JetStream nodes,
//! streams at three replicas) under load with Stripe faults: the Postgres
//! primary is SIGKILLed a third of the way in (Patroni promotes the
//! synchronous standby) and a NATS node half way. The soak's audit holds,
//! no process exits, a sample of stored answers replays byte for byte after
//! the failover, and a fresh client's rides are booked again within the
//! failover's time, every 503 meanwhile carrying `Retry-After`.

use std::time::Duration;

use integration_tests::compose::{ComposeConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_primary_and_a_nats_node_die_and_nothing_is_lost() {
    let report = run(ComposeConfig {
        binary: env!("CARGO_BIN_EXE_rocket-rides").into(),
        rides: 400,
        concurrency: 16,
        duration: Duration::from_secs(60),
        fault_rate: 0.2,
        drain: Duration::from_secs(120),
        ha: true,
    })
    .await
    .expect("the failover run");
    println!("{}", report.audit.table());
    let failover = report.failover.expect("a failover");
    println!(
        "primary {} killed after {} rides; first ride booked {:.1} s after its death; the fresh client's answers meanwhile: {:?}; NATS node {} killed; {} stored answers replayed after the failover",
        failover.primary,
        report.killed_after_rides,
        failover.first_booking_after.as_secs_f64(),
        failover.probe_answers,
        failover.nats_node,
        failover.replayed,
    );
    assert!(failover.replayed >= 100, "{}", failover.replayed);
    for status in failover.probe_answers.keys() {
        assert!(
            ["201", "409", "503"].contains(&status.as_str()),
            "the fresh client got {status} during the failover: {:?}",
            failover.probe_answers
        );
    }
    assert_eq!(report.audit.unexpected_exits, 0);
    assert!(report.audit.booked_rides > 0);
    assert!(
        report.audit.violations.is_empty(),
        "{}",
        report.audit.table()
    );
}
