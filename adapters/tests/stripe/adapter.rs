//! The Stripe adapter against wiremock: what it sends, and how it classifies
//! every kind of answer.

use std::time::Duration;

use adapters::stripe::{STRIPE_VERSION, StripeGateway, StripeSettings};
use application::ports::SavedCustomer;
use application::ports::{GatewayError, PaymentGateway};
use domain::{ChargeOutcome, ChargeRequest};
use domain::{PaymentsApi, TestCard};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A generous timeout: wiremock answers at once, and a loaded machine must
/// not turn an answer into a timeout.
fn gateway(server: &MockServer) -> StripeGateway {
    gateway_with_timeout(server, Duration::from_secs(10))
}

fn gateway_with_timeout(server: &MockServer, timeout: Duration) -> StripeGateway {
    StripeGateway::new(StripeSettings {
        timeout,
        retry_backoff: Duration::from_millis(10),
        payments: PaymentsApi::Charges,
        ..StripeSettings::new("sk_test_123", server.uri())
    })
    .expect("client")
}

fn charge() -> ChargeRequest {
    ChargeRequest {
        customer_id: "cus_abc".into(),
        payment_method_id: None,
        amount_cents: 2000,
        currency: "usd".into(),
        description: "Rocket Rides ride for user@example.com".into(),
        idempotency_key: "rocket-rides-6f1c".into(),
    }
}

fn charge_ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_string(r#"{"id":"ch_123","object":"charge","status":"succeeded"}"#)
}

#[tokio::test]
async fn a_charge_is_form_encoded_with_auth_version_and_the_downstream_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header("authorization", "Bearer sk_test_123"))
        .and(header("stripe-version", STRIPE_VERSION))
        .and(header("idempotency-key", "rocket-rides-6f1c"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("amount=2000"))
        .and(body_string_contains("currency=usd"))
        .and(body_string_contains("customer=cus_abc"))
        .and(body_string_contains(
            "metadata%5Brocket_rides_downstream_key%5D=rocket-rides-6f1c",
        ))
        .and(body_string_contains(
            "description=Rocket+Rides+ride+for+user%40example.com",
        ))
        .respond_with(charge_ok())
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        gateway(&server).charge(&charge()).await,
        ChargeOutcome::Charged {
            charge_id: "ch_123".into(),
            payment_intent_id: None,
        }
    );
}

#[tokio::test]
async fn a_500_then_a_200_is_charged_with_the_same_key_both_times() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/charges"))
        .respond_with(charge_ok())
        .mount(&server)
        .await;
    assert!(matches!(
        gateway(&server).charge(&charge()).await,
        ChargeOutcome::Charged { .. }
    ));
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(
            request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok()),
            Some("rocket-rides-6f1c")
        );
    }
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(charge_ok().set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let outcome = gateway_with_timeout(&server, Duration::from_millis(300))
        .charge(&charge())
        .await;
    let ChargeOutcome::Unknown { reason } = outcome else {
        panic!("expected unknown, got {outcome:?}");
    };
    assert!(reason.contains("in time"), "{reason}");
    assert_eq!(
        server.received_requests().await.expect("recorded").len(),
        3,
        "1 + 2 retries"
    );
}

