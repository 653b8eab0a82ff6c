//! Stripe-shaped answers: its JSON errors (`resource_missing`,
//! `idempotency_key_in_use`, unknown routes), the API-key check, and JSON
//! responses.

use super::*;

pub(super) fn key_in_use() -> Response {
    let (status, body) = stripe_error(
        StatusCode::CONFLICT,
        "invalid_request_error",
        "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): please try again later.",
        Some("idempotency_key_in_use"),
    );
    json_response(status, &body)
}

/// Stripe's answer for an id it does not know.
pub(super) fn missing(object: &str, id: &str, param: &str) -> Response {
    let (status, mut body) = stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No such {object}: '{id}'"),
        Some("resource_missing"),
    );
    body["error"]["param"] = json!(param);
    json_response(status, &body)
}

/// Stripe's answer for a route it does not have.
pub(super) async fn unrecognized_url(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let (status, body) = stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!(
            "Unrecognized request URL ({method}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            uri.path()
        ),
        None,
    );
    json_response(status, &body)
}

pub(super) fn stripe_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    code: Option<&str>,
) -> (StatusCode, Value) {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    (status, json!({ "error": error }))
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key.starts_with("sk_"))
}

pub(super) fn unauthorized() -> Response {
    let (status, body) = stripe_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Invalid API Key provided; send `Authorization: Bearer sk_...`.",
        None,
    );
    json_response(status, &body)
}

pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
