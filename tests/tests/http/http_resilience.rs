//! The API under the failures a real network and a real deployment bring:
//! clients that vanish mid-request, a panicking phase, more requests than
//! it takes on, clients that stall, a shutdown with work in hand, a store
//! that does not answer. Gateways that must stall wait for the test to
//! release them; nothing here waits on a sleep.

use std::sync::Arc;
use std::time::Duration;

use adapters::http::ServerLimits;
use adapters::memory::FakeGateway;
use application::AuthMode;
use application::ports::{MockKeys, MockProbe, MockUsers, PaymentGateway, StoreError};
use integration_tests::{
    Answer, AppOptions, Backend, GOOD_USER, SEED_BODY, new_key, on_every_backend, spawn_app,
    spawn_gated_app,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Retries one key until it gets something other than 409 (or 503: the
/// cap full), for at most 30 s (far less than the 90 s lock timeout a
/// stranded key would need).
async fn retry_until_answered(app: &integration_tests::TestApp, key: &str) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = Answer::of(app.post_ride(Some(GOOD_USER), Some(key), SEED_BODY).await).await;
        if ![409, 503].contains(&answer.status) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_client_that_disconnects_mid_request_leaves_no_lock_behind(backend: Backend) {
    let (app, gate) = spawn_gated_app(backend, ServerLimits::DEFAULT).await;
    let key = new_key();
    let client = app.post_ride_in_background(&key);
    gate.entered(1).await;
    // The phone loses signal while its charge is in flight.
    client.abort();
    let _ = client.await;
    gate.release(1);
    let answer = retry_until_answered(&app, &key).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.gateway.charges().len(), 1, "charged once");
}

async fn a_panicking_phase_is_a_500_and_releases_the_key(backend: Backend) {
    struct PanicsOnce {
        inner: Arc<FakeGateway>,
        panicked: std::sync::atomic::AtomicBool,
    }
    #[async_trait::async_trait]
    impl PaymentGateway for PanicsOnce {
        async fn create_customer(
            &self,
            email: &str,
            card: domain::TestCard,
        ) -> Result<application::ports::SavedCustomer, application::ports::GatewayError> {
            self.inner.create_customer(email, card).await
        }
        async fn charge(&self, request: &domain::ChargeRequest) -> domain::ChargeOutcome {
            if !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("a bug in the charge phase");
            }
            self.inner.charge(request).await
        }
    }
    let app = spawn_app(AppOptions {
        wrap_gateway: Some(Box::new(|inner| {
            Arc::new(PanicsOnce {
                inner,
                panicked: false.into(),
            })
        })),
        ..AppOptions::on(backend)
    })
    .await;
    let key = new_key();
    let first = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(first.status, 500, "{}", first.body);
    assert!(
        first.detail().contains("same Idempotency-Key"),
        "{}",
        first.body
    );
    // Released at once: the retry is not a 409.
    let again = Answer::of(app.post_ride(Some(GOOD_USER), Some(&key), SEED_BODY).await).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(app.gateway.charges().len(), 1);
}

async fn a_full_server_sheds_ride_requests_with_503_and_retry_after(backend: Backend) {
    let limits = ServerLimits {
        max_concurrent_requests: 1,
        ..ServerLimits::DEFAULT
    };
    let (app, gate) = spawn_gated_app(backend, limits).await;
    let first = app.post_ride_in_background(&new_key());
    gate.entered(1).await;
    let shed = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(
        app.inspect.key_count().await,
        1,
        "the shed request stored nothing"
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "probes stay outside the cap"
    );
    gate.release(1);
    assert_eq!(first.await.expect("task").expect("answered").status, 201);
}

async fn shutdown_ends_within_its_deadline_even_with_a_request_stuck(backend: Backend) {
    let limits = ServerLimits {
        shutdown_deadline: Duration::from_millis(500),
        ..ServerLimits::DEFAULT
    };
    let (mut app, gate) = spawn_gated_app(backend, limits).await;
    let stuck = app.post_ride_in_background(&new_key());
    gate.entered(1).await;
    app.shutdown();
    let served = app.served.take().expect("server task");
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("the server stopped although a request never finished")
        .expect("task")
        .expect("served");
    gate.release(1);
    let _ = stuck.await;
}

async fn a_client_that_hangs_up_still_counts_against_the_cap_until_its_phases_end(
    backend: Backend,
) {
    let limits = ServerLimits {
        max_concurrent_requests: 1,
        ..ServerLimits::DEFAULT
    };
    let (app, gate) = spawn_gated_app(backend, limits).await;
    let first_key = new_key();
    let first = app.post_ride_in_background(&first_key);
    gate.entered(1).await;
    // The client sends and hangs up; its charge goes on in its own task.
    first.abort();
    let _ = first.await;
    // Without the task counted, this request would be admitted and wait at
    // the gate: a client that hangs up would buy unlimited Stripe calls.
    let shed = tokio::time::timeout(
        Duration::from_secs(10),
        app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY),
    )
    .await
    .expect("shed at once, not admitted behind the gate");
    let shed = Answer::of(shed).await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.header("retry-after"), Some("1"));
    gate.release(1);
    assert_eq!(retry_until_answered(&app, &first_key).await.status, 201);
    // Its phases over, the cap has room again.
    gate.release(1);
    let after = Answer::of(
        app.post_ride(Some(GOOD_USER), Some(&new_key()), SEED_BODY)
            .await,
    )
    .await;
    assert_eq!(after.status, 201, "{}", after.body);
}