#[tokio::test]
async fn a_429_is_retried_then_unknown() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(429).set_body_string(
            r#"{"error":{"type":"invalid_request_error","message":"Too many requests"}}"#,
        ))
        .expect(3)
        .mount(&server)
        .await;
    let outcome = gateway(&server).charge(&charge()).await;
    assert!(
        matches!(outcome, ChargeOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_unknown_never_a_panic() {
    let server = MockServer::start().await;
    for body in ["{not json", "", r#"{"object":"charge"}"#, r#"{"id":""}"#] {
        server.reset().await;
        Mock::given(path("/v1/charges"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        let outcome = gateway(&server).charge(&charge()).await;
        assert!(
            matches!(outcome, ChargeOutcome::Unknown { .. }),
            "{body:?}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_card_error_is_declined_with_stripes_message() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(402).set_body_string(
            r#"{"error":{"type":"card_error","code":"card_declined","message":"Your card has insufficient funds."}}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        gateway(&server).charge(&charge()).await,
        ChargeOutcome::Declined {
            message: "Your card has insufficient funds.".into()
        }
    );
}

#[tokio::test]
async fn another_4xx_is_refused_for_good_without_retrying() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":{"type":"invalid_request_error","code":"missing","message":"Cannot charge a customer that has no active card"}}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = gateway(&server).charge(&charge()).await;
    let ChargeOutcome::Refused { message } = outcome else {
        panic!("expected refused, got {outcome:?}");
    };
    assert!(message.contains("no active card"), "{message}");
}

/// Answers that say nothing about whether the charge exists: each is
/// retried with the same key (1 + 2 calls) and ends unknown, never refused.
#[tokio::test]
async fn answers_that_prove_nothing_about_the_charge_are_unknown_and_retried() {
    let cases: [(u16, &str); 7] = [
        (
            401,
            r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_***123"}}"#,
        ),
        (
            403,
            r#"{"error":{"type":"invalid_request_error","message":"The provided key does not have access"}}"#,
        ),
        (
            409,
            r#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use","message":"another request is in flight"}}"#,
        ),
        (
            400,
            r#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#,
        ),
        (400, "<html>bad gateway proxy</html>"),
        (
            429,
            r#"{"error":{"type":"rate_limit_error","message":"Too many requests"}}"#,
        ),
        (418, r#"{"error":{"type":"api_error","message":"teapot"}}"#),
    ];
    for (status, body) in cases {
        let server = MockServer::start().await;
        Mock::given(path("/v1/charges"))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .expect(3)
            .mount(&server)
            .await;
        let outcome = gateway(&server).charge(&charge()).await;
        assert!(
            matches!(outcome, ChargeOutcome::Unknown { .. }),
            "{status} {body}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_customer_is_refused_for_good() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(404).set_body_string(
            r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_abc'"}}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    assert!(matches!(
        gateway(&server).charge(&charge()).await,
        ChargeOutcome::Refused { .. }
    ));
}

#[tokio::test]
async fn an_unreachable_stripe_is_unknown() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let gateway = StripeGateway::new(StripeSettings {
        retry_backoff: Duration::from_millis(1),
        payments: domain::PaymentsApi::Charges,
        ..StripeSettings::new("sk_test_123", uri)
    })
    .expect("client");
    assert!(matches!(
        gateway.charge(&charge()).await,
        ChargeOutcome::Unknown { .. }
    ));
}

#[tokio::test]
async fn customers_are_created_with_email_and_source() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("authorization", "Bearer sk_test_123"))
        .and(body_string_contains("email=user%40example.com"))
        .and(body_string_contains("source=tok_visa"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(r#"{"id":"cus_1","object":"customer"}"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        gateway(&server)
            .create_customer("user@example.com", TestCard::Visa)
            .await
            .expect("created"),
        SavedCustomer::without_payment_method("cus_1")
    );
    server.reset().await;
    Mock::given(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":{"type":"invalid_request_error","message":"No such token: 'tok_nope'"}}"#,
        ))
        .mount(&server)
        .await;
    let error = gateway(&server)
        .create_customer("user@example.com", TestCard::Visa)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GatewayError::Refused(ref m) if m.contains("No such token")),
        "{error:?}"
    );
}

fn refund_of(intent: Option<&str>, charge: Option<&str>) -> domain::RefundRequest {
    domain::RefundRequest::Refund {
        payment_intent_id: intent.map(str::to_owned),
        charge_id: charge.map(str::to_owned),
        amount_cents: 1500,
        idempotency_key: "rocket-rides-cancel-1".into(),
    }
}

#[tokio::test]
async fn a_refund_names_the_intent_amount_and_downstream_key_and_reads_the_refund() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header("idempotency-key", "rocket-rides-cancel-1"))
        .and(body_string_contains("payment_intent=pi_1"))
        .and(body_string_contains("amount=1500"))
        .and(body_string_contains(
            "metadata%5Brocket_rides_downstream_key%5D=rocket-rides-cancel-1",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"id":"re_1","object":"refund","status":"pending"}"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        gateway(&server)
            .refund(&refund_of(Some("pi_1"), Some("ch_1")))
            .await,
        domain::RefundOutcome::Refunded(domain::RefundRecord {
            refund_id: "re_1".into(),
            status: domain::RefundStatus::Pending,
        })
    );
}

#[tokio::test]
async fn a_charge_is_refunded_by_its_id_when_there_is_no_intent() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/refunds"))
        .and(body_string_contains("charge=ch_1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"id":"re_2","object":"refund","status":"succeeded"}"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert!(matches!(
        gateway(&server)
            .refund(&refund_of(None, Some("ch_1")))
            .await,
        domain::RefundOutcome::Refunded(_)
    ));
}

#[tokio::test]
async fn a_refund_refused_for_good_is_refused_and_a_lost_answer_unknown_after_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/refunds"))
        .and(body_string_contains("payment_intent=pi_done"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":{"type":"invalid_request_error","code":"charge_already_refunded","message":"Charge ch_1 has already been refunded."}}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/refunds"))
        .and(body_string_contains("payment_intent=pi_down"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let gateway = gateway(&server);
    assert!(matches!(
        gateway.refund(&refund_of(Some("pi_done"), None)).await,
        domain::RefundOutcome::Refused { message } if message.contains("already been refunded")
    ));
    assert!(matches!(
        gateway.refund(&refund_of(Some("pi_down"), None)).await,
        domain::RefundOutcome::Unknown { .. }
    ));
}

#[tokio::test]
async fn a_waiting_intent_is_cancelled_and_one_that_succeeded_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents/pi_wait/cancel"))
        .and(header("idempotency-key", "rocket-rides-cancel-2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(
                r#"{"id":"pi_wait","object":"payment_intent","status":"canceled"}"#,
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/payment_intents/pi_paid/cancel"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":{"type":"invalid_request_error","code":"payment_intent_unexpected_state","message":"You cannot cancel this PaymentIntent because it has a status of succeeded."}}"#,
        ))
        .mount(&server)
        .await;
    let cancel = |intent: &str| domain::RefundRequest::CancelPaymentIntent {
        payment_intent_id: intent.into(),
        idempotency_key: "rocket-rides-cancel-2".into(),
    };
    let gateway = gateway(&server);
    assert_eq!(
        gateway.refund(&cancel("pi_wait")).await,
        domain::RefundOutcome::IntentCanceled
    );
    assert!(matches!(
        gateway.refund(&cancel("pi_paid")).await,
        domain::RefundOutcome::Refused { .. }
    ));
}

#[tokio::test]
async fn a_refund_is_retrieved_by_its_id_for_the_sync_pass() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds/re_1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"id":"re_1","object":"refund","status":"failed"}"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/refunds/re_2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"id":"re_2","object":"refund","status":"reversed"}"#),
        )
        .mount(&server)
        .await;
    let gateway = gateway(&server);
    assert_eq!(
        gateway.refund_status("re_1").await.expect("read"),
        domain::RefundStatus::Failed
    );
    assert!(matches!(
        gateway.refund_status("re_2").await,
        Err(GatewayError::Unknown(_))
    ));
}
