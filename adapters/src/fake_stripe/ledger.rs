//! The account fake-stripe keeps: customers, charges, PaymentMethods,
//! PaymentIntents, events, and the answers saved under each idempotency key.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Customer {
    pub(super) source: Option<String>,
    pub(super) body: Value,
}

#[derive(Debug, Clone)]
pub(super) struct StoredCharge {
    pub(super) body: Value,
    pub(super) at: Instant,
}

#[derive(Debug)]
pub(super) struct SavedAnswer {
    pub(super) fingerprint: String,
    pub(super) status: StatusCode,
    pub(super) body: Value,
    pub(super) at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) customers: HashMap<String, Customer>,
    /// Successful charges, oldest first.
    pub(super) charges: Vec<StoredCharge>,
    /// Every PaymentIntent, oldest first (as it is now).
    pub(super) payment_intents: Vec<StoredCharge>,
    /// PaymentMethods attached to customers, by id.
    pub(super) payment_methods: HashMap<String, PaymentMethod>,
    /// Events, oldest first.
    pub(super) events: Vec<Value>,
    /// Events waiting for (another) delivery to the webhook endpoint, when
    /// there is one.
    pub(super) deliveries: Option<Vec<Pending>>,
    pub(super) answers: HashMap<String, SavedAnswer>,
    /// Idempotency keys of requests being processed right now.
    pub(super) in_flight: std::collections::HashSet<String>,
    /// Faults injected so far, by kind and timing (`500/after`).
    pub(super) faults: std::collections::BTreeMap<String, u64>,
    /// Refunds, oldest first (as they are now).
    pub(super) refunds: Vec<StoredCharge>,
    /// Refunds that will fail (`pm_card_refundFail`), and when.
    pub(super) failing_refunds: Vec<(String, Instant)>,
    /// PaymentIntents `processing`, and when each succeeds.
    pub(super) processing: Vec<(String, Instant)>,
    /// How long a `processing` PaymentIntent takes to succeed.
    pub(super) processing_delay: Duration,
}

/// An event on its way to the webhook endpoint.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) event: Value,
    /// Attempts made so far.
    pub(super) attempts: u32,
    pub(super) due: Instant,
}
