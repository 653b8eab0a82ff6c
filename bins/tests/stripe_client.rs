//! Stripe's official Python library (`stripe` on PyPI) against fake-stripe:
//! customers and charges created, replayed, retrieved and searched, and
//! unknown ids answered as Stripe answers them, all read by the client
//! without complaint, and the events fake-stripe delivers verified by the
//! library's `Webhook.construct_event` (`scripts/stripe_client_check.py`). `./scripts/test`
//! installs the library into a virtualenv and names its interpreter in
//! `STRIPE_PYTHON`; without it the test uses `python3`, and fails saying
//! what to install when the library is missing.

use std::process::Command;
use std::time::Duration;

use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, WebhookDelivery};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_python_library_reads_every_answer_of_fake_stripe() {
    let python = std::env::var("STRIPE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import stripe"])
        .output()
        .unwrap_or_else(|error| panic!("{python} does not run: {error}"));
    assert!(
        probe.status.success(),
        "Stripe's Python library is missing for {python}: `pip install stripe`, or run ./scripts/test (it sets STRIPE_PYTHON). {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let port = integration_tests::postgres::free_port();
    let secret = "whsec_python_check";
    let stripe = FakeStripe::new(FakeStripeSettings {
        search_delay: Duration::from_secs(1),
        webhook: Some(WebhookDelivery::to(
            format!("http://127.0.0.1:{port}/"),
            secret,
        )),
        ..FakeStripeSettings::default()
    });
    let base = stripe.serve_on_loopback().await.expect("served");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/stripe_client_check.py"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([script, &base, &port.to_string(), secret])
            .output()
    })
    .await
    .expect("joined")
    .expect("the check runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("ok: the official client read every answer"),
        "{printed}"
    );
    assert!(printed.contains("charge found by search"), "{printed}");
    assert!(
        printed.contains("payment intent found by search"),
        "{printed}"
    );
    assert!(printed.contains("authentication required"), "{printed}");
    assert!(
        printed.contains("refunds listed and retrieved"),
        "{printed}"
    );
    assert!(
        printed.contains("webhook events verified by construct_event"),
        "{printed}"
    );
    // One charge made through Charges (its replay made none), one through
    // the PaymentIntent; the card needing 3-D Secure made none.
    let charged = |key: &str| {
        stripe
            .charges()
            .iter()
            .filter(|charge| charge["metadata"]["rocket_rides_downstream_key"] == key)
            .count()
    };
    assert_eq!(charged("py-check-1"), 1, "the replay made no second charge");
    assert_eq!(charged("py-pi-1"), 1, "the intent charged once");
    assert_eq!(stripe.charges().len(), 2);
}
