//! Every way a request can fail, and the one status each maps to. Internal
//! causes are logged here and never shown to the client.

use std::time::Duration;

use application::ports::StoreError;
use application::{AuthError, PhaseError, WebhookError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{IdempotencyKeyError, Problem, ProblemKind, RideParamsError};
use tracing::error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Authorization header is required")]
    AuthMissing,
    #[error("the Authorization header does not name a known user")]
    AuthUnknown,
    #[error("{0}")]
    Key(#[from] IdempotencyKeyError),
    #[error("send exactly one Idempotency-Key header")]
    KeyRepeated,
    #[error("the body must be application/x-www-form-urlencoded or application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {} bytes", super::MAX_BODY_BYTES)]
    BodyTooLarge,
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("the body could not be read")]
    BodyUnreadable,
    #[error("the server is busy")]
    Overloaded,
    #[error("a handler panicked")]
    Panicked,
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    Params(#[from] RideParamsError),
    #[error("unknown field {0}")]
    UnknownField(String),
    #[error("{0} is given more than once")]
    RepeatedField(String),
    #[error("raise_error must be true or false")]
    BadRaiseError,
    #[error("{0}")]
    CancelReason(String),
    #[error("{0}")]
    Phases(#[from] PhaseError),
    #[error("no such ride")]
    RideNotFound,
    #[error("{0}")]
    Webhook(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the store is unreachable")]
    StoreUnreachable,
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
    /// Set by `bins` from configuration; how long a 503 asks clients to wait.
    #[error("payment processor unavailable")]
    GatewayUnknown { retry_after: Duration },
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Signature(error) => ApiError::Webhook(error.to_string()),
            WebhookError::NotAnEvent(error) => ApiError::Webhook(error.to_string()),
            WebhookError::Store(error) => ApiError::Store(error),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing => ApiError::AuthMissing,
            AuthError::Unknown => ApiError::AuthUnknown,
            AuthError::Store(error) => ApiError::Store(error),
        }
    }
}

pub const DEFAULT_GATEWAY_RETRY_AFTER: Duration = Duration::from_secs(2);

/// How long a client should wait after the store was unavailable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(2);

const RETRY_SAME_KEY: &str = "Retry the request with the same Idempotency-Key.";

impl ApiError {
    /// The problem this error answers with, and its `Retry-After`.
    fn problem(&self) -> (Problem, Option<Duration>) {
        use ApiError::*;
        let plain = |kind| (Problem::new(kind, self.to_string()), None);
        match self {
            AuthMissing | AuthUnknown => plain(ProblemKind::Unauthorized),
            Key(_) | KeyRepeated => plain(ProblemKind::InvalidIdempotencyKey),
            UnsupportedMediaType => plain(ProblemKind::UnsupportedMediaType),
            BodyTooLarge => plain(ProblemKind::BodyTooLarge),
            BodyTimeout => plain(ProblemKind::BodyTimeout),
            BodyUnreadable => plain(ProblemKind::BodyUnreadable),
            Overloaded => (
                Problem::new(
                    ProblemKind::Overloaded,
                    format!("The server is at its limit of requests in progress. {RETRY_SAME_KEY}"),
                ),
                Some(Duration::from_secs(1)),
            ),
            Panicked => {
                error!("a handler panicked");
                Self::internal_problem()
            }
            MalformedBody(_) | Params(_) | UnknownField(_) | RepeatedField(_) | BadRaiseError => {
                plain(ProblemKind::InvalidRideParameters)
            }
            CancelReason(_) => plain(ProblemKind::InvalidCancelReason),
            RideNotFound | RouteNotFound => plain(ProblemKind::NotFound),
            Webhook(_) => plain(ProblemKind::InvalidWebhook),
            MethodNotAllowed => plain(ProblemKind::MethodNotAllowed),
            StoreUnreachable => (
                Problem::new(ProblemKind::NotReady, self.to_string()),
                Some(Duration::from_secs(1)),
            ),
            GatewayUnknown { retry_after } => (
                Problem::new(
                    ProblemKind::PaymentProcessorUnavailable,
                    format!(
                        "The payment processor did not answer definitively; the charge may or may not exist. {RETRY_SAME_KEY}"
                    ),
                ),
                Some(*retry_after),
            ),
            Phases(error) => Self::create_ride_problem(error),
            Store(error) => Self::internal(error),
        }
    }

    fn create_ride_problem(error: &PhaseError) -> (Problem, Option<Duration>) {
        match error {
            PhaseError::KeyReused => (
                Problem::new(
                    ProblemKind::IdempotencyKeyReused,
                    "This Idempotency-Key was already used with a different request (body, method or path). Use a new key for a new request.",
                ),
                None,
            ),
            PhaseError::InFlight { retry_after } => Self::in_flight(format!(
                "its lock expires within {} s at the latest",
                retry_after.as_secs().max(1)
            )),
            PhaseError::Store(StoreError::LostLock(_)) => {
                Self::in_flight("another attempt took it over".to_owned())
            }
            PhaseError::GatewayUnknown { .. } => ApiError::GatewayUnknown {
                retry_after: DEFAULT_GATEWAY_RETRY_AFTER,
            }
            .problem(),
            PhaseError::NeedsReview => (
                Problem::new(
                    ProblemKind::NeedsReview,
                    "The charge for this request was first attempted too long ago to retry safely; it has been set aside for review by support.",
                ),
                None,
            ),
            PhaseError::Simulated => (
                Problem::new(
                    ProblemKind::InternalError,
                    format!(
                        "Simulated failure in the charge phase (raise_error). {RETRY_SAME_KEY}"
                    ),
                ),
                None,
            ),
            PhaseError::RideNotFound => ApiError::RideNotFound.problem(),
            PhaseError::PaymentInProgress { retry_after } => (
                Problem::new(
                    ProblemKind::PaymentInProgress,
                    "This ride's booking is still being charged; it can be cancelled once its payment is settled. Retry with the same Idempotency-Key after Retry-After.",
                ),
                Some(*retry_after),
            ),
            PhaseError::Panicked(message) => {
                error!(%message, "a phase panicked; its key was released");
                Self::internal_problem()
            }
            PhaseError::Store(error) => Self::internal(error),
        }
    }

    /// 409: a client should retry soon; the lock holder is usually done in
    /// milliseconds, and the lock timeout bounds the wait if it crashed.
    fn in_flight(why: String) -> (Problem, Option<Duration>) {
        (
            Problem::new(
                ProblemKind::RequestInFlight,
                format!(
                    "A request with this Idempotency-Key is being processed ({why}). Retry shortly with the same key."
                ),
            ),
            Some(Duration::from_secs(1)),
        )
    }

    /// Turns a use-case error into the API's, with the configured `Retry-After`.
    pub fn from_create_ride(error: PhaseError, gateway_retry_after: Duration) -> Self {
        match error {
            PhaseError::GatewayUnknown { .. } => ApiError::GatewayUnknown {
                retry_after: gateway_retry_after,
            },
            other => ApiError::Phases(other),
        }
    }

    /// A store that cannot answer right now (Postgres restarting, the pool
    /// exhausted) is worth a retry with the same key: 503 + `Retry-After`.
    /// Anything else inside is a 500.
    fn internal(error: &StoreError) -> (Problem, Option<Duration>) {
        if let StoreError::Unavailable(cause) = error {
            tracing::warn!(error = %format!("{cause:#}"), "store unavailable");
            return (
                Problem::new(
                    ProblemKind::StoreUnavailable,
                    format!("The service cannot reach its database right now. {RETRY_SAME_KEY}"),
                ),
                Some(STORE_RETRY_AFTER),
            );
        }
        error!(%error, "internal error");
        Self::internal_problem()
    }

    fn internal_problem() -> (Problem, Option<Duration>) {
        (
            Problem::new(
                ProblemKind::InternalError,
                format!("An internal error stopped the request. {RETRY_SAME_KEY}"),
            ),
            None,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (problem, retry_after) = self.problem();
        let status =
            StatusCode::from_u16(problem.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            problem.body(),
        )
            .into_response();
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openapi::{ANY_ROUTE, OPERATION_PROBLEMS};

    /// Fails to compile when a variant is added and not listed below.
    fn listed(error: &ApiError) {
        use ApiError::*;
        match error {
            AuthMissing
            | AuthUnknown
            | Key(_)
            | KeyRepeated
            | UnsupportedMediaType
            | BodyTooLarge
            | BodyTimeout
            | BodyUnreadable
            | Overloaded
            | Panicked
            | MalformedBody(_)
            | Params(_)
            | UnknownField(_)
            | RepeatedField(_)
            | BadRaiseError
            | CancelReason(_)
            | Phases(_)
            | RideNotFound
            | Webhook(_)
            | RouteNotFound
            | MethodNotAllowed
            | StoreUnreachable
            | Store(_)
            | GatewayUnknown { .. } => {}
        }
    }

    fn every_error() -> Vec<ApiError> {
        use ApiError::*;
        let store = || StoreError::Unavailable(anyhow::anyhow!("down"));
        let create_ride = [
            PhaseError::KeyReused,
            PhaseError::InFlight {
                retry_after: Duration::from_secs(3),
            },
            PhaseError::GatewayUnknown { reason: "x".into() },
            PhaseError::NeedsReview,
            PhaseError::Simulated,
            PhaseError::RideNotFound,
            PhaseError::PaymentInProgress {
                retry_after: Duration::from_secs(5),
            },
            PhaseError::Panicked("x".into()),
            PhaseError::Store(StoreError::LostLock("x".into())),
            PhaseError::Store(StoreError::Inconsistent("x".into())),
            PhaseError::Store(store()),
        ];
        let mut errors = vec![
            AuthMissing,
            AuthUnknown,
            Key(IdempotencyKeyError::Missing),
            KeyRepeated,
            UnsupportedMediaType,
            BodyTooLarge,
            BodyTimeout,
            BodyUnreadable,
            Overloaded,
            Panicked,
            MalformedBody("x".into()),
            Params(RideParamsError::Missing(domain::RideParamsField::OriginLat)),
            UnknownField("x".into()),
            RepeatedField("x".into()),
            BadRaiseError,
            CancelReason("x".into()),
            RideNotFound,
            Webhook("x".into()),
            RouteNotFound,
            MethodNotAllowed,
            StoreUnreachable,
            Store(store()),
            Store(StoreError::Inconsistent("x".into())),
            GatewayUnknown {
                retry_after: Duration::from_secs(2),
            },
        ];
        errors.extend(create_ride.into_iter().map(Phases));
        errors
    }

    #[test]
    fn every_problem_is_sent_with_retry_after_exactly_when_its_kind_says_so() {
        for error in every_error() {
            listed(&error);
            let (problem, retry_after) = error.problem();
            assert_eq!(
                problem.kind.facts().retry_after,
                retry_after.is_some(),
                "{error:?}"
            );
        }
    }

    #[test]
    fn every_problem_kind_belongs_to_an_operation_or_to_every_route() {
        for kind in ProblemKind::ALL {
            let used = ANY_ROUTE.contains(&kind)
                || OPERATION_PROBLEMS
                    .iter()
                    .any(|(_, kinds)| kinds.contains(&kind));
            assert!(used, "`{}` is a kind no route answers", kind.slug());
        }
    }
}
