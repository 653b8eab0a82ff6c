//! `GET /v1/charges/search` and `GET /v1/payment_intents/search`: Stripe's
//! query language (as much as we use: `metadata['k']:'v'`, `customer:`,
//! `status:` joined by AND), over the objects the lagging index has caught
//! up with.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    pub(super) query: Option<String>,
    pub(super) limit: Option<usize>,
    pub(super) page: Option<String>,
}

/// One clause of a search query: a field (`metadata['k']`, `customer`,
/// `status`) and the value it must equal.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Clause {
    pub(super) field: Vec<String>,
    pub(super) value: String,
}

/// Parses `clause AND clause …`, each `field:'value'` (quotes `\`-escaped).
pub(super) fn parse_search(query: &str) -> Result<Vec<Clause>, String> {
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
                return Err(format!("`{field}` is not a searchable field here"));
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

pub(super) fn matches(charge: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| {
        let found = clause.field.iter().fold(charge, |value, name| &value[name]);
        found.as_str() == Some(clause.value.as_str())
    })
}

/// Stripe's charge search: only charges made at least `search_delay` ago.
pub(super) async fn search_charges(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    search(&stripe, &headers, query, "/v1/charges/search", |ledger| {
        &ledger.charges
    })
}

/// Stripe's PaymentIntent search, lagging the same way.
pub(super) async fn search_intents(
    State(stripe): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    search(
        &stripe,
        &headers,
        query,
        "/v1/payment_intents/search",
        |ledger| &ledger.payment_intents,
    )
}

/// A search over the objects `pick` names, those made at least
/// `search_delay` ago (as Stripe's index lags), newest first.
fn search(
    stripe: &FakeStripe,
    headers: &HeaderMap,
    query: SearchQuery,
    url: &str,
    pick: fn(&Ledger) -> &Vec<StoredCharge>,
) -> Response {
    if !authorized(headers) {
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
    let hits: Vec<&Value> = pick(&ledger)
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
            "url": url,
            "has_more": has_more,
            "next_page": has_more.then(|| next.to_string()),
            "data": page,
        }),
    )
}
