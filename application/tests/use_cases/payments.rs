//! PaymentIntents: a card that asks for authentication leaves the ride
//! waiting; a signed webhook or the completer's sync pass settles it, once,
//! forward only, with its receipt staged in the same commit.

use std::time::{Duration, UNIX_EPOCH};

use application::ports::{Keys, RidePayments};
use application::{ReceiveWebhook, SyncPayments, WebhookError};
use domain::webhook::signature_header;
use domain::{
    PaymentApplied, PaymentIntentState, PaymentUpdate, RideId, RideStatus, SignatureError,
    WebhookSecrets,
};

use crate::support::{Harness, key};

const SECRET: &str = "whsec_test_secret";
const SYNC_AFTER: Duration = Duration::from_secs(600);

fn receiver(h: &Harness) -> ReceiveWebhook {
    ReceiveWebhook::new(
        h.store.clone(),
        h.clock.clone(),
        WebhookSecrets::parse(&format!("whsec_old, {SECRET}")).expect("secrets"),
        domain::webhook::DEFAULT_TOLERANCE,
    )
}

fn syncer(h: &Harness) -> SyncPayments {
    SyncPayments::new(
        h.store.clone(),
        h.gateway.clone(),
        h.clock.clone(),
        SYNC_AFTER,
    )
}

fn now_seconds(h: &Harness) -> u64 {
    use application::ports::Clock;
    h.clock
        .now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

fn event(id: &str, kind: &str, intent: &str, status: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","object":"event","type":"{kind}","data":{{"object":{{"id":"{intent}","object":"payment_intent","status":"{status}","latest_charge":"ch_from_{id}"}}}}}}"#
    )
    .into_bytes()
}

fn signed(h: &Harness, body: &[u8]) -> String {
    signature_header(SECRET, now_seconds(h), body)
}

/// A ride booked by the 3-D Secure user: 402 `authentication-required`,
/// the ride waiting on the rider. Its id and PaymentIntent.
async fn awaiting_ride(h: &Harness, n: usize) -> (RideId, String) {
    let answer = h
        .create_ride
        .run(h.request(&h.three_ds_user, &key(n)))
        .await
        .expect("answered");
    assert_eq!(answer.response.status, 402);
    let body: serde_json::Value = serde_json::from_str(&answer.response.body).expect("json");
    assert_eq!(
        body["type"],
        "/openapi.json#/components/responses/authentication-required"
    );
    let intent = body["payment_intent"].as_str().expect("intent").to_owned();
    assert!(
        body["client_secret"]
            .as_str()
            .is_some_and(|secret| secret.starts_with(&intent)),
        "{body}"
    );
    assert_eq!(body["ride"]["status"], "awaiting_authentication");
    let ride = RideId(body["ride"]["id"].as_i64().expect("ride id"));
    (ride, intent)
}

async fn status(h: &Harness, ride: RideId) -> RideStatus {
    h.store
        .find_ride(ride)
        .await
        .expect("read")
        .expect("ride")
        .status
}

#[tokio::test]
async fn each_card_ends_in_its_own_status_and_answer() {
    let h = Harness::new().await;
    let booked = h.book(&key(1)).await.expect("booked");
    assert_eq!(booked.response.status, 201);
    let body: serde_json::Value = serde_json::from_str(&booked.response.body).expect("json");
    assert_eq!(body["ride"]["status"], "booked");
    assert!(
        body["ride"]["stripe_payment_intent_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pi_")),
        "{body}"
    );
    let declined = h
        .create_ride
        .run(h.request(&h.declined_user, &key(2)))
        .await
        .expect("answered");
    assert_eq!(declined.response.status, 402);
    assert!(declined.response.body.contains("card-declined"));
    let (waiting, _) = awaiting_ride(&h, 3).await;
    assert_eq!(
        status(&h, waiting).await,
        RideStatus::AwaitingAuthentication
    );
    let statuses: Vec<RideStatus> = h.store.rides().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RideStatus::Booked,
            RideStatus::PaymentFailed,
            RideStatus::AwaitingAuthentication
        ]
    );
    assert_eq!(
        h.staged_job_count().await,
        1,
        "a receipt only for the booked ride"
    );
    // The key is finished: a retry replays the 402, and charges nothing more.
    let calls = h.gateway.charge_calls();
    let replay = h
        .create_ride
        .run(h.request(&h.three_ds_user, &key(3)))
        .await
        .expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response.status, 402);
    assert_eq!(h.gateway.charge_calls(), calls);
}

