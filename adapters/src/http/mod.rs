//! The HTTP API (axum): parses requests into the application's types, calls
//! one use case, and maps each outcome to one status in `error.rs`.
//!
//! Checks run in SPEC.md's order, auth, then key, then body, and none of them
//! stores anything: the key phase is only reached by a request that parsed.

mod body;
pub mod console;
mod error;
mod extract;
mod health;
pub mod openapi;

mod server;

use std::sync::Arc;
use std::time::Duration;

use application::ports::Probe;
use application::{
    Answer, Authenticate, CancelRequest, PhaseMachine, ReceiveWebhook, RideRequest, ShowRide,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use domain::RideId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::{Instrument, Level};
use utoipa_axum::router::OpenApiRouter;

pub use body::MAX_BODY_BYTES;
pub use console::{Console, ConsoleSlot};
pub use error::{ApiError, DEFAULT_GATEWAY_RETRY_AFTER};
pub use extract::{AuthUser, CancelBody, ClientIp, IdempotencyKeyHeader, RideBody};
pub use health::{CachedProbe, ReadyStore, RenderMetrics, health_router, ops_router};
pub use server::{ServerLimits, serve, serve_router};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const REQUEST_ID: &str = "x-request-id";

/// A request's correlation id: the client's `X-Request-Id` when it is 1-128
/// visible ASCII characters, otherwise a new UUID. Every answer carries it,
/// every log line of the request names it, and the key it locks records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub const MAX_LEN: usize = 128;

    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let given = headers
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                (1..=Self::MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
            });
        Self(match given {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        })
    }
}

/// Gives the request its id (in its headers and extensions, for the trace
/// span and the handlers) and returns it on the answer, whatever it is.
async fn correlate(mut request: Request, next: Next) -> Response {
    let id = RequestId::of(request.headers());
    let value = HeaderValue::from_str(&id.0).expect("a request id is visible ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// The span every log line of a request is written in.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        request_id = %id,
    )
}

/// What the handlers need: the use cases, built by `bins`.
#[derive(Clone)]
pub struct ApiState {
    pub create_ride: Arc<PhaseMachine>,
    pub authenticate: Arc<Authenticate>,
    pub show_ride: Arc<ShowRide>,
    /// The store's probe, asked by `/readyz`.
    pub probe: Arc<dyn Probe>,
    /// `Retry-After` sent with a 503 when the gateway's answer was unknown.
    pub gateway_retry_after: Duration,
    /// Renders the process's metrics for `GET /metrics` (Prometheus text);
    /// `None` leaves the route out.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Timeouts and caps of the server; the router reads the request caps.
    pub limits: ServerLimits,
    /// `POST /webhooks/stripe`, when `STRIPE_WEBHOOK_SECRET` is set;
    /// `None` leaves the route out.
    pub webhook: Option<Arc<ReceiveWebhook>>,
    /// The keyed requests' phases, each in a task of its own that outlives
    /// a client who hangs up; shutdown waits for them (`serve`).
    pub detached: TaskTracker,
}

impl ApiState {
    /// The API over use cases its caller built (`bins/src/wiring.rs`), with
    /// the default limits, `Retry-After` and no `/metrics` route.
    pub fn new(
        create_ride: Arc<PhaseMachine>,
        authenticate: Arc<Authenticate>,
        show_ride: Arc<ShowRide>,
        probe: Arc<dyn Probe>,
    ) -> Self {
        Self {
            create_ride,
            authenticate,
            show_ride,
            probe,
            gateway_retry_after: DEFAULT_GATEWAY_RETRY_AFTER,
            metrics: None,
            limits: ServerLimits::DEFAULT,
            webhook: None,
            detached: TaskTracker::new(),
        }
    }
}

