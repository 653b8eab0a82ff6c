//! The console's guards over plain HTTP, on the in-memory adapters: 503
//! until the process is connected, no page without the token (a redirect
//! to sign in, 401 for a wrong one, in the form or as a bearer), a form
//! without the console's own value is refused (403) and changes nothing,
//! the sign-in cookie is HttpOnly and SameSite=Strict, and the page escapes
//! what it shows. The browser test (`bins/tests/console.rs`) covers the
//! page itself on Postgres.

use application::ports::KeyViews;
use std::sync::Arc;
use std::time::Duration;

use adapters::clock::ManualClock;
use adapters::http::console::{ConsoleAccess, FindingsCache, Sessions, SignInLimiter};
use adapters::http::{Console, ConsoleSlot, ReadyStore, ops_router};
use adapters::memory::{FakeGateway, MemoryStore};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use application::ports::{Clock, GatewayError, Outbox, PaymentGateway};
use application::{PhaseMachine, PhaseSettings, ReconcileKeys, RideRequest, SeedDemoUsers};
use domain::{
    ChargeOutcome, ChargeRequest, ChargeSearch, IdempotencyKey, LockPolicy, ReconcilePolicy,
    ReviewPolicy, RideParams,
};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

const TOKEN: &str = "a-console-token-for-tests";

/// Charges through the fake (losing the answer when told to) and counts
/// the searches the console sends.
#[derive(Default)]
struct Counting {
    fake: FakeGateway,
    lose_answers: AtomicBool,
    searches: AtomicUsize,
}

#[async_trait::async_trait]
impl PaymentGateway for Counting {
    async fn create_customer(
        &self,
        email: &str,
        card: domain::TestCard,
    ) -> Result<application::ports::SavedCustomer, GatewayError> {
        self.fake.create_customer(email, card).await
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let outcome = self.fake.charge(request).await;
        match self.lose_answers.load(Ordering::SeqCst) {
            true => ChargeOutcome::Unknown {
                reason: "answer lost".into(),
            },
            false => outcome,
        }
    }

    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        self.searches.fetch_add(1, Ordering::SeqCst);
        self.fake.find_charges(downstream_key).await
    }

    async fn refund(&self, request: &domain::RefundRequest) -> domain::RefundOutcome {
        self.fake.refund(request).await
    }
}

struct Running {
    base: String,
    gateway: Arc<Counting>,
    clock: Arc<ManualClock>,
    slot: ConsoleSlot,
    store: Arc<MemoryStore>,
    create_ride: Arc<PhaseMachine>,
    user: domain::User,
    http: reqwest::Client,
    /// The console's dead letters, empty until a test sets them.
    dead_letters: Arc<tokio::sync::OnceCell<Arc<dyn application::ports::DeadLetters>>>,
}

async fn running() -> Running {
    running_with(ConsoleAccess {
        token: TOKEN.to_owned(),
        session_ttl: Duration::from_secs(8 * 3600),
        secure_cookie: false,
    })
    .await
}

