//! Reconciliation as an operator runs it, with the real binary on Postgres
//! (testcontainers) and fake-stripe losing every charge's answer after it
//! was processed: two rides go to review, `review` shows what Stripe holds,
//! `resolve --from-stripe` books the one Stripe charged and ends the one it
//! refused, and the client's retries replay both.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::review::{self, KillOnDrop};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rocket-rides");
const CARD: &str = "user@example.com";
const NO_CARD: &str = "user-no-card@example.com";

/// The binary against `url`, charging at `stripe`, with review after 4 s.
/// On Charges: a customer with no card is refused by Stripe itself (on
/// PaymentIntents the service refuses it before any call, having no
/// PaymentMethod to send; the adapter's tests cover the PaymentIntent
/// search that reconciliation reads there).
fn command(url: &str, stripe: &str) -> Command {
    let mut command = review::reviewing(BIN, url, stripe, "10s");
    command.env("STRIPE_PAYMENTS", "charges");
    command
}

fn run(mut command: Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("runs");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success() || !stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), stdout)
}

async fn ride(http: &reqwest::Client, api: &str, user: &str, key: &str) -> (u16, Value, bool) {
    let response = http
        .post(format!("{api}/rides"))
        .header("Authorization", user)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(integration_tests::SEED_BODY)
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (status, response.json().await.expect("json"), replayed)
}

fn review_line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|line| line.contains(&format!("idempotency_key={key} ")))
        .unwrap_or_else(|| panic!("{key} listed: {printed}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_from_stripe_books_the_charged_key_ends_the_uncharged_one_and_both_replay() {
    let url = integration_tests::postgres::fresh_database_url().await;
    // One account, and a connection to it that loses every answer after
    // Stripe processed the request.
    let (clean, stripe, stripe_losing) =
        review::stripe_losing_answers(Duration::from_secs(1)).await;
    for subcommand in ["migrate", "up"] {
        let mut step = command(&url, &stripe);
        step.arg(subcommand);
        assert!(run(step).0, "{subcommand}");
    }

    let port = review::free_port();
    let mut api = command(&url, &stripe_losing);
    api.args([
        "api",
        "--api-host",
        "127.0.0.1",
        "--api-port",
        &port.to_string(),
    ])
    .stdout(Stdio::null());
    let _api = KillOnDrop(api.spawn().expect("api starts"));
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{api}/readyz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "api ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stripe charges the first and refuses the second (no card); both
    // answers are lost, so both keys stay at ride_created.
    let charged_key = "reconcile-charged-0001";
    let refused_key = "reconcile-refused-0001";
    for (user, key) in [(CARD, charged_key), (NO_CARD, refused_key)] {
        let (status, body, _) = ride(&http, &api, user, key).await;
        assert_eq!(status, 503, "{key}: {body}");
    }
    assert_eq!(clean.charges().len(), 1);
    let charge_id = clean.charges()[0]["id"].as_str().expect("id").to_owned();

    // Past REVIEW_AFTER the retries are told a person must decide.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (user, key) in [(CARD, charged_key), (NO_CARD, refused_key)] {
        let (status, body, _) = ride(&http, &api, user, key).await;
        assert_eq!(status, 500, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("review")),
            "{body}"
        );
    }
    let retried = Instant::now();

    let mut review = command(&url, &stripe);
    review.arg("review");
    let (ok, listed) = run(review);
    eprintln!("$ rocket-rides review\n{listed}");
    assert!(ok, "{listed}");
    let line = review_line(&listed, charged_key);
    assert!(
        line.contains(&format!("stripe={charge_id}:succeeded:2000usd")),
        "{line}"
    );
    assert!(
        line.contains(&format!("verdict=charged({charge_id})")),
        "{line}"
    );
    let line = review_line(&listed, refused_key);
    assert!(line.contains("stripe=no-charge-found"), "{line}");

    // Both keys were run just now (the retries above): nothing found for
    // the refused one may still be the search's lag, so until LOCK_TIMEOUT
    // + STRIPE_SEARCH_LAG (13 s) have passed, `resolve` books only the
    // charged one, leaves the other listed and says so in its exit code.
    let mut resolve = command(&url, &stripe);
    resolve.args(["resolve", "--from-stripe"]);
    let (ok, printed) = run(resolve);
    eprintln!("$ rocket-rides resolve --from-stripe\n{printed}");
    assert!(
        retried.elapsed() < Duration::from_secs(13),
        "the test ran too slowly to see the lag"
    );
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("key_id=1 settled from Stripe: status=201"),
        "{printed}"
    );
    assert!(
        printed.contains("key_id=2 left for review: nothing found yet"),
        "{printed}"
    );

    let (status, body, replayed) = ride(&http, &api, CARD, charged_key).await;
    assert_eq!((status, replayed), (201, true), "{body}");
    assert_eq!(body["ride"]["stripe_charge_id"], charge_id.as_str());

    // Deliberately let the key's last run + LOCK_TIMEOUT (3 s) + the search
    // lag (10 s) pass: only then may "nothing found" count as "no charge".
    tokio::time::sleep(Duration::from_secs(13).saturating_sub(retried.elapsed())).await;
    let mut resolve = command(&url, &stripe);
    resolve.args(["resolve", "--from-stripe"]);
    let (ok, printed) = run(resolve);
    eprintln!("$ rocket-rides resolve --from-stripe (later)\n{printed}");
    assert!(ok, "{printed}");
    let (status, body, replayed) = ride(&http, &api, NO_CARD, refused_key).await;
    assert_eq!((status, replayed), (502, true), "{body}");
    let mut review = command(&url, &stripe);
    review.arg("review");
    assert_eq!(run(review), (true, "no keys need review\n".to_owned()));
    assert_eq!(clean.charges().len(), 1, "reconciling charged nothing");
}
