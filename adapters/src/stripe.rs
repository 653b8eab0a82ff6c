//! Stripe over HTTP (reqwest, rustls): customers, and payments through
//! PaymentIntents confirmed off-session (the default) or the seed's
//! Charges, form-encoded as Stripe's API takes them, the secret key as
//! bearer, a pinned `Stripe-Version`, and the downstream `Idempotency-Key`
//! on every payment.
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

use application::ports::{GatewayError, PaymentGateway, SavedCustomer};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, ChargeSearch, FoundCharge, PaymentIntentState, PaymentsApi,
    RefundOutcome, RefundRecord, RefundRequest, RefundStatus, TestCard,
};
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
    /// PaymentIntents or Charges (`STRIPE_PAYMENTS`).
    pub payments: PaymentsApi,
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
            .field("payments", &self.payments)
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
            payments: PaymentsApi::default(),
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
    data: Vec<Listed>,
}

/// An object in a list or a search result: its id is all we read, each
/// one is then retrieved (a retrieve is read-after-write consistent).
#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
}

/// A PaymentIntent as Stripe describes it (the fields we read).
#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    latest_charge: Option<String>,
    #[serde(default)]
    last_payment_error: Option<LastPaymentError>,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    customer: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LastPaymentError {
    code: Option<String>,
}

impl Charge {
    fn found(self) -> FoundCharge {
        FoundCharge {
            id: self.id,
            amount_cents: self.amount,
            currency: self.currency,
            customer_id: self.customer.unwrap_or_default(),
            status: self.status,
            payment_intent_id: None,
        }
    }
}

impl PaymentIntent {
    fn state(&self) -> Option<PaymentIntentState> {
        PaymentIntentState::from_stripe(
            &self.status,
            self.latest_charge.clone(),
            self.last_payment_error
                .as_ref()
                .and_then(|error| error.code.as_deref()),
        )
    }

    /// What the confirmation answered, for the charge phase.
    fn outcome(self) -> Attempt<ChargeOutcome> {
        match (self.state(), self.latest_charge, self.client_secret) {
            (Some(PaymentIntentState::Succeeded { .. }), Some(charge_id), _) => {
                Attempt::Done(ChargeOutcome::Charged {
                    charge_id,
                    payment_intent_id: Some(self.id),
                })
            }
            (Some(PaymentIntentState::RequiresAction), _, Some(client_secret)) => {
                Attempt::Done(ChargeOutcome::RequiresAuthentication {
                    payment_intent_id: self.id,
                    client_secret,
                })
            }
            (Some(PaymentIntentState::Processing), _, _) => {
                Attempt::Done(ChargeOutcome::Processing {
                    payment_intent_id: self.id,
                })
            }
            _ => Attempt::Unknown(format!(
                "Stripe answered PaymentIntent {} in status {} without what that status needs",
                self.id, self.status
            )),
        }
    }

    /// As reconciliation judges a payment: `succeeded`, `failed` (no money
    /// moved, none will) or `pending` (anything else).
    fn found(self) -> FoundCharge {
        let status = match self.state() {
            Some(PaymentIntentState::Succeeded { .. }) => FoundCharge::SUCCEEDED,
            Some(PaymentIntentState::Failed) => FoundCharge::FAILED,
            _ => "pending",
        };
        FoundCharge {
            id: self.latest_charge.unwrap_or_else(|| self.id.clone()),
            amount_cents: self.amount,
            currency: self.currency,
            customer_id: self.customer.unwrap_or_default(),
            status: status.to_owned(),
            payment_intent_id: Some(self.id),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreatedCustomer {
    id: String,
    #[serde(default)]
    invoice_settings: Option<InvoiceSettings>,
}

#[derive(Debug, Deserialize)]
struct InvoiceSettings {
    default_payment_method: Option<String>,
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
    /// On a failed confirmation: the PaymentIntent as it now is.
    #[serde(default)]
    payment_intent: Option<PaymentIntent>,
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
        self.post_read(path, form, idempotency_key, classify).await
    }

    /// Posts with retries of unknown answers, each answer read by `read`.
    async fn post_read<T>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
        read: impl Fn(StatusCode, &[u8]) -> Attempt<T>,
    ) -> Result<T, String> {
        let url = self.url(path);
        self.with_retries(path, || async {
            let request = self
                .client
                .post(&url)
                .header("Idempotency-Key", idempotency_key)
                .form(form);
            match self.exchange(request).await {
                Ok((status, body)) => read(status, &body),
                Err(reason) => Attempt::Unknown(reason),
            }
        })
        .await
    }

    /// One object by path, read as `T`.
    async fn retrieve<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let body = self.get(path, &[]).await?;
        serde_json::from_slice(&body)
            .map_err(|error| format!("Stripe's {path} was unreadable: {error}"))
    }

