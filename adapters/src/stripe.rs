//! Stripe over HTTP (reqwest, rustls): customers and charges, form-encoded
//! as Stripe's API takes them, the secret key as bearer, a pinned
//! `Stripe-Version`, and the downstream `Idempotency-Key` on every charge.
//!
//! Every answer is classified, never panicked on: charged (a charge id),
//! declined (`card_error`, with Stripe's message), refused for good (an
//! invalid request, which proves no charge was made), or unknown (anything
//! else: timeout, connection error, 5xx, 429, 401/403, 409 from a
//! concurrent request with the same key, an unreadable body). Only unknown
//! answers are retried here, with the same idempotency key, a bounded
//! number of times with backoff: Stripe answers a repeat with the first
//! result, so a retry cannot charge twice.

use std::time::Duration;

use application::ports::{GatewayError, PaymentGateway};
use async_trait::async_trait;
use domain::{ChargeOutcome, ChargeRequest, ChargeSearch, FoundCharge};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::{info, warn};

/// The API version this adapter was written against; pinned so a change of
/// the account's default version cannot change what we parse.
pub const STRIPE_VERSION: &str = "2024-06-20";

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

#[derive(Clone)]
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

/// The secret key stays out of `Debug`, and so out of any log line.
impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_key", &"***")
            .field("api_base", &self.api_base)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .finish()
    }
}

impl StripeSettings {
    /// First backoff between retries of an unknown answer.
    pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(250);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
    pub const DEFAULT_MAX_RETRIES: u32 = 2;

    pub fn new(api_key: impl Into<String>, api_base: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            api_base: api_base.into(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            timeout: Self::DEFAULT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            retry_backoff: Self::DEFAULT_RETRY_BACKOFF,
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

/// A charge as Stripe describes it (the fields reconciliation reads).
#[derive(Debug, Deserialize)]
struct Charge {
    id: String,
    amount: i64,
    currency: String,
    customer: Option<String>,
    status: String,
}

#[derive(Debug, Deserialize)]
struct SearchResult {
    data: Vec<Charge>,
}

/// The search query for charges whose metadata names `downstream_key`, in
/// Stripe's search query language (a quoted string, `\` escapes).
pub fn metadata_query(downstream_key: &str) -> String {
    let quoted = downstream_key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("metadata['{METADATA_KEY}']:'{quoted}'")
}

/// The metadata field every charge carries: the key's downstream key.
pub const METADATA_KEY: &str = "rocket_rides_downstream_key";
const METADATA_FIELD: &str = "metadata[rocket_rides_downstream_key]";

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
enum Attempt<T> {
    Done(T),
    /// Worth retrying (with the same idempotency key, for a POST).
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

    /// Sends one request with the secret key and the pinned version: its
    /// status and body, or why none came (always worth a retry).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let sent = request
            .bearer_auth(&self.settings.api_key)
            .header("Stripe-Version", STRIPE_VERSION)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(format!("Stripe did not answer in time: {error}"));
            }
            Err(error) => return Err(format!("could not reach Stripe: {error}")),
        };
        let status = response.status();
        match response.bytes().await {
            Ok(body) => Ok((status, body.to_vec())),
            Err(error) => Err(format!("Stripe's answer ({status}) was cut off: {error}")),
        }
    }

    /// Runs `once` until it is done, retrying an unknown answer a bounded
    /// number of times with doubling backoff; the final unknown is returned.
    async fn with_retries<T, F, Fut>(&self, path: &str, mut once: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut backoff = self.settings.retry_backoff;
        let mut attempt = 0;
        loop {
            match once().await {
                Attempt::Done(done) => return Ok(done),
                Attempt::Unknown(reason) if attempt < self.settings.max_retries => {
                    attempt += 1;
                    warn!(path, attempt, %reason, ?backoff, "Stripe answer unknown; retrying the same request (same idempotency key)");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Attempt::Unknown(reason) => return Err(reason),
            }
        }
    }

    /// One GET, retried like an unknown POST answer; the body of a 2xx, or
    /// why there is none.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        let url = self.url(path);
        let once = || async {
            let (status, body) = match self.exchange(self.client.get(&url).query(query)).await {
                Ok(answer) => answer,
                Err(reason) => return Attempt::Unknown(reason),
            };
            if status.is_success() {
                return Attempt::Done(Ok(body));
            }
            match classify(status, &body) {
                // An invalid request (an unknown id, a bad query) will not
                // change on a retry.
                Attempt::Done(Err(Definitive::Declined(detail) | Definitive::Refused(detail))) => {
                    Attempt::Done(Err(format!("Stripe refused: {detail}")))
                }
                Attempt::Done(Ok(_)) => Attempt::Unknown(format!("Stripe answered {status}")),
                Attempt::Unknown(reason) => Attempt::Unknown(reason),
            }
        };
        self.with_retries(path, once).await?
    }

