//! Who may use the console: the token, given once at sign-in (which opens a
//! session: a random id in an HttpOnly, SameSite=Strict cookie, `Secure` on
//! request, that ends at its expiry or at sign-out) or as a bearer on each
//! request, compared in constant time; wrong tokens limited in rate, so
//! the token cannot be found by trying many; and the session's own form
//! value that keeps cross-site posts out.

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

/// Who may use the console, and how long a sign-in lasts.
#[derive(Clone)]
pub struct ConsoleAccess {
    /// The token (`CONSOLE_TOKEN`).
    pub token: String,
    /// A session ends this long after sign-in (`CONSOLE_SESSION_TTL`).
    pub session_ttl: Duration,
    /// The session cookie is sent over HTTPS only
    /// (`CONSOLE_SECURE_COOKIE`: the console is behind TLS).
    pub secure_cookie: bool,
}

impl std::fmt::Debug for ConsoleAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAccess")
            .field("token", &"***")
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookie", &self.secure_cookie)
            .finish()
    }
}

/// The open sessions, by the hash of their id (the id itself is kept only
/// in the operator's cookie): each with its form value and its end.
#[derive(Default)]
pub struct Sessions(Mutex<std::collections::BTreeMap<String, Session>>);

#[derive(Clone)]
struct Session {
    form_value: String,
    ends: Instant,
}

impl Sessions {
    /// At most this many at once; past it the one ending soonest goes.
    pub const MAX: usize = 256;

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session lasting `ttl`; its id, for the cookie.
    fn open(&self, ttl: Duration) -> String {
        let id = random_value();
        let now = Instant::now();
        let mut sessions = self.map();
        sessions.retain(|_, session| session.ends > now);
        while sessions.len() >= Self::MAX {
            let Some(soonest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.ends)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            sessions.remove(&soonest);
        }
        sessions.insert(
            ApiKeyHash::of(&id).as_str().to_owned(),
            Session {
                form_value: random_value(),
                ends: now + ttl,
            },
        );
        id
    }

    /// The form value of the live session `id` names, if any.
    fn form_value(&self, id: &str) -> Option<String> {
        let key = ApiKeyHash::of(id);
        let mut sessions = self.map();
        match sessions.get(key.as_str()) {
            Some(session) if session.ends > Instant::now() => Some(session.form_value.clone()),
            Some(_) => {
                sessions.remove(key.as_str());
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.map().remove(ApiKeyHash::of(id).as_str());
    }
}

/// 244 random bits (two v4 UUIDs, from the system's CSPRNG) as 64 hex
/// digits: a session id or a form value.
fn random_value() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How a request is signed in.
pub(super) enum SignedIn {
    /// A session: its form guard must come with each form.
    Session { form_value: String },
    /// The token as a bearer, on this request alone (a script: no
    /// browser sends it by itself, so no form guard is needed).
    Bearer,
}

impl Console {
    /// The session id the request's cookie carries, if any.
    pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")))
            .map(str::to_owned)
    }

    /// Whether the request is signed in: `None` when it carries no
    /// credential (or a session that ended), `Some(Err(()))` for a wrong
    /// bearer token.
    pub(super) fn signed_in(&self, headers: &HeaderMap) -> Option<Result<SignedIn, ()>> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer {
            return Some(
                constant_time_eq(given, &self.access.token)
                    .then_some(SignedIn::Bearer)
                    .ok_or(()),
            );
        }
        let id = Self::session_id(headers)?;
        self.sessions
            .form_value(&id)
            .map(|form_value| Ok(SignedIn::Session { form_value }))
    }

    /// Opens a session; the `Set-Cookie` value that carries it.
    pub(super) fn open_session(&self) -> String {
        let id = self.sessions.open(self.access.session_ttl);
        self.session_cookie(&id, self.access.session_ttl)
    }

    /// Ends the session the request's cookie names, if any; the
    /// `Set-Cookie` value that clears the cookie.
    pub(super) fn close_session(&self, headers: &HeaderMap) -> String {
        if let Some(id) = Self::session_id(headers) {
            self.sessions.close(&id);
        }
        self.session_cookie("", Duration::ZERO)
    }

    /// The session cookie holding `value` for `lasts`, with the same
    /// attributes whether it is set or cleared.
    fn session_cookie(&self, value: &str, lasts: Duration) -> String {
        let secure = if self.access.secure_cookie {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{COOKIE}={value}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            lasts.as_secs()
        )
    }
}

/// Not ready, or not signed in: the answer, else the console and how the
/// request signed in.
pub(super) async fn console_for(
    slot: &ConsoleSlot,
    headers: &HeaderMap,
) -> Result<(Arc<Console>, SignedIn), Response> {
    let Some(console) = slot.get().cloned() else {
        return Err(html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout("Console", None, "<p>The process is not connected yet.</p>"),
        ));
    };
    let given = console.signed_in(headers);
    // A token given (right or wrong) waits out a guessing spree; a live
    // session, whose id was never guessed, does not.
    if matches!(given, Some(Ok(SignedIn::Bearer) | Err(())))
        && let Some(wait) = console.sign_ins.wait()
    {
        return Err(too_many_tries(wait));
    }
    match given {
        Some(Ok(signed_in)) => Ok((console, signed_in)),
        Some(Err(())) => Err({
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
    /// The session's form value (a bearer's form needs none).
    #[serde(default)]
    pub(super) csrf: Option<String>,
}

/// The refusal of a form that did not come from the console, if it did not.
pub(super) fn foreign_form(signed_in: &SignedIn, form: &Csrf) -> Option<Response> {
    match signed_in {
        SignedIn::Bearer => return None,
        SignedIn::Session { form_value }
            if form
                .csrf
                .as_deref()
                .is_some_and(|given| constant_time_eq(given, form_value)) =>
        {
            return None;
        }
        SignedIn::Session { .. } => {}
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
        let (console, signed_in) = console_for(slot, &headers).await?;
        match foreign_form(&signed_in, &form) {
            Some(refused) => Err(refused),
            None => Ok(Self(console)),
        }
    }
}
