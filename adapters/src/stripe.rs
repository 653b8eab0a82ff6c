//! Stripe over HTTP (reqwest, rustls): customers and charges, form-encoded
//! as Stripe's API takes them, the secret key as bearer, a pinned
//! `Stripe-Version`, and the downstream `Idempotency-Key` on every charge.
//!
//! Every answer is classified, never panicked on: charged (a charge id),
//! declined (`card_error`, with Stripe's message), refused for good (any
//! other 4xx), or unknown (timeout, connection error, 5xx, 429, 409 from a
//! concurrent request with the same key, an unreadable body). Only unknown
//! answers are retried here, with the same idempotency key, a bounded
//! number of times with backoff: Stripe answers a repeat with the first
//! result, so a retry cannot charge twice.

use std::time::Duration;

use application::ports::{GatewayError, PaymentGateway};
use async_trait::async_trait;
use domain::{ChargeOutcome, ChargeRequest};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::{info, warn};

/// The API version this adapter was written against; pinned so a change of
/// the account's default version cannot change what we parse.
pub const STRIPE_VERSION: &str = "2024-06-20";

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_key: String,
    pub api_base: String,
    pub connect_timeout: Duration,
    /// For the whole request, body included.
    pub timeout: Duration,
    /// Retries of an unknown answer (so at most `1 + max_retries` calls).
    pub max_retries: u32,
    /// First backoff; doubles on each retry.
    pub retry_backoff: Duration,
}

impl StripeSettings {
    pub fn new(api_key: impl Into<String>, api_base: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            api_base: api_base.into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_retries: 2,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeGateway {
    client: reqwest::Client,
    settings: StripeSettings,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Debug, Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
    code: Option<String>,
}

/// One attempt's answer, classified.
enum Attempt {
    Done(Result<String, Definitive>),
    /// Worth retrying with the same idempotency key.
    Unknown(String),
}

enum Definitive {
    Declined(String),
    Refused(String),
}

impl StripeGateway {
    pub fn new(settings: StripeSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .build()?;
        Ok(Self { client, settings })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.api_base.trim_end_matches('/'))
    }

    async fn attempt(&self, path: &str, form: &[(&str, &str)], idempotency_key: &str) -> Attempt {
        let sent = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.settings.api_key)
            .header("Stripe-Version", STRIPE_VERSION)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Attempt::Unknown(format!("Stripe did not answer in time: {error}"));
            }
            Err(error) => return Attempt::Unknown(format!("could not reach Stripe: {error}")),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Unknown(format!(
                    "Stripe's answer ({status}) was cut off: {error}"
                ));
            }
        };
        classify(status, &body)
    }

    /// Posts with retries of unknown answers; the final unknown is returned.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Result<String, Definitive>, String> {
        let mut backoff = self.settings.retry_backoff;
        let mut attempt = 0;
        loop {
            match self.attempt(path, form, idempotency_key).await {
                Attempt::Done(result) => return Ok(result),
                Attempt::Unknown(reason) if attempt < self.settings.max_retries => {
                    attempt += 1;
                    warn!(path, attempt, %reason, ?backoff, "Stripe answer unknown; retrying with the same idempotency key");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Attempt::Unknown(reason) => return Err(reason),
            }
        }
    }
}

fn classify(status: StatusCode, body: &[u8]) -> Attempt {
    if status.is_success() {
        return match serde_json::from_slice::<Created>(body) {
            Ok(created) if !created.id.is_empty() => Attempt::Done(Ok(created.id)),
            _ => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        };
    }
    // 429 (rate limited) and 409 (the same key in flight) say nothing about
    // the charge; 5xx may come after the charge was made.
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
        || status.is_server_error()
    {
        return Attempt::Unknown(format!("Stripe answered {status}"));
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let message = error
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| format!("Stripe answered {status}"));
    let is_card_error = error.as_ref().and_then(|e| e.kind.as_deref()) == Some("card_error");
    if is_card_error || status == StatusCode::PAYMENT_REQUIRED {
        return Attempt::Done(Err(Definitive::Declined(message)));
    }
    if status.is_client_error() {
        let code = error
            .and_then(|e| e.code)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Attempt::Done(Err(Definitive::Refused(format!("{message}{code}"))));
    }
    Attempt::Unknown(format!("Stripe answered an unexpected {status}"))
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn create_customer(&self, email: &str, source: &str) -> Result<String, GatewayError> {
        let mut form = vec![("email", email)];
        if !source.is_empty() {
            form.push(("source", source));
        }
        // Safe to repeat: `up` finds the user (and keeps the customer) once stored.
        let key = format!("rocket-rides-customer-{}", uuid::Uuid::new_v4());
        match self.post("/v1/customers", &form, &key).await {
            Ok(Ok(id)) => {
                info!(email, customer = %id, "Stripe customer created");
                Ok(id)
            }
            Ok(Err(Definitive::Declined(message) | Definitive::Refused(message))) => {
                Err(GatewayError::Refused(message))
            }
            Err(reason) => Err(GatewayError::Unknown(reason)),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let amount = request.amount_cents.to_string();
        let form = [
            ("amount", amount.as_str()),
            ("currency", request.currency.as_str()),
            ("customer", request.customer_id.as_str()),
            ("description", request.description.as_str()),
        ];
        match self
            .post("/v1/charges", &form, &request.idempotency_key)
            .await
        {
            Ok(Ok(charge_id)) => ChargeOutcome::Charged { charge_id },
            Ok(Err(Definitive::Declined(message))) => ChargeOutcome::Declined { message },
            Ok(Err(Definitive::Refused(message))) => ChargeOutcome::Refused { message },
            Err(reason) => ChargeOutcome::Unknown { reason },
        }
    }
}