#[tokio::test]
async fn a_signed_success_books_the_waiting_ride_once_and_stages_its_receipt() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let webhook = receiver(&h);
    let body = event("evt_1", "payment_intent.succeeded", &intent, "succeeded");
    let receipt = webhook
        .run(Some(&signed(&h, &body)), &body)
        .await
        .expect("received");
    assert_eq!(
        receipt.applied,
        Some(PaymentApplied::Moved {
            from: RideStatus::AwaitingAuthentication,
            to: RideStatus::Booked
        })
    );
    assert_eq!(status(&h, ride).await, RideStatus::Booked);
    let stored = h.store.find_ride(ride).await.expect("read").expect("ride");
    assert_eq!(stored.stripe_charge_id.as_deref(), Some("ch_from_evt_1"));
    assert_eq!(h.staged_job_count().await, 1);
    // The same event again (Stripe retries): nothing more.
    let again = webhook
        .run(Some(&signed(&h, &body)), &body)
        .await
        .expect("received");
    assert_eq!(again.applied, Some(PaymentApplied::Duplicate));
    assert_eq!(h.staged_job_count().await, 1);
    // A late failure of the same intent (another event id): the ride
    // stays booked.
    let late = event(
        "evt_2",
        "payment_intent.payment_failed",
        &intent,
        "requires_payment_method",
    );
    let receipt = webhook
        .run(Some(&signed(&h, &late)), &late)
        .await
        .expect("received");
    assert_eq!(
        receipt.applied,
        Some(PaymentApplied::Unchanged {
            status: RideStatus::Booked
        })
    );
    assert_eq!(status(&h, ride).await, RideStatus::Booked);
    assert_eq!(h.staged_job_count().await, 1);
}

#[tokio::test]
async fn events_out_of_order_leave_the_ride_in_its_furthest_status() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let webhook = receiver(&h);
    let failed = event("evt_f", "payment_intent.canceled", &intent, "canceled");
    let processing = event("evt_p", "payment_intent.processing", &intent, "processing");
    for body in [&failed, &processing] {
        webhook
            .run(Some(&signed(&h, body)), body)
            .await
            .expect("received");
    }
    assert_eq!(status(&h, ride).await, RideStatus::PaymentFailed);
    assert_eq!(
        h.staged_job_count().await,
        0,
        "no receipt for a failed ride"
    );
}

#[tokio::test]
async fn a_bad_signature_a_stale_one_or_a_body_that_is_no_event_changes_nothing() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let webhook = receiver(&h);
    let body = event("evt_1", "payment_intent.succeeded", &intent, "succeeded");
    let wrong_secret = signature_header("whsec_other", now_seconds(&h), &body);
    let stale = signature_header(SECRET, now_seconds(&h) - 301, &body);
    let tampered = {
        let mut other = body.clone();
        other.extend_from_slice(b" ");
        other
    };
    let cases: [(Option<&str>, &[u8]); 4] = [
        (None, &body),
        (Some(&wrong_secret), &body),
        (Some(&stale), &body),
        (Some(&signed(&h, &body)), &tampered),
    ];
    for (signature, sent) in cases {
        let error = webhook.run(signature, sent).await.unwrap_err();
        assert!(matches!(error, WebhookError::Signature(_)), "{error:?}");
    }
    assert!(matches!(
        webhook.run(Some(&stale), &body).await,
        Err(WebhookError::Signature(SignatureError::Stale {
            seconds: 301
        }))
    ));
    let not_an_event = br#"{"hello":"world"}"#;
    assert!(matches!(
        webhook
            .run(Some(&signed(&h, not_an_event)), not_an_event)
            .await,
        Err(WebhookError::NotAnEvent(_))
    ));
    assert_eq!(status(&h, ride).await, RideStatus::AwaitingAuthentication);
    assert_eq!(h.staged_job_count().await, 0);
    // The refused event was not recorded: signed properly, it applies.
    let receipt = webhook
        .run(Some(&signed(&h, &body)), &body)
        .await
        .expect("received");
    assert_eq!(receipt.result(), "applied");
}

