//! End to end against fake-stripe at a 20% fault rate: the API on Postgres,
//! charging through the real Stripe adapter over HTTP, a retrying client
//! sending a few hundred rides, then the completer's passes. Afterwards the
//! completer has finished exactly the keys the client left, every charge
//! fake-stripe lists belongs to exactly one ride, every ride is booked with
//! exactly one charge, and no key is left unfinished or for review. Short
//! timings throughout (client timeout, hang, backoff).

use application::ports::KeyViews;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use adapters::clock::SystemClock;
use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, FaultKind, FaultTiming, Faults};
use adapters::stripe::{StripeGateway, StripeSettings};
use application::ports::PaymentGateway;
use application::{AuthMode, CompleteStalledKeys, PhaseMachine, SeedDemoUsers};
use domain::CompleterPolicy;
use integration_tests::{GOOD_USER, SEED_BODY};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const RIDES: usize = 300;
const API_KEY: &str = "sk_test_end_to_end";

async fn serve_stripe(stripe: FakeStripe) -> String {
    stripe.serve_on_loopback().await.expect("served")
}

/// Every charge id fake-stripe lists, page by page through its HTTP API.
async fn listed_charges(base: &str) -> Vec<String> {
    integration_tests::soak::all_charges(&reqwest::Client::new(), base, API_KEY)
        .await
        .expect("listed")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_twenty_percent_faults_every_charge_has_one_ride_and_every_ride_one_charge() {
    let healthy = FakeStripe::new(FakeStripeSettings::default());
    let faulty = healthy.sharing_ledger(FakeStripeSettings {
        faults: Faults {
            rate: 0.2,
            kinds: FaultKind::ALL.to_vec(),
            timing: FaultTiming::Either,
            latency: Duration::from_millis(50),
            hang: Duration::from_secs(2),
            paths: Vec::new(),
        },
        ..FakeStripeSettings::default()
    });
    let healthy_base = serve_stripe(healthy.clone()).await;
    let faulty_base = serve_stripe(faulty).await;

    let store = integration_tests::postgres::fresh_store().await;
    // The demo users' customers are made while Stripe is healthy.
    let setup_gateway =
        StripeGateway::new(StripeSettings::new(API_KEY, healthy_base.clone())).expect("client");
    SeedDemoUsers::new(store.clone(), Arc::new(setup_gateway))
        .run(None)
        .await
        .expect("seeded");

    let gateway: Arc<dyn PaymentGateway> = Arc::new(
        StripeGateway::new(StripeSettings {
            timeout: Duration::from_millis(400),
            // No retries inside the adapter: more requests end unknown, and
            // the client and the completer must finish them.
            max_retries: 0,
            retry_backoff: Duration::from_millis(10),
            ..StripeSettings::new(API_KEY, faulty_base)
        })
        .expect("client"),
    );
    let settings = integration_tests::ride_settings();
    let mut state = integration_tests::api_state(
        store.clone(),
        store.clone(),
        store.clone(),
        gateway.clone(),
        AuthMode::Email,
    );
    state.gateway_retry_after = Duration::from_secs(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(adapters::http::serve(
        listener,
        state,
        std::future::pending(),
    ));

    // The retrying client: each ride a few attempts under its one key.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let gate = Arc::new(Semaphore::new(16));
    let mut rides = JoinSet::new();
    for _ in 0..RIDES {
        let (client, api, gate) = (client.clone(), api.clone(), gate.clone());
        rides.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let key = uuid::Uuid::new_v4().to_string();
            let mut last = 0;
            for _ in 0..2 {
                let sent = client
                    .post(format!("{api}/rides"))
                    .header("Authorization", GOOD_USER)
                    .header("Idempotency-Key", &key)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(SEED_BODY)
                    .send()
                    .await;
                last = match sent {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                if last == 201 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (key, last)
        });
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    while let Some(done) = rides.join_next().await {
        let (_, status) = done.expect("client task");
        *statuses.entry(status).or_insert(0) += 1;
    }
    eprintln!("client's last answers: {statuses:?}");
    assert!(
        statuses.keys().all(|s| [201, 409, 500, 503, 0].contains(s)),
        "only success or retryable answers: {statuses:?}"
    );

    let pool = store.pool();
    let unfinished_keys = |pool: sqlx::PgPool| async move {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM idempotency_keys WHERE recovery_point <> 'finished'",
        )
        .fetch_one(&pool)
        .await
        .expect("query");
        usize::try_from(n).expect("a count")
    };
    let left_by_clients = unfinished_keys(pool.clone()).await;
    eprintln!("the client left {left_by_clients} keys unfinished");

    // The completer's passes (no minimum age: the client has given up),
    // until it finds nothing more to do.
    let completer = CompleteStalledKeys::new(
        store.clone(),
        Arc::new(PhaseMachine::new(
            store.clone(),
            store.clone(),
            gateway.clone(),
            Arc::new(SystemClock),
            settings,
        )),
        Arc::new(SystemClock),
        CompleterPolicy {
            min_age: Duration::ZERO,
            min_idle: Duration::ZERO,
            lock: settings.lock,
            review: settings.review,
        },
        1000,
    );
    let mut completed = 0;
    for _ in 0..50 {
        let report = completer.run_batch().await.expect("completer pass");
        completed += report.finished;
        if report.picked == 0 {
            break;
        }
    }
    // Every key the client left, the completer finished: none is left, and
    // none awaits review (no charge here is anywhere near the real window).
    assert_eq!(
        completed, left_by_clients,
        "the completer finished each key the client left, once"
    );
    assert_eq!(
        unfinished_keys(pool.clone()).await,
        0,
        "no key left unfinished"
    );
    let review = store
        .keys_for_review(settings.review.attempted_before(SystemTime::now()), 1000)
        .await
        .expect("review list");
    assert!(review.is_empty(), "nothing for review: {review:?}");

    let booked: Vec<(i64, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT r.id, r.stripe_charge_id, k.response_code FROM rides r \
         JOIN idempotency_keys k ON k.id = r.idempotency_key_id",
    )
    .fetch_all(pool)
    .await
    .expect("rides");
    assert_eq!(booked.len(), RIDES, "one ride per key");
    let listed = listed_charges(&healthy_base).await;
    let listed_set: HashSet<&String> = listed.iter().collect();
    assert_eq!(
        listed_set.len(),
        listed.len(),
        "fake-stripe lists each charge once"
    );
    let mut rides_per_charge: HashMap<&String, usize> = HashMap::new();
    for (ride, charge, code) in &booked {
        if *code == Some(201) {
            let charge = charge
                .as_ref()
                .unwrap_or_else(|| panic!("201 ride {ride} has no charge"));
            assert!(
                listed_set.contains(charge),
                "ride {ride}'s charge {charge} is not at Stripe"
            );
        }
        if let Some(charge) = charge {
            *rides_per_charge.entry(charge).or_insert(0) += 1;
        }
    }
    for charge in &listed {
        assert_eq!(
            rides_per_charge.get(charge),
            Some(&1),
            "charge {charge} belongs to exactly one ride"
        );
    }
    let finished_201 = booked
        .iter()
        .filter(|(_, _, code)| *code == Some(201))
        .count();
    assert_eq!(
        listed.len(),
        finished_201,
        "one charge per booked ride, no more"
    );
    assert_eq!(finished_201, RIDES, "every ride booked");
    assert_eq!(healthy.charges().len(), listed.len());
}
