//! The operator's console in a real headless browser (Debian's `chromium`
//! driven through `chromedriver` with fantoccini), served by the real
//! binary on Postgres (testcontainers): a wrong token is refused, the
//! numbers on the page match the database, and settling a key awaiting
//! review from the page books its ride. Saves a screenshot to
//! `target/console.png`.
//!
//! Two API processes share the database: one charges through fake-stripe
//! normally and serves the console; the other reaches the same Stripe
//! account through a connection that loses every answer after the charge,
//! which leaves one key charged but unrecorded, for review.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::review::{self, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_rocket-rides");
const TOKEN: &str = "console-token-for-the-browser-test";
const GOOD: &str = "user@example.com";
const DECLINED: &str = "user-bad-source@example.com";

fn command(url: &str, stripe: &str) -> Command {
    let mut command = review::reviewing(BIN, url, stripe, "1s");
    command.stdout(Stdio::null());
    command
}

async fn wait_for(http: &reqwest::Client, url: &str) {
    let started = Instant::now();
    while http.get(url).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "{url} answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_api(url: &str, stripe: &str, console: Option<u16>) -> (KillOnDrop, String) {
    let port = review::free_port();
    let mut api = command(url, stripe);
    api.args([
        "api",
        "--api-host",
        "127.0.0.1",
        "--api-port",
        &port.to_string(),
    ]);
    if let Some(ops) = console {
        api.env("CONSOLE_TOKEN", TOKEN)
            .env("METRICS_ADDR", format!("127.0.0.1:{ops}"));
    }
    let child = KillOnDrop(api.spawn().expect("api starts"));
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&reqwest::Client::new(), &format!("{base}/readyz")).await;
    (child, base)
}

async fn ride(http: &reqwest::Client, api: &str, user: &str, n: usize) -> u16 {
    http.post(format!("{api}/rides"))
        .header("Authorization", user)
        .header("Idempotency-Key", format!("console-ride-key-{n:04}"))
        .header("X-Request-Id", format!("console-test-ride-{n}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(integration_tests::SEED_BODY)
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

/// chromedriver on a port of its own, and a headless Chromium session.
async fn browser() -> (KillOnDrop, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let port = review::free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("{driver} does not start ({error}): install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), or set CHROMEDRIVER")
        });
    let child = KillOnDrop(child);
    let mut capabilities = serde_json::Map::new();
    let mut options = serde_json::json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1600"]
    });
    if let Ok(binary) = std::env::var("CHROMIUM") {
        options["binary"] = binary.into();
    }
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    let started = Instant::now();
    let client = loop {
        match ClientBuilder::rustls()
            .expect("a TLS connector")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no browser session: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (child, client)
}

/// Types `token` into the sign-in form on the page and submits it.
async fn sign_in(browser: &Client, token: &str) {
    let field = browser
        .find(Locator::Id("token"))
        .await
        .expect("token field");
    field.send_keys(token).await.expect("typed");
    let button = browser.find(Locator::Id("sign-in")).await.expect("button");
    button.click().await.expect("clicked");
}

