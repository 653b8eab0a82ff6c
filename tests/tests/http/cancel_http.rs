//! `POST /rides/{id}/cancel` over real HTTP, on memory and on Postgres:
//! SPEC's rows, every bad input a 4xx that stores nothing, concurrent
//! cancels of one ride under different keys making one refund.

use integration_tests::{
    Answer, AppOptions, Backend, DECLINED_USER, GOOD_USER, SEED_BODY, TestApp, new_key,
    on_every_backend, spawn_app,
};

async fn booked(app: &TestApp) -> String {
    let answer = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["ride"]["id"].to_string()
}

async fn cancel(app: &TestApp, user: &str, key: &str, id: &str, body: &str) -> Answer {
    Answer::of(app.cancel_ride(user, key, id, body).await).await
}

async fn a_booked_ride_is_cancelled_refunded_once_and_replayed(backend: Backend) {
    let app = spawn_app(AppOptions::on(backend)).await;
    let id = booked(&app).await;
    let key = new_key();
    let first = cancel(&app, GOOD_USER, &key, &id, r#"{"reason":"plans changed"}"#).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    assert_eq!(body["ride"]["status"], "cancelled");
    assert_eq!(body["refund"]["amount"], domain::RIDE_PRICE.amount_cents);
    assert_eq!(body["refund"]["status"], "succeeded");
    let again = cancel(&app, GOOD_USER, &key, &id, r#"{"reason":"plans changed"}"#).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    // Before the cancel, GET shows no refund; after it, the same refund
    // as the cancel's answer.
    let shown = Answer::of(app.get_ride(GOOD_USER, &id).await).await;
    assert_eq!(shown.json()["status"], "cancelled");
    assert_eq!(shown.json()["refund"], body["refund"], "{}", shown.body);
    let booked_id = booked(&app).await;
    let untouched = Answer::of(app.get_ride(GOOD_USER, &booked_id).await).await;
    assert_eq!(untouched.json()["status"], "booked");
    assert!(
        untouched.json().get("refund").is_none(),
        "{}",
        untouched.body
    );
    let other = cancel(&app, GOOD_USER, &new_key(), &id, "").await;
    assert_eq!(other.status, 409);
    assert!(
        other.body.contains("ride-already-cancelled"),
        "{}",
        other.body
    );
    assert_eq!(app.gateway.refunds().len(), 1);
}

async fn bad_cancels_are_4xx_and_store_nothing(backend: Backend) {
    let app = spawn_app(AppOptions::on(backend)).await;
    let id = booked(&app).await;
    let keys_before = app.inspect.key_count().await;
    let long = format!(r#"{{"reason":"{}"}}"#, "é".repeat(501));
    for (user, key, ride, body, status) in [
        (DECLINED_USER, new_key(), id.clone(), String::new(), 404),
        (
            GOOD_USER,
            new_key(),
            "999999".to_owned(),
            String::new(),
            404,
        ),
        (
            GOOD_USER,
            new_key(),
            "not-a-number".to_owned(),
            String::new(),
            404,
        ),
        (
            GOOD_USER,
            "short".to_owned(),
            id.clone(),
            String::new(),
            400,
        ),
        (GOOD_USER, new_key(), id.clone(), long, 422),
        (
            GOOD_USER,
            new_key(),
            id.clone(),
            r#"{"reason":7}"#.to_owned(),
            422,
        ),
        (
            GOOD_USER,
            new_key(),
            id.clone(),
            r#"{"why":"x"}"#.to_owned(),
            422,
        ),
        (GOOD_USER, new_key(), id.clone(), "[1]".to_owned(), 422),
        (
            "nobody@example.com",
            new_key(),
            id.clone(),
            String::new(),
            401,
        ),
    ] {
        let answer = cancel(&app, user, &key, &ride, &body).await;
        assert_eq!(
            answer.status, status,
            "{user} {ride} {body}: {}",
            answer.body
        );
    }
    assert_eq!(app.inspect.key_count().await, keys_before, "nothing stored");
    let reason_of_500 = format!(r#"{{"reason":"{}"}}"#, "é".repeat(500));
    let at_limit = cancel(&app, GOOD_USER, &new_key(), &id, &reason_of_500).await;
    assert_eq!(
        at_limit.status, 200,
        "500 characters is allowed: {}",
        at_limit.body
    );
}

async fn concurrent_cancels_of_one_ride_make_one_refund(backend: Backend) {
    let app = spawn_app(AppOptions::on(backend)).await;
    let id = booked(&app).await;
    let mut cancels = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(format!("{}/rides/{id}/cancel", app.base))
            .header("Authorization", GOOD_USER)
            .header("Idempotency-Key", new_key());
        cancels.spawn(async move { Answer::of(request.send().await.expect("answered")).await });
    }
    let mut statuses: Vec<u16> = cancels.join_all().await.iter().map(|a| a.status).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 409, 409, 409, 409, 409, 409, 409],
        "{statuses:?}"
    );
    assert_eq!(app.gateway.refunds().len(), 1);
}

/// Two cancels of one ride with different keys, sent at once, for each of
/// 100 rides on Postgres: one refund per ride, 100 in all, each pair one
/// 200 and one 409 (the database's constraints decide the race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_cancels_of_each_of_100_rides_make_100_refunds_on_postgres() {
    let app = spawn_app(AppOptions::on(Backend::Postgres)).await;
    let mut rides = Vec::new();
    for _ in 0..100 {
        rides.push(booked(&app).await);
    }
    let mut pairs = tokio::task::JoinSet::new();
    for id in &rides {
        let send = |id: &str| {
            app.client
                .post(format!("{}/rides/{id}/cancel", app.base))
                .header("Authorization", GOOD_USER)
                .header("Idempotency-Key", new_key())
                .send()
        };
        let (first, second) = (send(id), send(id));
        pairs.spawn(async move {
            let (first, second) = tokio::join!(first, second);
            let mut statuses = [
                first.expect("answered").status().as_u16(),
                second.expect("answered").status().as_u16(),
            ];
            statuses.sort_unstable();
            statuses
        });
    }
    for statuses in pairs.join_all().await {
        assert_eq!(statuses, [200, 409]);
    }
    assert_eq!(app.gateway.refunds().len(), 100, "one refund per ride");
}

on_every_backend!(
    a_booked_ride_is_cancelled_refunded_once_and_replayed,
    bad_cancels_are_4xx_and_store_nothing,
    concurrent_cancels_of_one_ride_make_one_refund,
);
