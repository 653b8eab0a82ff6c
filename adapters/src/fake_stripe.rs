//! fake-stripe: a local stand-in for the part of Stripe's HTTP API the
//! service uses, so a whole deployment can run, and be broken on purpose,
//! without Stripe.
//!
//! `POST /v1/customers` (`source`: `tok_visa` charges,
//! `tok_chargeCustomerFail` is declined, none: no card), `POST /v1/charges`,
//! `GET /v1/charges` (newest first, `limit`, `starting_after`, `has_more`),
//! `GET /v1/charges/{id}`, `GET /v1/customers/{id}`, and
//! `GET /v1/charges/search` (`query` of `metadata['k']:'v'`, `customer:'…'`
//! and `status:'…'` clauses joined by `AND`; `limit`, `page`), which, like
//! Stripe's, lags: a charge shows up `search_delay` after it was made.
//! Form-encoded like Stripe, a bearer secret key required; errors are
//! Stripe's JSON (`resource_missing` for an unknown id, an unrecognized
//! URL for an unknown route). Idempotency as Stripe: the same key with the
//! same parameters gets the first answer again (with `Idempotent-Replayed:
//! true`) for the window; other parameters: 400; while a request with the
//! key is still being processed, another one gets 409
//! `idempotency_key_in_use`.
//!
//! Faults: with probability `rate` a POST (to one of `paths`, or any)
//! meets one fault picked from `kinds`, landing before the request is
//! processed (nothing recorded) or after (the charge exists, the answer is
//! lost), as `timing` says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::info;

use crate::memory::gateway::{DECLINE_MESSAGE, SOURCE_CHARGES, SOURCE_DECLINED};

pub const DEFAULT_PORT: u16 = 12111;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The answer comes late (by `latency`), but it comes.
    Latency,
    /// No answer for `hang` (past any sane client timeout), then a 500.
    Hang,
    /// 500 Internal Server Error.
    ServerError,
    /// 429 Too Many Requests.
    RateLimit,
    /// The connection drops in the middle of the answer.
    Drop,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Hang => "hang",
            FaultKind::ServerError => "500",
            FaultKind::RateLimit => "429",
            FaultKind::Drop => "drop",
        }
    }

    pub const ALL: [FaultKind; 5] = [
        FaultKind::Latency,
        FaultKind::Hang,
        FaultKind::ServerError,
        FaultKind::RateLimit,
        FaultKind::Drop,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    Before,
    After,
    /// Each fault lands before or after, at even odds.
    Either,
}

#[derive(Debug, Clone)]
pub struct Faults {
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub timing: FaultTiming,
    pub latency: Duration,
    pub hang: Duration,
    /// The POST routes faults land on (`/v1/charges`); empty: every one.
    pub paths: Vec<String>,
}