async fn shutdown_waits_for_the_phases_of_a_client_that_hung_up(backend: Backend) {
    let limits = ServerLimits {
        shutdown_deadline: Duration::from_secs(20),
        ..ServerLimits::DEFAULT
    };
    let (mut app, gate) = spawn_gated_app(backend, limits).await;
    let key = new_key();
    let client = app.post_ride_in_background(&key);
    gate.entered(1).await;
    client.abort();
    let _ = client.await;
    app.shutdown();
    let mut served = app.served.take().expect("server task");
    // No connection is open, yet the charge is in flight: the server must
    // not stop under it. (A fixed wait: there is no event for "did not
    // stop"; half a second is ample for a server with nothing to wait for.)
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut served)
            .await
            .is_err(),
        "the server stopped with a request's phases still running"
    );
    gate.release(1);
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the server stopped once the phases ended")
        .expect("task")
        .expect("served");
    assert_eq!(app.gateway.charges().len(), 1, "charged once");
    assert_eq!(
        app.inspect.recovery_points().await,
        vec![(key, domain::RecoveryPoint::Finished)],
        "the phases ran to their end before the server stopped"
    );
}

async fn a_client_that_never_finishes_its_headers_is_disconnected(backend: Backend) {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServerLimits::DEFAULT
    };
    let (app, _gate) = spawn_gated_app(backend, limits).await;
    let mut stream = TcpStream::connect(app.address()).await.expect("connect");
    stream
        .write_all(b"POST /rides HTTP/1.1\r\nHost: rides\r\nAuthorization: user")
        .await
        .expect("partial headers");
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buffer))
        .await
        .expect("the server closed a connection whose headers never came");
    assert!(
        read.is_err() || !buffer.starts_with(b"HTTP/1.1 2"),
        "{buffer:?}"
    );
}

async fn a_body_that_stops_arriving_is_a_408_and_stores_nothing(backend: Backend) {
    let limits = ServerLimits {
        body_read_timeout: Duration::from_millis(300),
        ..ServerLimits::DEFAULT
    };
    let (app, _gate) = spawn_gated_app(backend, limits).await;
    let mut stream = TcpStream::connect(app.address()).await.expect("connect");
    let head = format!(
        "POST /rides HTTP/1.1\r\nHost: rides\r\nAuthorization: {GOOD_USER}\r\nIdempotency-Key: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\norigin_lat=0",
        new_key()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("partial body");
    let mut buffer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer))
        .await
        .expect("answered within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buffer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(app.inspect.key_count().await, 0);
}

on_every_backend!(
    a_client_that_disconnects_mid_request_leaves_no_lock_behind,
    a_panicking_phase_is_a_500_and_releases_the_key,
    a_full_server_sheds_ride_requests_with_503_and_retry_after,
    shutdown_ends_within_its_deadline_even_with_a_request_stuck,
    a_client_that_hangs_up_still_counts_against_the_cap_until_its_phases_end,
    shutdown_waits_for_the_phases_of_a_client_that_hung_up,
    a_client_that_never_finishes_its_headers_is_disconnected,
    a_body_that_stops_arriving_is_a_408_and_stores_nothing,
);

/// The API over a store that cannot answer (Postgres down, the pool
/// exhausted): every ride request is a 503 with `Retry-After`, never a 500.
#[tokio::test]
async fn an_unavailable_store_is_a_503_with_retry_after() {
    let mut users = MockUsers::new();
    users
        .expect_find_user_by_email()
        .returning(|_| Err(StoreError::Unavailable(anyhow::anyhow!("pool timed out"))));
    let mut probe = MockProbe::new();
    probe.expect_ping().returning(|| {
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "connection refused"
        )))
    });
    let state = integration_tests::api_state(
        Arc::new(MockKeys::new()),
        Arc::new(users),
        Arc::new(probe),
        Arc::new(FakeGateway::default()),
        AuthMode::Email,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(adapters::http::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let answer = Answer::of(
        reqwest::Client::new()
            .post(format!("{base}/rides"))
            .header("Authorization", GOOD_USER)
            .header("Idempotency-Key", new_key())
            .body(SEED_BODY)
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("2"));
    assert!(answer.detail().contains("same Idempotency-Key"));
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("answered");
    assert_eq!(ready.status(), 503);
}

/// The operations endpoint is served with the API's limits (`serve_router`
/// with `ServerLimits::OPS`): a client that never finishes its headers is
/// disconnected there too.
#[tokio::test]
async fn the_operations_endpoint_disconnects_a_client_that_never_finishes_its_headers() {
    let ready = adapters::http::ReadyStore::default();
    let router = adapters::http::ops_router(ready, None, None);
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServerLimits::OPS
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(adapters::http::serve_router(
        listener,
        router,
        limits,
        "operations",
        std::future::pending(),
    ));
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: ops\r\nUser-Agent: slow")
        .await
        .expect("partial headers");
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buffer))
        .await
        .expect("the server closed a connection whose headers never came");
    assert!(
        read.is_err() || !buffer.starts_with(b"HTTP/1.1 2"),
        "{buffer:?}"
    );
    // A complete request is still answered (not ready: nothing connected).
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
}
