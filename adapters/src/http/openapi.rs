//! The public API's OpenAPI 3.1 document, served at `/openapi.json`.
//!
//! Generated from the code: the routes, their parameters and success
//! answers from each handler's `#[utoipa::path]` (the router is built from
//! the same annotated handlers, so a route cannot exist undocumented), the
//! schemas from the types below, and every problem answer from
//! [`PROBLEMS`] and [`OPERATION_PROBLEMS`], the catalog `error.rs` and the
//! domain's stored answers are checked against (tests). Each problem's
//! `type` URI points at its entry here: `/openapi.json#/components/responses/<slug>`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use domain::Problem as DomainProblem;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr};

/// One kind of problem answer (RFC 9457): its `type` slug, status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemDoc {
    pub slug: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// When a client sees it, and what it should do.
    pub about: &'static str,
    /// Sent with `Retry-After` (seconds).
    pub retry_after: bool,
    /// Stored on the key and replayed to every retry (`Idempotent-Replayed`).
    pub stored: bool,
}

const fn problem(
    slug: &'static str,
    status: u16,
    title: &'static str,
    about: &'static str,
) -> ProblemDoc {
    ProblemDoc {
        slug,
        status,
        title,
        about,
        retry_after: false,
        stored: false,
    }
}

const fn retry(mut doc: ProblemDoc) -> ProblemDoc {
    doc.retry_after = true;
    doc
}

const fn stored(mut doc: ProblemDoc) -> ProblemDoc {
    doc.stored = true;
    doc
}

/// Every problem the API answers with.
pub const PROBLEMS: &[ProblemDoc] = &[
    problem(
        "unauthorized",
        401,
        "Unauthorized",
        "No `Authorization` header, or it names no known user (the demo's email, or `Bearer <api key>`). Nothing was stored.",
    ),
    problem(
        "invalid-idempotency-key",
        400,
        "Invalid Idempotency-Key",
        "The `Idempotency-Key` header is missing, repeated, shorter than 20 or longer than 255 characters, or not visible ASCII. Nothing was stored.",
    ),
    problem(
        "body-unreadable",
        400,
        "Body unreadable",
        "The body could not be read off the connection. Nothing was stored.",
    ),
    problem(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "The body is neither `application/x-www-form-urlencoded` nor `application/json`. Nothing was stored.",
    ),
    problem(
        "body-too-large",
        413,
        "Body too large",
        "The body is larger than 16 KiB. Nothing was stored.",
    ),
    problem(
        "body-timeout",
        408,
        "Request timeout",
        "The body did not arrive within `HTTP_BODY_TIMEOUT`. Nothing was stored.",
    ),
    problem(
        "invalid-ride-parameters",
        422,
        "Invalid ride parameters",
        "A coordinate is missing, repeated, not a finite number or out of range, a field is unknown, or `raise_error` is not a boolean. Nothing was stored.",
    ),
    problem(
        "idempotency-key-reused",
        422,
        "Idempotency-Key reused",
        "This key was used before for a different request (body, method or path). Use a new key for a new request.",
    ),
    retry(problem(
        "request-in-flight",
        409,
        "Request in flight",
        "Another request with this key is being processed. Retry with the same key after `Retry-After`.",
    )),
    stored(problem(
        "card-declined",
        402,
        "Card declined",
        "The card was declined; no charge was made. Retries with the key replay this answer.",
    )),
    stored(problem(
        "charge-refused",
        502,
        "Payment processor refused the charge",
        "The payment processor refused the charge for good (for example, no usable card); no charge was made. Retries with the key replay this answer.",
    )),
    stored(problem(
        "charge-not-made",
        502,
        "No charge was made",
        "The processor's answer was lost, and reconciliation found that no charge was made; the ride was not booked. Retries with the key replay this answer.",
    )),
    retry(problem(
        "payment-processor-unavailable",
        503,
        "Payment processor unavailable",
        "The payment processor did not answer definitively; the charge may or may not exist. Retry with the same key after `Retry-After`: it is never charged twice.",
    )),
    retry(problem(
        "store-unavailable",
        503,
        "Temporarily unavailable",
        "The database cannot be reached right now. Retry with the same key after `Retry-After`.",
    )),
    retry(problem(
        "overloaded",
        503,
        "Too many requests in progress",
        "The server is at its limit of requests in progress (`HTTP_MAX_CONCURRENT_REQUESTS`). Retry with the same key after `Retry-After`.",
    )),
    problem(
        "needs-review",
        500,
        "Needs review",
        "The charge was first attempted too long ago to retry safely; it waits for reconciliation with the payment processor, after which retries with the key replay the outcome.",
    ),
    problem(
        "internal-error",
        500,
        "Internal error",
        "An internal error (or `raise_error=true`) stopped the request before a charge outcome was stored. Retry with the same key.",
    ),
    problem(
        "not-found",
        404,
        "Not found",
        "No such ride for this user, or no such route.",
    ),
    problem(
        "method-not-allowed",
        405,
        "Method not allowed",
        "The route exists, but not with this method.",
    ),
    retry(problem(
        "not-ready",
        503,
        "Not ready",
        "The process cannot reach its store yet.",
    )),
];

