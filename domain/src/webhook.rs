//! Stripe's webhook signatures: `Stripe-Signature: t=<unix time>,v1=<hex>…`,
//! valid when some `v1` equals HMAC-SHA256(secret, "<t>." + raw body) for
//! some endpoint secret (several during a rotation) and `t` is within the
//! tolerance of now. The comparison runs in constant time. Pure: the time
//! comes in as an argument; the HTTP adapter reads the header and the body.

use std::time::Duration;

use hmac::{Hmac, Mac};

use crate::cancel::RefundStatus;
use crate::payment::{PaymentIntentState, PaymentUpdate, RefundUpdate};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only scheme Stripe signs with today; other elements are ignored.
const SCHEME: &str = "v1";

/// Stripe's libraries' default, and SPEC's `STRIPE_WEBHOOK_TOLERANCE`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a webhook's signature was refused (each a 400; nothing is stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp (t=) or is not t=…,v1=…")]
    Malformed,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("the signature's timestamp is {seconds} s away from now, more than the tolerance")]
    Stale { seconds: u64 },
    #[error("no v1 signature matches the body for any endpoint secret")]
    Mismatch,
}

/// The endpoint secrets (`whsec_…`) a signature may be made with: more
/// than one while a secret is being rolled.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecrets(Vec<String>);

/// Secrets never show in a log line.
impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} secret(s), ***)", self.0.len())
    }
}

