//! Stripe's idempotency rules: a key in flight answers 409, a key seen
//! with the same parameters gets its first answer again, other parameters
//! 400; and where faults land (before the work, or after it with the
//! answer lost).

use super::*;

/// A request with an idempotency key in flight; dropping it (the answer
/// saved, an injected failure, the client gone) lets the key be used again.
pub(super) struct InFlight {
    pub(super) ledger: Arc<Mutex<Ledger>>,
    pub(super) key: Option<String>,
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

impl FakeStripe {
    /// Runs one POST under Stripe's idempotency rules. The ledger is locked
    /// for the whole of it, so two requests with one key never both run.
    pub(super) fn process(
        &self,
        path: &str,
        key: Option<&str>,
        form: &Form,
        run: impl FnOnce(&mut Ledger, &Form) -> (StatusCode, Value),
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

    /// A POST to `path` (the route, as `--fault-paths` names it; `id`, if
    /// the route has one, joins the request's identity for the idempotency
    /// rules), answered by `run` over the ledger.
    pub(super) async fn handle(
        &self,
        path: &'static str,
        id: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
        run: impl FnOnce(&mut Ledger, &Form) -> (StatusCode, Value),
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
        let target = match id {
            Some(id) => format!("{path}/{id}"),
            None => path.to_owned(),
        };
        let (status, body, replayed) = self.process(&target, key.as_deref(), &form, run);
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
    pub(super) async fn fault(&self, kind: FaultKind, path: &str) -> Option<Response> {
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