/// The largest webhook body taken: Stripe's events are a few KiB, far
/// more than a ride's form, far less than this.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// The public routes, each from its documented handler: the router and the
/// OpenAPI document are both built from this, so neither has a route the
/// other lacks.
fn routes(max_concurrent_requests: usize, webhook: bool) -> OpenApiRouter<ApiState> {
    // The ride routes run at most `max_concurrent_requests` at once; past
    // that a request is shed at once with 503 + Retry-After rather than
    // queued behind a pool it would only exhaust. Probes and metrics stay
    // outside the cap, so an overloaded API still answers its orchestrator.
    let admission = Admission(Arc::new(Semaphore::new(max_concurrent_requests)));
    let rides = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(create_ride))
        .routes(utoipa_axum::routes!(show_ride))
        .routes(utoipa_axum::routes!(cancel_ride))
        // One semaphore for every ride route.
        .route_layer(middleware::from_fn_with_state(admission, admit));
    let rides = if webhook {
        rides.merge(
            OpenApiRouter::new()
                .routes(utoipa_axum::routes!(stripe_webhook))
                .route_layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
    } else {
        rides
    };
    OpenApiRouter::new()
        .merge(rides)
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
        .routes(utoipa_axum::routes!(metrics))
        .routes(utoipa_axum::routes!(openapi_document))
}

/// The API's OpenAPI 3.1 document, as `/openapi.json` serves it.
pub fn openapi_json() -> &'static str {
    openapi::document_json(|| routes(1, true).split_for_parts().1)
}

pub fn router(state: ApiState) -> Router {
    let (routes, _) = routes(
        state.limits.max_concurrent_requests,
        state.webhook.is_some(),
    )
    .split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::WARN))
                .on_request(()),
        )
        // A handler that panics answers problem+json 500, not a dropped
        // connection. (`create_ride` catches its own, to release the key.)
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Panicked.into_response()
        }))
        // Outermost: every answer, a panic's and a shed request's included,
        // carries the request's id.
        .layer(middleware::from_fn(correlate))
        .with_state(state)
}

/// Books a ride and charges its card, exactly once per `Idempotency-Key`.
///
/// The work runs in atomic phases, each committing a recovery point; a
/// retry with the same key and body resumes where the last attempt
/// stopped, and once an answer is stored (201, 402, 502) every retry gets
/// it again.
#[utoipa::path(
    post,
    path = "/rides",
    operation_id = "createRide",
    tag = "rides",
    params(
        ("Authorization" = String, Header, description = "The rider: the demo's email (`AUTH_MODE=email`) or `Bearer <api key>` (`AUTH_MODE=api-key`)."),
        ("Idempotency-Key" = String, Header, description = "20 to 255 visible ASCII characters, new for each new ride, the same for every retry of one.", min_length = 20, max_length = 255),
        ("X-Request-Id" = Option<String>, Header, description = "Correlates the request's log lines; echoed on the answer."),
    ),
    request_body(
        content(
            (openapi::RideForm = "application/x-www-form-urlencoded"),
            (openapi::RideForm = "application/json"),
        ),
        description = "The ride's origin and target (at most 16 KiB).",
    ),
    responses(
        (status = 201, description = "The ride is booked and charged once. Stored: every retry with the key gets these bytes again.", body = domain::RideCreated,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key.")),
            example = json!({"message": "Ride booked and charged; enjoy the flight.", "ride": {"id": 1, "origin_lat": 0.0, "origin_lon": 0.0, "target_lat": 0.0, "target_lon": 0.0, "stripe_charge_id": "ch_3NxAbc", "stripe_payment_intent_id": "pi_3NxAbc", "status": "booked"}})),
        (status = 202, description = "The ride is reserved and Stripe is still processing its payment (`status: payment_pending`); a webhook or the completer's sync pass books or fails it. Stored: every retry gets these bytes again; `GET /rides/{id}` shows the status now.", body = domain::RideCreated,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key."))),
    )
)]
async fn create_ride(
    State(state): State<ApiState>,
    AuthUser(user): AuthUser,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    RequestId(request_id): RequestId,
    ClientIp(request_ip): ClientIp,
    admitted: Admitted,
    RideBody(fields): RideBody,
) -> Result<Response, ApiError> {
    let request = RideRequest {
        user,
        key,
        params: fields.params,
        request_ip,
        request_id: Some(request_id),
        raise_error: fields.raise_error,
    };
    let phases = state.create_ride.clone();
    in_own_task(&state, admitted, async move { phases.run(request).await }).await
}

/// The ride routes' cap on requests in progress: a permit per request,
/// held until its answer is written and, for a keyed request, until its
/// phases end (`in_own_task` keeps a share), so a client that sends and
/// hangs up still counts while its Stripe call runs.
#[derive(Clone)]
struct Admission(Arc<Semaphore>);

