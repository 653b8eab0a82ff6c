//! The operator's console: one server-rendered page on the process's
//! metrics/admin address (`METRICS_ADDR`), behind a token (`CONSOLE_TOKEN`),
//! refreshing itself every few seconds. It shows unfinished keys by
//! recovery point, the keys awaiting review with what Stripe holds for each
//! (and a button that settles the ones Stripe answers for), the staged-job
//! backlog, the dead letters (with requeue, where the process has NATS),
//! the recent rides with their request ids, and the last hour's keys by
//! the answer stored for them.
//!
//! Sign-in: `POST /console/login` with the token opens a session (a random
//! id in an HttpOnly, SameSite=Strict cookie, `Secure` with
//! `CONSOLE_SECURE_COOKIE`, ending after `CONSOLE_SESSION_TTL` or at
//! sign-out); scripts may send `Authorization: Bearer <token>` instead.
//! Every form carries the session's own random value (a second guard
//! against cross-site posts). Tokens are compared in constant time. Every
//! answer forbids framing and any script or resource from elsewhere.

mod auth;
mod findings;
mod view;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use application::ports::{Clock, Dashboard, DeadLetters, KeyViews, Outbox, RidePayments};
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

pub use auth::{ConsoleAccess, Sessions, SignInLimiter};
use auth::{FormConsole, SignedIn, console_for, constant_time_eq, too_many_tries};
pub use findings::FindingsCache;
use view::{back_with, escape, html, layout, login_page, render};

/// Most rows of each list.
const ROWS: usize = 50;

/// What the console reads and acts through; set once the process is connected.
pub struct Console {
    /// The token and how long a sign-in lasts.
    pub access: ConsoleAccess,
    /// The sessions signed in.
    pub sessions: Sessions,
    pub reconcile: ReconcileKeys,
    pub keys: Arc<dyn KeyViews>,
    pub outbox: Arc<dyn Outbox>,
    pub dashboard: Arc<dyn Dashboard>,
    /// Rides waiting on the rider's authentication or on Stripe.
    pub payments: Arc<dyn RidePayments>,
    /// The dead letters, once this process is connected to its queue.
    pub dead_letters: Arc<OnceCell<Arc<dyn DeadLetters>>>,
    /// Whether this process's queue keeps dead letters at all (NATS does,
    /// the in-memory queue does not).
    pub keeps_dead_letters: bool,
    pub clock: Arc<dyn Clock>,
    pub review: ReviewPolicy,
    pub refresh: Duration,
    pub findings: FindingsCache,
    /// Wrong tokens lately, to refuse guessing.
    pub sign_ins: SignInLimiter,
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
        .route("/console/dead-letters/{sequence}/delete", post(delete_dead))
        .layer(axum::middleware::map_response(guarded))
        .with_state(slot)
}

/// What every console answer tells the browser: never inside a frame, no
/// script at all, styles only its own inline sheet, forms only to itself,
/// no referrer, no guessing of types, no caching.
async fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
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
    if let Some(wait) = console.sign_ins.wait() {
        return too_many_tries(wait);
    }
    if !constant_time_eq(&form.token, &console.access.token) {
        tracing::warn!("console: sign-in with a wrong token refused");
        console.sign_ins.failed();
        return login_page(StatusCode::UNAUTHORIZED, "Wrong console token.");
    }
    let mut response = Redirect::to("/console").into_response();
    match HeaderValue::from_str(&console.open_session()) {
        Ok(value) => {
            tracing::info!("console: signed in");
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => login_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No session could be opened.",
        ),
    }
}

/// Ends the session (the server forgets it: the cookie, if kept, no longer
/// signs anyone in) and clears the cookie.
async fn logout(headers: HeaderMap, FormConsole(console): FormConsole) -> Response {
    let cleared = console.close_session(&headers);
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn settle(Path(id): Path<i64>, FormConsole(console): FormConsole) -> Response {
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

async fn requeue(FormConsole(console): FormConsole) -> Response {
    let message = match console.dead_letters.get() {
        None => "No dead-letter stream in this process.".to_owned(),
        Some(dead_letters) => match dead_letters.requeue_dead_jobs(ROWS).await {
            Ok(jobs) => format!("{} dead job(s) requeued.", jobs.len()),
            Err(error) => format!("Requeue failed: {error:#}"),
        },
    };
    back_with(&message)
}

async fn page(
    State(slot): State<ConsoleSlot>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (console, signed_in) = match console_for(&slot, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let form_value = match &signed_in {
        SignedIn::Session { form_value } => form_value.as_str(),
        // A bearer's forms need no guard.
        SignedIn::Bearer => "",
    };
    match render(&console, form_value, query.get("flash").map(String::as_str)).await {
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

async fn delete_dead(Path(sequence): Path<u64>, FormConsole(console): FormConsole) -> Response {
    let message = match console.dead_letters.get() {
        None => "No dead-letter stream in this process.".to_owned(),
        Some(dead_letters) => match dead_letters.delete_dead_job(sequence).await {
            Ok(true) => {
                tracing::info!(sequence, "console: dead letter deleted");
                format!("Dead letter {sequence} deleted.")
            }
            Ok(false) => format!("Dead letter {sequence} was not there."),
            Err(error) => format!("Deleting failed: {error:#}"),
        },
    };
    back_with(&message)
}