impl Faults {
    pub const DEFAULT_LATENCY: Duration = Duration::from_millis(500);
    pub const DEFAULT_HANG: Duration = Duration::from_secs(60);
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            timing: FaultTiming::Either,
            latency: Self::DEFAULT_LATENCY,
            hang: Self::DEFAULT_HANG,
            paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeStripeSettings {
    pub idempotency_window: Duration,
    /// How long a new charge stays out of search results.
    pub search_delay: Duration,
    pub faults: Faults,
}

impl FakeStripeSettings {
    /// Stripe keeps an idempotency key for 24 hours.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// Stripe's search index "under normal operating conditions" catches up
    /// in under a minute; a second is enough to make a client meet the lag.
    pub const DEFAULT_SEARCH_DELAY: Duration = Duration::from_secs(1);
}

impl Default for FakeStripeSettings {
    fn default() -> Self {
        Self {
            idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
            search_delay: Self::DEFAULT_SEARCH_DELAY,
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Customer {
    source: Option<String>,
    body: Value,
}

#[derive(Debug, Clone)]
struct StoredCharge {
    body: Value,
    at: Instant,
}

#[derive(Debug)]
struct SavedAnswer {
    fingerprint: String,
    status: StatusCode,
    body: Value,
    at: Instant,
}

#[derive(Debug, Default)]
struct Ledger {
    customers: HashMap<String, Customer>,
    /// Successful charges, oldest first.
    charges: Vec<StoredCharge>,
    answers: HashMap<String, SavedAnswer>,
    /// Idempotency keys of requests being processed right now.
    in_flight: std::collections::HashSet<String>,
    /// Faults injected so far, by kind and timing (`500/after`).
    faults: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone)]
pub struct FakeStripe {
    ledger: Arc<Mutex<Ledger>>,
    settings: Arc<FakeStripeSettings>,
}

impl FakeStripe {
    pub fn new(settings: FakeStripeSettings) -> Self {
        Self {
            ledger: Arc::default(),
            settings: Arc::new(settings),
        }
    }

    /// Another face of the same Stripe account with other settings (faults),
    /// sharing customers, charges and idempotency keys.
    pub fn sharing_ledger(&self, settings: FakeStripeSettings) -> Self {
        Self {
            ledger: self.ledger.clone(),
            settings: Arc::new(settings),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/customers/{id}", get(retrieve_customer))
            .route("/v1/charges", post(create_charge).get(list_charges))
            .route("/v1/charges/search", get(search_charges))
            .route("/v1/charges/{id}", get(retrieve_charge))
            .route("/_fake/faults", get(list_faults))
            .fallback(unrecognized_url)
            .method_not_allowed_fallback(unrecognized_url)
            .with_state(self.clone())
    }

    /// Serves this fake on a free loopback port in the background (tests,
    /// a soak); its base URL.
    pub async fn serve_on_loopback(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(base)
    }

    /// Every successful charge, oldest first (for tests).
    pub fn charges(&self) -> Vec<Value> {
        self.ledger()
            .charges
            .iter()
            .map(|charge| charge.body.clone())
            .collect()
    }

    /// Marks `key` in flight, unless it is already (`None`: answer 409).
    /// A key whose answer is saved is not marked: its repeats are replays.
    fn begin(&self, key: &str) -> Option<InFlight> {
        let mut ledger = self.ledger();
        if ledger.in_flight.contains(key) {
            return None;
        }
        let window = self.settings.idempotency_window;
        if ledger
            .answers
            .get(key)
            .is_some_and(|saved| saved.at.elapsed() < window)
        {
            return Some(InFlight {
                ledger: self.ledger.clone(),
                key: None,
            });
        }
        ledger.in_flight.insert(key.to_owned());
        Some(InFlight {
            ledger: self.ledger.clone(),
            key: Some(key.to_owned()),
        })
    }

    fn count(&self, name: &str) {
        *self.ledger().faults.entry(name.to_owned()).or_default() += 1;
    }

    fn pick_fault(&self, path: &str) -> Option<(FaultKind, bool)> {
        let faults = &self.settings.faults;
        if !faults.paths.is_empty() && !faults.paths.iter().any(|p| p == path) {
            return None;
        }
        if faults.kinds.is_empty() || faults.rate <= 0.0 || fastrand::f64() >= faults.rate {
            return None;
        }
        let kind = faults.kinds[fastrand::usize(..faults.kinds.len())];
        let after = match faults.timing {
            FaultTiming::Before => false,
            FaultTiming::After => true,
            FaultTiming::Either => fastrand::bool(),
        };
        let name = format!("{}/{}", kind.name(), if after { "after" } else { "before" });
        self.count(&name);
        Some((kind, after))
    }
}

/// A request with an idempotency key in flight; dropping it (the answer
/// saved, an injected failure, the client gone) lets the key be used again.
struct InFlight {
    ledger: Arc<Mutex<Ledger>>,
    key: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.ledger
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .in_flight
                .remove(&key);
        }
    }
}

fn key_in_use() -> Response {
    let (status, body) = stripe_error(
        StatusCode::CONFLICT,
        "invalid_request_error",
        "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): please try again later.",
        Some("idempotency_key_in_use"),
    );
    json_response(status, &body)
}

/// Stripe's answer for an id it does not know.
fn missing(object: &str, id: &str, param: &str) -> Response {
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
async fn unrecognized_url(method: axum::http::Method, uri: axum::http::Uri) -> Response {
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

fn stripe_error(
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

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key.starts_with("sk_"))
}

fn unauthorized() -> Response {
    let (status, body) = stripe_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Invalid API Key provided; send `Authorization: Bearer sk_...`.",
        None,
    );
    json_response(status, &body)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type Form = Vec<(String, String)>;

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_form(body: &Bytes) -> Result<Form, (StatusCode, Value)> {
    serde_urlencoded::from_bytes(body).map_err(|error| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("Invalid form body: {error}"),
            None,
        )
    })
}

fn customer(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
    let source = field(form, "source").map(str::to_owned);
    if let Some(token) = &source
        && token != SOURCE_CHARGES
        && token != SOURCE_DECLINED
    {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("No such token: '{token}'"),
            Some("resource_missing"),
        );
    }
    let id = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let body = json!({ "id": id, "object": "customer", "email": field(form, "email"), "created": now_unix() });
    ledger.customers.insert(
        id,
        Customer {
            source,
            body: body.clone(),
        },
    );
    (StatusCode::OK, body)
}

