//! PaymentMethods and PaymentIntents, as Stripe's test mode behaves for
//! its test PaymentMethods: `pm_card_visa` charges, `pm_card_chargeDeclined`
//! is declined, `pm_card_authenticationRequired` asks for 3-D Secure (off
//! session: a 402 `authentication_required` with the PaymentIntent, which
//! the rider can then authenticate; the test-only route
//! `POST /_fake/payment_intents/{id}/authenticate` does it as the rider
//! would), `pm_card_refundFail` charges (its refunds fail later), and
//! fake-stripe's own `pm_fake_processing` (no Stripe test card does this)
//! leaves the intent `processing` for `processing_delay`, then succeeds.
//! Every change of a PaymentIntent is recorded as an event.

use super::*;

/// How a card behaves, by the test PaymentMethod it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Card {
    Charges,
    Declines,
    NeedsAuthentication,
    RefundFails,
    Processes,
}

impl Card {
    pub(super) fn of_test_id(id: &str) -> Option<Self> {
        Some(match id {
            "pm_card_visa" => Card::Charges,
            "pm_card_chargeDeclined" => Card::Declines,
            "pm_card_authenticationRequired" => Card::NeedsAuthentication,
            "pm_card_refundFail" => Card::RefundFails,
            "pm_fake_processing" => Card::Processes,
            _ => return None,
        })
    }

    fn last4(self) -> &'static str {
        match self {
            Card::Charges => "4242",
            Card::Declines => "0002",
            Card::NeedsAuthentication => "3184",
            Card::RefundFails => "5126",
            Card::Processes => "0077",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PaymentMethod {
    pub(super) card: Card,
    pub(super) body: Value,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn invalid(message: &str, code: &str, param: &str) -> (StatusCode, Value) {
    let (status, mut body) = stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Some(code),
    );
    body["error"]["param"] = json!(param);
    (status, body)
}

pub(super) fn no_such(object: &str, id: &str, param: &str) -> (StatusCode, Value) {
    invalid(
        &format!("No such {object}: '{id}'"),
        "resource_missing",
        param,
    )
}

/// `metadata[name]=value` form fields, as Stripe takes them.
pub(super) fn metadata(form: &Form) -> serde_json::Map<String, Value> {
    form.iter()
        .filter_map(|(name, value)| {
            let name = name.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(value.clone())))
        })
        .collect()
}

impl Ledger {
    /// A new PaymentMethod of the kind `id` names (a test id), attached to
    /// `customer`; or `id` itself when it is one of ours not attached yet.
    pub(super) fn attach_payment_method(
        &mut self,
        id: &str,
        customer: &str,
    ) -> Result<Value, (StatusCode, Value)> {
        if !self.customers.contains_key(customer) {
            return Err(no_such("customer", customer, "customer"));
        }
        if let Some(existing) = self.payment_methods.get_mut(id) {
            match existing.body["customer"].as_str() {
                Some(owner) if owner != customer => {
                    return Err(invalid(
                        "The payment method you provided has already been attached to a customer.",
                        "payment_method_unexpected_state",
                        "payment_method",
                    ));
                }
                _ => {
                    existing.body["customer"] = json!(customer);
                    return Ok(existing.body.clone());
                }
            }
        }
        let Some(card) = Card::of_test_id(id) else {
            return Err(no_such("PaymentMethod", id, "payment_method"));
        };
        let body = json!({
            "id": new_id("pm"),
            "object": "payment_method",
            "type": "card",
            "card": { "brand": "visa", "last4": card.last4() },
            "customer": customer,
            "created": now_unix(),
        });
        self.payment_methods.insert(
            body["id"].as_str().unwrap_or_default().to_owned(),
            PaymentMethod {
                card,
                body: body.clone(),
            },
        );
        Ok(body)
    }

    /// The card a PaymentIntent is paid with: one of ours, or a test id.
    pub(super) fn card(&self, payment_method: &str) -> Option<Card> {
        self.payment_methods
            .get(payment_method)
            .map(|pm| pm.card)
            .or_else(|| Card::of_test_id(payment_method))
    }

    pub(super) fn record_event(&mut self, kind: &str, object: &Value) {
        let event = json!({
            "id": new_id("evt"),
            "object": "event",
            "type": kind,
            "created": now_unix(),
            "data": { "object": object },
        });
        if let Some(deliveries) = &mut self.deliveries {
            deliveries.push(Pending {
                event: event.clone(),
                attempts: 0,
                due: Instant::now(),
            });
        }
        self.events.push(event);
    }

    fn save_intent(&mut self, intent: &Value) {
        let id = intent["id"].as_str().unwrap_or_default();
        match self
            .payment_intents
            .iter_mut()
            .find(|stored| stored.body["id"] == id)
        {
            Some(stored) => stored.body = intent.clone(),
            None => self.payment_intents.push(StoredCharge {
                body: intent.clone(),
                at: Instant::now(),
            }),
        }
    }