    /// The objects of `collection` (`/v1/charges`, `/v1/payment_intents`)
    /// whose metadata names `downstream_key`: searched, then each one
    /// retrieved (a retrieve is read-after-write consistent where the
    /// search lags, so the status read is current).
    async fn search_then_retrieve<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
        downstream_key: &str,
    ) -> Result<Vec<T>, String> {
        let query = metadata_query(downstream_key);
        let body = self
            .get(&format!("{collection}/search"), &[("query", &query)])
            .await?;
        let result: SearchResult = serde_json::from_slice(&body)
            .map_err(|error| format!("Stripe's search answer was unreadable: {error}"))?;
        let mut found = Vec::with_capacity(result.data.len());
        for listed in result.data {
            found.push(
                self.retrieve(&format!("{collection}/{}", listed.id))
                    .await?,
            );
        }
        Ok(found)
    }

    /// The charge phase on PaymentIntents: one off-session confirmation.
    async fn confirm_payment_intent(&self, request: &ChargeRequest) -> ChargeOutcome {
        let Some(payment_method) = request.payment_method_id.as_deref() else {
            // Nothing was sent: no PaymentIntent exists for this key.
            return ChargeOutcome::Refused {
                message: format!(
                    "customer {} has no saved PaymentMethod (run `rocket-rides up` to save one)",
                    request.customer_id
                ),
            };
        };
        let amount = request.amount_cents.to_string();
        let form = [
            ("amount", amount.as_str()),
            ("currency", request.currency.as_str()),
            ("customer", request.customer_id.as_str()),
            ("payment_method", payment_method),
            ("off_session", "true"),
            ("confirm", "true"),
            ("description", request.description.as_str()),
            (METADATA_FIELD, request.idempotency_key.as_str()),
        ];
        match self
            .post_read(
                "/v1/payment_intents",
                &form,
                &request.idempotency_key,
                classify_intent,
            )
            .await
        {
            Ok(outcome) => outcome,
            Err(reason) => ChargeOutcome::Unknown { reason },
        }
    }
}

/// A refund as Stripe answers it.
#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    status: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// A page of refunds.
#[derive(Debug, Deserialize)]
struct RefundList {
    data: Vec<Refund>,
    #[serde(default)]
    has_more: bool,
}

/// Classifies a refund's answer: a 2xx is the refund (whatever its
/// status); a 400/404 `invalid_request_error` (already refunded, more than
/// is left, no such charge) is a refusal for good; every other answer is
/// unknown, as for a charge.
fn classify_refund(status: StatusCode, body: &[u8]) -> Attempt<RefundOutcome> {
    if status.is_success() {
        return match serde_json::from_slice::<Refund>(body) {
            Ok(refund) => match RefundStatus::parse(&refund.status) {
                Some(status) => Attempt::Done(RefundOutcome::Refunded(RefundRecord {
                    refund_id: refund.id,
                    status,
                })),
                None => Attempt::Unknown(format!(
                    "Stripe answered refund {} in status {}",
                    refund.id, refund.status
                )),
            },
            Err(_) => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        };
    }
    refusal_or_unknown(status, body)
}

