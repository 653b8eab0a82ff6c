//! What fake-stripe is told at start: its port, its idempotency window,
//! its search lag, and the faults it injects.

use super::*;

pub const DEFAULT_PORT: u16 = 12111;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The answer comes late (by `latency`), but it comes.
    Latency,
    /// No answer for `hang` (past any sane client timeout), then a 500.
    Hang,
    /// 500 Internal Server Error.
    ServerError,
    /// 429 Too Many Requests.
    RateLimit,
    /// The connection drops in the middle of the answer.
    Drop,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Hang => "hang",
            FaultKind::ServerError => "500",
            FaultKind::RateLimit => "429",
            FaultKind::Drop => "drop",
        }
    }

    pub const ALL: [FaultKind; 5] = [
        FaultKind::Latency,
        FaultKind::Hang,
        FaultKind::ServerError,
        FaultKind::RateLimit,
        FaultKind::Drop,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    Before,
    After,
    /// Each fault lands before or after, at even odds.
    Either,
}

#[derive(Debug, Clone)]
pub struct Faults {
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub timing: FaultTiming,
    pub latency: Duration,
    pub hang: Duration,
    /// The POST routes faults land on (`/v1/charges`); empty: every one.
    pub paths: Vec<String>,
}

impl Faults {
    pub const DEFAULT_LATENCY: Duration = Duration::from_millis(500);
    pub const DEFAULT_HANG: Duration = Duration::from_secs(60);
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            timing: FaultTiming::Either,
            latency: Self::DEFAULT_LATENCY,
            hang: Self::DEFAULT_HANG,
            paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeStripeSettings {
    pub idempotency_window: Duration,
    /// How long a new charge stays out of search results.
    pub search_delay: Duration,
    pub faults: Faults,
    /// Where events are delivered, if anywhere.
    pub webhook: Option<WebhookDelivery>,
    /// How long a PaymentIntent paid with `pm_fake_processing` stays
    /// `processing` before it succeeds.
    pub processing_delay: Duration,
}

/// Where fake-stripe delivers its events, signed as Stripe signs them
/// (`Stripe-Signature`), retried as Stripe retries a delivery that got no
/// 2xx, and the delivery faults a receiver must survive.
#[derive(Clone)]
pub struct WebhookDelivery {
    pub url: String,
    /// The endpoint's signing secret (`whsec_…`).
    pub secret: String,
    /// Probability that an attempt is lost on the way (it is retried).
    pub drop_rate: f64,
    /// Probability that an event is delivered twice.
    pub duplicate_rate: f64,
    /// Added before every attempt.
    pub delay: Duration,
    /// Deliver the events waiting at once in a random order.
    pub reorder: bool,
}

impl WebhookDelivery {
    /// A delivery that got no 2xx is tried again after this, doubling.
    pub const FIRST_RETRY: Duration = Duration::from_millis(500);
    /// Attempts per event before fake-stripe gives up (Stripe: three days).
    pub const MAX_ATTEMPTS: u32 = 10;

    /// Deliveries to `url` signed with `secret`, with no faults.
    pub fn to(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay: Duration::ZERO,
            reorder: false,
        }
    }
}

/// The secret stays out of `Debug`, and so out of any log line.
impl std::fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("drop_rate", &self.drop_rate)
            .field("duplicate_rate", &self.duplicate_rate)
            .field("delay", &self.delay)
            .field("reorder", &self.reorder)
            .finish()
    }
}

impl FakeStripeSettings {
    /// Stripe keeps an idempotency key for 24 hours.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// Stripe's search index "under normal operating conditions" catches up
    /// in under a minute; a second is enough to make a client meet the lag.
    pub const DEFAULT_SEARCH_DELAY: Duration = Duration::from_secs(1);
    pub const DEFAULT_PROCESSING_DELAY: Duration = Duration::from_secs(2);
}

impl Default for FakeStripeSettings {
    fn default() -> Self {
        Self {
            idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
            search_delay: Self::DEFAULT_SEARCH_DELAY,
            faults: Faults::default(),
            webhook: None,
            processing_delay: Self::DEFAULT_PROCESSING_DELAY,
        }
    }
}
