//! The public API's OpenAPI 3.1 document, served at `/openapi.json`.
//!
//! Generated from the code: the routes, their parameters and success
//! answers from each handler's `#[utoipa::path]` (the router is built from
//! the same annotated handlers, so a route cannot exist undocumented), the
//! schemas from the answer types themselves (`domain::RideCreated`,
//! `domain::ProblemBody`, ...), and every problem answer from the one list
//! of kinds, `domain::ProblemKind`, with [`about`] each and
//! [`OPERATION_PROBLEMS`] saying which operation answers which. Each problem's
//! `type` URI points at its entry here: `/openapi.json#/components/responses/<slug>`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use domain::response::ProblemFacts;
use domain::{Problem, ProblemBody, ProblemKind, RideCreated, RideView};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr};

/// When a client sees a problem of this kind, and what it should do: the
/// document's words for each kind of `domain::ProblemKind` (its slug,
/// status, title, `Retry-After` and storage come from there).
pub fn about(kind: ProblemKind) -> &'static str {
    use ProblemKind::*;
    match kind {
        Unauthorized => {
            "No `Authorization` header, or it names no known user (the demo's email, or `Bearer <api key>`). Nothing was stored."
        }
        InvalidIdempotencyKey => {
            "The `Idempotency-Key` header is missing, repeated, shorter than 20 or longer than 255 characters, or not visible ASCII. Nothing was stored."
        }
        BodyUnreadable => "The body could not be read off the connection. Nothing was stored.",
        UnsupportedMediaType => {
            "The body is neither `application/x-www-form-urlencoded` nor `application/json`. Nothing was stored."
        }
        BodyTooLarge => "The body is larger than 16 KiB. Nothing was stored.",
        BodyTimeout => "The body did not arrive within `HTTP_BODY_TIMEOUT`. Nothing was stored.",
        InvalidRideParameters => {
            "A coordinate is missing, repeated, not a finite number or out of range, a field is unknown, or `raise_error` is not a boolean. Nothing was stored."
        }
        IdempotencyKeyReused => {
            "This key was used before for a different request (body, method or path). Use a new key for a new request."
        }
        RequestInFlight => {
            "Another request with this key is being processed. Retry with the same key after `Retry-After`."
        }
        CardDeclined => {
            "The card was declined; no charge was made. Retries with the key replay this answer."
        }
        AuthenticationRequired => {
            "The card's bank asks the rider to authenticate the payment (3-D Secure). The body carries the `ride` (status `awaiting_authentication`), the `payment_intent` id and its `client_secret`: confirm it on-session (Stripe.js `handleNextAction`); the ride becomes `booked` when Stripe reports it paid. Retries with the key replay this answer; `GET /rides/{id}` shows the ride's status now."
        }
        ChargeRefused => {
            "The payment processor refused the charge for good (for example, no usable card); no charge was made. Retries with the key replay this answer."
        }
        ChargeNotMade => {
            "The processor's answer was lost, and reconciliation found that no charge was made; the ride was not booked. Retries with the key replay this answer."
        }
        PaymentProcessorUnavailable => {
            "The payment processor did not answer definitively; the charge may or may not exist. Retry with the same key after `Retry-After`: it is never charged twice."
        }
        StoreUnavailable => {
            "The database cannot be reached right now. Retry with the same key after `Retry-After`."
        }
        Overloaded => {
            "The server is at its limit of requests in progress (`HTTP_MAX_CONCURRENT_REQUESTS`). Retry with the same key after `Retry-After`."
        }
        NeedsReview => {
            "The charge was first attempted too long ago to retry safely; it waits for reconciliation with the payment processor, after which retries with the key replay the outcome."
        }
        InternalError => {
            "An internal error (or `raise_error=true`) stopped the request before a charge outcome was stored. Retry with the same key."
        }
        NotFound => "No such ride for this user, or no such route.",
        MethodNotAllowed => "The route exists, but not with this method.",
        NotReady => "The process cannot reach its store yet.",
        InvalidWebhook => {
            "`POST /webhooks/stripe`: the `Stripe-Signature` header is missing or malformed, no `v1` signature matches the raw body for any of `STRIPE_WEBHOOK_SECRET`'s secrets, its timestamp is outside `STRIPE_WEBHOOK_TOLERANCE`, or the body is not a Stripe event. Nothing was stored."
        }
        InvalidCancelReason => {
            "`POST /rides/{id}/cancel`: the body is not a form or JSON object with at most a `reason` (a string of at most 500 characters). Nothing was stored."
        }
        RideAlreadyCancelled => {
            "The ride was already cancelled by a request with another key; nothing more was refunded. Retries with this key replay this answer; `GET /rides/{id}` shows the ride."
        }
        RideNotCancellable => {
            "The ride's payment failed, so there is nothing to cancel or refund. Retries with the key replay this answer."
        }
        PaymentInProgress => {
            "The ride's booking is still being charged. Retry with the same key after `Retry-After`; nothing was stored."
        }
        RefundRefused => {
            "The ride is cancelled, but the payment processor refused its refund for good (for example, the charge was already refunded); the ride is `refund_failed` and listed for review. Retries with the key replay this answer."
        }
        ReplicaUnavailable => {
            "The compose deployment's load balancer found no API replica able to answer. Retry with the same key after `Retry-After`."
        }
    }
}