/// Classifies a PaymentIntent cancel's answer: a 2xx intent `canceled` is
/// done; a 400 `invalid_request_error` (an intent that has succeeded, say)
/// is a refusal for good; anything else unknown.
fn classify_cancel(status: StatusCode, body: &[u8]) -> Attempt<RefundOutcome> {
    if status.is_success() {
        return match serde_json::from_slice::<PaymentIntent>(body) {
            Ok(intent) if intent.status == "canceled" => {
                Attempt::Done(RefundOutcome::IntentCanceled)
            }
            Ok(intent) => Attempt::Unknown(format!(
                "Stripe answered the cancel of {} with status {}",
                intent.id, intent.status
            )),
            Err(_) => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        };
    }
    refusal_or_unknown(status, body)
}

/// A refund's or cancel's error: refused for good only where `classify`
/// finds a definitive answer.
fn refusal_or_unknown(status: StatusCode, body: &[u8]) -> Attempt<RefundOutcome> {
    match classify(status, body) {
        Attempt::Done(Err(Definitive::Declined(message) | Definitive::Refused(message))) => {
            Attempt::Done(RefundOutcome::Refused { message })
        }
        Attempt::Done(Ok(id)) => Attempt::Unknown(format!("Stripe answered {status} for {id}")),
        Attempt::Unknown(reason) => Attempt::Unknown(reason),
    }
}

