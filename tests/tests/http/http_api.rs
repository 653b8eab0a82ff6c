//! The HTTP API, over real HTTP on the in-memory adapters: every row of
//! SPEC.md's table as a client sees it, and that bad input changes nothing.

use std::time::Duration;

use adapters::http::ServerLimits;
use adapters::memory::FakeGatewayFaults;
use application::AuthMode;
use integration_tests::{
    Answer, AppOptions, Backend, CARDLESS_USER, DECLINED_USER, GOOD_USER, SEED_BODY, TestApp,
    new_key, on_every_backend, spawn_app, spawn_gated_app,
};

async fn app(backend: Backend) -> TestApp {
    spawn_app(AppOptions::on(backend)).await
}

async fn no_key_was_stored(app: &TestApp) {
    assert_eq!(app.inspect.key_count().await, 0, "no key was stored");
    assert_eq!(app.inspect.ride_count().await, 0, "no ride was stored");
    assert!(app.gateway.charges().is_empty(), "nothing was charged");
    assert_eq!(app.gateway.charge_calls(), 0, "the gateway was not called");
    assert!(
        app.store.staged_jobs(10).await.expect("jobs").is_empty(),
        "nothing was staged"
    );
}

async fn the_seed_curl_line_books_a_ride_and_the_same_key_replays_it_byte_for_byte(
    backend: Backend,
) {
    let app = app(backend).await;
    let key = new_key();
    let first = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("idempotent-replayed"), None);
    let json = first.json();
    assert!(json["message"].is_string());
    let ride = &json["ride"];
    for field in ["origin_lat", "origin_lon", "target_lat", "target_lon"] {
        assert_eq!(ride[field], 0.0, "{field}");
    }
    let charge_id = ride["stripe_charge_id"].as_str().expect("charged");
    assert_eq!(app.gateway.charges()[0].id, charge_id);

    let second = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body, "byte for byte");
    assert_eq!(app.gateway.charges().len(), 1);

    let id = ride["id"].as_i64().expect("an id").to_string();
    let shown = Answer::of(app.get_ride(GOOD_USER, &id).await).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json(), *ride, "GET shows the same ride object");
    assert!(first.body.contains(&shown.body), "the same bytes, too");
}

/// A key finished by an earlier version replays the bytes that version
/// stored, even where today's renderer would write them differently (the
/// hand-written JSON wrote 0.00001 as `1e-5`; serde writes `0.00001`).
async fn a_key_finished_by_an_earlier_version_replays_its_bytes_unchanged(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let body = "origin_lat=0.00001&origin_lon=0.0&target_lat=0.0&target_lon=0.0";
    let first = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), body).await).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(
        first.body.contains(r#""origin_lat":0.00001,"#),
        "{}",
        first.body
    );
    let earlier = first
        .body
        .replace(r#""origin_lat":0.00001,"#, r#""origin_lat":1e-5,"#);
    app.inspect.store_earlier_answer(&key, &earlier).await;
    let replayed = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), body).await).await;
    assert_eq!(replayed.status, 201);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, earlier, "the stored bytes, byte for byte");
    assert_eq!(app.gateway.charges().len(), 1);
}

async fn a_json_body_books_a_ride_and_equals_the_form_request(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let json = r#"{"origin_lat": 12.5, "origin_lon": -3, "target_lat": "40.1", "target_lon": 0}"#;
    let first = Answer::of(
        app.post_ride_typed(Some(GOOD_USER), Some(&key), "application/json", json)
            .await,
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["ride"]["origin_lon"], -3.0);
    // The same parameters as a form are the same request.
    let form = "origin_lat=12.50&origin_lon=-3.0&target_lat=40.1&target_lon=-0";
    let again = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), form).await).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

