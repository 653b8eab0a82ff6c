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
}

impl FakeStripeSettings {
    /// Stripe keeps an idempotency key for 24 hours.
    pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// Stripe's search index "under normal operating conditions" catches up
    /// in under a minute; a second is enough to make a client meet the lag.
    pub const DEFAULT_SEARCH_DELAY: Duration = Duration::from_secs(1);
}

impl Default for FakeStripeSettings {
    fn default() -> Self {
        Self {
            idempotency_window: Self::DEFAULT_IDEMPOTENCY_WINDOW,
            search_delay: Self::DEFAULT_SEARCH_DELAY,
            faults: Faults::default(),
        }
    }
}
