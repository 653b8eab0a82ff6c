//! Refunds, as Stripe makes them: against a PaymentIntent (its charge) or a
//! charge, in full or in part, never more than is left unrefunded
//! (`amount_too_large`, `charge_already_refunded`). A refund of a charge
//! paid with `pm_card_refundFail` is `succeeded` at first and `failed`
//! `processing_delay` later, as Stripe's test card does, with a
//! `charge.refund.updated` event; its amount is then unrefunded again.

use super::*;

/// `POST /v1/refunds`.
pub(super) fn create_refund(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
    let charge_id = match (field(form, "payment_intent"), field(form, "charge")) {
        (Some(intent_id), None) => {
            let Some(intent) = ledger
                .payment_intents
                .iter()
                .find(|stored| stored.body["id"] == intent_id)
            else {
                return no_such("payment_intent", intent_id, "payment_intent");
            };
            match intent.body["latest_charge"].as_str() {
                Some(charge) if intent.body["status"] == "succeeded" => charge.to_owned(),
                _ => {
                    return invalid(
                        &format!(
                            "This PaymentIntent ({intent_id}) does not have a successful charge to refund."
                        ),
                        "charge_not_refundable",
                        "payment_intent",
                    );
                }
            }
        }
        (None, Some(charge)) => charge.to_owned(),
        _ => {
            return invalid(
                "One of `charge` or `payment_intent` is required.",
                "parameter_missing",
                "charge",
            );
        }
    };
    let Some(index) = ledger
        .charges
        .iter()
        .position(|stored| stored.body["id"] == charge_id.as_str())
    else {
        return no_such("charge", &charge_id, "charge");
    };
    let charge = ledger.charges[index].body.clone();
    let charged = charge["amount"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let left = charged - refunded;
    if left <= 0 {
        return invalid(
            &format!("Charge {charge_id} has already been refunded."),
            "charge_already_refunded",
            "charge",
        );
    }
    let amount = match field(form, "amount") {
        None => left,
        Some(text) => match text.parse::<i64>() {
            Ok(amount) if amount > 0 => amount,
            _ => {
                return invalid(
                    "Invalid positive integer",
                    "parameter_invalid_integer",
                    "amount",
                );
            }
        },
    };
    if amount > left {
        return invalid(
            &format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            ),
            "amount_too_large",
            "amount",
        );
    }
    let refund = json!({
        "id": format!("re_{}", uuid::Uuid::new_v4().simple()),
        "object": "refund",
        "amount": amount,
        "currency": charge["currency"],
        "charge": charge_id,
        "payment_intent": charge["payment_intent"],
        "metadata": Value::Object(super::payments::metadata(form)),
        "reason": field(form, "reason"),
        "status": "succeeded",
        "created": now_unix(),
    });
    let fails_later = charge["payment_method"]
        .as_str()
        .and_then(|pm| ledger.card(pm))
        == Some(Card::RefundFails);
    {
        let stored = &mut ledger.charges[index].body;
        stored["amount_refunded"] = json!(refunded + amount);
        stored["refunded"] = json!(refunded + amount == charged);
    }
    if fails_later {
        let id = refund["id"].as_str().unwrap_or_default().to_owned();
        let due = Instant::now() + ledger.processing_delay;
        ledger.failing_refunds.push((id, due));
    }
    ledger.refunds.push(StoredCharge {
        body: refund.clone(),
        at: Instant::now(),
    });
    ledger.record_event("refund.created", &refund);
    (StatusCode::OK, refund)
}

impl Ledger {
    /// Every refund of a `pm_card_refundFail` charge whose time has come
    /// fails: its amount unrefunded again, its events recorded.
    pub(super) fn fail_due_refunds(&mut self) {
        let now = Instant::now();
        if !self.failing_refunds.iter().any(|(_, at)| *at <= now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = self
            .failing_refunds
            .drain(..)
            .partition(|(_, at)| *at <= now);
        self.failing_refunds = later;
        for (id, _) in due {
            let Some(refund) = self
                .refunds
                .iter_mut()
                .find(|stored| stored.body["id"] == id.as_str())
            else {
                continue;
            };
            refund.body["status"] = json!("failed");
            refund.body["failure_reason"] = json!("expired_or_canceled_card");
            let refund = refund.body.clone();
            let amount = refund["amount"].as_i64().unwrap_or(0);
            if let Some(charge) = self
                .charges
                .iter_mut()
                .find(|stored| stored.body["id"] == refund["charge"])
            {
                let refunded = charge.body["amount_refunded"].as_i64().unwrap_or(0) - amount;
                charge.body["amount_refunded"] = json!(refunded.max(0));
                charge.body["refunded"] = json!(false);
            }
            self.record_event("charge.refund.updated", &refund);
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RefundQuery {
    pub(super) limit: Option<usize>,
    pub(super) starting_after: Option<String>,
    pub(super) payment_intent: Option<String>,
    pub(super) charge: Option<String>,
}

/// `GET /v1/refunds`: newest first, optionally of one PaymentIntent or
/// charge.
pub(super) async fn list_refunds(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<RefundQuery>,
) -> Response {
    let refunds: Vec<Value> = stripe
        .ledger()
        .refunds
        .iter()
        .map(|stored| stored.body.clone())
        .filter(|refund| {
            query
                .payment_intent
                .as_deref()
                .is_none_or(|intent| refund["payment_intent"] == intent)
                && query
                    .charge
                    .as_deref()
                    .is_none_or(|charge| refund["charge"] == charge)
        })
        .collect();
    let page = ListQuery {
        limit: query.limit,
        starting_after: query.starting_after,
    };
    list_newest_first(&headers, &page, "/v1/refunds", "refund", refunds.iter())
}

/// `GET /v1/refunds/{id}`.
pub(super) async fn retrieve_refund(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "refund", &id, || {
        stripe
            .ledger()
            .refunds
            .iter()
            .find(|stored| stored.body["id"] == id.as_str())
            .map(|stored| stored.body.clone())
    })
}

pub(super) async fn create_refund_route(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle("/v1/refunds", None, headers, body, create_refund)
        .await
}