async fn a_declined_card_is_402_with_the_processors_message_and_is_replayed(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let first = Answer::of(
        app.post_ride(Some(DECLINED_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(first.status, 402);
    assert!(first.detail().contains("Your card was declined."));
    let again = Answer::of(
        app.post_ride(Some(DECLINED_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(again.status, 402);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(app.gateway.charge_calls(), 1);
}

async fn a_charge_refused_for_good_is_502_and_stored(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let first = Answer::of(
        app.post_ride(Some(CARDLESS_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(first.status, 502);
    // Our own words; the processor's text (and its customer ids) stays in the log.
    assert!(
        first.detail().contains("no charge was made"),
        "{}",
        first.body
    );
    assert!(!first.body.contains("no active card"), "{}", first.body);
    assert!(!first.body.contains("cus_"), "{}", first.body);
    let again = Answer::of(
        app.post_ride(Some(CARDLESS_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
}

async fn an_unknown_gateway_answer_is_503_with_retry_after_and_is_not_stored(backend: Backend) {
    let app = spawn_app(AppOptions {
        faults: FakeGatewayFaults {
            unknown_rate: 1.0,
            latency: Duration::ZERO,
        },
        ..AppOptions::on(backend)
    })
    .await;
    let key = new_key();
    for _ in 0..2 {
        let answer = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.header("retry-after"), Some("2"));
        assert_eq!(answer.header("idempotent-replayed"), None, "never stored");
        assert!(answer.detail().contains("same Idempotency-Key"));
    }
    assert_eq!(
        app.gateway.charge_calls(),
        2,
        "each retry tries the charge again"
    );
    let charges = app.gateway.charges();
    assert!(charges.len() <= 1, "one downstream key: at most one charge");
}

async fn raise_error_is_500_unlocked_and_a_retry_without_it_succeeds(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let body = format!("{SEED_BODY}&raise_error=true");
    let failed = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), &body).await).await;
    assert_eq!(failed.status, 500);
    assert!(
        failed
            .detail()
            .contains("Retry the request with the same Idempotency-Key")
    );
    let retried = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(
        retried.status, 201,
        "the key was unlocked: {}",
        retried.body
    );
    assert_eq!(retried.header("idempotent-replayed"), None);
    assert_eq!(app.gateway.charges().len(), 1);
}

async fn missing_or_unknown_authorization_is_401_and_stores_nothing(backend: Backend) {
    let app = app(backend).await;
    for authorization in [None, Some(""), Some("nobody@example.com")] {
        let answer = Answer::of(
            app.post_ride(authorization, Some(&new_key()), SEED_BODY)
                .await,
        )
        .await;
        assert_eq!(answer.status, 401, "{authorization:?}");
        answer.detail();
    }
    // Auth is checked before the key and the body.
    let answer = Answer::of(app.post_ride(None, None, "garbage").await).await;
    assert_eq!(answer.status, 401);
    no_key_was_stored(&app).await;
}

async fn a_bad_idempotency_key_is_400_and_stores_nothing(backend: Backend) {
    let app = app(backend).await;
    let too_long = "k".repeat(256);
    let cases: [(Option<&str>, &str); 5] = [
        (None, "required"),
        (Some("short-key"), "at least 20"),
        (Some(too_long.as_str()), "at most 255"),
        (Some("a key with spaces in it!!"), "visible ASCII"),
        (Some(""), "required"),
    ];
    for (key, expected) in cases {
        let answer = Answer::of(app.post_ride(Some(GOOD_USER), key, SEED_BODY).await).await;
        assert_eq!(answer.status, 400, "{key:?}: {}", answer.body);
        assert!(
            answer.detail().contains(expected),
            "{key:?}: {}",
            answer.body
        );
    }
    // The key is checked before the body.
    let answer = Answer::of(
        app.post_ride(Some(GOOD_USER), Some("short"), "garbage")
            .await,
    )
    .await;
    assert_eq!(answer.status, 400);
    // 255 characters is fine.
    let longest = "k".repeat(255);
    let answer = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&longest), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(answer.status, 201);
}

async fn a_bad_body_is_422_naming_the_field_and_stores_nothing(backend: Backend) {
    let app = app(backend).await;
    let cases = [
        (
            "origin_lat=0&origin_lon=0&target_lat=0",
            "target_lon is required",
        ),
        (
            "origin_lat=abc&origin_lon=0&target_lat=0&target_lon=0",
            "origin_lat must be a number",
        ),
        (
            "origin_lat=NaN&origin_lon=0&target_lat=0&target_lon=0",
            "origin_lat must be a number",
        ),
        (
            "origin_lat=0&origin_lon=inf&target_lat=0&target_lon=0",
            "origin_lon must be a number",
        ),
        (
            "origin_lat=0&origin_lon=0&target_lat=91&target_lon=0",
            "target_lat must be between -90 and 90",
        ),
        (
            "origin_lat=0&origin_lon=-180.01&target_lat=0&target_lon=0",
            "origin_lon must be between -180 and 180",
        ),
        (
            "origin_lat=0&origin_lon=0&target_lat=0&target_lon=1e400",
            "target_lon must be a finite number",
        ),
        ("", "origin_lat is required"),
        (
            "origin_lat=0&origin_lat=1&origin_lon=0&target_lat=0&target_lon=0",
            "origin_lat is given more than once",
        ),
        (
            "origin_lat=0&origin_lon=0&target_lat=0&target_lon=0&amount=1",
            "unknown field amount",
        ),
        (
            "origin_lat=0&origin_lon=0&target_lat=0&target_lon=0&raise_error=maybe",
            "raise_error must be true or false",
        ),
    ];
    for (body, expected) in cases {
        let answer = Answer::of(app.post_ride(Some(GOOD_USER), Some(&new_key()), body).await).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert!(
            answer.detail().contains(expected),
            "{body}: {}",
            answer.body
        );
    }
    let json_cases = [
        ("{", "could not be read"),
        ("[1, 2]", "must be an object"),
        (
            r#"{"origin_lat": null, "origin_lon": 0, "target_lat": 0, "target_lon": 0}"#,
            "origin_lat must be a number",
        ),
        (
            r#"{"origin_lat": true, "origin_lon": 0, "target_lat": 0, "target_lon": 0}"#,
            "origin_lat must be a number",
        ),
        (
            r#"{"origin_lat": 0, "origin_lon": 0, "target_lat": -90.5, "target_lon": 0}"#,
            "target_lat must be between",
        ),
        (
            r#"{"origin_lat": 0, "origin_lon": 0, "target_lat": 0, "target_lon": 0, "origin_lat": 5}"#,
            "origin_lat is given more than once",
        ),
    ];
    for (body, expected) in json_cases {
        let answer = Answer::of(
            app.post_ride_typed(Some(GOOD_USER), Some(&new_key()), "application/json", body)
                .await,
        )
        .await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert!(
            answer.detail().contains(expected),
            "{body}: {}",
            answer.body
        );
    }
    no_key_was_stored(&app).await;
}

async fn an_oversized_or_unsupported_body_is_a_4xx_and_stores_nothing(backend: Backend) {
    let app = app(backend).await;
    let huge = format!("{SEED_BODY}&pad={}", "x".repeat(64 * 1024));
    let answer = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), &huge)
            .await,
    )
    .await;
    assert_eq!(answer.status, 413);
    answer.detail();
    let answer = Answer::of(
        app.post_ride_typed(Some(GOOD_USER), Some(&new_key()), "text/plain", SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(answer.status, 415);
    answer.detail();
    let binary = String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x41]).into_owned();
    let answer = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), &binary)
            .await,
    )
    .await;
    assert!((400..500).contains(&answer.status), "{}", answer.status);
    no_key_was_stored(&app).await;
}

async fn a_key_reused_with_another_body_is_422_and_changes_nothing(backend: Backend) {
    let app = app(backend).await;
    let key = new_key();
    let first = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(first.status, 201);
    let other = "origin_lat=1&origin_lon=0&target_lat=0&target_lon=0";
    let reused = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), other).await).await;
    assert_eq!(reused.status, 422);
    assert!(reused.detail().contains("different request"));
    let replay = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(replay.body, first.body);
    assert_eq!(app.gateway.charges().len(), 1);
}