impl WebhookSecrets {
    /// From `STRIPE_WEBHOOK_SECRET`: comma-separated, blanks ignored, at
    /// least one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let secrets: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(str::to_owned)
            .collect();
        if secrets.is_empty() {
            return Err("STRIPE_WEBHOOK_SECRET names no secret".to_owned());
        }
        Ok(Self(secrets))
    }

    /// Checks `header` against `body`, at `now` (seconds since the epoch).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: u64,
        tolerance: Duration,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (timestamp, signatures) = parse_header(header)?;
        if signatures.is_empty() {
            return Err(SignatureError::NoSignature);
        }
        let seconds = now.abs_diff(timestamp);
        if seconds > tolerance.as_secs() {
            return Err(SignatureError::Stale { seconds });
        }
        for secret in &self.0 {
            let mac = signed(secret, timestamp, body);
            if signatures
                .iter()
                .any(|signature| mac.clone().verify_slice(signature).is_ok())
            {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// The MAC of `body` signed at `timestamp` with `secret`, before it is
/// finalized (to verify against one candidate or to print).
fn signed(secret: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this never fails.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Stripe-Signature` header Stripe would send for `body` at
/// `timestamp`: what fake-stripe's deliveries and the tests sign with.
pub fn signature_header(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let digest = signed(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},{SCHEME}={hex}")
}

/// `t=…` and every well-formed `v1=…`, decoded; other schemes are skipped.
fn parse_header(header: &str) -> Result<(u64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        let Some((key, value)) = element.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                let parsed = value.parse().map_err(|_| SignatureError::Malformed)?;
                if timestamp.replace(parsed).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            SCHEME => {
                if let Some(bytes) = decode_hex(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    Ok((timestamp, signatures))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A webhook's body, read as a Stripe event: its id and type, and what it
/// says of a PaymentIntent when it is one of the events this service acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    /// `None` for events we do not act on (answered 200, nothing stored).
    pub update: Option<PaymentUpdate>,
    /// A refund's news (`charge.refund.updated`, `refund.updated`,
    /// `refund.failed`); `None` otherwise.
    pub refund: Option<RefundUpdate>,
}

/// A body that is not a Stripe event (400, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not a Stripe event: {0}")]
pub struct NotAnEvent(String);

#[derive(serde::Deserialize)]
struct EventBody {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(serde::Deserialize)]
struct EventData {
    object: serde_json::Value,
}

impl StripeEvent {
    /// The PaymentIntent events that settle a ride: `succeeded` books it,
    /// `payment_failed` and `canceled` fail it, `processing` and
    /// `requires_action` are news of a waiting ride.
    pub const PAYMENT_INTENT_EVENTS: [&'static str; 5] = [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    ];

    /// The refund events that can report a cancellation's refund failed.
    pub const REFUND_EVENTS: [&'static str; 3] =
        ["charge.refund.updated", "refund.updated", "refund.failed"];

    pub fn parse(body: &[u8]) -> Result<Self, NotAnEvent> {
        let event: EventBody =
            serde_json::from_slice(body).map_err(|error| NotAnEvent(error.to_string()))?;
        if !event.id.starts_with("evt_") {
            return Err(NotAnEvent(format!("event id {:?} is not evt_…", event.id)));
        }
        let update = if Self::PAYMENT_INTENT_EVENTS.contains(&event.event_type.as_str()) {
            Some(Self::payment_update(&event)?)
        } else {
            None
        };
        let refund = if Self::REFUND_EVENTS.contains(&event.event_type.as_str()) {
            Some(Self::refund_update(&event)?)
        } else {
            None
        };
        Ok(Self {
            id: event.id,
            event_type: event.event_type,
            update,
            refund,
        })
    }

    /// The event's refund and its status.
    fn refund_update(event: &EventBody) -> Result<RefundUpdate, NotAnEvent> {
        let object = &event.data.object;
        let field = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
        let refund_id = field("id")
            .filter(|id| id.starts_with("re_") || id.starts_with("pyr_"))
            .ok_or_else(|| NotAnEvent(format!("{} carries no refund id", event.event_type)))?;
        let status = field("status").unwrap_or_default();
        let status = RefundStatus::parse(status).ok_or_else(|| {
            NotAnEvent(format!(
                "{} carries a refund in status {status:?}",
                event.event_type
            ))
        })?;
        Ok(RefundUpdate {
            event_id: Some(event.id.clone()),
            event_type: event.event_type.clone(),
            refund_id: refund_id.to_owned(),
            status,
        })
    }

    /// The event's intent and its state.
    fn payment_update(event: &EventBody) -> Result<PaymentUpdate, NotAnEvent> {
        let object = &event.data.object;
        let field = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
        let payment_intent_id =
            field("id")
                .filter(|id| id.starts_with("pi_"))
                .ok_or_else(|| {
                    NotAnEvent(format!("{} carries no PaymentIntent id", event.event_type))
                })?;
        let error_code = object
            .get("last_payment_error")
            .and_then(|error| error.get("code"))
            .and_then(serde_json::Value::as_str);
        // The intent as it is in the event says what happened, whatever
        // the type: `payment_failed` leaves it `requires_payment_method`
        // (failed, or waiting on the rider when the bank asks for
        // authentication), `canceled` leaves it `canceled`.
        let status = field("status").unwrap_or_default();
        let state = PaymentIntentState::from_stripe(
            status,
            field("latest_charge").map(str::to_owned),
            error_code,
        )
        .ok_or_else(|| {
            NotAnEvent(format!(
                "{} carries a PaymentIntent in status {status:?}",
                event.event_type
            ))
        })?;
        Ok(PaymentUpdate {
            event_id: Some(event.id.clone()),
            event_type: event.event_type.clone(),
            payment_intent_id: payment_intent_id.to_owned(),
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: u64 = 1_760_000_000;

    fn secrets(text: &str) -> WebhookSecrets {
        WebhookSecrets::parse(text).expect("secrets")
    }

    #[test]
    fn the_signature_is_the_hmac_stripe_documents() {
        // Computed apart from this code, with Python's hmac:
        // hmac.new(b"whsec_k", b"1760000000." + BODY, hashlib.sha256).hexdigest()
        let expected =
            "t=1760000000,v1=290f4fe3804c04f0d466e53fc95562b0b522fb02cbe68e6e9c3cef5c72259470";
        assert_eq!(signature_header("whsec_k", NOW, BODY), expected);
        assert_eq!(
            secrets("whsec_k").verify(Some(expected), BODY, NOW, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_signature_by_any_current_secret_and_any_v1_is_accepted() {
        let header = signature_header("whsec_new", NOW, BODY);
        let both = secrets("whsec_old, whsec_new");
        assert_eq!(
            both.verify(Some(&header), BODY, NOW, DEFAULT_TOLERANCE),
            Ok(())
        );
        let old_only = secrets("whsec_old");
        assert_eq!(
            old_only.verify(Some(&header), BODY, NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        // Stripe sends several v1 values while the endpoint's secret rolls.
        let old = signature_header("whsec_old", NOW, BODY);
        let v1_old = old.split_once(",v1=").expect("v1").1;
        let two = format!("{header},v1={v1_old},v0=ignored");
        assert_eq!(
            old_only.verify(Some(&two), BODY, NOW, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_a_stale_time_or_a_bad_header_is_refused() {
        let key = secrets("whsec_k");
        let header = signature_header("whsec_k", NOW, BODY);
        assert_eq!(
            key.verify(Some(&header), b"{}", NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            key.verify(Some(&header), BODY, NOW + 301, DEFAULT_TOLERANCE),
            Err(SignatureError::Stale { seconds: 301 })
        );
        assert_eq!(
            key.verify(Some(&header), BODY, NOW - 301, DEFAULT_TOLERANCE),
            Err(SignatureError::Stale { seconds: 301 })
        );
        assert_eq!(
            key.verify(Some(&header), BODY, NOW + 300, DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            key.verify(None, BODY, NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Missing)
        );
        for malformed in ["", "garbage", "v1=00", "t=x,v1=00", "t=1,t=2,v1=00"] {
            assert_eq!(
                key.verify(Some(malformed), BODY, NOW, DEFAULT_TOLERANCE),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(
            key.verify(
                Some(&format!("t={NOW},v0=ab")),
                BODY,
                NOW,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            key.verify(
                Some(&format!("t={NOW},v1=zz")),
                BODY,
                NOW,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn secrets_are_comma_separated_never_empty_and_never_shown() {
        assert!(WebhookSecrets::parse(" , ").is_err());
        let two = secrets("whsec_a,whsec_b");
        assert_eq!(two.0.len(), 2);
        assert!(!format!("{two:?}").contains("whsec"));
    }

    fn event(event_type: &str, object: &str) -> Vec<u8> {
        format!(r#"{{"id":"evt_9","object":"event","type":"{event_type}","data":{{"object":{object}}}}}"#)
            .into_bytes()
    }

    #[test]
    fn payment_intent_events_say_what_happened_to_the_intent() {
        let succeeded = StripeEvent::parse(&event(
            "payment_intent.succeeded",
            r#"{"id":"pi_1","status":"succeeded","latest_charge":"ch_1"}"#,
        ))
        .expect("an event");
        assert_eq!(succeeded.id, "evt_9");
        assert_eq!(
            succeeded.update,
            Some(PaymentUpdate {
                event_id: Some("evt_9".into()),
                event_type: "payment_intent.succeeded".into(),
                payment_intent_id: "pi_1".into(),
                state: PaymentIntentState::Succeeded {
                    charge_id: Some("ch_1".into())
                },
            })
        );
        for failed in ["payment_intent.payment_failed", "payment_intent.canceled"] {
            let parsed = StripeEvent::parse(&event(
                failed,
                r#"{"id":"pi_2","status":"requires_payment_method"}"#,
            ))
            .expect("an event");
            assert_eq!(
                parsed.update.map(|u| u.state),
                Some(PaymentIntentState::Failed),
                "{failed}"
            );
        }
        let wants_authentication = StripeEvent::parse(&event(
            "payment_intent.payment_failed",
            r#"{"id":"pi_5","status":"requires_payment_method","last_payment_error":{"code":"authentication_required"}}"#,
        ))
        .expect("an event");
        assert_eq!(
            wants_authentication.update.map(|u| u.state),
            Some(PaymentIntentState::RequiresAction)
        );
        let processing = StripeEvent::parse(&event(
            "payment_intent.processing",
            r#"{"id":"pi_3","status":"processing"}"#,
        ))
        .expect("an event");
        assert_eq!(
            processing.update.map(|u| u.state),
            Some(PaymentIntentState::Processing)
        );
    }

    #[test]
    fn refund_events_say_what_became_of_the_refund() {
        for kind in StripeEvent::REFUND_EVENTS {
            let parsed = StripeEvent::parse(&event(kind, r#"{"id":"re_1","status":"failed"}"#))
                .expect("an event");
            assert_eq!(parsed.update, None);
            assert_eq!(
                parsed.refund,
                Some(RefundUpdate {
                    event_id: Some("evt_9".into()),
                    event_type: kind.into(),
                    refund_id: "re_1".into(),
                    status: RefundStatus::Failed,
                }),
                "{kind}"
            );
        }
        for bad in [
            r#"{"id":"ch_1","status":"failed"}"#,
            r#"{"id":"re_1","status":"lost"}"#,
        ] {
            assert!(
                StripeEvent::parse(&event("charge.refund.updated", bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_events_are_read_but_carry_no_update() {
        let parsed =
            StripeEvent::parse(&event("customer.created", r#"{"id":"cus_1"}"#)).expect("an event");
        assert_eq!(parsed.event_type, "customer.created");
        assert_eq!(parsed.update, None);
        assert_eq!(parsed.refund, None);
    }

    #[test]
    fn a_body_that_is_not_an_event_is_refused() {
        for body in [
            &b"not json"[..],
            br#"{"id":"evt_1"}"#,
            br#"{"id":"x_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","status":"succeeded"}}}"#,
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"status":"succeeded"}}}"#,
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","status":"requires_capture"}}}"#,
        ] {
            assert!(
                StripeEvent::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let shown = format!("{:?}", secrets("whsec_one, whsec_two"));
        assert_eq!(shown, "WebhookSecrets(2 secret(s), ***)");
    }
}