/// The problems each operation can answer with, by operation id.
pub const OPERATION_PROBLEMS: &[(&str, &[ProblemKind])] = {
    use ProblemKind::*;
    &[
        (
            "createRide",
            &[
                Unauthorized,
                InvalidIdempotencyKey,
                BodyUnreadable,
                UnsupportedMediaType,
                BodyTooLarge,
                BodyTimeout,
                InvalidRideParameters,
                IdempotencyKeyReused,
                RequestInFlight,
                CardDeclined,
                AuthenticationRequired,
                ChargeRefused,
                ChargeNotMade,
                PaymentProcessorUnavailable,
                StoreUnavailable,
                Overloaded,
                NeedsReview,
                InternalError,
            ],
        ),
        (
            "cancelRide",
            &[
                Unauthorized,
                InvalidIdempotencyKey,
                BodyUnreadable,
                UnsupportedMediaType,
                BodyTooLarge,
                BodyTimeout,
                InvalidCancelReason,
                IdempotencyKeyReused,
                RequestInFlight,
                NotFound,
                RideAlreadyCancelled,
                RideNotCancellable,
                PaymentInProgress,
                RefundRefused,
                PaymentProcessorUnavailable,
                StoreUnavailable,
                Overloaded,
                NeedsReview,
                InternalError,
            ],
        ),
        (
            "showRide",
            &[
                Unauthorized,
                NotFound,
                StoreUnavailable,
                Overloaded,
                InternalError,
            ],
        ),
        (
            "stripeWebhook",
            &[
                InvalidWebhook,
                BodyTooLarge,
                StoreUnavailable,
                Overloaded,
                InternalError,
            ],
        ),
        ("readyz", &[NotReady]),
        ("metrics", &[NotFound]),
    ]
};

/// Problems any request can meet, whatever its route: an unknown route, a
/// method the route lacks, a handler that panicked, and the compose
/// deployment's load balancer finding no replica
/// (`deploy/haproxy/unavailable.http`).
pub const ANY_ROUTE: &[ProblemKind] = &[
    ProblemKind::NotFound,
    ProblemKind::MethodNotAllowed,
    ProblemKind::InternalError,
    ProblemKind::ReplicaUnavailable,
];

/// `POST /rides`: the ride's coordinates, as a form (the seed's curl) or JSON.
#[derive(ToSchema)]
#[schema(example = json!({"origin_lat": 0.0, "origin_lon": 0.0, "target_lat": 0.0, "target_lon": 0.0}))]
#[allow(dead_code)]
pub struct RideForm {
    /// Degrees, -90 to 90.
    #[schema(minimum = -90.0, maximum = 90.0)]
    origin_lat: f64,
    /// Degrees, -180 to 180.
    #[schema(minimum = -180.0, maximum = 180.0)]
    origin_lon: f64,
    #[schema(minimum = -90.0, maximum = 90.0)]
    target_lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    target_lon: f64,
    /// The simulator's switch: fail the charge phase with an internal error
    /// (500, the key left for a retry). Not part of the request's identity.
    raise_error: Option<bool>,
}

/// `POST /rides/{id}/cancel`: optionally, why; as a form or JSON.
#[derive(ToSchema)]
#[schema(example = json!({"reason": "plans changed"}))]
#[allow(dead_code)]
pub struct CancelForm {
    /// At most 500 characters; part of the request's identity.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// `{"status": "ok"}` and friends: what the probes answer.
#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

fn example_body(kind: ProblemKind) -> Value {
    serde_json::to_value(Problem::body_of(kind, about(kind))).unwrap_or(Value::Null)
}

fn seconds_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .description(Some(description))
        .build()
}

