//! fake-stripe's own tests: Stripe's behaviour where we rely on it, and each
//! fault doing what its flag says. Also the Stripe adapter against it.

use std::time::Duration;

use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, FaultKind, FaultTiming, Faults};
use adapters::stripe::{StripeGateway, StripeSettings};
use application::ports::PaymentGateway;
use domain::{ChargeOutcome, ChargeRequest, ChargeSearch, FoundCharge};
use serde_json::Value;

struct Running {
    stripe: FakeStripe,
    base: String,
    http: reqwest::Client,
}

async fn start(settings: FakeStripeSettings) -> Running {
    serve(FakeStripe::new(settings)).await
}

async fn serve(stripe: FakeStripe) -> Running {
    let base = stripe.serve_on_loopback().await.expect("served");
    Running {
        stripe,
        base,
        http: reqwest::Client::new(),
    }
}

fn faulty(kind: FaultKind, timing: FaultTiming) -> FakeStripeSettings {
    FakeStripeSettings {
        faults: Faults {
            rate: 1.0,
            kinds: vec![kind],
            timing,
            latency: Duration::from_millis(200),
            hang: Duration::from_secs(5),
            paths: Vec::new(),
        },
        ..FakeStripeSettings::default()
    }
}

impl Running {
    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        form: &[(&str, &str)],
    ) -> (u16, Value, bool) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth("sk_test_fake")
            .form(form);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let body = response.json().await.expect("json");
        (status, body, replayed)
    }

    async fn customer(&self, source: Option<&str>) -> String {
        let mut form = vec![("email", "rider@example.com")];
        if let Some(source) = source {
            form.push(("source", source));
        }
        let (status, body, _) = self.post("/v1/customers", None, &form).await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn charge(&self, customer: &str, key: &str, amount: &str) -> (u16, Value, bool) {
        self.post(
            "/v1/charges",
            Some(key),
            &[
                ("amount", amount),
                ("currency", "usd"),
                ("customer", customer),
            ],
        )
        .await
    }

    async fn list(&self, query: &str) -> Value {
        self.http
            .get(format!("{}/v1/charges?{query}", self.base))
            .bearer_auth("sk_test_fake")
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    }

    /// One call, no retries: each answer seen as it is.
    fn single_call_gateway(&self, timeout: Duration) -> StripeGateway {
        StripeGateway::new(StripeSettings {
            timeout,
            max_retries: 0,
            payments: domain::PaymentsApi::Charges,
            ..StripeSettings::new("sk_test_fake", self.base.clone())
        })
        .expect("client")
    }
}

#[tokio::test]
async fn cards_charge_decline_or_are_missing_like_stripes_test_tokens() {
    let stripe = start(FakeStripeSettings::default()).await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let declined = stripe.customer(Some("tok_chargeCustomerFail")).await;
    let no_card = stripe.customer(None).await;

    let (status, body, _) = stripe.charge(&visa, "k1", "2000").await;
    assert_eq!(status, 200);
    assert_eq!(body["amount"], 2000);
    assert!(body["id"].as_str().expect("id").starts_with("ch_"));

    let (status, body, _) = stripe.charge(&declined, "k2", "2000").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["type"], "card_error");
    assert_eq!(body["error"]["message"], "Your card was declined.");

    let (status, body, _) = stripe.charge(&no_card, "k3", "2000").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let (status, _, _) = stripe.charge("cus_nobody", "k4", "2000").await;
    assert_eq!(status, 400);
    let (status, _, _) = stripe
        .post("/v1/customers", None, &[("source", "tok_bogus")])
        .await;
    assert_eq!(status, 400);
    assert_eq!(stripe.stripe.charges().len(), 1);
}

