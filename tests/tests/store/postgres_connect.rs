//! Reaching Postgres: what a probe tells a process at start, the deployment
//! id `migrate` stores, the readiness ping, and Postgres going away for a
//! few seconds under the writes that follow an effect outside the store (a
//! receipt already sent is still marked sent once Postgres is back, within
//! the adapter's 15 s budget, rather than failing at once and leaving the
//! receipt to be sent a second time).

use std::time::{Duration, SystemTime};

use adapters::postgres::{self, PoolSettings, PostgresStore};
use application::ports::{KeyPhase, KeyRequest, Keys, Lease, Probe, ReceiptClaim, Receipts, Users};
use domain::{IdempotencyKey, RequestFingerprint, RideParams};
use integration_tests::postgres::{free_port, start_dedicated};

fn docker(args: &[&str]) {
    let status = std::process::Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker runs");
    assert!(status.success(), "docker {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_already_sent_is_marked_sent_across_a_postgres_outage() {
    let server = start_dedicated(free_port(), "restart").await;
    // A pool that gives up on a connection after half a second: the outage
    // below lasts longer, so only the adapter's own retries can bridge it.
    let pool = postgres::connect(
        &server.url,
        &PoolSettings {
            acquire_timeout: Duration::from_millis(500),
            ..PoolSettings::default()
        },
    )
    .expect("a valid URL");
    postgres::migrate(&pool).await.expect("migrated");
    let store = std::sync::Arc::new(PostgresStore::new(pool));
    let rider = store
        .upsert_user(
            "a@example.com",
            &application::ports::SavedCustomer::without_payment_method("cus_a"),
        )
        .await
        .expect("user");
    let params = RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid");
    let request = KeyRequest {
        user_id: rider.id,
        key: IdempotencyKey::parse("restart-key-0000000001").expect("valid"),
        fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
        action: domain::KeyAction::BookRide(params),
        request_ip: None,
        request_id: None,
        charges_now: true,
    };
    let now = SystemTime::now();
    let KeyPhase::Locked(record) = store
        .begin_request(&request, now, integration_tests::LOCK)
        .await
        .expect("key phase")
    else {
        panic!("locked");
    };
    let lease = Lease::of(&record);
    let ride = record.progress.ride_id().expect("ride");
    let ReceiptClaim::Claimed(token) = store
        .claim_receipt(1, ride.into(), now, Duration::from_secs(60))
        .await
        .expect("claimed")
    else {
        panic!("claimed");
    };

    // Postgres stops just as the receipt has gone out and the request failed.
    let id = server.container.id().to_owned();
    docker(&["stop", "-t", "1", &id]);
    let marking = {
        let store = store.clone();
        tokio::spawn(async move { store.mark_receipt_sent(ride.into(), token, now).await })
    };
    let unlocking = {
        let store = store.clone();
        tokio::spawn(async move { store.unlock(lease).await })
    };
    // An outage of three seconds, longer than the pool's acquire timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    docker(&["start", &id]);
    tokio::time::timeout(Duration::from_secs(60), marking)
        .await
        .expect("finished")
        .expect("task")
        .expect("marked once Postgres was back");
    // The unlock's budget (2 s) is shorter than this outage: it gives up,
    // saying so, and the lock timeout frees the key.
    let unlocked = tokio::time::timeout(Duration::from_secs(60), unlocking)
        .await
        .expect("finished")
        .expect("task");
    assert!(
        unlocked.is_err(),
        "an outage longer than the unlock's budget"
    );
    assert!(store.receipt_sent(ride.into()).await.expect("read"));
}

/// What `probe` tells a process at start: wait for a server that is down,
/// stop at once on credentials no wait can fix, go on when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_tells_a_server_that_is_down_from_settings_that_are_wrong() {
    use adapters::connect::ConnectError;
    let port = free_port();
    let quick = PoolSettings {
        acquire_timeout: Duration::from_secs(2),
        ..PoolSettings::default()
    };
    let url = format!("postgres://postgres:right@127.0.0.1:{port}/postgres");
    let down = postgres::connect(&url, &quick).expect("a valid URL");
    let probed = postgres::probe(&down).await;
    assert!(
        matches!(probed, Err(ConnectError::Transient(_))),
        "nobody listens: {probed:?}"
    );
    let store = PostgresStore::new(down);
    assert!(matches!(
        store.probe().await,
        Err(ConnectError::Transient(_))
    ));
    assert!(store.ping().await.is_err(), "not ready");
    let _server = start_dedicated(port, "right").await;
    let wrong = format!("postgres://postgres:wrong@127.0.0.1:{port}/postgres");
    let wrong = postgres::connect(&wrong, &quick).expect("a valid URL");
    let probed = postgres::probe(&wrong).await;
    assert!(
        matches!(probed, Err(ConnectError::Configuration(_))),
        "bad password: {probed:?}"
    );
    let missing = format!("postgres://postgres:right@127.0.0.1:{port}/no_such_database");
    let missing = postgres::connect(&missing, &quick).expect("a valid URL");
    let probed = postgres::probe(&missing).await;
    assert!(
        matches!(probed, Err(ConnectError::Configuration(_))),
        "no database: {probed:?}"
    );
    let up = postgres::connect(&url, &quick).expect("a valid URL");
    postgres::probe(&up).await.expect("it answers");
    store
        .probe()
        .await
        .expect("the same store, now that the server is up");
    store.ping().await.expect("ready");
}

/// `migrate` stores one id per database; processes wait (a transient
/// failure) until it has run, and two databases never share an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_gets_its_own_deployment_id_once_migrated() {
    use adapters::connect::ConnectError;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let url = integration_tests::postgres::fresh_database_url().await;
        let pool = postgres::connect(&url, &PoolSettings::default()).expect("a valid URL");
        let store = PostgresStore::new(pool.clone());
        let before = store.deployment_id().await;
        assert!(
            matches!(before, Err(ConnectError::Transient(_))),
            "{before:?}"
        );
        postgres::migrate(&pool).await.expect("migrated");
        let id = store.deployment_id().await.expect("an id");
        assert!(
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "it names NATS streams: {id:?}"
        );
        postgres::migrate(&pool).await.expect("migrated again");
        assert_eq!(store.deployment_id().await.expect("an id"), id, "stable");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

/// The replication check reads the server's own settings: a single server
/// (no standby) loses no acknowledged commit on failover, because there is
/// no failover; a database whose sessions commit asynchronously
/// (`synchronous_commit = off`) with a synchronous standby named would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_check_reads_the_servers_commit_settings() {
    let store = integration_tests::postgres::fresh_store().await;
    let single = adapters::postgres::replication(store.pool())
        .await
        .expect("read");
    assert_eq!(single.streaming_standbys, 0);
    assert_eq!(single.synchronous_commit, "on");
    assert_eq!(single.risk(), None, "{single:?}");
    let url = integration_tests::postgres::fresh_database_url().await;
    let database = url.rsplit('/').next().expect("a database").to_owned();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" SET synchronous_commit = 'local'"
    )))
    .execute(store.pool())
    .await
    .expect("altered");
    let pool = adapters::postgres::connect(&url, &Default::default()).expect("pool");
    let asynchronous = adapters::postgres::Replication {
        synchronous_standby_names: "ANY 1 (standby)".into(),
        ..adapters::postgres::replication(&pool).await.expect("read")
    };
    assert_eq!(asynchronous.synchronous_commit, "local");
    assert!(asynchronous.risk().is_some(), "{asynchronous:?}");
}
