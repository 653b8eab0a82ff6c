//! Reading a `POST /rides` body: form-encoded (the seed's curl) or JSON,
//! capped in size, into parsed ride parameters. Every problem is a 4xx that
//! names the field.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use domain::{MAX_CANCEL_REASON_CHARS, RideParams, RideParamsError, RideParamsField};
use http_body_util::BodyExt as _;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::error::ApiError;

/// Bodies larger than this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

const RAISE_ERROR: &str = "raise_error";

pub struct RideFields {
    pub params: RideParams,
    pub raise_error: bool,
}

enum Format {
    Form,
    Json,
}

fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // curl -d without a type, and plain clients: treat as a form.
        return Ok(Format::Form);
    };
    let text = value.to_str().map_err(|_| ApiError::UnsupportedMediaType)?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(Format::Form),
        "application/json" => Ok(Format::Json),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The body's bytes and format, within the timeout and the size cap.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    read_timeout: Duration,
) -> Result<(Format, Vec<u8>), ApiError> {
    let format = format(headers)?;
    let bytes = tokio::time::timeout(read_timeout, read_capped(body))
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
    Ok((format, bytes))
}

const REASON: &str = "reason";

/// A `POST /rides/{id}/cancel` body: empty, or a form or JSON object with
/// at most a `reason` (a string of at most `MAX_CANCEL_REASON_CHARS`
/// characters; JSON `null` is no reason). Anything else is 422
/// `invalid-cancel-reason` (413, 415 and 408 as for a ride's body).
pub async fn read_cancel_body(
    headers: &HeaderMap,
    body: Body,
    read_timeout: Duration,
) -> Result<Option<String>, ApiError> {
    let (format, bytes) = read_body(headers, body, read_timeout).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let fields: Vec<(String, Option<String>)> = match format {
        Format::Form => form_fields(&bytes)
            .map_err(|e| ApiError::CancelReason(e.to_string()))?
            .into_iter()
            .map(|(name, value)| (name, Some(value)))
            .collect(),
        Format::Json => {
            let Members(members) = serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::CancelReason("the JSON body must be an object".to_owned())
            })?;
            members
                .into_iter()
                .map(|(name, value)| match value {
                    Value::String(text) => Ok((name, Some(text))),
                    Value::Null => Ok((name, None)),
                    _ => Err(ApiError::CancelReason(format!("{name} must be a string"))),
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut reason = None;
    for (index, (name, value)) in fields.into_iter().enumerate() {
        if name != REASON {
            return Err(ApiError::CancelReason(format!(
                "unknown field {name}: a cancel takes only a reason"
            )));
        }
        if index > 0 {
            return Err(ApiError::CancelReason(
                "reason is given more than once".to_owned(),
            ));
        }
        reason = value;
    }
    if let Some(text) = &reason {
        let chars = text.chars().count();
        if chars > MAX_CANCEL_REASON_CHARS {
            return Err(ApiError::CancelReason(format!(
                "the reason may be at most {MAX_CANCEL_REASON_CHARS} characters, it has {chars}"
            )));
        }
    }
    Ok(reason)
}

pub async fn read_ride_body(
    headers: &HeaderMap,
    body: Body,
    read_timeout: Duration,
) -> Result<RideFields, ApiError> {
    let (format, bytes) = read_body(headers, body, read_timeout).await?;
    let fields = match format {
        Format::Form => form_fields(&bytes)?,
        Format::Json => json_fields(&bytes)?,
    };
    let mut known = HashMap::new();
    for (name, value) in fields {
        let is_known = name == RAISE_ERROR || RideParamsField::ALL.iter().any(|f| f.name() == name);
        if !is_known {
            return Err(ApiError::UnknownField(name));
        }
        if known.insert(name.clone(), value).is_some() {
            return Err(ApiError::RepeatedField(name));
        }
    }
    let params = RideParams::parse(|field| known.get(field.name()).map(String::as_str))?;
    let raise_error = match known.get(RAISE_ERROR).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRaiseError),
    };
    Ok(RideFields {
        params,
        raise_error,
    })
}

/// Reads at most `MAX_BODY_BYTES`. A larger body is read on (and dropped)
/// up to `DRAIN_BYTES`, so a client still sending it reads our 413 rather
/// than a connection reset in the middle of its upload.
async fn read_capped(mut body: Body) -> Result<Vec<u8>, ApiError> {
    const DRAIN_BYTES: usize = 1024 * 1024;
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BodyUnreadable)?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY_BYTES {
                bytes.extend_from_slice(&data);
            } else if seen > DRAIN_BYTES {
                break;
            }
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge);
    }
    Ok(bytes)
}

fn form_fields(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes).map_err(|error| {
        ApiError::MalformedBody(format!("the form body could not be read: {error}"))
    })
}

/// JSON numbers are taken as written (so 1e2 stays 100), strings as a form
/// value would be, booleans for `raise_error`. A null, array or object where
/// a coordinate belongs is "not a number" for that field.
fn json_fields(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let Members(members) = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::MalformedBody(match error.classify() {
            serde_json::error::Category::Data => "the JSON body must be an object".to_owned(),
            _ => format!("the JSON body could not be read: {error}"),
        })
    })?;
    members
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::Number(number) => number.to_string(),
                Value::String(text) => text,
                Value::Bool(flag) => flag.to_string(),
                Value::Null | Value::Array(_) | Value::Object(_) => {
                    if name == RAISE_ERROR {
                        return Err(ApiError::BadRaiseError);
                    }
                    return Err(
                        match RideParamsField::ALL.iter().find(|f| f.name() == name) {
                            Some(field) => ApiError::Params(RideParamsError::NotANumber(*field)),
                            None => ApiError::UnknownField(name),
                        },
                    );
                }
            };
            Ok((name, text))
        })
        .collect()
}

/// A JSON object's members in order, repeats kept: `serde_json::Value`
/// would keep only the last of a repeated member, and a repeated field must
/// be a 422 in JSON as it is in a form.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Members;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}
