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

mod errors;
mod idempotency;
mod ledger;
mod objects;
mod payments;
mod refunds;
mod routes;
mod search;
mod settings;
mod webhooks;

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

use crate::memory::gateway::DECLINE_MESSAGE;

/// Card tokens the Charges API takes, as Stripe's test mode names them.
const SOURCE_CHARGES: &str = "tok_visa";
const SOURCE_DECLINED: &str = "tok_chargeCustomerFail";

use errors::*;
use idempotency::*;
use ledger::*;
use objects::*;
use payments::*;
use refunds::*;
use routes::*;
use search::*;
pub use settings::{
    DEFAULT_PORT, FakeStripeSettings, FaultKind, FaultTiming, Faults, WebhookDelivery,
};

#[derive(Clone)]
pub struct FakeStripe {
    ledger: Arc<Mutex<Ledger>>,
    settings: Arc<FakeStripeSettings>,
}

impl FakeStripe {
    /// With `settings.webhook`, its events are delivered there from a task
    /// of the current tokio runtime (until the fake is dropped).
    pub fn new(settings: FakeStripeSettings) -> Self {
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .processing_delay = settings.processing_delay;
        if let Some(delivery) = settings.webhook.clone() {
            ledger
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .deliveries = Some(Vec::new());
            webhooks::spawn_deliveries(Arc::downgrade(&ledger), delivery);
        }
        Self {
            ledger,
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

    /// The account, with every `processing` PaymentIntent that is due
    /// settled first: whoever looks sees it as it is by now.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ledger.settle_processing();
        ledger.fail_due_refunds();
        ledger
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/customers/{id}", get(retrieve_customer))
            .route("/v1/charges", post(create_charge).get(list_charges))
            .route("/v1/charges/search", get(search_charges))
            .route("/v1/charges/{id}", get(retrieve_charge))
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/search", get(search_intents))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .route("/v1/payment_intents/{id}/confirm", post(confirm_intent))
            .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
            .route("/v1/payment_methods/{id}", get(retrieve_payment_method))
            .route("/v1/payment_methods/{id}/attach", post(attach_method))
            .route("/v1/refunds", post(create_refund_route).get(list_refunds))
            .route("/v1/refunds/{id}", get(retrieve_refund))
            .route("/v1/events", get(list_events))
            .route("/v1/events/{id}", get(retrieve_event))
            .route(
                "/_fake/payment_intents/{id}/authenticate",
                post(authenticate_intent),
            )
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

    /// Every PaymentIntent as it is now, oldest first (for tests).
    pub fn payment_intents(&self) -> Vec<Value> {
        self.ledger()
            .payment_intents
            .iter()
            .map(|intent| intent.body.clone())
            .collect()
    }

    /// Every event, oldest first (for tests).
    pub fn events(&self) -> Vec<Value> {
        self.ledger().events.clone()
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