async fn a_request_in_flight_is_409_with_retry_after(backend: Backend) {
    let (app, gate) = spawn_gated_app(backend, ServerLimits::DEFAULT).await;
    let key = new_key();
    // The first request holds the key while its charge waits at the gate;
    // the second, sent only then, finds it locked.
    let first = app.post_ride_in_background(&key);
    gate.entered(1).await;
    let refused = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.detail().contains("being processed"));
    gate.release(1);
    let done = first.await.expect("task").expect("answered");
    assert_eq!(done.status, 201, "{}", done.body);
    assert_eq!(app.gateway.charges().len(), 1);
}

async fn a_rider_sees_their_own_ride_and_nobody_elses(backend: Backend) {
    let app = app(backend).await;
    let booked = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    let id = booked.json()["ride"]["id"]
        .as_i64()
        .expect("id")
        .to_string();
    assert_eq!(app.get_ride(GOOD_USER, &id).await.status(), 200);
    for (who, which) in [
        (DECLINED_USER, id.as_str()),
        (GOOD_USER, "999999"),
        (GOOD_USER, "abc"),
    ] {
        let answer = Answer::of(app.get_ride(who, which).await).await;
        assert_eq!(answer.status, 404, "{who} {which}");
        answer.detail();
    }
    assert_eq!(app.get_ride("nobody@example.com", &id).await.status(), 401);
}

