//! The operator's console: one server-rendered page on the process's
//! metrics/admin address (`METRICS_ADDR`), behind a token (`CONSOLE_TOKEN`),
//! refreshing itself every few seconds. It shows unfinished keys by
//! recovery point, the keys awaiting review with what Stripe holds for each
//! (and a button that settles the ones Stripe answers for), the staged-job
//! backlog, the dead letters (with requeue, where the process has NATS),
//! the recent rides with their request ids, and the last hour's keys by
//! the answer stored for them.
//!
//! Sign-in: `POST /console/login` with the token sets an HttpOnly,
//! SameSite=Strict cookie; scripts may send `Authorization: Bearer
//! <token>` instead. Every form carries a token derived from it (a second
//! guard against cross-site posts). Tokens are compared in constant time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use application::ports::{Clock, Dashboard, DeadLetters, KeyViews, Outbox};
use application::{KeyFinding, ReconcileKeys, Settlement};
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{ApiKeyHash, KeyId, Reconciliation, ReviewPolicy};
use serde::Deserialize;
use tokio::sync::OnceCell;

const COOKIE: &str = "rocket_rides_console";
/// Most rows of each list.
const ROWS: usize = 50;
/// How long the page shows what Stripe answered for a key before asking
/// again (settling always asks afresh).
const FINDINGS_TTL: Duration = Duration::from_secs(30);

/// What Stripe answered for each key awaiting review the page shows: an
/// open console refreshes every few seconds, and must not send Stripe a
/// search per key on each refresh. Kept per key while its `last_run_at`
/// is unchanged, for `FINDINGS_TTL`.
#[derive(Default)]
pub struct FindingsCache(Mutex<HashMap<KeyId, (Instant, KeyFinding)>>);

impl FindingsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, (Instant, KeyFinding)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the console reads and acts through; set once the process is connected.
pub struct Console {
    pub token: String,
    pub reconcile: ReconcileKeys,
    pub keys: Arc<dyn KeyViews>,
    pub outbox: Arc<dyn Outbox>,
    pub dashboard: Arc<dyn Dashboard>,
    /// The dead letters, once this process is connected to its queue.
    pub dead_letters: Arc<OnceCell<Arc<dyn DeadLetters>>>,
    /// Whether this process's queue keeps dead letters at all (NATS does,
    /// the in-memory queue does not).
    pub keeps_dead_letters: bool,
    pub clock: Arc<dyn Clock>,
    pub review: ReviewPolicy,
    pub refresh: Duration,
    pub findings: FindingsCache,
}

/// Filled in once the process has its store; until then the console
/// answers 503.
pub type ConsoleSlot = Arc<OnceCell<Arc<Console>>>;

pub fn console_router(slot: ConsoleSlot) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/review/{id}/settle", post(settle))
        .route("/console/dead-letters/requeue", post(requeue))
        .with_state(slot)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (ApiKeyHash::of(a), ApiKeyHash::of(b));
    a.as_str()
        .bytes()
        .zip(b.as_str().bytes())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

impl Console {
    /// The keys awaiting review with Stripe's answer, from the cache where
    /// it is fresh for the key as it is now.
    async fn review_findings(&self, now: SystemTime) -> anyhow::Result<Vec<KeyFinding>> {
        let records = self
            .keys
            .keys_for_review(self.review.attempted_before(now), ROWS)
            .await?;
        let mut findings = Vec::with_capacity(records.len());
        for record in records {
            let cached = self
                .findings
                .lock()
                .get(&record.id)
                .and_then(|(at, finding)| {
                    (at.elapsed() < FINDINGS_TTL && finding.record == record)
                        .then(|| finding.clone())
                });
            let finding = match cached {
                Some(finding) => finding,
                None => {
                    let finding = self.reconcile.examine_key(record).await?;
                    let entry = (Instant::now(), finding.clone());
                    self.findings.lock().insert(finding.record.id, entry);
                    finding
                }
            };
            findings.push(finding);
        }
        let shown: std::collections::HashSet<KeyId> =
            findings.iter().map(|f| f.record.id).collect();
        self.findings.lock().retain(|id, _| shown.contains(id));
        Ok(findings)
    }

    fn csrf(&self) -> String {
        ApiKeyHash::of(&format!("console-form:{}", self.token))
            .as_str()
            .to_owned()
    }

