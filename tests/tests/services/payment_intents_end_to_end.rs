//! PaymentIntents end to end, as a new user meets them: the API on
//! Postgres, the Stripe adapter over HTTP to fake-stripe, which delivers its
//! signed events to the API's `/webhooks/stripe`. Each demo card ends as
//! SPEC's table says; a ride waiting on the rider is booked (and its
//! receipt sent) once the rider authenticates; a pending one once Stripe
//! has processed it; with every webhook lost, the completer's sync pass
//! settles both; every key replays its first answer. Cancels refund once
//! at fake-stripe (or cancel a waiting intent), and a refund fake-stripe
//! fails later marks its ride `refund_failed` through the webhook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::clock::SystemClock;
use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, WebhookDelivery};
use adapters::memory::MemoryQueue;
use adapters::postgres::PostgresStore;
use adapters::receipts::LogReceiptSender;
use adapters::stripe::{StripeGateway, StripeSettings};
use application::ports::{PaymentGateway, Receipts, SavedCustomer, Users};
use application::{
    AuthMode, DrainStagedJobs, ReceiveWebhook, SeedDemoUsers, SyncPayments, WorkJobs,
};
use domain::{RideId, WebhookSecrets};
use integration_tests::{Answer, DECLINED_USER, GOOD_USER, SEED_BODY, THREE_DS_USER, new_key};
use serde_json::Value;
use tokio::net::TcpListener;

const API_KEY: &str = "sk_test_payment_intents";
const SECRET: &str = "whsec_end_to_end";
const SLOW_USER: &str = "user-slow@example.com";
/// Pays with `pm_card_refundFail`: its refunds fail after a while.
const REFUND_FAIL_USER: &str = "user-refund-fail@example.com";
const PROCESSING: Duration = Duration::from_secs(1);

struct World {
    api: String,
    stripe: String,
    store: Arc<PostgresStore>,
    gateway: Arc<dyn PaymentGateway>,
    client: reqwest::Client,
}

/// The API (webhook on) and fake-stripe delivering to it, `drop_rate` of
/// the deliveries lost.
async fn world(drop_rate: f64) -> World {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("address"));
    let fake = FakeStripe::new(FakeStripeSettings {
        webhook: Some(WebhookDelivery {
            drop_rate,
            ..WebhookDelivery::to(format!("{api}/webhooks/stripe"), SECRET)
        }),
        processing_delay: PROCESSING,
        ..FakeStripeSettings::default()
    });
    let stripe = fake.serve_on_loopback().await.expect("served");
    let store = integration_tests::postgres::fresh_store().await;
    let gateway: Arc<dyn PaymentGateway> = Arc::new(
        StripeGateway::new(StripeSettings {
            retry_backoff: Duration::from_millis(10),
            ..StripeSettings::new(API_KEY, stripe.clone())
        })
        .expect("client"),
    );
    SeedDemoUsers::new(store.clone(), gateway.clone())
        .run(None)
        .await
        .expect("seeded at fake-stripe over HTTP");
    let client = reqwest::Client::new();
    // A rider whose payments take a while (fake-stripe's own test card),
    // and one whose refunds fail later (Stripe's).
    for (email, card) in [
        (SLOW_USER, "pm_fake_processing"),
        (REFUND_FAIL_USER, "pm_card_refundFail"),
    ] {
        save_rider(&client, &stripe, &store, email, card).await;
    }
    let mut state = integration_tests::api_state(
        store.clone(),
        store.clone(),
        store.clone(),
        gateway.clone(),
        AuthMode::Email,
    );
    state.webhook = Some(Arc::new(ReceiveWebhook::new(
        store.clone(),
        Arc::new(SystemClock),
        WebhookSecrets::parse(SECRET).expect("secret"),
        domain::webhook::DEFAULT_TOLERANCE,
    )));
    tokio::spawn(adapters::http::serve(
        listener,
        state,
        std::future::pending(),
    ));
    World {
        api,
        stripe,
        store,
        gateway,
        client,
    }
}

/// A rider paying with `card`, created at fake-stripe over HTTP.
async fn save_rider(
    client: &reqwest::Client,
    stripe: &str,
    store: &PostgresStore,
    email: &str,
    card: &str,
) {
    let customer: Value = client
        .post(format!("{stripe}/v1/customers"))
        .bearer_auth(API_KEY)
        .form(&[
            ("email", email),
            ("payment_method", card),
            ("invoice_settings[default_payment_method]", card),
        ])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("a customer");
    store
        .upsert_user(
            email,
            &SavedCustomer {
                customer_id: customer["id"].as_str().expect("id").to_owned(),
                payment_method_id: customer["invoice_settings"]["default_payment_method"]
                    .as_str()
                    .map(str::to_owned),
            },
        )
        .await
        .expect("user");
}

