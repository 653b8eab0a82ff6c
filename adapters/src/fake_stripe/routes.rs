//! The HTTP routes: create, retrieve and list, and the faults report.

use super::*;

pub(super) async fn create_customer(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle("/v1/customers", None, headers, body, customer)
        .await
}

pub(super) async fn create_charge(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle("/v1/charges", None, headers, body, charge)
        .await
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    pub(super) limit: Option<usize>,
    pub(super) starting_after: Option<String>,
}

/// `GET /v1/<object>s/{id}`: the object `find` finds, or Stripe's 404.
pub(super) fn retrieve(
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

pub(super) async fn retrieve_charge(
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

pub(super) async fn retrieve_customer(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "customer", &id, || {
        stripe.ledger().customers.get(&id).map(|c| c.body.clone())
    })
}

/// Not Stripe's: how many faults of each kind (and timing) were injected,
/// for a soak's report.
pub(super) async fn list_faults(State(stripe): State<FakeStripe>) -> Response {
    let faults = stripe.ledger().faults.clone();
    json_response(StatusCode::OK, &json!(faults))
}

pub(super) async fn list_charges(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let charges: Vec<Value> = stripe
        .ledger()
        .charges
        .iter()
        .map(|c| c.body.clone())
        .collect();
    list_newest_first(&headers, &query, "/v1/charges", "charge", charges.iter())
}

/// A Stripe list of `objects` (oldest first) from newest to oldest, paged
/// by `limit` and `starting_after`.
pub(super) fn list_newest_first<'a>(
    headers: &HeaderMap,
    query: &ListQuery,
    url: &str,
    object: &str,
    objects: impl DoubleEndedIterator<Item = &'a Value>,
) -> Response {
    if !authorized(headers) {
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
    let newest_first: Vec<&Value> = objects.rev().collect();
    let start = match &query.starting_after {
        None => 0,
        Some(after) => match newest_first.iter().position(|o| o["id"] == after.as_str()) {
            Some(index) => index + 1,
            None => {
                return missing(object, after, "starting_after");
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
        &json!({ "object": "list", "url": url, "has_more": has_more, "data": page }),
    )
}

pub(super) async fn create_intent(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle(
            "/v1/payment_intents",
            None,
            headers,
            body,
            create_payment_intent,
        )
        .await
}

pub(super) async fn confirm_intent(
    State(stripe): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = |ledger: &mut Ledger, form: &Form| confirm_payment_intent(ledger, &id, form);
    stripe
        .handle("/v1/payment_intents/confirm", Some(&id), headers, body, run)
        .await
}

pub(super) async fn cancel_intent(
    State(stripe): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = |ledger: &mut Ledger, form: &Form| cancel_payment_intent(ledger, &id, form);
    stripe
        .handle("/v1/payment_intents/cancel", Some(&id), headers, body, run)
        .await
}

pub(super) async fn attach_method(
    State(stripe): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = |ledger: &mut Ledger, form: &Form| attach_payment_method(ledger, &id, form);
    stripe
        .handle("/v1/payment_methods/attach", Some(&id), headers, body, run)
        .await
}

/// Not Stripe's (no key needed, no faults): the rider authenticates.
pub(super) async fn authenticate_intent(
    State(stripe): State<FakeStripe>,
    Path(id): Path<String>,
) -> Response {
    let (status, body) = authenticate_payment_intent(&mut stripe.ledger(), &id);
    json_response(status, &body)
}

pub(super) async fn retrieve_intent(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "payment_intent", &id, || {
        let ledger = stripe.ledger();
        let intent = ledger
            .payment_intents
            .iter()
            .find(|i| i.body["id"] == id.as_str());
        intent.map(|i| i.body.clone())
    })
}

pub(super) async fn retrieve_payment_method(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "payment_method", &id, || {
        stripe
            .ledger()
            .payment_methods
            .get(&id)
            .map(|pm| pm.body.clone())
    })
}

pub(super) async fn retrieve_event(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    retrieve(&headers, "event", &id, || {
        let ledger = stripe.ledger();
        ledger
            .events
            .iter()
            .find(|e| e["id"] == id.as_str())
            .cloned()
    })
}

/// `GET /v1/events`: newest first, as Stripe lists.
pub(super) async fn list_events(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let events = stripe.ledger().events.clone();
    list_newest_first(&headers, &query, "/v1/events", "event", events.iter())
}
