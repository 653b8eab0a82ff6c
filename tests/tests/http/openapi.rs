//! `/openapi.json` describes every answer the API gives: each request below
//! (one per answer the router can produce over HTTP here: every SPEC row,
//! every refusal, the in-flight 409, the unknown-gateway 503, the shed 503,
//! the probes, unknown routes and methods) is checked against the document
//! it serves: its operation (method and path template) is there, its status
//! is, its content type is, every header it carries that the contract
//! names (`Retry-After`, `Idempotent-Replayed`) is documented on that
//! status, and a problem's `type` resolves to its entry in the document and
//! is among that status's examples. The answers no request here can
//! provoke (store down, body timeout, a panic) are checked at the unit
//! level against the same catalog (`adapters::http::error` tests).

use std::collections::BTreeSet;

use adapters::http::ServerLimits;
use adapters::memory::FakeGatewayFaults;
use integration_tests::{
    Answer, AppOptions, Backend, CARDLESS_USER, DECLINED_USER, GOOD_USER, SEED_BODY, THREE_DS_USER,
    TestApp, WEBHOOK_SECRET, new_key, spawn_app, spawn_gated_app,
};
use serde_json::Value;

const TYPE_BASE: &str = "/openapi.json#";

struct Document(Value);

impl Document {
    async fn of(app: &TestApp) -> Self {
        let served = Answer::of(app.get("/openapi.json").await).await;
        assert_eq!(served.status, 200);
        assert_eq!(served.header("content-type"), Some("application/json"));
        Self(serde_json::from_str(&served.body).expect("the document is JSON"))
    }

    /// The operation for `method` on `path`, matching `{param}` segments.
    fn operation(&self, method: &str, path: &str) -> Option<(&str, &Value)> {
        let paths = self.0["paths"].as_object()?;
        paths.iter().find_map(|(template, item)| {
            let matches = template.split('/').count() == path.split('/').count()
                && template
                    .split('/')
                    .zip(path.split('/'))
                    .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')));
            let operation = item.get(method.to_ascii_lowercase())?;
            matches.then_some((template.as_str(), operation))
        })
    }

    fn pointer(&self, uri: &str) -> Option<&Value> {
        self.0.pointer(uri.strip_prefix(TYPE_BASE)?)
    }