#[tokio::test]
async fn a_request_without_a_secret_key_is_401() {
    let stripe = start(FakeStripeSettings::default()).await;
    let response = stripe
        .http
        .post(format!("{}/v1/charges", stripe.base))
        .form(&[("amount", "1")])
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn the_same_key_and_params_replay_the_first_answer_and_other_params_are_400() {
    let stripe = start(FakeStripeSettings::default()).await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let (_, first, replayed) = stripe.charge(&visa, "same-key", "2000").await;
    assert!(!replayed);
    let (status, again, replayed) = stripe.charge(&visa, "same-key", "2000").await;
    assert_eq!(status, 200);
    assert!(replayed);
    assert_eq!(again, first);
    let (status, body, _) = stripe.charge(&visa, "same-key", "2500").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(stripe.stripe.charges().len(), 1);
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_window() {
    let stripe = start(FakeStripeSettings {
        idempotency_window: Duration::from_millis(100),
        ..FakeStripeSettings::default()
    })
    .await;
    let visa = stripe.customer(Some("tok_visa")).await;
    stripe.charge(&visa, "short-lived", "2000").await;
    // Deliberately let the 100 ms window pass: there is no event to wait for.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, _, replayed) = stripe.charge(&visa, "short-lived", "2000").await;
    assert!(!replayed);
    assert_eq!(
        stripe.stripe.charges().len(),
        2,
        "a forgotten key charges again"
    );
}

#[tokio::test]
async fn charges_are_listed_newest_first_in_pages() {
    let stripe = start(FakeStripeSettings::default()).await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (_, body, _) = stripe.charge(&visa, &format!("key-{n}"), "2000").await;
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    ids.reverse();
    let first = stripe.list("limit=2").await;
    assert_eq!(first["object"], "list");
    assert_eq!(first["has_more"], true);
    let page: Vec<&str> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(page, ids[..2]);
    let last = stripe
        .list(&format!("limit=10&starting_after={}", ids[1]))
        .await;
    assert_eq!(last["has_more"], false);
    assert_eq!(last["data"].as_array().expect("data").len(), 3);
    assert_eq!(last["data"][0]["id"], ids[2].as_str());
}

#[tokio::test]
async fn a_fault_after_the_charge_leaves_the_charge_and_a_retry_gets_it_a_fault_before_leaves_none()
{
    for (timing, charges) in [(FaultTiming::After, 1), (FaultTiming::Before, 0)] {
        let healthy = start(FakeStripeSettings::default()).await;
        let broken = serve(
            healthy
                .stripe
                .sharing_ledger(faulty(FaultKind::ServerError, timing)),
        )
        .await;
        let visa = healthy.customer(Some("tok_visa")).await;
        let (status, _, _) = broken.charge(&visa, "the-key", "2000").await;
        assert_eq!(status, 500);
        assert_eq!(healthy.stripe.charges().len(), charges, "{timing:?}");
        let (status, body, replayed) = healthy.charge(&visa, "the-key", "2000").await;
        assert_eq!(status, 200);
        assert_eq!(replayed, charges == 1, "{timing:?}");
        assert_eq!(healthy.stripe.charges().len(), 1, "{timing:?}");
        assert_eq!(body["id"], healthy.stripe.charges()[0]["id"]);
    }
}

#[tokio::test]
async fn each_fault_kind_reaches_the_client_as_its_kind_of_unknown() {
    // A dropped connection shows as a cut-off answer, or as a failed send
    // when it drops before the headers leave.
    let either: &[&str] = &["cut off", "could not reach"];
    for (kind, expect) in [
        (FaultKind::ServerError, &["500"][..]),
        (FaultKind::RateLimit, &["429"][..]),
        (FaultKind::Drop, either),
        (FaultKind::Hang, &["in time"][..]),
    ] {
        for timing in [FaultTiming::Before, FaultTiming::After] {
            // A hang holds the answer 60 s: the 2 s timeout always comes
            // first, and the other faults answer long before it.
            let stripe = start(FakeStripeSettings {
                faults: Faults {
                    hang: Duration::from_secs(60),
                    paths: Vec::new(),
                    ..faulty(kind, timing).faults
                },
                ..FakeStripeSettings::default()
            })
            .await;
            let gateway = stripe.single_call_gateway(Duration::from_secs(2));
            let outcome = gateway
                .charge(&ChargeRequest {
                    customer_id: "cus_unknown".into(),
                    payment_method_id: None,
                    amount_cents: 2000,
                    currency: "usd".into(),
                    description: "ride".into(),
                    idempotency_key: "fault-key".into(),
                })
                .await;
            let ChargeOutcome::Unknown { reason } = outcome else {
                panic!("{kind:?} {timing:?}: expected unknown, got {outcome:?}");
            };
            assert!(
                expect.iter().any(|e| reason.contains(e)),
                "{kind:?} {timing:?}: {reason}"
            );
        }
    }
}

#[tokio::test]
async fn latency_delays_but_answers() {
    let stripe = start(faulty(FaultKind::Latency, FaultTiming::Before)).await;
    let started = std::time::Instant::now();
    let (status, _, _) = stripe
        .post("/v1/customers", None, &[("source", "tok_visa")])
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn with_faults_after_the_charge_retries_through_the_adapter_charge_once() {
    // Every other request faults after recording: the adapter's retries
    // with one idempotency key must end with one charge.
    let stripe = start(FakeStripeSettings {
        faults: Faults {
            rate: 0.5,
            kinds: vec![
                FaultKind::ServerError,
                FaultKind::Drop,
                FaultKind::RateLimit,
            ],
            timing: FaultTiming::After,
            ..Faults::default()
        },
        ..FakeStripeSettings::default()
    })
    .await;
    let gateway = StripeGateway::new(StripeSettings {
        max_retries: 20,
        retry_backoff: Duration::from_millis(1),
        payments: domain::PaymentsApi::Charges,
        ..StripeSettings::new("sk_test_fake", stripe.base.clone())
    })
    .expect("client");
    let customer = loop {
        if let Ok(id) = gateway
            .create_customer("rider@example.com", domain::TestCard::Visa)
            .await
        {
            break id.customer_id;
        }
    };
    for n in 0..20 {
        let outcome = gateway
            .charge(&ChargeRequest {
                customer_id: customer.clone(),
                payment_method_id: None,
                amount_cents: 2000,
                currency: "usd".into(),
                description: "ride".into(),
                idempotency_key: format!("ride-{n}"),
            })
            .await;
        assert!(
            matches!(outcome, ChargeOutcome::Charged { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(stripe.stripe.charges().len(), 20);
}

#[tokio::test]
async fn a_charge_keeps_its_metadata_and_injected_faults_are_counted_by_kind() {
    let stripe = start(faulty(FaultKind::ServerError, FaultTiming::After)).await;
    let visa = {
        let clean = serve(stripe.stripe.sharing_ledger(FakeStripeSettings::default())).await;
        clean.customer(Some("tok_visa")).await
    };
    let (status, _, _) = stripe
        .post(
            "/v1/charges",
            Some("meta-key"),
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("customer", &visa),
                ("metadata[rocket_rides_downstream_key]", "meta-key"),
            ],
        )
        .await;
    assert_eq!(status, 500, "the answer is lost after the charge");
    let charges = stripe.stripe.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(
        charges[0]["metadata"]["rocket_rides_downstream_key"],
        "meta-key"
    );
    let faults: Value = stripe
        .http
        .get(format!("{}/_fake/faults", stripe.base))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(faults["500/after"], 1, "{faults}");
}

impl Running {
    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth("sk_test_fake")
            .send()
            .await
            .expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.expect("Stripe-shaped JSON"))
    }

    async fn charge_with_metadata(&self, customer: &str, key: &str) -> String {
        let (status, body, _) = self
            .post(
                "/v1/charges",
                Some(key),
                &[
                    ("amount", "2000"),
                    ("currency", "usd"),
                    ("customer", customer),
                    ("metadata[rocket_rides_downstream_key]", key),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    fn gateway(&self) -> StripeGateway {
        StripeGateway::new(StripeSettings {
            retry_backoff: Duration::from_millis(10),
            payments: domain::PaymentsApi::Charges,
            ..StripeSettings::new("sk_test_fake", self.base.clone())
        })
        .expect("client")
    }
}

fn search_path(query: &str) -> String {
    format!(
        "/v1/charges/search?{}",
        serde_urlencoded::to_string([("query", query)]).expect("encoded")
    )
}

#[tokio::test]
async fn charges_and_customers_are_retrieved_by_id_and_unknown_ids_are_resource_missing() {
    let stripe = start(FakeStripeSettings::default()).await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let charge = stripe.charge_with_metadata(&visa, "get-1").await;

    let (status, body) = stripe.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], charge.as_str());
    assert_eq!(body["object"], "charge");
    assert_eq!(body["customer"], visa.as_str());
    assert_eq!(body["status"], "succeeded");
    let (status, body) = stripe.get(&format!("/v1/customers/{visa}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["object"].as_str()),
        (Some(visa.as_str()), Some("customer"))
    );
    assert_eq!(body["email"], "rider@example.com");

    for (path, message) in [
        ("/v1/charges/ch_nope", "No such charge: 'ch_nope'"),
        ("/v1/customers/cus_nope", "No such customer: 'cus_nope'"),
    ] {
        let (status, body) = stripe.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "resource_missing");
        assert_eq!(body["error"]["param"], "id");
        assert_eq!(body["error"]["message"], message);
    }
    // An unknown route, or a method a route lacks: Stripe's JSON, not an
    // empty 404/405.
    let (status, body) = stripe.get("/v1/disputes").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Unrecognized request URL (GET: /v1/disputes)")),
        "{body}"
    );
    let (status, body, _) = stripe.post("/v1/charges/search", None, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // And a secret key is still required for reads.
    let response = stripe
        .http
        .get(format!("{}/v1/charges/{charge}", stripe.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn search_finds_charges_by_metadata_only_after_the_indexing_delay() {
    let stripe = start(FakeStripeSettings {
        search_delay: Duration::from_millis(400),
        ..FakeStripeSettings::default()
    })
    .await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let mine = stripe.charge_with_metadata(&visa, "search-mine").await;
    stripe.charge_with_metadata(&visa, "search-other").await;
    let query = "metadata['rocket_rides_downstream_key']:'search-mine'";

    let (status, body) = stripe.get(&search_path(query)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "search_result");
    assert_eq!(
        body["data"],
        serde_json::json!([]),
        "too recent to be indexed"
    );

    // Deliberately let the 400 ms indexing delay pass, as a client of
    // Stripe's search must.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (_, body) = stripe.get(&search_path(query)).await;
    let ids: Vec<&str> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    assert_eq!(body["has_more"], false);

    // Clauses combine with AND; pages follow `next_page`.
    let both = format!("customer:'{visa}' AND status:'succeeded'");
    let (_, first) = stripe.get(&format!("{}&limit=1", search_path(&both))).await;
    assert_eq!(first["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["has_more"], true);
    let page = first["next_page"].as_str().expect("next_page");
    let (_, second) = stripe
        .get(&format!("{}&limit=1&page={page}", search_path(&both)))
        .await;
    assert_eq!(second["has_more"], false);
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    let (_, none) = stripe.get(&search_path("customer:'cus_else'")).await;
    assert_eq!(none["data"], serde_json::json!([]));

    for bad in [
        "amount>10",
        "metadata['k']:unquoted",
        "status:'open",
        "status:'a' OR status:'b'",
    ] {
        let (status, body) = stripe.get(&search_path(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
}

#[tokio::test]
async fn a_second_request_with_a_key_in_flight_gets_409_and_the_adapter_retries_into_the_one_charge()
 {
    // Every request waits 1 s before it is processed, holding its key.
    let stripe = start(FakeStripeSettings {
        faults: Faults {
            rate: 1.0,
            kinds: vec![FaultKind::Latency],
            timing: FaultTiming::Before,
            latency: Duration::from_secs(1),
            hang: Duration::from_secs(5),
            paths: Vec::new(),
        },
        ..FakeStripeSettings::default()
    })
    .await;
    let visa = {
        let clean = serve(stripe.stripe.sharing_ledger(FakeStripeSettings::default())).await;
        clean.customer(Some("tok_visa")).await
    };
    let form = [
        ("amount", "2000"),
        ("currency", "usd"),
        ("customer", visa.as_str()),
    ];
    let (first, second) = tokio::join!(stripe.post("/v1/charges", Some("busy"), &form), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stripe.post("/v1/charges", Some("busy"), &form).await
    });
    // Whichever arrived first is processed; the other is told the key is busy.
    let (done, busy) = if first.0 == 200 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(busy.0, 409, "{}", busy.1);
    assert_eq!(busy.1["error"]["code"], "idempotency_key_in_use");
    // Once the first is answered, the key replays.
    let (status, body, replayed) = stripe.post("/v1/charges", Some("busy"), &form).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(body["id"], done.1["id"]);

    // Through the adapter: two charges with one key at once; the one that
    // meets 409 retries with the same key (after the first is answered)
    // and gets the same charge. Without a retry, 409 is unknown, never a
    // refusal.
    let gateway = StripeGateway::new(StripeSettings {
        retry_backoff: Duration::from_millis(700),
        payments: domain::PaymentsApi::Charges,
        ..StripeSettings::new("sk_test_fake", stripe.base.clone())
    })
    .expect("client");
    let request = ChargeRequest {
        customer_id: visa.clone(),
        payment_method_id: None,
        amount_cents: 2000,
        currency: "usd".into(),
        description: "ride".into(),
        idempotency_key: "busy-adapter".into(),
    };
    let (a, b) = tokio::join!(gateway.charge(&request), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gateway.charge(&request).await
    });
    let (
        ChargeOutcome::Charged {
            charge_id: a,
            payment_intent_id: None,
        },
        ChargeOutcome::Charged {
            charge_id: b,
            payment_intent_id: None,
        },
    ) = (&a, &b)
    else {
        panic!("both charged: {a:?} {b:?}");
    };
    assert_eq!(a, b, "one charge");
    let once = stripe.single_call_gateway(Duration::from_secs(5));
    let busy_once = ChargeRequest {
        idempotency_key: "busy-once".into(),
        ..request.clone()
    };
    let (alone, ()) = tokio::join!(gateway.charge(&busy_once), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = once.charge(&busy_once).await;
        assert!(
            matches!(&outcome, ChargeOutcome::Unknown { reason } if reason.contains("idempotency_key_in_use")),
            "{outcome:?}"
        );
    });
    assert!(matches!(alone, ChargeOutcome::Charged { .. }));
    assert_eq!(stripe.stripe.charges().len(), 3, "one per key");
    let (_, counts) = stripe.get("/_fake/faults").await;
    assert!(counts["409/in_use"].as_u64() >= Some(3), "{counts}");
}

#[tokio::test]
async fn the_adapter_finds_a_charge_by_its_downstream_key_once_search_shows_it() {
    let stripe = start(FakeStripeSettings {
        search_delay: Duration::from_millis(300),
        ..FakeStripeSettings::default()
    })
    .await;
    let gateway = stripe.gateway();
    let visa = gateway
        .create_customer("rider@example.com", domain::TestCard::Visa)
        .await
        .expect("customer")
        .customer_id;
    let request = ChargeRequest {
        customer_id: visa.clone(),
        payment_method_id: None,
        amount_cents: 2000,
        currency: "usd".into(),
        description: "ride".into(),
        idempotency_key: "rr-find-me".into(),
    };
    let ChargeOutcome::Charged { charge_id, .. } = gateway.charge(&request).await else {
        panic!("charged");
    };
    assert_eq!(
        gateway.find_charges("rr-find-me").await,
        ChargeSearch::Found(vec![]),
        "not searchable yet"
    );
    // Deliberately let the search delay pass.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        gateway.find_charges("rr-find-me").await,
        ChargeSearch::Found(vec![FoundCharge {
            id: charge_id,
            amount_cents: 2000,
            currency: "usd".into(),
            customer_id: visa,
            status: "succeeded".into(),
            payment_intent_id: None,
        }])
    );
    assert_eq!(
        gateway.find_charges("rr-never").await,
        ChargeSearch::Found(vec![])
    );
    // A key with a quote in it is escaped, not a broken query.
    assert_eq!(
        gateway.find_charges("it's").await,
        ChargeSearch::Found(vec![])
    );
    // Stripe unreachable: unknown, never "no charge".
    let gone = StripeGateway::new(StripeSettings {
        max_retries: 0,
        payments: domain::PaymentsApi::Charges,
        ..StripeSettings::new("sk_test_fake", "http://127.0.0.1:1")
    })
    .expect("client");
    assert!(matches!(
        gone.find_charges("rr-find-me").await,
        ChargeSearch::Unknown { .. }
    ));
}

#[tokio::test]
async fn faults_limited_to_charges_leave_customers_alone() {
    let stripe = start(FakeStripeSettings {
        faults: Faults {
            rate: 1.0,
            kinds: vec![FaultKind::ServerError],
            timing: FaultTiming::After,
            paths: vec!["/v1/charges".to_owned()],
            ..Faults::default()
        },
        ..FakeStripeSettings::default()
    })
    .await;
    let visa = stripe.customer(Some("tok_visa")).await;
    let (status, _, _) = stripe.charge(&visa, "paths-1", "2000").await;
    assert_eq!(status, 500, "the charge's answer is lost");
    assert_eq!(
        stripe.stripe.charges().len(),
        1,
        "after the charge was made"
    );
}

impl Running {
    /// A customer with `test_method` (a Stripe test PaymentMethod id)
    /// attached and set as its default: the customer and the PaymentMethod.
    async fn customer_paying_with(&self, test_method: &str) -> (String, String) {
        let (status, body, _) = self
            .post(
                "/v1/customers",
                None,
                &[
                    ("email", "rider@example.com"),
                    ("payment_method", test_method),
                    ("invoice_settings[default_payment_method]", test_method),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let method = body["invoice_settings"]["default_payment_method"]
            .as_str()
            .expect("a default PaymentMethod")
            .to_owned();
        assert!(method.starts_with("pm_") && method != test_method, "{body}");
        (body["id"].as_str().expect("id").to_owned(), method)
    }

    /// `POST /v1/payment_intents` confirmed off session, as the charge
    /// phase sends it.
    async fn pay_off_session(&self, customer: &str, method: &str, key: &str) -> (u16, Value, bool) {
        self.post(
            "/v1/payment_intents",
            Some(key),
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("customer", customer),
                ("payment_method", method),
                ("off_session", "true"),
                ("confirm", "true"),
                ("metadata[rocket_rides_downstream_key]", key),
            ],
        )
        .await
    }
}

#[tokio::test]
async fn an_off_session_payment_intent_on_a_good_card_succeeds_once_per_key() {
    let stripe = start(FakeStripeSettings::default()).await;
    let (customer, method) = stripe.customer_paying_with("pm_card_visa").await;
    let (status, intent, replayed) = stripe.pay_off_session(&customer, &method, "pi-key-1").await;
    assert_eq!((status, replayed), (200, false), "{intent}");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], 2000);
    assert_eq!(
        intent["metadata"]["rocket_rides_downstream_key"],
        "pi-key-1"
    );
    let charge = intent["latest_charge"].as_str().expect("a charge");
    let (again, same, replayed) = stripe.pay_off_session(&customer, &method, "pi-key-1").await;
    assert_eq!((again, replayed), (200, true));
    assert_eq!(same, intent, "the first answer again");
    assert_eq!(stripe.stripe.payment_intents().len(), 1);
    let charges = stripe.stripe.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["id"], charge);
    assert_eq!(charges[0]["payment_intent"], intent["id"]);
    let (status, retrieved) = stripe
        .get(&format!(
            "/v1/payment_intents/{}",
            intent["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!((status, &retrieved), (200, &intent));
    let kinds: Vec<String> = stripe
        .stripe
        .events()
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["payment_intent.created", "payment_intent.succeeded"]
    );
}

#[tokio::test]
async fn a_declined_card_is_a_402_card_error_carrying_the_failed_intent() {
    let stripe = start(FakeStripeSettings::default()).await;
    let (customer, method) = stripe.customer_paying_with("pm_card_chargeDeclined").await;
    let (status, body, _) = stripe
        .pay_off_session(&customer, &method, "pi-declined")
        .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["type"], "card_error");
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(
        body["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
    assert!(stripe.stripe.charges().is_empty());
}

#[tokio::test]
async fn a_card_that_needs_3ds_fails_off_session_and_succeeds_once_the_rider_authenticates() {
    let stripe = start(FakeStripeSettings::default()).await;
    let (customer, method) = stripe
        .customer_paying_with("pm_card_authenticationRequired")
        .await;
    let (status, body, _) = stripe.pay_off_session(&customer, &method, "pi-3ds").await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "authentication_required");
    let intent = &body["error"]["payment_intent"];
    let id = intent["id"].as_str().expect("the intent");
    assert!(
        intent["client_secret"]
            .as_str()
            .is_some_and(|secret| secret.starts_with(&format!("{id}_secret_"))),
        "{intent}"
    );
    assert!(stripe.stripe.charges().is_empty(), "nothing charged yet");
    // The rider authenticates in the app.
    let (status, done, _) = stripe
        .post(
            &format!("/_fake/payment_intents/{id}/authenticate"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
    assert_eq!(stripe.stripe.charges().len(), 1);
    // Once succeeded, it can be neither authenticated again nor cancelled.
    let (again, _, _) = stripe
        .post(
            &format!("/_fake/payment_intents/{id}/authenticate"),
            None,
            &[],
        )
        .await;
    assert_eq!(again, 400);
    let (cancel, refused, _) = stripe
        .post(
            &format!("/v1/payment_intents/{id}/cancel"),
            Some("cancel-1"),
            &[],
        )
        .await;
    assert_eq!(cancel, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "payment_intent_unexpected_state");
}

#[tokio::test]
async fn an_intent_waiting_for_the_rider_can_be_cancelled_and_is_found_by_metadata() {
    let stripe = start(FakeStripeSettings {
        search_delay: Duration::ZERO,
        ..FakeStripeSettings::default()
    })
    .await;
    let (customer, method) = stripe
        .customer_paying_with("pm_card_authenticationRequired")
        .await;
    let (_, body, _) = stripe
        .pay_off_session(&customer, &method, "pi-cancel-me")
        .await;
    let id = body["error"]["payment_intent"]["id"]
        .as_str()
        .expect("the intent")
        .to_owned();
    let (status, found) = stripe
        .get("/v1/payment_intents/search?query=metadata%5B%27rocket_rides_downstream_key%27%5D%3A%27pi-cancel-me%27")
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"][0]["id"], id.as_str());
    let (status, cancelled, _) = stripe
        .post(
            &format!("/v1/payment_intents/{id}/cancel"),
            Some("cancel-2"),
            &[("cancellation_reason", "requested_by_customer")],
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "canceled");
    let kinds: Vec<String> = stripe
        .stripe
        .events()
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.canceled"
        ]
    );
    let (status, events) = stripe.get("/v1/events?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(events["data"][0]["type"], "payment_intent.canceled");
    assert_eq!(events["has_more"], true);
}

#[tokio::test]
async fn unknown_payment_methods_and_another_customers_method_are_refused() {
    let stripe = start(FakeStripeSettings::default()).await;
    let (customer, _) = stripe.customer_paying_with("pm_card_visa").await;
    let (_, other_method) = stripe.customer_paying_with("pm_card_visa").await;
    let (status, body, _) = stripe
        .pay_off_session(&customer, "pm_nope", "pi-nope")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "resource_missing");
    let (status, body, _) = stripe
        .pay_off_session(&customer, &other_method, "pi-other")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(stripe.stripe.charges().is_empty());
    let (status, body, _) = stripe
        .post(
            "/v1/customers",
            None,
            &[("payment_method", "pm_card_unheard_of")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Each delivery an endpoint received: its `Stripe-Signature` and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, String)>>>;

/// A webhook endpoint on loopback that records every delivery and refuses
/// the first `refuse` with a 500.
struct Endpoint {
    url: String,
    received: Received,
}

async fn endpoint(refuse: usize) -> Endpoint {
    use axum::http::{HeaderMap, StatusCode};
    let received: Received = std::sync::Arc::default();
    let seen = received.clone();
    let router = axum::Router::new().route(
        "/webhooks/stripe",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let signature = headers
                    .get("stripe-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut seen = seen.lock().expect("lock");
                seen.push((signature, body));
                if seen.len() <= refuse {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/webhooks/stripe",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Endpoint { url, received }
}

impl Endpoint {
    fn received(&self) -> Vec<(Option<String>, String)> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until `n` deliveries have arrived (30 s at most).
    async fn wait_for(&self, n: usize) -> Vec<(Option<String>, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} deliveries arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn events_are_delivered_signed_and_retried_until_the_endpoint_takes_them() {
    use adapters::fake_stripe::WebhookDelivery;
    use domain::webhook::{DEFAULT_TOLERANCE, WebhookSecrets};
    let endpoint = endpoint(1).await;
    let stripe = start(FakeStripeSettings {
        webhook: Some(WebhookDelivery::to(endpoint.url.clone(), "whsec_fake")),
        ..FakeStripeSettings::default()
    })
    .await;
    let (customer, method) = stripe.customer_paying_with("pm_card_visa").await;
    let (status, intent, _) = stripe.pay_off_session(&customer, &method, "pi-hook").await;
    assert_eq!(status, 200, "{intent}");
    // Two events; the first attempt refused, so three deliveries.
    let received = endpoint.wait_for(3).await;
    let secrets = WebhookSecrets::parse("whsec_fake").expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut types = Vec::new();
    for (signature, body) in &received {
        secrets
            .verify(
                signature.as_deref(),
                body.as_bytes(),
                now,
                DEFAULT_TOLERANCE,
            )
            .expect("signed as Stripe signs");
        let event: Value = serde_json::from_str(body).expect("an event");
        types.push(event["type"].as_str().unwrap_or_default().to_owned());
    }
    // The refused first delivery came again, after the next event (Stripe
    // does not promise order either).
    assert_eq!(
        types,
        [
            "payment_intent.created",
            "payment_intent.succeeded",
            "payment_intent.created"
        ],
    );
    let (_, succeeded) = &received[1];
    let event: Value = serde_json::from_str(succeeded).expect("an event");
    assert_eq!(event["data"]["object"]["id"], intent["id"]);
    assert_eq!(
        received[0].1, received[2].1,
        "the same event, the same body"
    );
    let wrong = WebhookSecrets::parse("whsec_other").expect("secret");
    assert!(
        wrong
            .verify(
                received[0].0.as_deref(),
                received[0].1.as_bytes(),
                now,
                DEFAULT_TOLERANCE
            )
            .is_err()
    );
}

#[tokio::test]
async fn delivery_faults_send_events_twice_as_asked() {
    use adapters::fake_stripe::WebhookDelivery;
    let endpoint = endpoint(0).await;
    let stripe = start(FakeStripeSettings {
        webhook: Some(WebhookDelivery {
            duplicate_rate: 1.0,
            ..WebhookDelivery::to(endpoint.url.clone(), "whsec_fake")
        }),
        ..FakeStripeSettings::default()
    })
    .await;
    let (customer, method) = stripe.customer_paying_with("pm_card_visa").await;
    stripe.pay_off_session(&customer, &method, "pi-twice").await;
    let received = endpoint.wait_for(4).await;
    let ids: Vec<String> = received
        .iter()
        .map(|(_, body)| {
            let event: Value = serde_json::from_str(body).expect("an event");
            event["id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "each event twice");
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2]);
}

/// The adapter on PaymentIntents (the default) against fake-stripe: each
/// demo card saved and charged off-session as SPEC's table says, the
/// intent's state retrieved for the sync pass, and the search
/// reconciliation reads finding the intent with its charge.
#[tokio::test]
async fn the_adapter_pays_through_payment_intents_and_finds_them_again() {
    use application::ports::PaymentGateway as _;
    use domain::{PaymentIntentState, TestCard};
    let stripe = start(FakeStripeSettings {
        search_delay: Duration::from_millis(200),
        processing_delay: Duration::from_millis(300),
        ..FakeStripeSettings::default()
    })
    .await;
    let gateway = StripeGateway::new(StripeSettings {
        retry_backoff: Duration::from_millis(10),
        ..StripeSettings::new("sk_test_fake", stripe.base.clone())
    })
    .expect("client");
    let charge = |customer: &application::ports::SavedCustomer, key: &str| ChargeRequest {
        customer_id: customer.customer_id.clone(),
        payment_method_id: customer.payment_method_id.clone(),
        amount_cents: 2000,
        currency: "usd".into(),
        description: "ride".into(),
        idempotency_key: key.into(),
    };
    let visa = gateway
        .create_customer("visa@example.com", TestCard::Visa)
        .await
        .expect("customer");
    assert!(
        visa.payment_method_id
            .as_deref()
            .is_some_and(|pm| pm.starts_with("pm_") && pm != "pm_card_visa"),
        "the attached PaymentMethod's own id: {visa:?}"
    );
    let ChargeOutcome::Charged {
        charge_id,
        payment_intent_id: Some(intent),
    } = gateway.charge(&charge(&visa, "pi-adapter-1")).await
    else {
        panic!("charged through an intent");
    };
    // The same key again: Stripe's replay, the same intent and charge.
    assert_eq!(
        gateway.charge(&charge(&visa, "pi-adapter-1")).await,
        ChargeOutcome::Charged {
            charge_id: charge_id.clone(),
            payment_intent_id: Some(intent.clone()),
        }
    );
    assert_eq!(
        gateway.payment_intent_state(&intent).await.expect("state"),
        PaymentIntentState::Succeeded {
            charge_id: Some(charge_id.clone())
        }
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let ChargeSearch::Found(found) = gateway.find_charges("pi-adapter-1").await else {
        panic!("searched");
    };
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, charge_id);
    assert_eq!(found[0].status, "succeeded");
    assert_eq!(found[0].payment_intent_id.as_deref(), Some(intent.as_str()));

    let declined = gateway
        .create_customer("declined@example.com", TestCard::Declined)
        .await
        .expect("customer");
    assert!(matches!(
        gateway.charge(&charge(&declined, "pi-adapter-2")).await,
        ChargeOutcome::Declined { .. }
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let ChargeSearch::Found(found) = gateway.find_charges("pi-adapter-2").await else {
        panic!("searched");
    };
    assert_eq!(found.len(), 1, "the failed intent is found");
    assert_eq!(found[0].status, "failed", "and proves no money moved");

    let three_ds = gateway
        .create_customer("3ds@example.com", TestCard::AuthenticationRequired)
        .await
        .expect("customer");
    let ChargeOutcome::RequiresAuthentication {
        payment_intent_id,
        client_secret,
    } = gateway.charge(&charge(&three_ds, "pi-adapter-3")).await
    else {
        panic!("authentication required");
    };
    assert!(client_secret.starts_with(&payment_intent_id));
    assert_eq!(
        gateway
            .payment_intent_state(&payment_intent_id)
            .await
            .expect("state"),
        PaymentIntentState::RequiresAction
    );
    let (status, _, _) = stripe
        .post(
            &format!("/_fake/payment_intents/{payment_intent_id}/authenticate"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert!(matches!(
        gateway.payment_intent_state(&payment_intent_id).await,
        Ok(PaymentIntentState::Succeeded { charge_id: Some(_) })
    ));

    // fake-stripe's own slow card: processing, then succeeded.
    let form = [
        ("email", "slow@example.com"),
        ("payment_method", "pm_fake_processing"),
        (
            "invoice_settings[default_payment_method]",
            "pm_fake_processing",
        ),
    ];
    let (_, customer, _) = stripe.post("/v1/customers", None, &form).await;
    let slow = application::ports::SavedCustomer {
        customer_id: customer["id"].as_str().expect("id").into(),
        payment_method_id: customer["invoice_settings"]["default_payment_method"]
            .as_str()
            .map(str::to_owned),
    };
    let ChargeOutcome::Processing { payment_intent_id } =
        gateway.charge(&charge(&slow, "pi-adapter-4")).await
    else {
        panic!("processing");
    };
    assert_eq!(
        gateway
            .payment_intent_state(&payment_intent_id)
            .await
            .expect("state"),
        PaymentIntentState::Processing
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(
        gateway.payment_intent_state(&payment_intent_id).await,
        Ok(PaymentIntentState::Succeeded { charge_id: Some(_) })
    ));

    // A user saved before PaymentMethods is refused before any call.
    let calls = stripe.stripe.payment_intents().len();
    let legacy = application::ports::SavedCustomer::without_payment_method(visa.customer_id);
    assert!(matches!(
        gateway.charge(&charge(&legacy, "pi-adapter-5")).await,
        ChargeOutcome::Refused { .. }
    ));
    assert_eq!(stripe.stripe.payment_intents().len(), calls);
}

/// A paid PaymentIntent on `card` (a test PaymentMethod id): its id and
/// its charge's.
async fn paid_intent(stripe: &Running, card: &str, key: &str) -> (String, String) {
    let (_, customer, _) = stripe
        .post("/v1/customers", None, &[("email", "refunds@example.com")])
        .await;
    let customer = customer["id"].as_str().expect("customer").to_owned();
    let (status, intent, _) = stripe
        .post(
            "/v1/payment_intents",
            Some(key),
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("customer", &customer),
                ("payment_method", card),
                ("confirm", "true"),
                ("off_session", "true"),
            ],
        )
        .await;
    assert_eq!(
        (status, intent["status"].as_str()),
        (200, Some("succeeded")),
        "{intent}"
    );
    (
        intent["id"].as_str().expect("id").to_owned(),
        intent["latest_charge"].as_str().expect("charge").to_owned(),
    )
}

#[tokio::test]
async fn refunds_in_part_or_in_full_never_more_than_is_left_and_are_listed_by_intent() {
    let stripe = start(FakeStripeSettings::default()).await;
    let (intent, charge) = paid_intent(&stripe, "pm_card_visa", "refund-pi-1").await;
    let (status, partial, _) = stripe
        .post(
            "/v1/refunds",
            Some("refund-1"),
            &[
                ("payment_intent", &intent),
                ("amount", "1500"),
                ("metadata[rocket_rides_downstream_key]", "rr-cancel-1"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(partial["object"], "refund");
    assert_eq!(partial["amount"], 1500);
    assert_eq!(partial["status"], "succeeded");
    assert_eq!(partial["charge"], charge.as_str());
    assert_eq!(partial["payment_intent"], intent.as_str());
    assert_eq!(
        partial["metadata"]["rocket_rides_downstream_key"],
        "rr-cancel-1"
    );
    // The same key again: the same refund, not a second one.
    let (_, again, replayed) = stripe
        .post(
            "/v1/refunds",
            Some("refund-1"),
            &[
                ("payment_intent", &intent),
                ("amount", "1500"),
                ("metadata[rocket_rides_downstream_key]", "rr-cancel-1"),
            ],
        )
        .await;
    assert!(replayed);
    assert_eq!(again["id"], partial["id"]);
    // More than the 500 left: refused as Stripe refuses it.
    let (status, too_much, _) = stripe
        .post(
            "/v1/refunds",
            Some("refund-2"),
            &[("charge", &charge), ("amount", "501")],
        )
        .await;
    assert_eq!(status, 400, "{too_much}");
    assert_eq!(too_much["error"]["code"], "amount_too_large");
    // The rest, by charge, with no amount: 500.
    let (status, rest, _) = stripe
        .post("/v1/refunds", Some("refund-3"), &[("charge", &charge)])
        .await;
    assert_eq!(
        (status, rest["amount"].as_i64()),
        (200, Some(500)),
        "{rest}"
    );
    let (status, none_left, _) = stripe
        .post(
            "/v1/refunds",
            Some("refund-4"),
            &[("payment_intent", &intent)],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(none_left["error"]["code"], "charge_already_refunded");
    let (_, charged) = stripe.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(
        (
            charged["amount_refunded"].as_i64(),
            charged["refunded"].as_bool()
        ),
        (Some(2000), Some(true))
    );
    let (status, listed) = stripe
        .get(&format!("/v1/refunds?payment_intent={intent}"))
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            rest["id"].as_str().expect("id"),
            partial["id"].as_str().expect("id")
        ],
        "newest first"
    );
    let (status, other) = stripe.get("/v1/refunds?payment_intent=pi_other").await;
    assert_eq!(
        (status, other["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, found) = stripe
        .get(&format!(
            "/v1/refunds/{}",
            partial["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!((status, &found["id"]), (200, &partial["id"]));
    let (status, missing) = stripe.get("/v1/refunds/re_nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");
    let (status, unpaid, _) = stripe
        .post(
            "/v1/refunds",
            Some("refund-5"),
            &[("payment_intent", "pi_nope")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(unpaid["error"]["code"], "resource_missing");
    let kinds: Vec<String> = stripe
        .stripe
        .events()
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .filter(|t| t.starts_with("refund"))
        .collect();
    assert_eq!(kinds, ["refund.created", "refund.created"]);
}

#[tokio::test]
async fn a_refund_of_the_refund_fail_card_succeeds_then_fails_and_says_so() {
    let stripe = start(FakeStripeSettings {
        processing_delay: Duration::from_millis(200),
        ..FakeStripeSettings::default()
    })
    .await;
    let (intent, charge) = paid_intent(&stripe, "pm_card_refundFail", "refund-fail-pi").await;
    let (status, refund, _) = stripe
        .post(
            "/v1/refunds",
            Some("refund-fail"),
            &[("payment_intent", &intent)],
        )
        .await;
    assert_eq!(
        (status, refund["status"].as_str()),
        (200, Some("succeeded")),
        "{refund}"
    );
    let id = refund["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, later) = stripe.get(&format!("/v1/refunds/{id}")).await;
    assert_eq!(later["status"], "failed");
    assert_eq!(later["failure_reason"], "expired_or_canceled_card");
    let (_, charged) = stripe.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(
        charged["amount_refunded"], 0,
        "the money went back to the charge"
    );
    let updated = stripe
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "charge.refund.updated")
        .expect("an event says so");
    assert_eq!(updated["data"]["object"]["id"], id.as_str());
    assert_eq!(updated["data"]["object"]["status"], "failed");
}