/// The text of `#id`, once the page showing it has loaded. The console
/// reloads itself every few seconds, so an element found just before a
/// reload may be gone when read: then it is found again.
async fn text(browser: &Client, id: &str) -> String {
    let mut last = String::new();
    for _ in 0..10 {
        let found = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await;
        match found {
            Ok(element) => match element.text().await {
                Ok(text) => return text,
                Err(error) => last = error.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("#{id} on the page: {last}")
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> String {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect(sql);
    n.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_refuses_a_wrong_token_shows_the_database_and_settles_a_review_key()
{
    let url = integration_tests::postgres::fresh_database_url().await;
    let (clean, stripe, stripe_losing) = review::stripe_losing_answers(Duration::ZERO).await;
    for subcommand in ["migrate", "up"] {
        let status = command(&url, &stripe)
            .arg(subcommand)
            .status()
            .expect("runs");
        assert!(status.success(), "{subcommand}");
    }
    let ops = review::free_port();
    let (_console_api, api) = start_api(&url, &stripe, Some(ops)).await;
    let (_losing_api, losing_api) = start_api(&url, &stripe_losing, None).await;
    let http = reqwest::Client::new();
    for n in 1..=3 {
        assert_eq!(ride(&http, &api, GOOD, n).await, 201);
    }
    assert_eq!(ride(&http, &api, DECLINED, 4).await, 402);
    assert_eq!(
        ride(&http, &losing_api, GOOD, 5).await,
        503,
        "charged, answer lost"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // past REVIEW_AFTER
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let (review_key,): (i64,) =
        sqlx::query_as("SELECT id FROM idempotency_keys WHERE recovery_point = 'ride_created'")
            .fetch_one(&pool)
            .await
            .expect("the key awaiting review");

    // Without the token, nothing: curl sees 401 for a wrong one.
    let console = format!("http://127.0.0.1:{ops}/console");
    let refused = http
        .get(&console)
        .bearer_auth("not-the-console-token")
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 401);

    let (_driver, browser) = browser().await;
    browser.goto(&console).await.expect("opens");
    assert!(
        browser
            .current_url()
            .await
            .expect("url")
            .as_str()
            .ends_with("/console/login"),
        "not signed in: sent to the sign-in form"
    );
    sign_in(&browser, "a-wrong-token-of-enough-length").await;
    assert_eq!(text(&browser, "refused").await, "Wrong console token.");
    let page = browser.source().await.expect("source");
    assert!(
        !page.contains("Recent rides"),
        "nothing shown after a wrong token"
    );

    browser
        .goto(&format!("{console}/login"))
        .await
        .expect("opens");
    sign_in(&browser, TOKEN).await;
    // Wait for the console itself before reading where the browser is.
    text(&browser, "keys-started").await;
    assert!(
        browser
            .current_url()
            .await
            .expect("url")
            .as_str()
            .ends_with("/console")
    );

    // The numbers match the database.
    for (id, sql) in [
        (
            "keys-ride_created",
            "SELECT count(*) FROM idempotency_keys WHERE recovery_point = 'ride_created'",
        ),
        (
            "keys-started",
            "SELECT count(*) FROM idempotency_keys WHERE recovery_point = 'started'",
        ),
        (
            "keys-awaiting-review",
            "SELECT count(*) FROM idempotency_keys WHERE recovery_point = 'ride_created' AND charge_attempted_at IS NOT NULL",
        ),
        ("backlog-jobs", "SELECT count(*) FROM staged_jobs"),
        (
            "answers-201",
            "SELECT count(*) FROM idempotency_keys WHERE response_code = 201",
        ),
        (
            "answers-402",
            "SELECT count(*) FROM idempotency_keys WHERE response_code = 402",
        ),
        (
            "answers-unfinished",
            "SELECT count(*) FROM idempotency_keys WHERE response_code IS NULL",
        ),
    ] {
        assert_eq!(text(&browser, id).await, count(&pool, sql).await, "#{id}");
    }
    assert_eq!(text(&browser, "keys-awaiting-review").await, "1");
    assert_eq!(text(&browser, "answers-201").await, "3");
    let rides = browser
        .find(Locator::Id("rides"))
        .await
        .expect("rides")
        .text()
        .await
        .expect("text");
    for n in [1, 2, 3, 5] {
        assert!(
            rides.contains(&format!("console-test-ride-{n}")),
            "request id {n}: {rides}"
        );
    }
    let row = text(&browser, &format!("review-{review_key}")).await;
    assert!(row.contains("succeeded"), "Stripe's answer shown: {row}");
    let screenshot = browser.screenshot().await.expect("screenshot");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/console.png");
    std::fs::write(path, screenshot).expect("screenshot saved");

    // Settle the review key from the page.
    browser
        .find(Locator::Id(&format!("settle-{review_key}")))
        .await
        .expect("settle button")
        .click()
        .await
        .expect("clicked");
    let flash = text(&browser, "flash").await;
    assert_eq!(
        flash,
        format!("Key {review_key} settled from Stripe's records: 201.")
    );
    assert_eq!(
        text(&browser, "review-empty").await,
        "No key awaits review."
    );
    let (point, code, charge): (String, Option<i32>, Option<String>) = sqlx::query_as(
        "SELECT k.recovery_point, k.response_code, r.stripe_charge_id FROM idempotency_keys k \
         JOIN rides r ON r.idempotency_key_id = k.id WHERE k.id = $1",
    )
    .bind(review_key)
    .fetch_one(&pool)
    .await
    .expect("the key");
    assert_eq!((point.as_str(), code), ("finished", Some(201)));
    let charges: Vec<String> = clean
        .charges()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        charge.is_some_and(|c| charges.contains(&c)),
        "booked with the charge Stripe holds"
    );
    assert_eq!(charges.len(), 4, "settling charged nothing");
    assert_eq!(text(&browser, "answers-201").await, "4");
    browser.close().await.expect("closed");
}