#[tokio::test]
async fn events_we_do_not_act_on_and_intents_we_do_not_know_are_acknowledged() {
    let h = Harness::new().await;
    let webhook = receiver(&h);
    let other = br#"{"id":"evt_c","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let receipt = webhook
        .run(Some(&signed(&h, other)), other)
        .await
        .expect("received");
    assert_eq!(receipt.result(), "ignored");
    let unknown = event(
        "evt_u",
        "payment_intent.succeeded",
        "pi_nobody",
        "succeeded",
    );
    let receipt = webhook
        .run(Some(&signed(&h, &unknown)), &unknown)
        .await
        .expect("received");
    assert_eq!(receipt.applied, Some(PaymentApplied::UnknownIntent));
    assert_eq!(h.staged_job_count().await, 0);
}

#[tokio::test]
async fn with_no_webhook_the_sync_pass_settles_a_ride_once_it_has_waited_long_enough() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let sync = syncer(&h);
    // The rider authenticates; the webhook is lost.
    assert!(h.gateway.authenticate(&intent));
    h.advance(SYNC_AFTER - Duration::from_secs(1));
    assert_eq!(sync.run(100).await.expect("pass").checked, 0, "too soon");
    assert_eq!(status(&h, ride).await, RideStatus::AwaitingAuthentication);
    h.advance(Duration::from_secs(1));
    let report = sync.run(100).await.expect("pass");
    assert_eq!((report.checked, report.settled), (1, 1));
    assert_eq!(status(&h, ride).await, RideStatus::Booked);
    assert_eq!(h.staged_job_count().await, 1);
    assert_eq!(sync.run(100).await.expect("pass").checked, 0, "settled");
}

#[tokio::test]
async fn a_ride_still_waiting_is_checked_again_a_sync_period_later() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let sync = syncer(&h);
    h.advance(SYNC_AFTER);
    let report = sync.run(100).await.expect("pass");
    assert_eq!((report.checked, report.settled), (1, 0));
    assert_eq!(
        sync.run(100).await.expect("pass").checked,
        0,
        "not again at once"
    );
    assert!(h.gateway.authenticate(&intent));
    h.advance(SYNC_AFTER);
    assert_eq!(sync.run(100).await.expect("pass").settled, 1);
    assert_eq!(status(&h, ride).await, RideStatus::Booked);
}

#[tokio::test]
async fn an_update_without_an_event_id_applies_by_the_same_forward_rule() {
    let h = Harness::new().await;
    let (ride, intent) = awaiting_ride(&h, 1).await;
    let update = |state| PaymentUpdate {
        event_id: None,
        event_type: "sync".into(),
        payment_intent_id: intent.clone(),
        state,
    };
    use application::ports::Clock;
    let now = h.clock.now();
    assert_eq!(
        h.store
            .apply_payment(&update(PaymentIntentState::Failed), now)
            .await
            .expect("applied"),
        PaymentApplied::Moved {
            from: RideStatus::AwaitingAuthentication,
            to: RideStatus::PaymentFailed
        }
    );
    assert_eq!(
        h.store
            .apply_payment(
                &update(PaymentIntentState::Succeeded { charge_id: None }),
                now
            )
            .await
            .expect("applied"),
        PaymentApplied::Unchanged {
            status: RideStatus::PaymentFailed
        }
    );
    assert_eq!(status(&h, ride).await, RideStatus::PaymentFailed);
    assert_eq!(h.staged_job_count().await, 0);
}

#[tokio::test]
async fn an_intent_the_gateway_cannot_retrieve_is_counted_unknown_and_tried_again() {
    let h = Harness::new().await;
    let (ride, _) = awaiting_ride(&h, 1).await;
    // A gateway that has never heard of the intent (another Stripe account,
    // an outage): nothing is decided.
    let elsewhere = SyncPayments::new(
        h.store.clone(),
        std::sync::Arc::new(adapters::memory::FakeGateway::new()),
        h.clock.clone(),
        SYNC_AFTER,
    );
    h.advance(SYNC_AFTER);
    assert_eq!(
        elsewhere.run(100).await.expect("pass"),
        application::SyncReport {
            checked: 0,
            settled: 0,
            unknown: 1,
            ..application::SyncReport::default()
        }
    );
    assert_eq!(status(&h, ride).await, RideStatus::AwaitingAuthentication);
    assert_eq!(
        elsewhere.run(100).await.expect("pass").unknown,
        1,
        "still listed: it was never checked"
    );
}
