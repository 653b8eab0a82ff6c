//! Who may use the console: the token, as a cookie set at sign-in or as a
//! bearer, compared in constant time; wrong tokens limited in rate, so the
//! token cannot be found by trying many; and the per-token form guard that
//! keeps cross-site posts out.

use super::*;

pub(super) const COOKIE: &str = "rocket_rides_console";

/// Wrong tokens, counted: past `MAX_FAILURES` within `WINDOW`, every token
/// (at sign-in or on a request) is refused with 429 until the oldest
/// failure leaves the window, right or wrong, so trying many tokens gains
/// nothing. (One count for the process: the console is for a handful of
/// operators on the operations address.)
#[derive(Default)]
pub struct SignInLimiter(Mutex<std::collections::VecDeque<Instant>>);

impl SignInLimiter {
    pub const MAX_FAILURES: usize = 10;
    pub const WINDOW: Duration = Duration::from_secs(60);

    fn failures(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Instant>> {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while failures
            .front()
            .is_some_and(|at| at.elapsed() >= Self::WINDOW)
        {
            failures.pop_front();
        }
        failures
    }

    /// How long until a token may be tried again; `None`: now.
    pub(super) fn wait(&self) -> Option<Duration> {
        let failures = self.failures();
        (failures.len() >= Self::MAX_FAILURES)
            .then(|| {
                failures
                    .front()
                    .map(|at| Self::WINDOW.saturating_sub(at.elapsed()))
            })
            .flatten()
    }

    pub(super) fn failed(&self) {
        self.failures().push_back(Instant::now());
    }
}

/// 429 with `Retry-After`: too many wrong tokens lately.
pub(super) fn too_many_tries(wait: Duration) -> Response {
    tracing::warn!(
        ?wait,
        "console: too many wrong tokens; refusing tokens for a while"
    );
    let mut response = html(
        StatusCode::TOO_MANY_REQUESTS,
        layout(
            "Console: too many tries",
            None,
            "<p>Too many wrong tokens lately. Try again later.</p>",
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (ApiKeyHash::of(a), ApiKeyHash::of(b));
    a.as_str()
        .bytes()
        .zip(b.as_str().bytes())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

impl Console {
    pub(super) fn csrf(&self) -> String {
        ApiKeyHash::of(&format!("console-form:{}", self.token))
            .as_str()
            .to_owned()
    }

    /// The token the request carries, in the cookie or as a bearer.
    pub(super) fn signed_in(&self, headers: &HeaderMap) -> Option<bool> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")));
        bearer
            .or(cookie)
            .map(|given| constant_time_eq(given, &self.token))
    }
}

/// Not ready, or not signed in: the answer, else the console.
pub(super) async fn console_for(
    slot: &ConsoleSlot,
    headers: &HeaderMap,
) -> Result<Arc<Console>, Response> {
    let Some(console) = slot.get().cloned() else {
        return Err(html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout("Console", None, "<p>The process is not connected yet.</p>"),
        ));
    };
    let given = console.signed_in(headers);
    if given.is_some()
        && let Some(wait) = console.sign_ins.wait()
    {
        return Err(too_many_tries(wait));
    }
    match given {
        Some(true) => Ok(console),
        Some(false) => Err({
            console.sign_ins.failed();
            html(
                StatusCode::UNAUTHORIZED,
                layout(
                    "Console: wrong token",
                    None,
                    "<p class=\"error\" id=\"refused\">Wrong console token.</p><p><a href=\"/console/login\">Sign in again</a></p>",
                ),
            )
        }),
        None => Err(Redirect::to("/console/login").into_response()),
    }
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    pub(super) csrf: String,
}

/// The refusal of a form that did not come from the console, if it did not.
pub(super) fn foreign_form(console: &Console, form: &Csrf) -> Option<Response> {
    if constant_time_eq(&form.csrf, &console.csrf()) {
        return None;
    }
    Some(html(
        StatusCode::FORBIDDEN,
        layout(
            "Console",
            None,
            "<p class=\"error\">This form did not come from the console.</p>",
        ),
    ))
}

/// The console for a form post, as an extractor: signed in, and the form
/// is its own (else the refusal, as the answer).
pub(super) struct FormConsole(pub(super) Arc<Console>);

impl axum::extract::FromRequest<ConsoleSlot> for FormConsole {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        slot: &ConsoleSlot,
    ) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let Form(form) = Form::<Csrf>::from_request(request, slot)
            .await
            .map_err(IntoResponse::into_response)?;
        let console = console_for(slot, &headers).await?;
        match foreign_form(&console, &form) {
            Some(refused) => Err(refused),
            None => Ok(Self(console)),
        }
    }
}
