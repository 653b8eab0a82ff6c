//! The HTTP routes: create, retrieve and list, and the faults report.

use super::*;

pub(super) async fn create_customer(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe
        .handle("/v1/customers", headers, body, customer)
        .await
}

pub(super) async fn create_charge(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stripe.handle("/v1/charges", headers, body, charge).await
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