async fn running_with(access: ConsoleAccess) -> Running {
    let slot = ConsoleSlot::default();
    let router = ops_router(ReadyStore::default(), None, Some(slot.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let store = Arc::new(MemoryStore::new());
    let gateway = Arc::new(Counting::default());
    let seeded = SeedDemoUsers::new(store.clone(), gateway.clone())
        .run(None)
        .await
        .expect("seeded");
    let manual = Arc::new(ManualClock::at_epoch_plus(1_700_000_000));
    let clock: Arc<dyn Clock> = manual.clone();
    let settings = PhaseSettings {
        lock: LockPolicy {
            lock_timeout: Duration::from_secs(90),
        },
        review: ReviewPolicy {
            review_after: Duration::from_secs(3600),
        },
        cancel: domain::CancelPolicy::DEFAULT,
    };
    let create_ride = Arc::new(PhaseMachine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        settings,
    ));
    let dead_letters: Arc<tokio::sync::OnceCell<Arc<dyn application::ports::DeadLetters>>> =
        Arc::default();
    let console = Console {
        access,
        sessions: Sessions::default(),
        reconcile: ReconcileKeys::new(
            store.clone(),
            store.clone(),
            gateway.clone(),
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
        payments: store.clone(),
        dead_letters: dead_letters.clone(),
        keeps_dead_letters: false,
        clock,
        review: settings.review,
        refresh: Duration::from_secs(5),
        findings: FindingsCache::default(),
        sign_ins: SignInLimiter::default(),
    };
    let running = Running {
        base,
        gateway,
        clock: manual,
        slot,
        store,
        create_ride,
        user: seeded[0].user.clone(),
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("client"),
        dead_letters,
    };
    // Not connected yet: the console says so.
    let early = running.get("/console", None).await;
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(running.slot.set(Arc::new(console)).is_ok());
    running
}

impl Running {
    /// The demo rider `email` books a ride under `key`, through the phase
    /// machine: the rider, and the answer.
    async fn book_as(&self, email: &str, key: &str) -> (domain::User, application::Answer) {
        use application::ports::Users as _;
        let user = self
            .store
            .find_user_by_email(email)
            .await
            .expect("read")
            .expect("seeded");
        let answer = self
            .create_ride
            .run(application::RideRequest {
                user: user.clone(),
                key: domain::IdempotencyKey::parse(key).expect("key"),
                params: domain::RideParams::from_numbers([0.0; 4]).expect("params"),
                request_ip: None,
                request_id: None,
                raise_error: false,
            })
            .await
            .expect("answered");
        (user, answer)
    }

    async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("Cookie", cookie)
            .send()
            .await
            .expect("answered")
    }

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
    let page = c.get_with_cookie("/console", &cookie).await;
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

#[tokio::test]
async fn an_open_console_asks_stripe_once_per_key_and_settling_asks_afresh() {
    let c = running().await;
    c.gateway.lose_answers.store(true, Ordering::SeqCst);
    let error = c
        .create_ride
        .run(RideRequest {
            user: c.user.clone(),
            key: IdempotencyKey::parse("console-http-review-0001").expect("valid"),
            params: RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid"),
            request_ip: None,
            request_id: None,
            raise_error: false,
        })
        .await
        .expect_err("the answer was lost");
    assert!(error.to_string().contains("answer lost"), "{error}");
    c.clock.advance(Duration::from_secs(3601));
    let id = c.store.keys()[0].id;

    let page = |()| async {
        let page = c.get("/console", Some(TOKEN)).await;
        assert_eq!(page.status(), StatusCode::OK);
        page.text().await.expect("body")
    };
    let first = page(()).await;
    let second = page(()).await;
    assert!(first.contains(&format!("id=\"review-{id}\"")), "{first}");
    assert!(second.contains("Settle from Stripe"), "{second}");
    assert_eq!(
        c.gateway.searches.load(Ordering::SeqCst),
        1,
        "one search for two refreshes"
    );

    let csrf = first
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's value")
        .to_owned();
    let settled = c
        .http
        .post(format!("{}/console/review/{id}/settle", c.base))
        .bearer_auth(TOKEN)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("answered");
    assert_eq!(settled.status(), StatusCode::SEE_OTHER);
    let location = settled.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.contains("settled"), "{location}");
    assert_eq!(
        c.gateway.searches.load(Ordering::SeqCst),
        2,
        "settling asked Stripe afresh"
    );
    let key = c.store.find_key(id).await.expect("read").expect("kept");
    assert_eq!(key.progress.response().map(|r| r.status), Some(201));
    assert!(page(()).await.contains("No key awaits review."));
}

/// Guessing the token gains nothing: past ten wrong tokens in a minute,
/// every token is refused with 429 (the right one too) until the window
/// passes, at sign-in and on a request alike.
#[tokio::test]
async fn wrong_tokens_are_limited_in_rate_and_then_every_token_waits() {
    let c = running().await;
    for n in 0..SignInLimiter::MAX_FAILURES {
        let guess = format!("guess-{n:0>20}");
        let wrong = if n % 2 == 0 {
            c.post("/console/login", None, &[("token", &guess)]).await
        } else {
            c.get("/console", Some(&guess)).await
        };
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "guess {n}");
    }
    let refused = c.post("/console/login", None, &[("token", TOKEN)]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("set-cookie").is_none());
    let seconds: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&seconds), "{seconds}");
    assert_eq!(
        c.get("/console", Some(TOKEN)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Without a token there is nothing to guess: the sign-in page.
    assert_eq!(
        c.get("/console", None).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// Dead letters as a queue would hold them: one job, one message that is
/// not a job.
struct TwoDeadLetters(std::sync::Mutex<Vec<application::ports::DeadJob>>);

#[async_trait::async_trait]
impl application::ports::DeadLetters for TwoDeadLetters {
    async fn dead_jobs(
        &self,
        _limit: usize,
    ) -> Result<Vec<application::ports::DeadJob>, application::ports::QueueError> {
        Ok(self.0.lock().expect("lock").clone())
    }

    async fn requeue_dead_jobs(
        &self,
        _limit: usize,
    ) -> Result<Vec<application::ports::DeadJob>, application::ports::QueueError> {
        Ok(Vec::new())
    }

    async fn delete_dead_job(&self, sequence: u64) -> Result<bool, application::ports::QueueError> {
        let mut letters = self.0.lock().expect("lock");
        let before = letters.len();
        letters.retain(|letter| letter.sequence != sequence);
        Ok(letters.len() < before)
    }

    async fn dead_job_count(&self) -> Result<u64, application::ports::QueueError> {
        Ok(self.0.lock().expect("lock").len() as u64)
    }
}

/// A dead letter that is not a job does not break the page: it is shown as
/// it is (escaped), beside the jobs, with a button that deletes it.
#[tokio::test]
async fn an_unreadable_dead_letter_is_shown_escaped_and_deleted_from_the_page() {
    use application::ports::DeadJob;
    let c = running().await;
    let job = domain::StagedJob {
        id: 7,
        job: domain::ReceiptJob {
            amount_cents: 2000,
            currency: "usd".to_owned(),
            user_id: c.user.id,
            ride_id: domain::RideId(3),
            kind: domain::ReceiptKind::Ride,
        },
    };
    let letters = Arc::new(TwoDeadLetters(std::sync::Mutex::new(vec![
        DeadJob {
            sequence: 1,
            job: Some(job),
            payload: String::new(),
            reason: "failed 8 times".to_owned(),
        },
        DeadJob {
            sequence: 2,
            job: None,
            payload: "<script>alert(1)</script>".to_owned(),
            reason: String::new(),
        },
    ])));
    assert!(c.dead_letters.set(letters.clone()).is_ok());
    let page = c.get("/console", Some(TOKEN)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.expect("body");
    assert!(
        page.contains("<span id=\"dead-letters\">2</span>"),
        "{page}"
    );
    assert!(
        page.contains("not a job: <code>&lt;script&gt;alert(1)&lt;/script&gt;</code>"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "escaped");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's value")
        .to_owned();
    let deleted = c
        .http
        .post(format!("{}/console/dead-letters/2/delete", c.base))
        .bearer_auth(TOKEN)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("answered");
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let left = letters.0.lock().expect("lock").clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence, 1);
}

#[tokio::test]
async fn rides_waiting_on_a_payment_are_listed_with_their_intent_until_settled() {
    let r = running().await;
    let (_, answer) = r
        .book_as("user-3ds@example.com", "console-3ds-key-000001")
        .await;
    assert_eq!(answer.response.status, 402);
    let body: serde_json::Value = serde_json::from_str(&answer.response.body).expect("json");
    let intent = body["payment_intent"].as_str().expect("intent").to_owned();
    let ride = body["ride"]["id"].as_i64().expect("ride");
    let page = r
        .get("/console", Some(TOKEN))
        .await
        .text()
        .await
        .expect("page");
    let row = format!(
        "<tr id=\"waiting-{ride}\"><td>{ride}</td><td>awaiting_authentication</td><td>{intent}</td></tr>"
    );
    assert!(page.contains(&row), "{page}");
    assert!(page.contains("<td>awaiting_authentication</td>"));
    // Settled (the sync pass's update): gone from the waiting list, booked
    // in the recent rides.
    use application::ports::RidePayments as _;
    r.store
        .apply_payment(
            &domain::PaymentUpdate {
                event_id: None,
                event_type: "sync".into(),
                payment_intent_id: intent,
                state: domain::PaymentIntentState::Succeeded { charge_id: None },
            },
            std::time::SystemTime::now(),
        )
        .await
        .expect("applied");
    let page = r
        .get("/console", Some(TOKEN))
        .await
        .text()
        .await
        .expect("page");
    assert!(!page.contains(&format!("waiting-{ride}")), "{page}");
    assert!(page.contains("<td>booked</td>"), "{page}");
}

#[tokio::test]
async fn rides_whose_refund_failed_are_listed_for_a_person() {
    use application::ports::{Keys as _, RidePayments as _};
    let r = running().await;
    let (rider, booked) = r
        .book_as("user@example.com", "console-refund-key-000001")
        .await;
    let body: serde_json::Value = serde_json::from_str(&booked.response.body).expect("json");
    let ride = domain::RideId(body["ride"]["id"].as_i64().expect("ride"));
    let cancelled = r
        .create_ride
        .cancel(application::CancelRequest {
            user: rider,
            key: domain::IdempotencyKey::parse("console-cancel-key-000001").expect("key"),
            ride_id: ride,
            reason: None,
            request_ip: None,
            request_id: None,
        })
        .await
        .expect("answered");
    assert_eq!(
        cancelled.response.status, 200,
        "{}",
        cancelled.response.body
    );
    let refund = r
        .store
        .find_cancellation(ride)
        .await
        .expect("read")
        .and_then(|c| c.refund)
        .expect("a refund")
        .refund_id;
    let before = r
        .get("/console", Some(TOKEN))
        .await
        .text()
        .await
        .expect("page");
    assert!(
        !before.contains(&format!("refund-failed-{ride}")),
        "{before}"
    );
    r.store
        .apply_refund(
            &domain::RefundUpdate {
                event_id: Some("evt_console_refund".into()),
                event_type: "charge.refund.updated".into(),
                refund_id: refund.clone(),
                status: domain::RefundStatus::Failed,
            },
            std::time::SystemTime::now(),
        )
        .await
        .expect("applied");
    let row = format!(
        "<tr id=\"refund-failed-{ride}\"><td>{ride}</td><td>{}</td><td>2000</td><td>{refund}</td></tr>",
        r.store
            .find_ride(ride)
            .await
            .expect("read")
            .expect("ride")
            .user_id
    );
    let shown = r
        .get("/console", Some(TOKEN))
        .await
        .text()
        .await
        .expect("page");
    assert!(shown.contains(&row), "{shown}");
}

/// Sign-in opens a session the server keeps: the cookie holds a random id,
/// never the token, and lasts `CONSOLE_SESSION_TTL`; each session has its
/// own form value; sign-out ends the session for good; every answer
/// forbids framing and scripts.
#[tokio::test]
async fn sign_in_opens_a_session_with_its_own_form_value_that_sign_out_ends() {
    let c = running().await;
    let (first, second) = (sign_in(&c).await, sign_in(&c).await);
    assert_ne!(first, second, "a session per sign-in");
    let (status, first_value) = console_page(&c, &first).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second_value) = console_page(&c, &second).await;
    let (first_value, second_value) = (
        first_value.expect("a form value"),
        second_value.expect("a form value"),
    );
    assert_ne!(first_value, second_value, "a form value per session");
    // One session's form value is no good with another's cookie.
    let crossed = c
        .post(
            "/console/dead-letters/requeue",
            Some(&second),
            &[("csrf", &first_value)],
        )
        .await;
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN);
    let own = c
        .post(
            "/console/dead-letters/requeue",
            Some(&second),
            &[("csrf", &second_value)],
        )
        .await;
    assert_eq!(own.status(), StatusCode::SEE_OTHER, "its own form value");
    // Sign-out ends the session at the server: the same cookie, replayed,
    // signs no one in. The other session goes on.
    let out = c
        .post("/console/logout", Some(&first), &[("csrf", &first_value)])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let (status, _) = console_page(&c, &first).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "sent to sign in again");
    let (status, _) = console_page(&c, &second).await;
    assert_eq!(status, StatusCode::OK);
    // The sign-in page is guarded the same way.
    let login = c.get("/console/login", None).await;
    assert_eq!(login.headers()["x-frame-options"], "DENY");
}

/// Signs in with the token: the session's cookie pair.
async fn sign_in(c: &Running) -> String {
    let signed_in = c.post("/console/login", None, &[("token", TOKEN)]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        !set.contains(TOKEN),
        "the token is never in the cookie: {set}"
    );
    assert!(set.contains("Max-Age=28800"), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    set.split(';').next().expect("pair").to_owned()
}

/// The console page with `cookie`: its status (checking the guard headers)
/// and the form value it carries.
async fn console_page(c: &Running, cookie: &str) -> (StatusCode, Option<String>) {
    let page = c.get_with_cookie("/console", cookie).await;
    let status = page.status();
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(page.headers()[name], value);
    }
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    let body = page.text().await.expect("body");
    let form_value = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned);
    (status, form_value)
}

/// A session ends at its time, and a token with characters a cookie could
/// not carry (`;`) signs in all the same (the cookie carries the session's
/// id, not the token); `CONSOLE_SECURE_COOKIE` marks the cookie `Secure`.
#[tokio::test]
async fn a_session_ends_at_its_time_and_any_visible_token_signs_in() {
    let token = "a;token,with=odd\"chars";
    let c = running_with(ConsoleAccess {
        token: token.to_owned(),
        session_ttl: Duration::ZERO,
        secure_cookie: true,
    })
    .await;
    let signed_in = c.post("/console/login", None, &[("token", token)]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set.contains("; Secure"), "{set}");
    let cookie = set.split(';').next().expect("pair").to_owned();
    // Its time is up at once: the cookie signs no one in.
    let page = c.get_with_cookie("/console", &cookie).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    // As a bearer, the same token works on each request.
    assert_eq!(
        c.get("/console", Some(token)).await.status(),
        StatusCode::OK
    );
}
