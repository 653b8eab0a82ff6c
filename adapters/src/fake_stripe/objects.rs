//! Creating Stripe's objects from a form-encoded body: customers (with a
//! card token) and charges (charged or declined by the card).

use super::*;

pub(super) type Form = Vec<(String, String)>;

pub(super) fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

pub(super) fn parse_form(body: &Bytes) -> Result<Form, (StatusCode, Value)> {
    serde_urlencoded::from_bytes(body).map_err(|error| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("Invalid form body: {error}"),
            None,
        )
    })
}

pub(super) fn customer(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
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
    let mut body = json!({
        "id": id,
        "object": "customer",
        "email": field(form, "email"),
        "created": now_unix(),
        "invoice_settings": { "default_payment_method": null },
    });
    ledger.customers.insert(
        id.clone(),
        Customer {
            source,
            body: body.clone(),
        },
    );
    // `payment_method` attaches one at creation, as Stripe does; it is the
    // default when `invoice_settings[default_payment_method]` names it.
    if let Some(payment_method) = field(form, "payment_method") {
        match ledger.attach_payment_method(payment_method, &id) {
            Ok(attached) => {
                let default = field(form, "invoice_settings[default_payment_method]");
                if default == Some(payment_method) {
                    body["invoice_settings"]["default_payment_method"] = attached["id"].clone();
                }
                body["payment_method"] = attached["id"].clone();
                if let Some(customer) = ledger.customers.get_mut(&id) {
                    customer.body = body.clone();
                }
            }
            Err(error) => {
                ledger.customers.remove(&id);
                return error;
            }
        }
    }
    (StatusCode::OK, body)
}

pub(super) fn charge(ledger: &mut Ledger, form: &Form) -> (StatusCode, Value) {
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