async fn health_readiness_and_unknown_routes(backend: Backend) {
    let app = app(backend).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let missing = Answer::of(app.get("/nothing-here").await).await;
    assert_eq!(missing.status, 404);
    missing.detail();
    let wrong_method = Answer::of(app.get("/rides").await).await;
    assert_eq!(wrong_method.status, 405);
    wrong_method.detail();
}

async fn api_key_mode_takes_bearer_keys_and_refuses_emails(backend: Backend) {
    let app = spawn_app(AppOptions {
        auth_mode: AuthMode::ApiKey,
        ..AppOptions::on(backend)
    })
    .await;
    let bearer = app.api_key_of(GOOD_USER);
    let answer = Answer::of(
        app.post_ride(Some(&bearer), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    for wrong in [
        GOOD_USER,
        "Bearer rr_not_a_key",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
    ] {
        let answer = Answer::of(
            app.post_ride(Some(wrong), Some(&new_key()), SEED_BODY)
                .await,
        )
        .await;
        assert_eq!(answer.status, 401, "{wrong}");
    }
    let declined = app.api_key_of(DECLINED_USER);
    let answer = Answer::of(
        app.post_ride(Some(&declined), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(answer.status, 402);
}

/// A ride request with an `X-Request-Id` (or none): the status and the id
/// the answer carries.
async fn post_with_request_id(
    app: &TestApp,
    authorization: Option<&str>,
    key: &str,
    body: &str,
    request_id: Option<&str>,
) -> (u16, String) {
    let mut request = app
        .client
        .post(format!("{}/rides", app.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Idempotency-Key", key)
        .body(body.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(id) = request_id {
        request = request.header("X-Request-Id", id);
    }
    let answer = request.send().await.expect("the API answers");
    let id = answer
        .headers()
        .get("x-request-id")
        .expect("every answer carries a request id")
        .to_str()
        .expect("visible ASCII")
        .to_owned();
    (answer.status().as_u16(), id)
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

async fn every_answer_carries_a_request_id_and_the_key_records_the_request_that_locked_it(
    backend: Backend,
) {
    let app = app(backend).await;

    // A client's id is kept, returned and recorded on the key it created.
    let key = new_key();
    let first = post_with_request_id(
        &app,
        Some(GOOD_USER),
        &key,
        SEED_BODY,
        Some("trace-first-1"),
    )
    .await;
    assert_eq!(first, (201, "trace-first-1".to_owned()));
    assert_eq!(
        app.inspect.request_id(&key).await.as_deref(),
        Some("trace-first-1")
    );
    // A replay answers with its own id and leaves the key's as it was.
    let replay = post_with_request_id(
        &app,
        Some(GOOD_USER),
        &key,
        SEED_BODY,
        Some("trace-replay-2"),
    )
    .await;
    assert_eq!(replay, (201, "trace-replay-2".to_owned()));
    assert_eq!(
        app.inspect.request_id(&key).await.as_deref(),
        Some("trace-first-1")
    );

    // A retry that resumes a key records itself: the stored response names
    // the request that produced it.
    let resumed = new_key();
    let failed = post_with_request_id(
        &app,
        Some(GOOD_USER),
        &resumed,
        &format!("{SEED_BODY}&raise_error=true"),
        Some("trace-failed-3"),
    )
    .await;
    assert_eq!(failed, (500, "trace-failed-3".to_owned()));
    assert_eq!(
        app.inspect.request_id(&resumed).await.as_deref(),
        Some("trace-failed-3")
    );
    let retried = post_with_request_id(
        &app,
        Some(GOOD_USER),
        &resumed,
        SEED_BODY,
        Some("trace-retry-4"),
    )
    .await;
    assert_eq!(retried, (201, "trace-retry-4".to_owned()));
    assert_eq!(
        app.inspect.request_id(&resumed).await.as_deref(),
        Some("trace-retry-4")
    );

    // Without one, or with one that is not 1-128 visible ASCII characters,
    // the request gets a new UUID, and the key records that.
    let generated = new_key();
    let (status, id) =
        post_with_request_id(&app, Some(GOOD_USER), &generated, SEED_BODY, None).await;
    assert_eq!(status, 201);
    assert!(is_uuid(&id), "{id}");
    assert_eq!(app.inspect.request_id(&generated).await, Some(id));
    let longest = "r".repeat(128);
    let (_, id) =
        post_with_request_id(&app, Some(GOOD_USER), &new_key(), SEED_BODY, Some(&longest)).await;
    assert_eq!(id, longest);
    for bad in ["r".repeat(129), "two words".to_owned(), String::new()] {
        let (status, id) =
            post_with_request_id(&app, Some(GOOD_USER), &new_key(), SEED_BODY, Some(&bad)).await;
        assert_eq!(status, 201);
        assert!(is_uuid(&id), "{bad:?} was replaced, not {id:?}");
    }

    // Refusals carry it too, and store nothing.
    let refused = new_key();
    let unauthorized =
        post_with_request_id(&app, None, &refused, SEED_BODY, Some("trace-401")).await;
    assert_eq!(unauthorized, (401, "trace-401".to_owned()));
    assert_eq!(app.inspect.request_id(&refused).await, None);
    let missing = app
        .client
        .get(format!("{}/nowhere", app.base))
        .header("X-Request-Id", "trace-404")
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"trace-404"[..])
    );
}

on_every_backend!(
    the_seed_curl_line_books_a_ride_and_the_same_key_replays_it_byte_for_byte,
    a_key_finished_by_an_earlier_version_replays_its_bytes_unchanged,
    a_json_body_books_a_ride_and_equals_the_form_request,
    a_declined_card_is_402_with_the_processors_message_and_is_replayed,
    a_charge_refused_for_good_is_502_and_stored,
    an_unknown_gateway_answer_is_503_with_retry_after_and_is_not_stored,
    raise_error_is_500_unlocked_and_a_retry_without_it_succeeds,
    missing_or_unknown_authorization_is_401_and_stores_nothing,
    a_bad_idempotency_key_is_400_and_stores_nothing,
    a_bad_body_is_422_naming_the_field_and_stores_nothing,
    an_oversized_or_unsupported_body_is_a_4xx_and_stores_nothing,
    a_key_reused_with_another_body_is_422_and_changes_nothing,
    a_request_in_flight_is_409_with_retry_after,
    a_rider_sees_their_own_ride_and_nobody_elses,
    health_readiness_and_unknown_routes,
    api_key_mode_takes_bearer_keys_and_refuses_emails,
    every_answer_carries_a_request_id_and_the_key_records_the_request_that_locked_it,
);