    /// Confirms `intent` with its card, off session or not: succeeded (with
    /// its charge), declined, or waiting for the rider to authenticate.
    /// The answer Stripe gives, and the intent saved as it now is.
    fn confirm(&mut self, mut intent: Value, off_session: bool) -> (StatusCode, Value) {
        let payment_method = intent["payment_method"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(card) = self.card(&payment_method) else {
            return no_such("PaymentMethod", &payment_method, "payment_method");
        };
        match card {
            Card::Charges | Card::RefundFails => {
                self.succeed(&mut intent);
                (StatusCode::OK, intent)
            }
            Card::Declines => {
                self.fail(intent, "card_declined", "generic_decline", DECLINE_MESSAGE)
            }
            Card::Processes => {
                intent["status"] = json!("processing");
                self.save_intent(&intent);
                self.record_event("payment_intent.processing", &intent);
                let id = intent["id"].as_str().unwrap_or_default().to_owned();
                self.processing
                    .push((id, Instant::now() + self.processing_delay));
                (StatusCode::OK, intent)
            }
            Card::NeedsAuthentication if off_session => self.fail(
                intent,
                "authentication_required",
                "authentication_required",
                "Your card was declined. This transaction requires authentication.",
            ),
            Card::NeedsAuthentication => {
                intent["status"] = json!("requires_action");
                intent["next_action"] = json!({ "type": "use_stripe_sdk" });
                self.save_intent(&intent);
                self.record_event("payment_intent.requires_action", &intent);
                (StatusCode::OK, intent)
            }
        }
    }

    fn succeed(&mut self, intent: &mut Value) {
        let charge = json!({
            "id": new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "currency": intent["currency"],
            "customer": intent["customer"],
            "metadata": intent["metadata"],
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "paid": true,
            "status": "succeeded",
            "created": now_unix(),
        });
        self.charges.push(StoredCharge {
            body: charge.clone(),
            at: Instant::now(),
        });
        intent["status"] = json!("succeeded");
        intent["amount_received"] = intent["amount"].clone();
        intent["latest_charge"] = charge["id"].clone();
        intent["last_payment_error"] = Value::Null;
        intent["next_action"] = Value::Null;
        self.save_intent(intent);
        self.record_event("payment_intent.succeeded", intent);
    }

    /// A 402 `card_error` carrying the PaymentIntent, as Stripe answers a
    /// failed confirmation; the intent waits for another payment method.
    fn fail(
        &mut self,
        mut intent: Value,
        code: &str,
        decline_code: &str,
        message: &str,
    ) -> (StatusCode, Value) {
        let error = json!({
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
        });
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = error.clone();
        self.save_intent(&intent);
        self.record_event("payment_intent.payment_failed", &intent);
        let mut error = error;
        error["payment_intent"] = intent;
        (StatusCode::PAYMENT_REQUIRED, json!({ "error": error }))
    }

    /// Every `processing` PaymentIntent whose time has come succeeds (its
    /// charge made, its event recorded).
    pub(super) fn settle_processing(&mut self) {
        let now = Instant::now();
        if !self.processing.iter().any(|(_, at)| *at <= now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) =
            self.processing.drain(..).partition(|(_, at)| *at <= now);
        self.processing = later;
        for (id, _) in due {
            if let Some(mut intent) = self.intent(&id)
                && intent["status"] == "processing"
            {
                self.succeed(&mut intent);
            }
        }
    }

    fn intent(&self, id: &str) -> Option<Value> {
        self.payment_intents
            .iter()
            .find(|stored| stored.body["id"] == id)
            .map(|stored| stored.body.clone())
    }
}

fn flag(form: &Form, name: &str) -> Result<bool, (StatusCode, Value)> {
    match field(form, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(
            &format!("Invalid boolean: {other}"),
            "parameter_invalid_boolean",
            name,
        )),
    }
}

/// `POST /v1/payment_intents`: amount, currency, customer, payment_method,
/// `confirm`, `off_session`, metadata.
pub(super) fn create_payment_intent(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
    let Some(amount) = field(form, "amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return invalid(
            "Missing or invalid required param: amount.",
            "parameter_missing",
            "amount",
        );
    };
    let Some(currency) = field(form, "currency") else {
        return invalid(
            "Missing required param: currency.",
            "parameter_missing",
            "currency",
        );
    };
    let customer = field(form, "customer");
    if let Some(customer) = customer
        && !ledger.customers.contains_key(customer)
    {
        return no_such("customer", customer, "customer");
    }
    let payment_method = field(form, "payment_method");
    if let Some(id) = payment_method {
        match ledger.payment_methods.get(id) {
            Some(attached) if attached.body["customer"].as_str() != customer => {
                return invalid(
                    "The provided PaymentMethod belongs to another customer (or none); attach it to this customer first.",
                    "payment_method_unexpected_state",
                    "payment_method",
                );
            }
            // A test id (`pm_card_visa`) is paid with as it is.
            None if Card::of_test_id(id).is_none() => {
                return no_such("PaymentMethod", id, "payment_method");
            }
            _ => {}
        }
    }
    create_with(
        ledger,
        form,
        amount,
        currency,
        customer,
        payment_method.unwrap_or_default(),
    )
}