/// A request's share of its permit (`Admission`): held, never read.
#[derive(Clone)]
pub struct Admitted {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl<S: Send + Sync> FromRequestParts<S> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        // Every ride route is behind `admit`; a route that is not has no
        // cap to count in, which is a wiring bug.
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(ApiError::Panicked)
    }
}

/// Admits a ride request while the cap has room, else sheds it with 503 +
/// `Retry-After` at once.
async fn admit(State(admission): State<Admission>, mut request: Request, next: Next) -> Response {
    let Ok(permit) = admission.0.try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    request.extensions_mut().insert(Admitted {
        _permit: Arc::new(permit),
    });
    next.run(request).await
}

/// Runs a keyed request's phases in a task of their own: if the client goes
/// away, the handler is dropped with its connection, but the task goes on
/// to a recovery point and releases (or finishes) the key, so a retry gets
/// the outcome rather than a lock that waits for the lock timeout. The
/// task keeps the request's share of the cap until it ends, and shutdown
/// waits for it (`ApiState::detached`).
async fn in_own_task(
    state: &ApiState,
    admitted: Admitted,
    phases: impl Future<Output = Result<Answer, application::PhaseError>> + Send + 'static,
) -> Result<Response, ApiError> {
    let phases = async move {
        let answer = phases.await;
        drop(admitted);
        answer
    };
    let answer = state
        .detached
        .spawn(phases.in_current_span())
        .await
        .map_err(|_| ApiError::Panicked)?
        .map_err(|error| ApiError::from_create_ride(error, state.gateway_retry_after))?;
    Ok(stored_response(answer))
}

/// Cancels one of the rider's rides and gives back what the refund rule
/// says, exactly once per ride and once per `Idempotency-Key`.
///
/// A booked ride is refunded in full within `FREE_CANCEL_WINDOW` of its
/// booking, later less `CANCEL_FEE` (never below zero); a ride awaiting
/// authentication or pending has its PaymentIntent cancelled instead. The
/// work runs in phases with recovery points (`started`, `cancel_recorded`,
/// `refund_created`, `finished`), like a booking's; once an answer is
/// stored (200, 409, 502) every retry with the key gets it again. A key's
/// fingerprint covers the method and path: a key used to book cannot cancel.
#[utoipa::path(
    post,
    path = "/rides/{id}/cancel",
    operation_id = "cancelRide",
    tag = "rides",
    params(
        ("id" = i64, Path, description = "The ride's id."),
        ("Authorization" = String, Header, description = "The rider who booked it."),
        ("Idempotency-Key" = String, Header, description = "20 to 255 visible ASCII characters, new for each cancel, the same for every retry of one.", min_length = 20, max_length = 255),
        ("X-Request-Id" = Option<String>, Header, description = "Correlates the request's log lines; echoed on the answer."),
    ),
    request_body(
        content(
            (openapi::CancelForm = "application/x-www-form-urlencoded"),
            (openapi::CancelForm = "application/json"),
        ),
        description = "Optional: why the rider cancels (at most 500 characters).",
    ),
    responses(
        (status = 200, description = "The ride is cancelled (`status: cancelled`) and its refund made (or its PaymentIntent cancelled, refund amount 0). Stored: every retry with the key gets these bytes again.", body = domain::RideCancelled,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key.")),
            example = json!({"message": "Ride cancelled.", "ride": {"id": 1, "origin_lat": 0.0, "origin_lon": 0.0, "target_lat": 0.0, "target_lon": 0.0, "stripe_charge_id": "ch_3NxAbc", "stripe_payment_intent_id": "pi_3NxAbc", "status": "cancelled"}, "refund": {"id": "re_3NxAbc", "amount": 2000, "currency": "usd", "status": "succeeded"}})),
    )
)]
#[allow(clippy::too_many_arguments)] // one extractor per thing the handler needs, in SPEC's order
async fn cancel_ride(
    State(state): State<ApiState>,
    AuthUser(user): AuthUser,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Path(id): Path<String>,
    RequestId(request_id): RequestId,
    ClientIp(request_ip): ClientIp,
    admitted: Admitted,
    CancelBody(reason): CancelBody,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::RideNotFound)?;
    let request = CancelRequest {
        user,
        key,
        ride_id: RideId(id),
        reason,
        request_ip,
        request_id: Some(request_id),
    };
    let phases = state.create_ride.clone();
    in_own_task(
        &state,
        admitted,
        async move { phases.cancel(request).await },
    )
    .await
}

