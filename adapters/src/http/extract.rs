//! The extractors of the HTTP edge: each parses one part of a request into
//! the application's types, or answers the one problem it maps to. A
//! handler's signature says what it needs, and axum runs the extractors in
//! argument order, which is SPEC.md's order of checks: the caller
//! (`AuthUser`), then the `Idempotency-Key`, then the body (`RideBody`,
//! last, since it consumes the request). None of them stores anything.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use domain::{IdempotencyKey, IdempotencyKeyError, User};

use super::body::{RideFields, read_ride_body};
use super::{ApiError, ApiState, IDEMPOTENCY_KEY, RequestId};

/// The caller, as `Authorization` names them (`AUTH_MODE`): 401 otherwise.
pub struct AuthUser(pub User);

impl FromRequestParts<ApiState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| ApiError::AuthUnknown)?),
        };
        Ok(Self(state.authenticate.user(header).await?))
    }
}

/// Exactly one `Idempotency-Key` header, parsed: 400 otherwise.
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let value = values
            .next()
            .ok_or(ApiError::Key(IdempotencyKeyError::Missing))?;
        if values.next().is_some() {
            return Err(ApiError::KeyRepeated);
        }
        let text = value
            .to_str()
            .map_err(|_| ApiError::Key(IdempotencyKeyError::NotVisibleAscii))?;
        Ok(Self(IdempotencyKey::parse(text)?))
    }
}

/// The request's correlation id, as the `correlate` middleware set it (a
/// router without it gives each request a new one).
impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<RequestId>() {
            Some(id) => id.clone(),
            None => RequestId::of(&parts.headers),
        })
    }
}

/// The client's address, for the audit record; `None` when the server was
/// not started with connection info (a router under test).
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip().to_string()),
        ))
    }
}

/// A `POST /rides` body, form or JSON, read within `HTTP_BODY_TIMEOUT` and
/// at most 16 KiB: 408, 413, 415 or 422 (naming the field) otherwise.
pub struct RideBody(pub RideFields);

impl FromRequest<ApiState> for RideBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let fields = read_ride_body(&parts.headers, body, state.limits.body_read_timeout).await?;
        Ok(Self(fields))
    }
}

/// A `POST /rides/{id}/cancel` body's reason, if any (`read_cancel_body`).
pub struct CancelBody(pub Option<String>);

impl FromRequest<ApiState> for CancelBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let reason =
            super::body::read_cancel_body(&parts.headers, body, state.limits.body_read_timeout)
                .await?;
        Ok(Self(reason))
    }
}