/// A created object read whole (a customer), or the refusal `classify`
/// finds in an error.
fn read_created<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Attempt<Result<T, Definitive>> {
    match classify(status, body) {
        Attempt::Done(Ok(_)) => match serde_json::from_slice(body) {
            Ok(object) => Attempt::Done(Ok(object)),
            Err(_) => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        },
        Attempt::Done(Err(definitive)) => Attempt::Done(Err(definitive)),
        Attempt::Unknown(reason) => Attempt::Unknown(reason),
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

/// Classifies a PaymentIntent confirmation's answer. A 2xx is read by the
/// intent's status; a 402 `authentication_required` that carries the
/// intent leaves it waiting on the rider; every other answer as `classify`
/// reads a charge's (a decline, a refusal proving nothing was made, or
/// unknown).
fn classify_intent(status: StatusCode, body: &[u8]) -> Attempt<ChargeOutcome> {
    if status.is_success() {
        return match serde_json::from_slice::<PaymentIntent>(body) {
            Ok(intent) => intent.outcome(),
            Err(_) => Attempt::Unknown(format!("Stripe answered {status} with an unreadable body")),
        };
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body)
        && error.code.as_deref() == Some(PaymentIntentState::AUTHENTICATION_REQUIRED)
        && let Some(intent) = error.payment_intent
        && let Some(client_secret) = intent.client_secret
    {
        return Attempt::Done(ChargeOutcome::RequiresAuthentication {
            payment_intent_id: intent.id,
            client_secret,
        });
    }
    match classify(status, body) {
        Attempt::Done(Ok(id)) => Attempt::Unknown(format!("Stripe answered {status} for {id}")),
        Attempt::Done(Err(Definitive::Declined(message))) => {
            Attempt::Done(ChargeOutcome::Declined { message })
        }
        Attempt::Done(Err(Definitive::Refused(message))) => {
            Attempt::Done(ChargeOutcome::Refused { message })
        }
        Attempt::Unknown(reason) => Attempt::Unknown(reason),
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    /// Charges: the card as the customer's default source. PaymentIntents:
    /// the test PaymentMethod attached at creation and made the default
    /// (`invoice_settings[default_payment_method]`), whose id Stripe
    /// answers with. Safe to repeat: `up` finds the user (and keeps the
    /// customer) once stored.
    async fn create_customer(
        &self,
        email: &str,
        card: TestCard,
    ) -> Result<SavedCustomer, GatewayError> {
        let mut form = vec![("email", email)];
        let payment_method = match self.settings.payments {
            PaymentsApi::Charges => {
                form.extend(card.source().map(|source| ("source", source)));
                None
            }
            PaymentsApi::PaymentIntents => {
                let payment_method = card.payment_method();
                if let Some(id) = payment_method {
                    form.push(("payment_method", id));
                    form.push(("invoice_settings[default_payment_method]", id));
                }
                payment_method
            }
        };
        let key = format!("rocket-rides-customer-{}", uuid::Uuid::new_v4());
        let created: CreatedCustomer = self
            .post_read("/v1/customers", &form, &key, read_created)
            .await
            .map_err(GatewayError::Unknown)?
            .map_err(|definitive| match definitive {
                Definitive::Declined(message) | Definitive::Refused(message) => {
                    GatewayError::Refused(message)
                }
            })?;
        let payment_method_id = match payment_method {
            None => None,
            Some(_) => Some(
                created
                    .invoice_settings
                    .and_then(|settings| settings.default_payment_method)
                    .ok_or_else(|| {
                        GatewayError::Unknown(format!(
                            "Stripe created customer {} without its default PaymentMethod",
                            created.id
                        ))
                    })?,
            ),
        };
        info!(email, customer = %created.id, ?payment_method_id, "Stripe customer created");
        Ok(SavedCustomer {
            customer_id: created.id,
            payment_method_id,
        })
    }

    async fn save_payment_method(
        &self,
        customer_id: &str,
        card: TestCard,
    ) -> Result<Option<String>, GatewayError> {
        let (PaymentsApi::PaymentIntents, Some(test_id)) =
            (self.settings.payments, card.payment_method())
        else {
            return Ok(None);
        };
        let key = format!("rocket-rides-attach-{}", uuid::Uuid::new_v4());
        let path = format!("/v1/payment_methods/{test_id}/attach");
        match self.post(&path, &[("customer", customer_id)], &key).await {
            Ok(Ok(id)) => Ok(Some(id)),
            Ok(Err(Definitive::Declined(message) | Definitive::Refused(message))) => {
                Err(GatewayError::Refused(message))
            }
            Err(reason) => Err(GatewayError::Unknown(reason)),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        if self.settings.payments == PaymentsApi::PaymentIntents {
            return self.confirm_payment_intent(request).await;
        }
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
            Ok(Ok(charge_id)) => ChargeOutcome::Charged {
                charge_id,
                payment_intent_id: None,
            },
            Ok(Err(Definitive::Declined(message))) => ChargeOutcome::Declined { message },
            Ok(Err(Definitive::Refused(message))) => ChargeOutcome::Refused { message },
            Err(reason) => ChargeOutcome::Unknown { reason },
        }
    }

    /// Searches by metadata (PaymentIntents or charges, as this gateway
    /// pays), then retrieves each one found: a retrieve is read-after-write
    /// consistent where the search lags, so the status judged is current.
    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        let found = match self.settings.payments {
            PaymentsApi::PaymentIntents => self
                .search_then_retrieve("/v1/payment_intents", downstream_key)
                .await
                .map(|intents| intents.into_iter().map(PaymentIntent::found).collect()),
            PaymentsApi::Charges => self
                .search_then_retrieve("/v1/charges", downstream_key)
                .await
                .map(|charges| charges.into_iter().map(Charge::found).collect()),
        };
        match found {
            Ok(found) => ChargeSearch::Found(found),
            Err(reason) => ChargeSearch::Unknown { reason },
        }
    }

    /// `POST /v1/refunds` against the PaymentIntent (or the charge, on
    /// Charges), or `POST /v1/payment_intents/{id}/cancel`: the key's
    /// downstream key as `Idempotency-Key` and in metadata, retried with it
    /// while the answer is unknown.
    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let answer = match request {
            RefundRequest::Refund {
                payment_intent_id,
                charge_id,
                amount_cents,
                idempotency_key,
            } => {
                let amount = amount_cents.to_string();
                let target = match (payment_intent_id, charge_id) {
                    (Some(intent), _) => ("payment_intent", intent.as_str()),
                    (None, Some(charge)) => ("charge", charge.as_str()),
                    (None, None) => {
                        return RefundOutcome::Refused {
                            message: "the ride carries neither a PaymentIntent nor a charge"
                                .to_owned(),
                        };
                    }
                };
                let form = [
                    target,
                    ("amount", amount.as_str()),
                    (METADATA_FIELD, idempotency_key.as_str()),
                ];
                self.post_read("/v1/refunds", &form, idempotency_key, classify_refund)
                    .await
            }
            RefundRequest::CancelPaymentIntent {
                payment_intent_id,
                idempotency_key,
            } => {
                let path = format!("/v1/payment_intents/{payment_intent_id}/cancel");
                let form = [("cancellation_reason", "requested_by_customer")];
                self.post_read(&path, &form, idempotency_key, classify_cancel)
                    .await
            }
        };
        answer.unwrap_or_else(|reason| RefundOutcome::Unknown { reason })
    }

    /// Lists the refunds of the ride's PaymentIntent (or charge) and keeps
    /// those whose metadata names the key (a list, unlike search, is
    /// read-after-write consistent); or retrieves the PaymentIntent a
    /// cancel was to cancel.
    async fn find_refund(&self, request: &RefundRequest) -> ChargeSearch {
        match request {
            RefundRequest::Refund {
                payment_intent_id,
                charge_id,
                idempotency_key,
                ..
            } => {
                let filter = match (payment_intent_id, charge_id) {
                    (Some(intent), _) => ("payment_intent", intent.as_str()),
                    (None, Some(charge)) => ("charge", charge.as_str()),
                    (None, None) => {
                        return ChargeSearch::Refunds(Vec::new());
                    }
                };
                let body = match self.get("/v1/refunds", &[filter, ("limit", "100")]).await {
                    Ok(body) => body,
                    Err(reason) => return ChargeSearch::Unknown { reason },
                };
                let list: RefundList = match serde_json::from_slice(&body) {
                    Ok(list) => list,
                    Err(error) => {
                        return ChargeSearch::Unknown {
                            reason: format!("Stripe's refund list was unreadable: {error}"),
                        };
                    }
                };
                if list.has_more {
                    return ChargeSearch::Unknown {
                        reason: "more than 100 refunds of one payment".to_owned(),
                    };
                }
                let key = METADATA_FIELD
                    .trim_start_matches("metadata[")
                    .trim_end_matches(']');
                let mut found = Vec::new();
                for refund in list.data {
                    if refund.metadata.get(key) != Some(idempotency_key) {
                        continue;
                    }
                    let Some(status) = RefundStatus::parse(&refund.status) else {
                        return ChargeSearch::Unknown {
                            reason: format!("refund {} is in status {}", refund.id, refund.status),
                        };
                    };
                    found.push(RefundRecord {
                        refund_id: refund.id,
                        status,
                    });
                }
                ChargeSearch::Refunds(found)
            }
            RefundRequest::CancelPaymentIntent {
                payment_intent_id, ..
            } => match self.payment_intent_state(payment_intent_id).await {
                Ok(state) => ChargeSearch::Intent(state),
                Err(error) => ChargeSearch::Unknown {
                    reason: error.to_string(),
                },
            },
        }
    }

    async fn refund_status(&self, refund_id: &str) -> Result<RefundStatus, GatewayError> {
        let refund: Refund = self
            .retrieve(&format!("/v1/refunds/{refund_id}"))
            .await
            .map_err(GatewayError::Unknown)?;
        RefundStatus::parse(&refund.status).ok_or_else(|| {
            GatewayError::Unknown(format!(
                "refund {refund_id} is in status {}, which Stripe does not document",
                refund.status
            ))
        })
    }

    async fn payment_intent_state(&self, id: &str) -> Result<PaymentIntentState, GatewayError> {
        let intent: PaymentIntent = self
            .retrieve(&format!("/v1/payment_intents/{id}"))
            .await
            .map_err(GatewayError::Unknown)?;
        intent.state().ok_or_else(|| {
            GatewayError::Unknown(format!(
                "PaymentIntent {id} is in status {}, which this service never leaves one in",
                intent.status
            ))
        })
    }
}