fn charge(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
    let invalid = |message: &str| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
            Some("parameter_missing"),
        )
    };
    let Some(amount) = field(form, "amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return invalid("Missing or invalid required param: amount.");
    };
    let Some(currency) = field(form, "currency") else {
        return invalid("Missing required param: currency.");
    };
    let Some(customer_id) = field(form, "customer") else {
        return invalid("Missing required param: customer.");
    };
    let Some(customer) = ledger.customers.get(customer_id) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("No such customer: '{customer_id}'"),
            Some("resource_missing"),
        );
    };
    match customer.source.as_deref() {
        None => stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Cannot charge a customer that has no active card",
            Some("missing"),
        ),
        Some(SOURCE_DECLINED) => stripe_error(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            DECLINE_MESSAGE,
            Some("card_declined"),
        ),
        Some(_) => {
            // `metadata[name]=value` form fields, as Stripe takes them.
            let metadata: serde_json::Map<String, Value> = form
                .iter()
                .filter_map(|(name, value)| {
                    let name = name.strip_prefix("metadata[")?.strip_suffix(']')?;
                    Some((name.to_owned(), Value::String(value.clone())))
                })
                .collect();
            let charge = json!({
                "id": format!("ch_{}", uuid::Uuid::new_v4().simple()),
                "metadata": metadata,
                "object": "charge",
                "amount": amount,
                "currency": currency,
                "customer": customer_id,
                "description": field(form, "description"),
                "paid": true,
                "status": "succeeded",
                "created": now_unix(),
            });
            ledger.charges.push(StoredCharge {
                body: charge.clone(),
                at: Instant::now(),
            });
            (StatusCode::OK, charge)
        }
    }
}