    /// Checks one answer against the document; the problem slug if any.
    fn check(&self, method: &str, path: &str, answer: &Answer) -> Option<String> {
        let what = format!("{method} {path} -> {}: {}", answer.status, answer.body);
        let content_type = answer
            .header("content-type")
            .unwrap_or_else(|| panic!("{what}: no content type"));
        let problem: Option<Value> = (content_type == "application/problem+json")
            .then(|| serde_json::from_str(&answer.body).expect("a problem is JSON"));
        let slug = problem.as_ref().map(|problem| {
            let uri = problem["type"].as_str().expect("a problem has a type");
            let entry = self
                .pointer(uri)
                .unwrap_or_else(|| panic!("{what}: type {uri} does not resolve in the document"));
            assert!(entry["description"].is_string(), "{what}: {entry}");
            uri.rsplit('/').next().unwrap_or_default().to_owned()
        });
        let documented = match self.operation(method, path) {
            Some((template, operation)) => operation["responses"]
                .get(answer.status.to_string())
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: status {} not documented for {method} {template}",
                        answer.status
                    )
                })
                .clone(),
            // No operation: only the answers every route may give.
            None => {
                let slug = slug
                    .clone()
                    .unwrap_or_else(|| panic!("{what}: undocumented route"));
                assert!(
                    ["not-found", "method-not-allowed"].contains(&slug.as_str()),
                    "{what}: an undocumented route answered `{slug}`"
                );
                return Some(slug);
            }
        };
        let content = documented["content"]
            .get(content_type)
            .unwrap_or_else(|| panic!("{what}: content type {content_type} not documented"));
        if let Some(slug) = &slug {
            assert!(
                content["examples"].get(slug).is_some(),
                "{what}: `{slug}` is not among the documented problems of status {}",
                answer.status
            );
        }
        for header in ["retry-after", "idempotent-replayed", "x-request-id"] {
            if answer.header(header).is_some() {
                let named = documented["headers"]
                    .as_object()
                    .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(header)));
                assert!(named, "{what}: header {header} not documented");
            }
        }
        slug
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    Answer::of(request.send().await.expect("answered")).await
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_answer_the_api_gives_is_in_it() {
    let app = spawn_app(AppOptions::on(Backend::Memory)).await;
    let doc = Document::of(&app).await;
    assert_eq!(doc.0["openapi"], "3.1.0");
    let operations: BTreeSet<String> = doc.0["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    assert_eq!(
        operations,
        [
            "GET /healthz",
            "GET /metrics",
            "GET /openapi.json",
            "GET /readyz",
            "GET /rides/{id}",
            "POST /rides",
            "POST /rides/{id}/cancel",
            "POST /webhooks/stripe",
        ]
        .map(str::to_owned)
        .into(),
    );
    let ride = &doc.0["paths"]["/rides"]["post"];
    let headers: Vec<&str> = ride["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "header")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(headers.contains(&"Idempotency-Key"), "{headers:?}");
    assert!(headers.contains(&"Authorization"), "{headers:?}");

    let c = &app.client;
    let url = |path: &str| format!("{}{path}", app.base);
    let form = |key: &str, user: &str, body: &str| {
        c.post(url("/rides"))
            .header("Authorization", user)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
    };
    let key = new_key();
    let mut seen = BTreeSet::new();
    let mut check = |method: &str, path: &str, answer: &Answer, expect: u16| {
        assert_eq!(answer.status, expect, "{method} {path}: {}", answer.body);
        let slug = doc.check(method, path, answer);
        seen.insert(format!("{expect} {}", slug.unwrap_or_default()));
    };

    let booked = send(form(&key, GOOD_USER, SEED_BODY)).await;
    check("POST", "/rides", &booked, 201);
    let replay = send(form(&key, GOOD_USER, SEED_BODY)).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    check("POST", "/rides", &replay, 201);
    let json = c
        .post(url("/rides"))
        .header("Authorization", GOOD_USER)
        .header("Idempotency-Key", new_key())
        .header("Content-Type", "application/json")
        .body(r#"{"origin_lat":1,"origin_lon":2,"target_lat":3,"target_lon":4}"#);
    check("POST", "/rides", &send(json).await, 201);
    let id = booked.json()["ride"]["id"].to_string();
    let mine = send(
        c.get(url(&format!("/rides/{id}")))
            .header("Authorization", GOOD_USER),
    )
    .await;
    check("GET", &format!("/rides/{id}"), &mine, 200);
    let theirs = send(
        c.get(url(&format!("/rides/{id}")))
            .header("Authorization", DECLINED_USER),
    )
    .await;
    check("GET", &format!("/rides/{id}"), &theirs, 404);
    check("GET", "/rides/1", &send(c.get(url("/rides/1"))).await, 401);

    // Cancelling it: 200 (stored, replayed), then 409 under another key;
    // someone else's ride, a bad reason, a booking's key: 404, 422, 422.
    let cancel_path = format!("/rides/{id}/cancel");
    let cancel = |key: &str, user: &str, body: &str| {
        c.post(url(&cancel_path))
            .header("Authorization", user)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    let cancel_key = new_key();
    let reason = r#"{"reason":"plans changed"}"#;
    let cancelled = send(cancel(&cancel_key, GOOD_USER, reason)).await;
    check("POST", &cancel_path, &cancelled, 200);
    assert_eq!(cancelled.json()["ride"]["status"], "cancelled");
    let replayed = send(cancel(&cancel_key, GOOD_USER, reason)).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, cancelled.body);
    check("POST", &cancel_path, &replayed, 200);
    let twice = send(cancel(&new_key(), GOOD_USER, "")).await;
    check("POST", &cancel_path, &twice, 409);
    check(
        "POST",
        &cancel_path,
        &send(cancel(&new_key(), DECLINED_USER, "")).await,
        404,
    );
    let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(501));
    check(
        "POST",
        &cancel_path,
        &send(cancel(&new_key(), GOOD_USER, &long)).await,
        422,
    );
    check(
        "POST",
        &cancel_path,
        &send(cancel(&key, GOOD_USER, "")).await,
        422,
    );

    check(
        "POST",
        "/rides",
        &send(form(&new_key(), "nobody@example.com", SEED_BODY)).await,
        401,
    );
    check(
        "POST",
        "/rides",
        &send(form("short", GOOD_USER, SEED_BODY)).await,
        400,
    );
    let other_body = "origin_lat=1.0&origin_lon=0.0&target_lat=0.0&target_lon=0.0";
    check(
        "POST",
        "/rides",
        &send(form(&key, GOOD_USER, other_body)).await,
        422,
    );
    check(
        "POST",
        "/rides",
        &send(form(&new_key(), GOOD_USER, "origin_lat=91")).await,
        422,
    );
    let xml = c
        .post(url("/rides"))
        .header("Authorization", GOOD_USER)
        .header("Idempotency-Key", new_key())
        .header("Content-Type", "text/xml")
        .body("<ride/>");
    check("POST", "/rides", &send(xml).await, 415);
    let huge = "x".repeat(adapters::http::MAX_BODY_BYTES + 1);
    check(
        "POST",
        "/rides",
        &send(form(&new_key(), GOOD_USER, &huge)).await,
        413,
    );
    let declined = send(form(&new_key(), DECLINED_USER, SEED_BODY)).await;
    check("POST", "/rides", &declined, 402);
    let authenticate = send(form(&new_key(), THREE_DS_USER, SEED_BODY)).await;
    check("POST", "/rides", &authenticate, 402);
    assert!(authenticate.body.contains("authentication-required"));
    let event = br#"{"id":"evt_doc","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let webhook = |signature: String| {
        c.post(url("/webhooks/stripe"))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(event.to_vec())
    };
    let signed = domain::webhook::signature_header(WEBHOOK_SECRET, now, event);
    check(
        "POST",
        "/webhooks/stripe",
        &send(webhook(signed)).await,
        200,
    );
    let forged = domain::webhook::signature_header("whsec_forged", now, event);
    check(
        "POST",
        "/webhooks/stripe",
        &send(webhook(forged)).await,
        400,
    );
    let cardless_key = new_key();
    check(
        "POST",
        "/rides",
        &send(form(&cardless_key, CARDLESS_USER, SEED_BODY)).await,
        502,
    );
    let again = send(form(&cardless_key, CARDLESS_USER, SEED_BODY)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    check("POST", "/rides", &again, 502);
    let raise = format!("{SEED_BODY}&raise_error=true");
    check(
        "POST",
        "/rides",
        &send(form(&new_key(), GOOD_USER, &raise)).await,
        500,
    );

    check("GET", "/healthz", &send(c.get(url("/healthz"))).await, 200);
    check("GET", "/readyz", &send(c.get(url("/readyz"))).await, 200);
    check("GET", "/metrics", &send(c.get(url("/metrics"))).await, 404);
    check(
        "GET",
        "/openapi.json",
        &send(c.get(url("/openapi.json"))).await,
        200,
    );
    check("GET", "/nowhere", &send(c.get(url("/nowhere"))).await, 404);
    check(
        "DELETE",
        "/rides",
        &send(c.delete(url("/rides"))).await,
        405,
    );

    // The gateway's answer lost: 503 with Retry-After.
    let lost = spawn_app(AppOptions {
        faults: FakeGatewayFaults {
            unknown_rate: 1.0,
            ..FakeGatewayFaults::default()
        },
        ..AppOptions::on(Backend::Memory)
    })
    .await;
    let unknown = Answer::of(
        lost.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert!(unknown.header("retry-after").is_some());
    check("POST", "/rides", &unknown, 503);

    // A request in flight (409), and one shed at the concurrency cap (503).
    let (gated, gate) = spawn_gated_app(
        Backend::Memory,
        ServerLimits {
            max_concurrent_requests: 1,
            ..ServerLimits::DEFAULT
        },
    )
    .await;
    let held = new_key();
    let first = gated.post_ride_in_background(&held);
    gate.entered(1).await;
    let shed = Answer::of(
        gated
            .post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    check("POST", "/rides", &shed, 503);
    gate.release(1);
    first.await.expect("task").expect("answered");
    let (busy_app, busy_gate) = spawn_gated_app(Backend::Memory, ServerLimits::DEFAULT).await;
    let busy = new_key();
    let first = busy_app.post_ride_in_background(&busy);
    busy_gate.entered(1).await;
    let refused = Answer::of(
        busy_app
            .post_ride(Some(GOOD_USER), Some(&busy), SEED_BODY)
            .await,
    )
    .await;
    check("POST", "/rides", &refused, 409);
    busy_gate.release(1);
    first.await.expect("task").expect("answered");

    let expected: BTreeSet<String> = [
        "200 ",
        "201 ",
        "400 invalid-idempotency-key",
        "400 invalid-webhook",
        "401 unauthorized",
        "402 authentication-required",
        "402 card-declined",
        "404 not-found",
        "405 method-not-allowed",
        "409 request-in-flight",
        "409 ride-already-cancelled",
        "413 body-too-large",
        "415 unsupported-media-type",
        "422 idempotency-key-reused",
        "422 invalid-cancel-reason",
        "422 invalid-ride-parameters",
        "500 internal-error",
        "502 charge-refused",
        "503 overloaded",
        "503 payment-processor-unavailable",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(seen, expected, "the answers this test provoked");
}