/// Stripe's events about PaymentIntents: a ride awaiting authentication
/// or pending becomes booked (its receipt staged) or failed.
///
/// The `Stripe-Signature` header is checked against the raw body with
/// every secret of `STRIPE_WEBHOOK_SECRET`, within
/// `STRIPE_WEBHOOK_TOLERANCE`. Each event id takes effect once; a ride's
/// status only moves forward, so repeats and late events change nothing.
/// Events of other types, and intents no ride carries, are answered 200
/// and stored nothing. Present only when `STRIPE_WEBHOOK_SECRET` is set.
#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    operation_id = "stripeWebhook",
    tag = "webhooks",
    params(
        ("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.\" + body>`[,v1=…]"),
    ),
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe sends it (at most 256 KiB)."),
    responses(
        (status = 200, description = "Received: applied, a duplicate, or an event or intent this service does not act on.", content_type = "application/json",
            example = json!({"received": true, "event": "evt_1", "result": "applied"})),
    )
)]
async fn stripe_webhook(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(webhook) = state.webhook.clone() else {
        return Err(ApiError::RouteNotFound);
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    let receipt = webhook.run(signature, &body).await?;
    let answer = serde_json::json!({
        "received": true,
        "event": receipt.event_id,
        "result": receipt.result(),
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response())
}

fn stored_response(answer: Answer) -> Response {
    let content_type = if answer.response.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let status =
        StatusCode::from_u16(answer.response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        Body::from(answer.response.body),
    )
        .into_response();
    if answer.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// One of the rider's own rides.
#[utoipa::path(
    get,
    path = "/rides/{id}",
    operation_id = "showRide",
    tag = "rides",
    params(
        ("id" = i64, Path, description = "The ride's id, as the 201 gave it."),
        ("Authorization" = String, Header, description = "The rider who booked it."),
    ),
    responses(
        (status = 200, description = "The ride and its status now; once it was cancelled, its refund (whose status is Stripe's latest).", body = domain::RideShown,
            example = json!({"id": 1, "origin_lat": 0.0, "origin_lon": 0.0, "target_lat": 0.0, "target_lon": 0.0, "stripe_charge_id": "ch_3NxAbc", "stripe_payment_intent_id": "pi_3NxAbc", "status": "cancelled", "refund": {"id": "re_3NxAbc", "amount": 2000, "currency": "usd", "status": "succeeded"}})),
    )
)]
async fn show_ride(
    State(state): State<ApiState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::RideNotFound)?;
    let ride = state
        .show_ride
        .run(&user, RideId(id))
        .await?
        .ok_or(ApiError::RideNotFound)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json_text(&ride),
    )
        .into_response())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "Alive.", body = openapi::Status, example = json!({"status": "ok"}))))]
async fn healthz() -> impl IntoResponse {
    json_status(StatusCode::OK, "ok")
}

/// Readiness: the process reaches its store.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, description = "Ready.", body = openapi::Status, example = json!({"status": "ready"}))))]
async fn readyz(State(state): State<ApiState>) -> Response {
    readiness(state.probe.as_ref()).await
}

/// `/readyz` for every process: ready while its store answers.
async fn readiness(store: &dyn Probe) -> Response {
    match store.ping().await {
        Ok(()) => json_status(StatusCode::OK, "ready"),
        Err(error) => {
            tracing::warn!(%error, "readiness check: store unreachable");
            ApiError::StoreUnreachable.into_response()
        }
    }
}

fn json_status(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json_text(&openapi::Status { status: text }),
    )
        .into_response()
}

/// One of our answer shapes as JSON text: strings, integers and finite
/// numbers only, so it cannot fail to serialize.
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// Prometheus metrics, when the process serves them on the API port (no
/// `METRICS_ADDR`); otherwise 404.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(render) => prometheus_text(render()),
        None => ApiError::RouteNotFound.into_response(),
    }
}

/// A metrics page as Prometheus scrapes it.
fn prometheus_text(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json")))]
async fn openapi_document() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