fn create_with(
    ledger: &mut Ledger,
    form: &Form,
    amount: i64,
    currency: &str,
    customer: Option<&str>,
    payment_method: &str,
) -> (StatusCode, Value) {
    let (confirm, off_session) = match (flag(form, "confirm"), flag(form, "off_session")) {
        (Ok(confirm), Ok(off_session)) => (confirm, off_session),
        (Err(error), _) | (_, Err(error)) => return error,
    };
    if confirm && payment_method.is_empty() {
        return invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            "payment_intent_unexpected_state",
            "payment_method",
        );
    }
    let id = new_id("pi");
    let intent = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "currency": currency,
        "customer": customer,
        "payment_method": (!payment_method.is_empty()).then_some(payment_method),
        "metadata": metadata(form),
        "client_secret": format!("{id}_secret_{}", uuid::Uuid::new_v4().simple()),
        "status": if payment_method.is_empty() { "requires_payment_method" } else { "requires_confirmation" },
        "latest_charge": null,
        "last_payment_error": null,
        "next_action": null,
        "created": now_unix(),
    });
    ledger.save_intent(&intent);
    ledger.record_event("payment_intent.created", &intent);
    if confirm {
        ledger.confirm(intent, off_session)
    } else {
        (StatusCode::OK, intent)
    }
}

/// `POST /v1/payment_intents/{id}/confirm`.
pub(super) fn confirm_payment_intent(
    ledger: &mut Ledger,
    id: &str,
    form: &Form,
) -> (StatusCode, Value) {
    let Some(mut intent) = ledger.intent(id) else {
        return no_such("payment_intent", id, "intent");
    };
    let off_session = match flag(form, "off_session") {
        Ok(off_session) => off_session,
        Err(error) => return error,
    };
    if let Some(payment_method) = field(form, "payment_method") {
        intent["payment_method"] = json!(payment_method);
    }
    match intent["status"].as_str() {
        Some("requires_confirmation" | "requires_payment_method" | "requires_action") => {
            ledger.confirm(intent, off_session)
        }
        status => unexpected_state(id, "confirm", status),
    }
}

/// `POST /v1/payment_intents/{id}/cancel`: any intent not succeeded or
/// canceled already.
pub(super) fn cancel_payment_intent(
    ledger: &mut Ledger,
    id: &str,
    form: &Form,
) -> (StatusCode, Value) {
    let Some(mut intent) = ledger.intent(id) else {
        return no_such("payment_intent", id, "intent");
    };
    match intent["status"].as_str() {
        Some("succeeded" | "canceled") => unexpected_state(id, "cancel", intent["status"].as_str()),
        _ => {
            intent["status"] = json!("canceled");
            intent["canceled_at"] = json!(now_unix());
            intent["cancellation_reason"] = json!(field(form, "cancellation_reason"));
            ledger.save_intent(&intent);
            ledger.record_event("payment_intent.canceled", &intent);
            (StatusCode::OK, intent)
        }
    }
}

/// Not Stripe's: the rider completes 3-D Secure for an intent that needs
/// it, as they would in the app; the payment then succeeds.
pub(super) fn authenticate_payment_intent(ledger: &mut Ledger, id: &str) -> (StatusCode, Value) {
    let Some(mut intent) = ledger.intent(id) else {
        return no_such("payment_intent", id, "intent");
    };
    let card = intent["payment_method"]
        .as_str()
        .and_then(|pm| ledger.card(pm));
    match (intent["status"].as_str(), card) {
        (Some("requires_payment_method" | "requires_action"), Some(Card::NeedsAuthentication)) => {
            ledger.succeed(&mut intent);
            (StatusCode::OK, intent)
        }
        (status, _) => unexpected_state(id, "authenticate", status),
    }
}

fn unexpected_state(id: &str, action: &str, status: Option<&str>) -> (StatusCode, Value) {
    invalid(
        &format!(
            "You cannot {action} this PaymentIntent ({id}) because it has a status of {}.",
            status.unwrap_or("unknown")
        ),
        "payment_intent_unexpected_state",
        "intent",
    )
}

/// `POST /v1/payment_methods/{id}/attach`.
pub(super) fn attach_payment_method(
    ledger: &mut Ledger,
    id: &str,
    form: &Form,
) -> (StatusCode, Value) {
    let Some(customer) = field(form, "customer") else {
        return invalid(
            "Missing required param: customer.",
            "parameter_missing",
            "customer",
        );
    };
    match ledger.attach_payment_method(id, customer) {
        Ok(body) => (StatusCode::OK, body),
        Err(error) => error,
    }
}