    /// Posts with retries of unknown answers; the final unknown is returned.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Result<String, Definitive>, String> {
        let url = self.url(path);
        self.with_retries(path, || async {
            let request = self
                .client
                .post(&url)
                .header("Idempotency-Key", idempotency_key)
                .form(form);
            match self.exchange(request).await {
                Ok((status, body)) => classify(status, &body),
                Err(reason) => Attempt::Unknown(reason),
            }
        })
        .await
    }
}

/// Classifies one answer by what it proves about the money. Only two kinds
/// of refusal prove that no charge exists: a declined card (`card_error`,
/// 402) and an invalid request (400/404 `invalid_request_error`: no card, a
/// bad amount, an unknown customer). Everything else says nothing about the
/// charge, or comes after it may have been made, and stays unknown:
/// 401/403 (a rotated or restricted key: an earlier attempt whose answer was
/// lost may have charged), 409 (the same key in flight), `idempotency_error`,
/// 429, 5xx, any other status, and a body we cannot read.
fn classify(status: StatusCode, body: &[u8]) -> Attempt<Result<String, Definitive>> {
    if status.is_success() {
        return match serde_json::from_slice::<Created>(body) {
            Ok(created) if !created.id.is_empty() => Attempt::Done(Ok(created.id)),
            _ => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        };
    }
    let Some(error) = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
    else {
        return Attempt::Unknown(format!("Stripe answered {status} with an unreadable body"));
    };
    let message = error
        .message
        .clone()
        .unwrap_or_else(|| format!("Stripe answered {status}"));
    let detail = match &error.code {
        Some(code) => format!("{status} {message} ({code})"),
        None => format!("{status} {message}"),
    };
    match (status, error.kind.as_deref()) {
        (_, Some("card_error")) | (StatusCode::PAYMENT_REQUIRED, _) => {
            Attempt::Done(Err(Definitive::Declined(message)))
        }
        (StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND, Some("invalid_request_error")) => {
            Attempt::Done(Err(Definitive::Refused(detail)))
        }
        _ => Attempt::Unknown(format!("Stripe answered {detail}")),
    }
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
        // The downstream key in the charge's metadata too: the charge can
        // then be found from the key (a person reviewing it, an audit).
        let form = [
            ("amount", amount.as_str()),
            ("currency", request.currency.as_str()),
            ("customer", request.customer_id.as_str()),
            ("description", request.description.as_str()),
            (METADATA_FIELD, request.idempotency_key.as_str()),
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

    /// Searches by metadata, then retrieves each charge found: a retrieve
    /// is read-after-write consistent where the search lags, so the status
    /// judged is the charge's current one.
    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        let query = metadata_query(downstream_key);
        let found = match self.get("/v1/charges/search", &[("query", &query)]).await {
            Ok(body) => match serde_json::from_slice::<SearchResult>(&body) {
                Ok(result) => result.data,
                Err(error) => {
                    return ChargeSearch::Unknown {
                        reason: format!("Stripe's search answer was unreadable: {error}"),
                    };
                }
            },
            Err(reason) => return ChargeSearch::Unknown { reason },
        };
        let mut charges = Vec::with_capacity(found.len());
        for listed in found {
            let path = format!("/v1/charges/{}", listed.id);
            let charge = match self.get(&path, &[]).await {
                Ok(body) => match serde_json::from_slice::<Charge>(&body) {
                    Ok(charge) => charge,
                    Err(error) => {
                        return ChargeSearch::Unknown {
                            reason: format!(
                                "Stripe's charge {} was unreadable: {error}",
                                listed.id
                            ),
                        };
                    }
                },
                Err(reason) => return ChargeSearch::Unknown { reason },
            };
            charges.push(FoundCharge {
                id: charge.id,
                amount_cents: charge.amount,
                currency: charge.currency,
                customer_id: charge.customer.unwrap_or_default(),
                status: charge.status,
            });
        }
        ChargeSearch::Found(charges)
    }
}
