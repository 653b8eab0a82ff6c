//! The real binary where keys reach review in seconds, for the tests of
//! reconciliation and of the console: the settings they share, the
//! fake-stripe account they charge through (one clean connection, one that
//! loses every answer after Stripe processed the request), and a child
//! process killed when the test ends.

use std::process::{Child, Command};
use std::time::Duration;

use adapters::fake_stripe::{FakeStripe, FakeStripeSettings, FaultKind, FaultTiming, Faults};

/// Kills and reaps the process when dropped, however the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub use crate::postgres::free_port;

/// `binary` on `database_url`, charging at `stripe`: one call with one
/// retry fits `LOCK_TIMEOUT` (3 s), keys go to review 4 s after their first
/// charge attempt, and Stripe's search is taken to lag by `search_lag`.
pub fn reviewing(binary: &str, database_url: &str, stripe: &str, search_lag: &str) -> Command {
    let mut command = crate::rocket_rides(binary);
    command
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", database_url)
        .env("STRIPE_API_KEY", "sk_test_reviewing")
        .env("STRIPE_API_BASE", stripe)
        .env("STRIPE_TIMEOUT", "1s")
        .env("STRIPE_MAX_RETRIES", "1")
        .env("LOCK_TIMEOUT", "3s")
        .env("REVIEW_AFTER", "4s")
        .env("GATEWAY_IDEMPOTENCY_WINDOW", "1h")
        .env("STRIPE_SEARCH_LAG", search_lag);
    command
}

/// One fake Stripe account served twice: its ledger, the clean base URL,
/// and a base URL where every answer is lost after the request was
/// processed (the charge exists; the caller sees a 500).
pub async fn stripe_losing_answers(search_delay: Duration) -> (FakeStripe, String, String) {
    let clean = FakeStripe::new(FakeStripeSettings {
        search_delay,
        ..FakeStripeSettings::default()
    });
    let losing = clean.sharing_ledger(FakeStripeSettings {
        faults: Faults {
            rate: 1.0,
            kinds: vec![FaultKind::ServerError],
            timing: FaultTiming::After,
            ..Faults::default()
        },
        ..FakeStripeSettings::default()
    });
    let base = clean.serve_on_loopback().await.expect("served");
    let losing_base = losing.serve_on_loopback().await.expect("served");
    (clean, base, losing_base)
}
