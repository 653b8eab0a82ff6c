//! Races over real HTTP on the in-memory adapters: many copies of one
//! request make one ride and one charge; many distinct requests all succeed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use adapters::memory::FakeGatewayFaults;
use integration_tests::{
    Answer, AppOptions, Backend, GOOD_USER, SEED_BODY, new_key, on_every_backend, spawn_app,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

async fn sixty_four_concurrent_requests_with_one_key_make_one_ride_and_one_charge(
    backend: Backend,
) {
    let app = Arc::new(
        spawn_app(AppOptions {
            // Long enough that the copies overlap the one doing the work.
            faults: FakeGatewayFaults {
                unknown_rate: 0.0,
                latency: Duration::from_millis(300),
            },
            ..AppOptions::on(backend)
        })
        .await,
    );
    let key = new_key();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let mut requests = JoinSet::new();
    for _ in 0..64 {
        let (app, key, start) = (app.clone(), key.clone(), start.clone());
        requests.spawn(async move {
            start.wait().await;
            Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await
        });
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    while let Some(answer) = requests.join_next().await {
        let answer = answer.expect("request task");
        match answer.status {
            201 => created.push(answer.body),
            409 => {
                assert!(answer.header("retry-after").is_some());
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert!(!created.is_empty(), "one request did the work");
    assert_eq!(created.len() + conflicts, 64);
    assert!(conflicts > 0, "the copies overlapped");
    let bodies: HashSet<&String> = created.iter().collect();
    assert_eq!(bodies.len(), 1, "every 201 body is identical");
    assert_eq!(app.gateway.charges().len(), 1, "one charge");
    assert_eq!(app.gateway.charge_calls(), 1);
    assert_eq!(app.store.staged_jobs(100).await.expect("jobs").len(), 1);
    assert_eq!(app.inspect.ride_count().await, 1, "one ride");
    assert_eq!(app.inspect.key_count().await, 1);
    let ride_id =
        serde_json::from_str::<serde_json::Value>(created[0].as_str()).expect("json")["ride"]["id"]
            .as_i64()
            .expect("id");
    // Ride ids are allocated per ride; the one ride is visible and only one.
    assert!(
        app.get_ride(GOOD_USER, &ride_id.to_string())
            .await
            .status()
            .is_success()
    );
    assert!(
        !app.get_ride(GOOD_USER, &(ride_id + 1).to_string())
            .await
            .status()
            .is_success()
    );
}

async fn two_hundred_fifty_six_distinct_keys_at_thirty_two_at_a_time_all_get_201(backend: Backend) {
    let app = Arc::new(spawn_app(AppOptions::on(backend)).await);
    let gate = Arc::new(Semaphore::new(32));
    let mut requests = JoinSet::new();
    for _ in 0..256 {
        let (app, gate) = (app.clone(), gate.clone());
        requests.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            Answer::of(
                app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
                    .await,
            )
            .await
        });
    }
    let mut ride_ids = HashSet::new();
    while let Some(answer) = requests.join_next().await {
        let answer = answer.expect("request task");
        assert_eq!(answer.status, 201, "{}", answer.body);
        ride_ids.insert(answer.json()["ride"]["id"].as_i64().expect("id"));
    }
    assert_eq!(ride_ids.len(), 256);
    assert_eq!(app.inspect.ride_count().await, 256);
    assert_eq!(app.gateway.charges().len(), 256);
    assert_eq!(app.store.staged_jobs(1000).await.expect("jobs").len(), 256);
}

on_every_backend!(
    sixty_four_concurrent_requests_with_one_key_make_one_ride_and_one_charge,
    two_hundred_fifty_six_distinct_keys_at_thirty_two_at_a_time_all_get_201,
);