impl World {
    async fn cancel(&self, user: &str, key: &str, ride: i64) -> Answer {
        Answer::of(
            self.client
                .post(format!("{}/rides/{ride}/cancel", self.api))
                .header("Authorization", user)
                .header("Idempotency-Key", key)
                .send()
                .await
                .expect("answered"),
        )
        .await
    }

    /// An object or list at fake-stripe.
    async fn stripe_get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.stripe))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    async fn book(&self, user: &str, key: &str) -> Answer {
        Answer::of(
            self.client
                .post(format!("{}/rides", self.api))
                .header("Authorization", user)
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(SEED_BODY)
                .send()
                .await
                .expect("answered"),
        )
        .await
    }

    async fn status(&self, user: &str, ride: i64) -> String {
        let answer = Answer::of(
            self.client
                .get(format!("{}/rides/{ride}", self.api))
                .header("Authorization", user)
                .send()
                .await
                .expect("answered"),
        )
        .await;
        answer.json()["status"]
            .as_str()
            .expect("a status")
            .to_owned()
    }

    async fn authenticate(&self, intent: &str) {
        let answer = self
            .client
            .post(format!(
                "{}/_fake/payment_intents/{intent}/authenticate",
                self.stripe
            ))
            .send()
            .await
            .expect("sent");
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }

    /// Polls until `user`'s ride shows `status`, for at most `within`.
    async fn wait_for(&self, user: &str, ride: i64, status: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.status(user, ride).await;
            if now == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ride {ride} is {now}, not {status}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The four riders' first answers, and the waiting rides with their
    /// PaymentIntents.
    async fn book_every_card(&self) -> (Vec<(&'static str, String, Answer)>, i64, String, i64) {
        let mut answers = Vec::new();
        for user in [GOOD_USER, DECLINED_USER, THREE_DS_USER, SLOW_USER] {
            let key = new_key();
            let answer = self.book(user, &key).await;
            answers.push((user, key, answer));
        }
        let status: Vec<u16> = answers.iter().map(|(_, _, a)| a.status).collect();
        assert_eq!(
            status,
            [201, 402, 402, 202],
            "{:?}",
            answers.iter().map(|(_, _, a)| &a.body).collect::<Vec<_>>()
        );
        assert!(answers[1].2.body.contains("card-declined"));
        let waiting = answers[2].2.json();
        assert_eq!(
            waiting["type"],
            "/openapi.json#/components/responses/authentication-required"
        );
        assert!(
            waiting["client_secret"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        let pending = answers[3].2.json();
        assert_eq!(pending["ride"]["status"], "payment_pending");
        let intent = waiting["payment_intent"]
            .as_str()
            .expect("intent")
            .to_owned();
        let waiting_ride = waiting["ride"]["id"].as_i64().expect("ride");
        let pending_ride = pending["ride"]["id"].as_i64().expect("ride");
        assert_eq!(
            self.status(THREE_DS_USER, waiting_ride).await,
            "awaiting_authentication"
        );
        (answers, waiting_ride, intent, pending_ride)
    }

    async fn replays_are_the_first_answers(&self, answers: &[(&str, String, Answer)]) {
        for (user, key, first) in answers {
            let again = self.book(user, key).await;
            assert_eq!(
                (again.status, &again.body),
                (first.status, &first.body),
                "{user}"
            );
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
        }
    }

    /// Moves the staged receipts through a queue to a worker; the rides
    /// whose receipts were sent.
    async fn send_receipts(&self, rides: &[i64]) {
        let queue = Arc::new(MemoryQueue::default());
        let clock = Arc::new(SystemClock);
        let drain = DrainStagedJobs::new(
            self.store.clone(),
            queue.clone(),
            clock.clone(),
            100,
            Duration::from_secs(60),
        );
        let worker = WorkJobs::new(self.store.clone(), queue, Arc::new(LogReceiptSender), clock);
        assert_eq!(drain.run_batch().await.expect("drained"), rides.len());
        while worker
            .work_next(Duration::from_millis(200))
            .await
            .expect("worked")
            .is_some()
        {}
        for ride in rides {
            assert!(
                self.store
                    .receipt_sent(RideId(*ride).into())
                    .await
                    .expect("read"),
                "ride {ride}'s receipt"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_card_ends_as_the_spec_says_and_webhooks_book_the_waiting_rides() {
    let w = world(0.0).await;
    let (answers, waiting, intent, pending) = w.book_every_card().await;
    let booked = answers[0].2.json()["ride"]["id"].as_i64().expect("ride");
    // Stripe processes the slow payment; its webhook books the ride.
    w.wait_for(SLOW_USER, pending, "booked", Duration::from_secs(15))
        .await;
    // The rider authenticates; the webhook books the ride.
    w.authenticate(&intent).await;
    w.wait_for(THREE_DS_USER, waiting, "booked", Duration::from_secs(15))
        .await;
    w.send_receipts(&[booked, waiting, pending]).await;
    w.replays_are_the_first_answers(&answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_webhook_lost_the_sync_pass_settles_the_waiting_rides() {
    let w = world(1.0).await;
    let (answers, waiting, intent, pending) = w.book_every_card().await;
    w.authenticate(&intent).await;
    tokio::time::sleep(PROCESSING + Duration::from_millis(200)).await;
    // No webhook arrives: both rides still wait.
    assert_eq!(
        w.status(THREE_DS_USER, waiting).await,
        "awaiting_authentication"
    );
    assert_eq!(w.status(SLOW_USER, pending).await, "payment_pending");
    let sync_after = Duration::from_secs(5);
    let sync = SyncPayments::new(
        w.store.clone(),
        w.gateway.clone(),
        Arc::new(SystemClock),
        sync_after,
    );
    // Before PAYMENT_SYNC_AFTER has passed since they began waiting, the
    // pass leaves them; once it has, one pass settles both.
    let started = Instant::now();
    let early = sync.run(100).await.expect("pass");
    assert_eq!(early.checked, 0, "too early: {early:?}");
    tokio::time::sleep(sync_after).await;
    let report = sync.run(100).await.expect("pass");
    assert_eq!((report.checked, report.settled), (2, 2), "{report:?}");
    eprintln!("settled {:?} after the first pass", started.elapsed());
    assert_eq!(w.status(THREE_DS_USER, waiting).await, "booked");
    assert_eq!(w.status(SLOW_USER, pending).await, "booked");
    let booked = answers[0].2.json()["ride"]["id"].as_i64().expect("ride");
    w.send_receipts(&[booked, waiting, pending]).await;
    w.replays_are_the_first_answers(&answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_refund_once_at_stripe_and_a_refund_failing_later_marks_the_ride() {
    let w = world(0.0).await;
    // A booked ride: refunded in full, once, under the key's downstream key.
    let booked = w.book(GOOD_USER, &new_key()).await.json();
    let ride = booked["ride"]["id"].as_i64().expect("ride");
    let intent = booked["ride"]["stripe_payment_intent_id"]
        .as_str()
        .expect("intent")
        .to_owned();
    let key = new_key();
    let first = w.cancel(GOOD_USER, &key, ride).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    assert_eq!(body["refund"]["amount"], 2000);
    assert_eq!(body["refund"]["status"], "succeeded");
    let again = w.cancel(GOOD_USER, &key, ride).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let refunds = w
        .stripe_get(&format!("/v1/refunds?payment_intent={intent}"))
        .await;
    let refunds = refunds["data"].as_array().expect("a list");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["id"], body["refund"]["id"]);
    assert!(
        refunds[0]["metadata"]["rocket_rides_downstream_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("rocket-rides-")),
        "{:?}",
        refunds[0]
    );
    assert_eq!(w.status(GOOD_USER, ride).await, "cancelled");

    // A ride waiting on the rider: its PaymentIntent cancelled, nothing refunded.
    let waiting = w.book(THREE_DS_USER, &new_key()).await.json();
    let waiting_ride = waiting["ride"]["id"].as_i64().expect("ride");
    let waiting_intent = waiting["payment_intent"].as_str().expect("intent");
    let cancelled = w.cancel(THREE_DS_USER, &new_key(), waiting_ride).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["refund"]["amount"], 0);
    let at_stripe = w
        .stripe_get(&format!("/v1/payment_intents/{waiting_intent}"))
        .await;
    assert_eq!(at_stripe["status"], "canceled");

    // pm_card_refundFail: the refund succeeds, then fails; the webhook
    // marks the ride refund_failed, and the cancel's answer stays.
    let failing = w.book(REFUND_FAIL_USER, &new_key()).await;
    assert_eq!(failing.status, 201, "{}", failing.body);
    let failing_ride = failing.json()["ride"]["id"].as_i64().expect("ride");
    let cancel_key = new_key();
    let answer = w.cancel(REFUND_FAIL_USER, &cancel_key, failing_ride).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    w.wait_for(
        REFUND_FAIL_USER,
        failing_ride,
        "refund_failed",
        Duration::from_secs(15),
    )
    .await;
    let replay = w.cancel(REFUND_FAIL_USER, &cancel_key, failing_ride).await;
    assert_eq!(replay.body, answer.body, "the stored answer never changes");
}
