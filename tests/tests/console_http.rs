//! The console's guards over plain HTTP, on the in-memory adapters: 503
//! until the process is connected, no page without the token (a redirect
//! to sign in, 401 for a wrong one, in the form or as a bearer), a form
//! without the console's own value is refused (403) and changes nothing,
//! the sign-in cookie is HttpOnly and SameSite=Strict, and the page escapes
//! what it shows. The browser test (`bins/tests/console.rs`) covers the
//! page itself on Postgres.

use std::sync::Arc;
use std::time::Duration;

use adapters::clock::ManualClock;
use adapters::http::{Console, ConsoleSlot, ReadyStore, ops_router};
use adapters::memory::{FakeGateway, MemoryStore};
use application::ports::{Clock, Outbox};
use application::{CreateRide, CreateRideSettings, ReconcileKeys, RideRequest, SeedDemoUsers};
use domain::{IdempotencyKey, LockPolicy, ReconcilePolicy, ReviewPolicy, RideParams};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

const TOKEN: &str = "a-console-token-for-tests";

struct Running {
    base: String,
    slot: ConsoleSlot,
    store: Arc<MemoryStore>,
    create_ride: Arc<CreateRide>,
    user: domain::User,
    http: reqwest::Client,
}

async fn running() -> Running {
    let slot = ConsoleSlot::default();
    let router = ops_router(ReadyStore::default(), None, Some(slot.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let store = Arc::new(MemoryStore::new());
    let gateway = Arc::new(FakeGateway::new());
    let seeded = SeedDemoUsers::new(store.clone(), gateway.clone())
        .run(None)
        .await
        .expect("seeded");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_epoch_plus(1_700_000_000));
    let settings = CreateRideSettings {
        lock: LockPolicy {
            lock_timeout: Duration::from_secs(90),
        },
        review: ReviewPolicy {
            review_after: Duration::from_secs(3600),
        },
    };
    let create_ride = Arc::new(CreateRide::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        settings,
    ));
    let console = Console {
        token: TOKEN.to_owned(),
        reconcile: ReconcileKeys::new(
            store.clone(),
            store.clone(),
            gateway,
            clock.clone(),
            create_ride.clone(),
            settings.review,
            ReconcilePolicy {
                lock: settings.lock,
                search_lag: Duration::from_secs(60),
            },
        ),
        keys: store.clone(),
        outbox: store.clone(),
        dashboard: store.clone(),
        nats: Arc::default(),
        nats_configured: false,
        clock,
        review: settings.review,
        refresh: Duration::from_secs(5),
    };
    let running = Running {
        base,
        slot,
        store,
        create_ride,
        user: seeded[0].user.clone(),
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("client"),
    };
    // Not connected yet: the console says so.
    let early = running.get("/console", None).await;
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(running.slot.set(Arc::new(console)).is_ok());
    running
}

impl Running {
    async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("answered")
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        request.send().await.expect("answered")
    }
}

#[tokio::test]
async fn no_page_without_the_token_and_no_action_from_a_foreign_form() {
    let c = running().await;
    let anonymous = c.get("/console", None).await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.headers()["location"].to_str().expect("ascii"),
        "/console/login"
    );
    assert_eq!(
        c.get("/console", Some("wrong-token-wrong-token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong = c
        .post(
            "/console/login",
            None,
            &[("token", "wrong-token-wrong-token")],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong
            .text()
            .await
            .expect("body")
            .contains("Wrong console token.")
    );

    let signed_in = c.post("/console/login", None, &[("token", TOKEN)]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("pair").to_owned();

    // A ride whose request id needs escaping on the page.
    let answer = c
        .create_ride
        .run(RideRequest {
            user: c.user.clone(),
            key: IdempotencyKey::parse("console-http-key-000001").expect("valid"),
            params: RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid"),
            request_ip: None,
            request_id: Some("<script>alert(1)</script>".to_owned()),
            raise_error: false,
        })
        .await
        .expect("booked");
    assert_eq!(answer.response.status, 201);
    let page = c
        .http
        .get(format!("{}/console", c.base))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.expect("body");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped"
    );
    assert!(!html.contains("<script>alert(1)"), "never raw");
    assert!(html.contains("<td id=\"answers-201\">1</td>"), "{html}");
    assert!(
        html.contains("<span id=\"backlog-jobs\">1</span>"),
        "{html}"
    );

    // The right cookie but not the console's form value: refused, nothing done.
    let jobs_before = c.store.staged_jobs(10).await.expect("jobs").len();
    let forged = c
        .post(
            "/console/dead-letters/requeue",
            Some(&cookie),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let forged = c
        .post(
            "/console/review/1/settle",
            Some(&cookie),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        c.store.staged_jobs(10).await.expect("jobs").len(),
        jobs_before
    );
    // And no cookie at all: sent to sign in, nothing done.
    let anonymous = c
        .post("/console/review/1/settle", None, &[("csrf", "x")])
        .await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
}