impl FakeStripe {
    /// Runs one POST under Stripe's idempotency rules. The ledger is locked
    /// for the whole of it, so two requests with one key never both run.
    fn process(
        &self,
        path: &str,
        key: Option<&str>,
        form: &Form,
        run: fn(&mut Ledger, &Form) -> (StatusCode, Value),
    ) -> (StatusCode, Value, bool) {
        let mut ledger = self.ledger();
        let window = self.settings.idempotency_window;
        ledger
            .answers
            .retain(|_, saved| saved.at.elapsed() < window);
        let mut sorted = form.clone();
        sorted.sort();
        let fingerprint = format!(
            "{path}?{}",
            serde_urlencoded::to_string(&sorted).unwrap_or_default()
        );
        if let Some(key) = key
            && let Some(saved) = ledger.answers.get(key)
        {
            if saved.fingerprint != fingerprint {
                let (status, body) = stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    &format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                    None,
                );
                return (status, body, false);
            }
            return (saved.status, saved.body.clone(), true);
        }
        let (status, body) = run(&mut ledger, form);
        if let Some(key) = key {
            ledger.answers.insert(
                key.to_owned(),
                SavedAnswer {
                    fingerprint,
                    status,
                    body: body.clone(),
                    at: Instant::now(),
                },
            );
        }
        (status, body, false)
    }

    async fn handle(
        &self,
        path: &'static str,
        headers: HeaderMap,
        body: Bytes,
        run: fn(&mut Ledger, &Form) -> (StatusCode, Value),
    ) -> Response {
        if !authorized(&headers) {
            return unauthorized();
        }
        let form = match parse_form(&body) {
            Ok(form) => form,
            Err((status, body)) => return json_response(status, &body),
        };
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Held until this request's answer is saved or it ends without one.
        let _in_flight = match &key {
            Some(key) => match self.begin(key) {
                Some(guard) => Some(guard),
                None => {
                    info!(path, key, "fake-stripe: idempotency key in use");
                    self.count("409/in_use");
                    return key_in_use();
                }
            },
            None => None,
        };
        let fault = self.pick_fault(path);
        if let Some((kind, false)) = fault
            && let Some(response) = self.fault(kind, path).await
        {
            return response;
        }
        let (status, body, replayed) = self.process(path, key.as_deref(), &form, run);
        info!(path, %status, replayed, key = key.as_deref().unwrap_or(""), "fake-stripe answered");
        if let Some((kind, true)) = fault
            && let Some(response) = self.fault(kind, path).await
        {
            return response;
        }
        let mut response = json_response(status, &body);
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }

    /// The faulty answer, or `None` when the fault only delays the real one.
    async fn fault(&self, kind: FaultKind, path: &str) -> Option<Response> {
        let faults = &self.settings.faults;
        info!(path, ?kind, "fake-stripe injecting a fault");
        let (status, body) = match kind {
            FaultKind::Latency => {
                tokio::time::sleep(faults.latency).await;
                return None;
            }
            FaultKind::Hang => {
                tokio::time::sleep(faults.hang).await;
                stripe_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    "Hung (injected).",
                    None,
                )
            }
            FaultKind::ServerError => stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "Internal error (injected).",
                None,
            ),
            FaultKind::RateLimit => stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                "Too many requests (injected).",
                Some("rate_limit"),
            ),
            FaultKind::Drop => {
                // Half a body, then the stream fails: hyper aborts the
                // connection mid-answer.
                let parts: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from_static(b"{\"id\": \"ch_")),
                    Err(std::io::Error::other("connection dropped (injected)")),
                ];
                let body = Body::from_stream(futures_util::stream::iter(parts));
                return Some(
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response(),
                );
            }
        };
        Some(json_response(status, &body))
    }
}

async fn create_customer(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle("/v1/customers", headers, body, customer)
        .await
}

async fn create_charge(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe.handle("/v1/charges", headers, body, charge).await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    starting_after: Option<String>,
}

/// `GET /v1/<object>s/{id}`: the object `find` finds, or Stripe's 404.
fn retrieve(
    headers: &HeaderMap,
    object: &str,
    id: &str,
    find: impl FnOnce() -> Option<Value>,
) -> Response {
    if !authorized(headers) {
        return unauthorized();
    }
    match find() {
        Some(body) => json_response(StatusCode::OK, &body),
        None => missing(object, id, "id"),
    }
}

async fn retrieve_charge(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "charge", &id, || {
        let ledger = stripe.ledger();
        let charge = ledger.charges.iter().find(|c| c.body["id"] == id.as_str());
        charge.map(|c| c.body.clone())
    })
}

async fn retrieve_customer(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "customer", &id, || {
        stripe.ledger().customers.get(&id).map(|c| c.body.clone())
    })
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    query: Option<String>,
    limit: Option<usize>,
    page: Option<String>,
}

/// One clause of a search query: a field (`metadata['k']`, `customer`,
/// `status`) and the value it must equal.
#[derive(Debug, PartialEq, Eq)]
struct Clause {
    field: Vec<String>,
    value: String,
}