/// The problems each operation can answer with, by operation id.
pub const OPERATION_PROBLEMS: &[(&str, &[&str])] = &[
    (
        "createRide",
        &[
            "unauthorized",
            "invalid-idempotency-key",
            "body-unreadable",
            "unsupported-media-type",
            "body-too-large",
            "body-timeout",
            "invalid-ride-parameters",
            "idempotency-key-reused",
            "request-in-flight",
            "card-declined",
            "charge-refused",
            "charge-not-made",
            "payment-processor-unavailable",
            "store-unavailable",
            "overloaded",
            "needs-review",
            "internal-error",
        ],
    ),
    (
        "showRide",
        &[
            "unauthorized",
            "not-found",
            "store-unavailable",
            "overloaded",
            "internal-error",
        ],
    ),
    ("readyz", &["not-ready"]),
    ("metrics", &["not-found"]),
];

/// Problems any request can meet, whatever its route: an unknown route, a
/// method the route lacks, a handler that panicked, and the compose
/// deployment's load balancer finding no replica
/// (`deploy/haproxy/unavailable.http`).
pub const ANY_ROUTE: &[&str] = &[
    "not-found",
    "method-not-allowed",
    "internal-error",
    "replica-unavailable",
];

/// Where a problem's `type` URI points: its entry in this document.
pub const PROBLEM_TYPE_BASE: &str = DomainProblem::TYPE_BASE;

pub fn problem_doc(slug: &str) -> Option<&'static ProblemDoc> {
    PROBLEMS.iter().find(|doc| doc.slug == slug)
}

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

/// A booked ride.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ride {
    id: i64,
    origin_lat: f64,
    origin_lon: f64,
    target_lat: f64,
    target_lon: f64,
    /// The Stripe charge, once the ride is charged.
    stripe_charge_id: Option<String>,
}

/// The 201 answer, stored and replayed byte for byte to every retry.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RideCreated {
    message: String,
    ride: Ride,
}

/// An RFC 9457 problem document (`application/problem+json`); `error`
/// repeats `detail` for clients of the original demo.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// `/openapi.json#/components/responses/<slug>`: this problem's entry here.
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    error: String,
}

/// `{"status": "ok"}` and friends.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Status {
    status: String,
}

fn example_body(doc: &ProblemDoc) -> Value {
    json!({
        "type": format!("{PROBLEM_TYPE_BASE}{}", doc.slug),
        "title": doc.title,
        "status": doc.status,
        "detail": doc.about,
        "error": doc.about,
    })
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
/// with `slugs`; each names its problem types and shows one example each.
fn problem_responses(slugs: &[&str]) -> BTreeMap<u16, ResponseBuilder> {
    let mut by_status: BTreeMap<u16, Vec<&ProblemDoc>> = BTreeMap::new();
    for slug in slugs {
        let doc =
            problem_doc(slug).unwrap_or_else(|| panic!("problem `{slug}` is not in PROBLEMS"));
        by_status.entry(doc.status).or_default().push(doc);
    }
    by_status
        .into_iter()
        .map(|(status, docs)| {
            let description = docs
                .iter()
                .map(|doc| format!("`{}`: {}", doc.slug, doc.about))
                .collect::<Vec<_>>()
                .join("\n\n");
            let examples = docs.iter().map(|doc| {
                (
                    doc.slug,
                    ExampleBuilder::new()
                        .summary(doc.title)
                        .value(Some(example_body(doc))),
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
            let slugs = OPERATION_PROBLEMS
                .iter()
                .find(|(operation, _)| *operation == id)
                .map_or(&[][..], |(_, slugs)| *slugs);
            for (status, response) in problem_responses(slugs) {
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
    for doc in PROBLEMS {
        let mut response = ResponseBuilder::new()
            .description(format!("{} ({}). {}", doc.title, doc.status, doc.about))
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .example(Some(example_body(doc)))
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
            .schema_from::<Problem>()
            .schema_from::<RideForm>()
            .schema_from::<Ride>()
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