fn replayed_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true"])),
        )
        .description(Some(
            "`true` when this is the stored answer of an earlier request with the same key.",
        ))
        .build()
}

fn request_id_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "The request's `X-Request-Id` (the client's when it sent 1-128 visible ASCII characters, else a new UUID); every log line of the request names it.",
        ))
        .build()
}

/// The problem responses, one per status, for an operation that can answer
/// with `kinds`; each names its problem types and shows one example each.
fn problem_responses(kinds: &[ProblemKind]) -> BTreeMap<u16, ResponseBuilder> {
    let mut by_status: BTreeMap<u16, Vec<ProblemFacts>> = BTreeMap::new();
    for kind in kinds {
        by_status
            .entry(kind.status())
            .or_default()
            .push(kind.facts());
    }
    by_status
        .into_iter()
        .map(|(status, docs)| {
            let description = kinds
                .iter()
                .filter(|kind| kind.status() == status)
                .map(|kind| format!("`{}`: {}", kind.slug(), about(*kind)))
                .collect::<Vec<_>>()
                .join("\n\n");
            let examples = kinds
                .iter()
                .filter(|kind| kind.status() == status)
                .map(|kind| {
                    (
                        kind.slug(),
                        ExampleBuilder::new()
                            .summary(kind.title())
                            .value(Some(example_body(*kind))),
                    )
                });
            let mut response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .examples_from_iter(examples)
                        .build(),
                )
                .header("X-Request-Id", request_id_header());
            if docs.iter().any(|doc| doc.retry_after) {
                response = response.header(
                    "Retry-After",
                    seconds_header("Seconds to wait before retrying with the same key."),
                );
            }
            if docs.iter().any(|doc| doc.stored) {
                response = response.header("Idempotent-Replayed", replayed_header());
            }
            (status, response)
        })
        .collect()
}

/// Adds the problem answers to `api`'s operations and components.
fn add_problems(api: &mut OpenApi) {
    for path_item in api.paths.paths.values_mut() {
        let operations = [
            path_item.get.as_mut(),
            path_item.post.as_mut(),
            path_item.put.as_mut(),
            path_item.delete.as_mut(),
            path_item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let id = operation.operation_id.clone().unwrap_or_default();
            let kinds = OPERATION_PROBLEMS
                .iter()
                .find(|(operation, _)| *operation == id)
                .map_or(&[][..], |(_, kinds)| *kinds);
            for (status, response) in problem_responses(kinds) {
                operation
                    .responses
                    .responses
                    .insert(status.to_string(), RefOr::T(response.build()));
            }
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .entry("X-Request-Id".to_owned())
                        .or_insert_with(request_id_header);
                }
            }
        }
    }
    let mut components = api.components.take().unwrap_or_default();
    for kind in ProblemKind::ALL {
        let doc = kind.facts();
        let mut response = ResponseBuilder::new()
            .description(format!("{} ({}). {}", doc.title, doc.status, about(kind)))
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .example(Some(example_body(kind)))
                    .build(),
            );
        if doc.retry_after {
            response = response.header(
                "Retry-After",
                seconds_header("Seconds to wait before retrying."),
            );
        }
        components
            .responses
            .insert(doc.slug.to_owned(), RefOr::T(response.build()));
    }
    api.components = Some(
        ComponentsBuilder::from(components)
            .schema_from::<ProblemBody>()
            .schema_from::<RideForm>()
            .schema_from::<RideView>()
            .schema_from::<RideCreated>()
            .schema_from::<Status>()
            .build(),
    );
}

/// The finished document for the routes in `api` (from the router).
pub fn finish(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("Rocket Rides")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Book a ride and charge its card exactly once, however often the request is retried. \
             Every `POST /rides` carries an `Idempotency-Key`: a retry with the same key and the same \
             body resumes the first attempt where it stopped, and gets the stored answer once there \
             is one (`Idempotent-Replayed: true`). Errors are RFC 9457 problem documents whose `type` \
             points at their entry under `components/responses`. Any route may also answer \
             `not-found` (404, an unknown route), `method-not-allowed` (405) or `internal-error` (500).",
        ))
        .build();
    add_problems(&mut api);
    api
}

/// The document as served (built once).
pub fn document_json(api: impl FnOnce() -> OpenApi) -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        finish(api())
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}