/// Parses `clause AND clause …`, each `field:'value'` (quotes `\`-escaped).
fn parse_search(query: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    let mut rest = query.trim();
    loop {
        let (field, after) = rest
            .split_once(':')
            .ok_or_else(|| format!("expected `field:'value'` at `{rest}`"))?;
        let field = field.trim();
        let path = match field
            .strip_prefix("metadata['")
            .and_then(|f| f.strip_suffix("']"))
        {
            Some(name) => vec!["metadata".to_owned(), name.to_owned()],
            None if matches!(field, "customer" | "status" | "currency") => vec![field.to_owned()],
            None => {
                return Err(format!(
                    "`{field}` is not a searchable field of charges here"
                ));
            }
        };
        let mut chars = after.trim_start().char_indices();
        if !matches!(chars.next(), Some((_, '\'' | '"'))) {
            return Err(format!("the value of `{field}` must be quoted"));
        }
        let quote = after.trim_start().as_bytes()[0] as char;
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (index, c) in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, c) if c == quote => {
                    end = Some(index + 1);
                    break;
                }
                (_, c) => {
                    value.push(c);
                    escaped = false;
                }
            }
        }
        let end = end.ok_or_else(|| format!("the value of `{field}` is not closed"))?;
        clauses.push(Clause { field: path, value });
        rest = after.trim_start()[end..].trim();
        if rest.is_empty() {
            return Ok(clauses);
        }
        rest = rest
            .strip_prefix("AND ")
            .ok_or_else(|| format!("expected `AND` at `{rest}`"))?
            .trim_start();
    }
}

fn matches(charge: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| {
        let found = clause.field.iter().fold(charge, |value, name| &value[name]);
        found.as_str() == Some(clause.value.as_str())
    })
}

/// Stripe's charge search: only charges made at least `search_delay` ago.
async fn search_charges(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let invalid = |message: &str, param: &str| {
        let (status, mut body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
            Some("parameter_invalid"),
        );
        body["error"]["param"] = json!(param);
        json_response(status, &body)
    };
    let Some(text) = query.query else {
        let (status, body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Missing required param: query.",
            Some("parameter_missing"),
        );
        return json_response(status, &body);
    };
    let clauses = match parse_search(&text) {
        Ok(clauses) => clauses,
        Err(reason) => return invalid(&format!("Invalid search query: {reason}"), "query"),
    };
    let limit = query.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return invalid("limit must be between 1 and 100", "limit");
    }
    let Ok(start) = query.page.as_deref().map_or(Ok(0), str::parse::<usize>) else {
        return invalid("Invalid page cursor", "page");
    };
    let delay = stripe.settings.search_delay;
    let ledger = stripe.ledger();
    let hits: Vec<&Value> = ledger
        .charges
        .iter()
        .rev()
        .filter(|charge| charge.at.elapsed() >= delay && matches(&charge.body, &clauses))
        .map(|charge| &charge.body)
        .collect();
    let page: Vec<&Value> = hits.iter().skip(start).take(limit).copied().collect();
    let next = start + page.len();
    let has_more = next < hits.len();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "search_result",
            "url": "/v1/charges/search",
            "has_more": has_more,
            "next_page": has_more.then(|| next.to_string()),
            "data": page,
        }),
    )
}

/// Not Stripe's: how many faults of each kind (and timing) were injected,
/// for a soak's report.
async fn list_faults(State(stripe): State<FakeStripe>) -> Response {
    let faults = stripe.ledger().faults.clone();
    json_response(StatusCode::OK, &json!(faults))
}

async fn list_charges(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let limit = query.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let (status, body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "limit must be between 1 and 100",
            Some("parameter_invalid_integer"),
        );
        return json_response(status, &body);
    }
    let ledger = stripe.ledger();
    // Newest first, as Stripe lists.
    let newest_first: Vec<&Value> = ledger.charges.iter().rev().map(|c| &c.body).collect();
    let start = match &query.starting_after {
        None => 0,
        Some(after) => match newest_first.iter().position(|c| c["id"] == after.as_str()) {
            Some(index) => index + 1,
            None => {
                return missing("charge", after, "starting_after");
            }
        },
    };
    let page: Vec<&Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .copied()
        .collect();
    let has_more = start + page.len() < newest_first.len();
    json_response(
        StatusCode::OK,
        &json!({ "object": "list", "url": "/v1/charges", "has_more": has_more, "data": page }),
    )
}
