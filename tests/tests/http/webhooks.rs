//! `POST /webhooks/stripe` over HTTP, on memory and on Postgres: a ride
//! waiting on the rider's authentication is booked by Stripe's signed
//! event, once; a bad signature, a stale one or a body that is not an
//! event is a 400 that changes nothing; the key's stored answer stays.

use std::time::{SystemTime, UNIX_EPOCH};

use domain::webhook::signature_header;
use integration_tests::{
    Answer, AppOptions, Backend, SEED_BODY, THREE_DS_USER, TestApp, WEBHOOK_SECRET, new_key,
    on_every_backend, spawn_app,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

fn succeeded(event: &str, intent: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{event}","object":"event","type":"payment_intent.succeeded","data":{{"object":{{"id":"{intent}","object":"payment_intent","status":"succeeded","latest_charge":"ch_{event}"}}}}}}"#
    )
    .into_bytes()
}

async fn deliver(app: &TestApp, signature: Option<String>, body: &[u8]) -> Answer {
    let mut request = app
        .client
        .post(format!("{}/webhooks/stripe", app.base))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    Answer::of(request.send().await.expect("answered")).await
}

async fn ride(app: &TestApp, id: i64) -> serde_json::Value {
    let answer = Answer::of(
        app.client
            .get(format!("{}/rides/{id}", app.base))
            .header("Authorization", THREE_DS_USER)
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

async fn a_ride_awaiting_authentication_is_booked_by_a_signed_event_once(backend: Backend) {
    let app = spawn_app(AppOptions::on(backend)).await;
    let key = new_key();
    let first = Answer::of(
        app.post_ride(Some(THREE_DS_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(first.status, 402, "{}", first.body);
    let body = first.json();
    assert_eq!(
        body["type"],
        "/openapi.json#/components/responses/authentication-required"
    );
    let intent = body["payment_intent"].as_str().expect("intent").to_owned();
    let id = body["ride"]["id"].as_i64().expect("ride id");
    assert_eq!(ride(&app, id).await["status"], "awaiting_authentication");

    // Refused: no signature, another secret's, a stale one, a tampered body.
    let event = succeeded("evt_http_1", &intent);
    let stale = signature_header(WEBHOOK_SECRET, now() - 600, &event);
    let forged = signature_header("whsec_forged", now(), &event);
    let mut tampered = event.clone();
    tampered.extend_from_slice(b"\n");
    for (signature, sent) in [
        (None, &event),
        (Some(stale), &event),
        (Some(forged), &event),
        (
            Some(signature_header(WEBHOOK_SECRET, now(), &event)),
            &tampered,
        ),
    ] {
        let refused = deliver(&app, signature, sent).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(refused.body.contains("invalid-webhook"), "{}", refused.body);
    }
    let not_an_event = br#"{"id":"evt_x"}"#;
    let refused = deliver(
        &app,
        Some(signature_header(WEBHOOK_SECRET, now(), not_an_event)),
        not_an_event,
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(ride(&app, id).await["status"], "awaiting_authentication");
    assert!(app.store.staged_jobs(10).await.expect("jobs").is_empty());

    // Signed: booked, its receipt staged; again: a duplicate.
    let signature = signature_header(WEBHOOK_SECRET, now(), &event);
    let applied = deliver(&app, Some(signature.clone()), &event).await;
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(applied.json()["result"], "applied");
    let booked = ride(&app, id).await;
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["stripe_charge_id"], "ch_evt_http_1");
    assert_eq!(booked["stripe_payment_intent_id"], intent.as_str());
    let again = deliver(&app, Some(signature), &event).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["result"], "duplicate");
    let jobs = app.store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "one receipt");
    assert_eq!(jobs[0].job.ride_id.0, id);

    // The key's answer never changes: the retry replays the 402.
    let replay = Answer::of(
        app.post_ride(Some(THREE_DS_USER), Some(&key), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(replay.status, 402);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

async fn events_for_intents_we_do_not_know_or_do_not_act_on_are_acknowledged(backend: Backend) {
    let app = spawn_app(AppOptions::on(backend)).await;
    let unknown = succeeded("evt_http_2", "pi_nobody");
    let answer = deliver(
        &app,
        Some(signature_header(WEBHOOK_SECRET, now(), &unknown)),
        &unknown,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["result"], "unknown_intent");
    let other = br#"{"id":"evt_http_3","object":"event","type":"charge.succeeded","data":{"object":{"id":"ch_1"}}}"#;
    let answer = deliver(
        &app,
        Some(signature_header(WEBHOOK_SECRET, now(), other)),
        other,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["result"], "ignored");
    assert_eq!(app.inspect.ride_count().await, 0);
}

on_every_backend!(
    a_ride_awaiting_authentication_is_booked_by_a_signed_event_once,
    events_for_intents_we_do_not_know_or_do_not_act_on_are_acknowledged,
);

#[tokio::test]
async fn without_a_webhook_secret_the_route_is_absent() {
    let store = std::sync::Arc::new(adapters::memory::MemoryStore::new());
    let state = integration_tests::api_state(
        store.clone(),
        store.clone(),
        store,
        std::sync::Arc::new(adapters::memory::FakeGateway::new()),
        application::AuthMode::Email,
    );
    assert!(state.webhook.is_none());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(adapters::http::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let body = succeeded("evt_absent", "pi_1");
    let answer = reqwest::Client::new()
        .post(format!("{base}/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            signature_header(WEBHOOK_SECRET, now(), &body),
        )
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 404);
}