    /// The token the request carries, in the cookie or as a bearer.
    fn signed_in(&self, headers: &HeaderMap) -> Option<bool> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")));
        bearer
            .or(cookie)
            .map(|given| constant_time_eq(given, &self.token))
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, refresh: Option<Duration>, body: &str) -> String {
    let refresh = refresh
        .map(|every| {
            format!(
                "<meta http-equiv=\"refresh\" content=\"{}\">",
                every.as_secs().max(1)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330}}\
         table{{border-collapse:collapse;margin:.4rem 0 1.2rem}}td,th{{border:1px solid #ccd;padding:.25rem .6rem;text-align:left}}td{{overflow-wrap:anywhere}}\
         th{{background:#eef}}h2{{margin-top:1.4rem}}.flash{{background:#efe;border:1px solid #9c9;padding:.4rem}}\
         .error{{background:#fee;border:1px solid #c99;padding:.4rem}}.muted{{color:#667}}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    )
}

/// Not ready, or not signed in: the answer, else the console.
async fn console_for(slot: &ConsoleSlot, headers: &HeaderMap) -> Result<Arc<Console>, Response> {
    let Some(console) = slot.get().cloned() else {
        return Err(html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout("Console", None, "<p>The process is not connected yet.</p>"),
        ));
    };
    match console.signed_in(headers) {
        Some(true) => Ok(console),
        Some(false) => Err(html(
            StatusCode::UNAUTHORIZED,
            layout(
                "Console: wrong token",
                None,
                "<p class=\"error\" id=\"refused\">Wrong console token.</p><p><a href=\"/console/login\">Sign in again</a></p>",
            ),
        )),
        None => Err(Redirect::to("/console/login").into_response()),
    }
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let message = match message {
        "" => String::new(),
        text => format!("<p class=\"error\" id=\"refused\">{}</p>", escape(text)),
    };
    html(
        status,
        layout(
            "Console: sign in",
            None,
            &format!(
                "<h1>Rocket Rides console</h1>{message}\
                 <form method=\"post\" action=\"/console/login\">\
                 <label>Console token <input type=\"password\" name=\"token\" id=\"token\" autofocus></label> \
                 <button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
            ),
        ),
    )
}

async fn login_form(State(slot): State<ConsoleSlot>) -> Response {
    if slot.get().is_none() {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout("Console", None, "<p>The process is not connected yet.</p>"),
        );
    }
    login_page(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(slot): State<ConsoleSlot>, Form(form): Form<LoginForm>) -> Response {
    let Some(console) = slot.get() else {
        return login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The process is not connected yet.",
        );
    };
    if !constant_time_eq(&form.token, &console.token) {
        tracing::warn!("console: sign-in with a wrong token refused");
        return login_page(StatusCode::UNAUTHORIZED, "Wrong console token.");
    }
    let mut response = Redirect::to("/console").into_response();
    let cookie = format!(
        "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict",
        console.token
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "rocket_rides_console=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict",
        ),
    );
    response
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

/// The refusal of a form that did not come from the console, if it did not.
fn foreign_form(console: &Console, form: &Csrf) -> Option<Response> {
    if constant_time_eq(&form.csrf, &console.csrf()) {
        return None;
    }
    Some(html(
        StatusCode::FORBIDDEN,
        layout(
            "Console",
            None,
            "<p class=\"error\">This form did not come from the console.</p>",
        ),
    ))
}

/// The console for a form post: signed in, and the form is its own.
async fn console_for_form(
    slot: &ConsoleSlot,
    headers: &HeaderMap,
    form: &Csrf,
) -> Result<Arc<Console>, Response> {
    let console = console_for(slot, headers).await?;
    match foreign_form(&console, form) {
        Some(refused) => Err(refused),
        None => Ok(console),
    }
}

fn back_with(message: &str) -> Response {
    let query = serde_urlencoded::to_string([("flash", message)]).unwrap_or_default();
    Redirect::to(&format!("/console?{query}")).into_response()
}

async fn settle(
    State(slot): State<ConsoleSlot>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Csrf>,
) -> Response {
    let console = match console_for_form(&slot, &headers, &form).await {
        Ok(console) => console,
        Err(response) => return response,
    };
    let message = match console.reconcile.settle(KeyId(id)).await {
        Ok(Settlement::Settled { status }) => {
            tracing::info!(key_id = id, status, "console: key settled from Stripe");
            format!("Key {id} settled from Stripe's records: {status}.")
        }
        Ok(Settlement::Left { reason }) => format!("Key {id} left for review: {reason}"),
        Ok(Settlement::Skipped) => {
            format!("Key {id} was not settled: a request holds it, or it no longer awaits review.")
        }
        Err(error) => {
            tracing::warn!(key_id = id, %error, "console: settling failed");
            format!("Key {id} was not settled: {error}")
        }
    };
    back_with(&message)
}

async fn requeue(
    State(slot): State<ConsoleSlot>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    let console = match console_for_form(&slot, &headers, &form).await {
        Ok(console) => console,
        Err(response) => return response,
    };
    let message = match console.dead_letters.get() {
        None => "No dead-letter stream in this process.".to_owned(),
        Some(dead_letters) => match dead_letters.requeue_dead_jobs(ROWS).await {
            Ok(jobs) => format!("{} dead job(s) requeued.", jobs.len()),
            Err(error) => format!("Requeue failed: {error:#}"),
        },
    };
    back_with(&message)
}

fn ago(now: SystemTime, at: SystemTime) -> String {
    let seconds = now.duration_since(at).unwrap_or_default().as_secs();
    match seconds {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

async fn page(
    State(slot): State<ConsoleSlot>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let console = match console_for(&slot, &headers).await {
        Ok(console) => console,
        Err(response) => return response,
    };
    match render(&console, query.get("flash").map(String::as_str)).await {
        Ok(body) => html(
            StatusCode::OK,
            layout("Rocket Rides console", Some(console.refresh), &body),
        ),
        Err(error) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout(
                "Console",
                Some(console.refresh),
                &format!(
                    "<p class=\"error\">The store did not answer: {}</p>",
                    escape(&error.to_string())
                ),
            ),
        ),
    }
}

async fn render(console: &Console, flash: Option<&str>) -> anyhow::Result<String> {
    let now = console.clock.now();
    let csrf = console.csrf();
    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "<h1>Rocket Rides console</h1><p class=\"muted\">As of {} (refreshes every {} s). \
         <form method=\"post\" action=\"/console/logout\" style=\"display:inline\"><button>Sign out</button></form></p>",
        humantime::format_rfc3339_seconds(now),
        console.refresh.as_secs().max(1)
    )?;
    if let Some(flash) = flash {
        writeln!(w, "<p class=\"flash\" id=\"flash\">{}</p>", escape(flash))?;
    }

    let counts = console
        .keys
        .unfinished_counts(console.review.attempted_before(now))
        .await?;
    writeln!(
        w,
        "<h2>Unfinished keys by recovery point</h2><table id=\"recovery-points\"><tr><th>recovery point</th><th>keys</th></tr>"
    )?;
    for point in ["started", "ride_created", "charge_created"] {
        let n = counts
            .by_recovery_point
            .iter()
            .find(|(p, _)| p.as_str() == point)
            .map_or(0, |(_, n)| *n);
        writeln!(
            w,
            "<tr><td>{point}</td><td id=\"keys-{point}\">{n}</td></tr>"
        )?;
    }
    writeln!(
        w,
        "<tr><td>awaiting review</td><td id=\"keys-awaiting-review\">{}</td></tr></table>",
        counts.awaiting_review
    )?;

    let findings = console.review_findings(now).await?;
    writeln!(w, "<h2>Keys awaiting review</h2>")?;
    if findings.is_empty() {
        writeln!(w, "<p id=\"review-empty\">No key awaits review.</p>")?;
    } else {
        writeln!(
            w,
            "<table id=\"review\"><tr><th>key</th><th>user</th><th>Idempotency-Key</th><th>first charge attempt</th><th>Stripe holds</th><th>decision</th><th></th></tr>"
        )?;
        for finding in &findings {
            let key = &finding.record;
            let (decision, can_settle) = match &finding.verdict {
                Reconciliation::Charged { charge_id } => (format!("book with {charge_id}"), true),
                Reconciliation::NotCharged => ("end without a charge".to_owned(), true),
                Reconciliation::Undecided { reason } => (format!("undecided: {reason}"), false),
            };
            let button = if can_settle {
                format!(
                    "<form method=\"post\" action=\"/console/review/{id}/settle\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" id=\"settle-{id}\">Settle from Stripe</button></form>",
                    id = key.id
                )
            } else {
                String::new()
            };
            writeln!(
                w,
                "<tr id=\"review-{id}\"><td>{id}</td><td>{user}</td><td>{key_text}</td><td>{attempt}</td><td>{stripe}</td><td>{decision}</td><td>{button}</td></tr>",
                id = key.id,
                user = key.user_id,
                key_text = escape(key.key.as_str()),
                attempt = key
                    .unrecorded_charge_attempt()
                    .map(|at| ago(now, at))
                    .unwrap_or_default(),
                stripe = escape(&finding.search.to_string()),
                decision = escape(&decision),
            )?;
        }
        writeln!(w, "</table>")?;
    }

    let backlog = console.outbox.backlog(now).await?;
    writeln!(
        w,
        "<h2>Staged jobs</h2><p><span id=\"backlog-jobs\">{}</span> staged, the oldest waiting <span id=\"backlog-age\">{}</span> s.</p>",
        backlog.jobs,
        backlog.oldest_age.as_secs()
    )?;
    let staged = console.outbox.staged_jobs(ROWS).await?;
    if !staged.is_empty() {
        writeln!(
            w,
            "<table id=\"staged\"><tr><th>job</th><th>ride</th><th>user</th></tr>"
        )?;
        for job in &staged {
            writeln!(
                w,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                job.id, job.job.ride_id, job.job.user_id
            )?;
        }
        writeln!(w, "</table>")?;
    }

    writeln!(w, "<h2>Dead letters</h2>")?;
    match (console.dead_letters.get(), console.keeps_dead_letters) {
        (Some(dead_letters), _) => {
            let dead = dead_letters.dead_jobs(ROWS).await?;
            writeln!(
                w,
                "<p><span id=\"dead-letters\">{}</span> dead job(s).</p>",
                dead.len()
            )?;
            if !dead.is_empty() {
                writeln!(
                    w,
                    "<table id=\"dead\"><tr><th>sequence</th><th>job</th><th>ride</th><th>reason</th></tr>"
                )?;
                for job in &dead {
                    writeln!(
                        w,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        job.sequence,
                        job.job.id,
                        job.job.job.ride_id,
                        escape(&job.reason)
                    )?;
                }
                writeln!(
                    w,
                    "</table><form method=\"post\" action=\"/console/dead-letters/requeue\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" id=\"requeue\">Requeue them</button></form>"
                )?;
            }
        }
        (None, true) => writeln!(w, "<p>Not connected to NATS yet.</p>")?,
        (None, false) => writeln!(w, "<p>The in-memory queue keeps no dead letters.</p>")?,
    }

    let rides = console.dashboard.recent_rides(ROWS).await?;
    writeln!(
        w,
        "<h2>Recent rides</h2><table id=\"rides\"><tr><th>ride</th><th>user</th><th>answer</th><th>charge</th><th>request id</th><th>requested</th></tr>"
    )?;
    for recent in &rides {
        writeln!(
            w,
            "<tr id=\"ride-{id}\"><td>{id}</td><td>{user}</td><td>{status}</td><td>{charge}</td><td class=\"request-id\">{request}</td><td>{at}</td></tr>",
            id = recent.ride.id,
            user = recent.ride.user_id,
            status = recent
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unfinished".into()),
            charge = escape(recent.ride.stripe_charge_id.as_deref().unwrap_or("")),
            request = escape(recent.request_id.as_deref().unwrap_or("")),
            at = recent
                .requested_at
                .map(|at| ago(now, at))
                .unwrap_or_default(),
        )?;
    }
    writeln!(w, "</table>")?;

    let since = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let answers = console.dashboard.answers_since(since).await?;
    writeln!(
        w,
        "<h2>The last hour's keys by stored answer</h2><table id=\"answers\"><tr><th>answer</th><th>keys</th></tr>"
    )?;
    for (status, n) in &answers {
        let label = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unfinished".into());
        writeln!(
            w,
            "<tr><td>{label}</td><td id=\"answers-{label}\">{n}</td></tr>"
        )?;
    }
    writeln!(w, "</table>")?;
    Ok(out)
}
